package auth

import (
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

func arPassResults() Results {
	return Results{
		SPF:  SPFResult{Identity: "mailfrom", Domain: "example.com", Result: Pass, Reason: "matched ip4:192.0.2.0/24"},
		HELO: SPFResult{Identity: "helo", Domain: "mx.example.com", Result: None},
		DKIM: []DKIMResult{{Result: Pass, Domain: "example.com", Selector: "sel1", Algorithm: "rsa-sha256", Identifier: "@example.com"}},
		ARC:  ARCResult{Result: None},
		DMARC: DMARCResult{Result: Pass, Domain: "example.com", OrgDomain: "example.com", Policy: "reject", Published: "reject",
			DKIMAligned: true, SPFAligned: true, Reason: "aligned"},
	}
}

func arFailResults() Results {
	return Results{
		SPF:  SPFResult{Identity: "mailfrom", Domain: "Example.COM.", Result: Fail, Reason: "no match; -all"},
		HELO: SPFResult{Identity: "helo", Domain: "bot.example.net", Result: SoftFail, Reason: "~all"},
		DKIM: []DKIMResult{
			{Result: Fail, Domain: "example.com", Selector: "sel1", Algorithm: "rsa-sha256", Identifier: "news@example.com", Reason: "body hash mismatch (bh=)"},
			{Result: Unknown, Domain: "esp.example", Selector: "s", Algorithm: "ed25519-sha256"},
			{Result: TempError, Domain: "esp.example", Selector: "s2", Algorithm: "ed25519-sha256", Reason: "key lookup: SERVFAIL"},
		},
		ARC: ARCResult{Result: Fail, Instances: 2, OldestPass: 1, Sealer: "lists.example.org", Reason: "i=2 seal does not verify"},
		DMARC: DMARCResult{Result: Fail, Domain: "example.com", OrgDomain: "example.com", Policy: "quarantine", Published: "reject",
			Reason: "no SPF or DKIM pass aligned with example.com (adkim=r aspf=r); not in pct=50 sample, reject lowered to quarantine"},
	}
}

func TestAuthResultsGolden(t *testing.T) {
	nullSender := arPassResults()
	nullSender.SPF = SPFResult{Identity: "helo", Domain: "mx.example.com", Result: Pass}
	nullSender.HELO = SPFResult{Identity: "helo", Domain: "mx.example.com", Result: Pass}
	unknownDKIM := Results{DKIM: []DKIMResult{{Result: Unknown, Domain: "example.com"}}, DMARC: DMARCResult{Result: Unknown}}
	heloPass := arPassResults()
	heloPass.SPF = SPFResult{Identity: "mailfrom", Domain: "example.com", Result: None}
	heloPass.HELO.Result = Pass
	arcPass := arPassResults()
	arcPass.ARC = ARCResult{Result: Pass, Instances: 1, OldestPass: 1, Sealer: "Lists.Example.ORG."}
	noFrom := arPassResults()
	noFrom.DMARC = DMARCResult{Result: PermError, Reason: "2 From: fields; RFC 5322 §3.6 allows exactly one"}

	for _, tc := range []struct {
		name string
		r    Results
		want string
	}{
		{"pass", arPassResults(),
			"mx.moat.test; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com header.s=sel1 header.a=rsa-sha256; " +
				"arc=none; dmarc=pass (policy reject) header.from=example.com"},
		{"fail", arFailResults(),
			`mx.moat.test; spf=fail reason="no match, -all" smtp.mailfrom=example.com; ` +
				`spf=softfail reason="~all" smtp.helo=bot.example.net; ` +
				`dkim=fail reason="body hash mismatch [bh:]" header.d=example.com header.s=sel1 header.a=rsa-sha256 header.i=news@example.com; ` +
				`dkim=temperror reason="key lookup: SERVFAIL" header.d=esp.example header.s=s2 header.a=ed25519-sha256; ` +
				`arc=fail (2 sets, sealer lists.example.org) reason="i:2 seal does not verify" header.oldest-pass=1; ` +
				`dmarc=fail (policy quarantine, sampled down from reject) ` +
				`reason="no SPF or DKIM pass aligned with example.com [adkim:r aspf:r], not in pct:50 sample, reject lowered to quarantine" ` +
				`header.from=example.com`},
		{"null sender: the helo result once", nullSender,
			"mx.moat.test; spf=pass smtp.helo=mx.example.com; dkim=pass header.d=example.com header.s=sel1 header.a=rsa-sha256; " +
				"arc=none; dmarc=pass (policy reject) header.from=example.com"},
		{"helo pass is worth a line", heloPass,
			"mx.moat.test; spf=none smtp.mailfrom=example.com; spf=pass smtp.helo=mx.example.com; " +
				"dkim=pass header.d=example.com header.s=sel1 header.a=rsa-sha256; arc=none; dmarc=pass (policy reject) header.from=example.com"},
		{"arc pass", arcPass,
			"mx.moat.test; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com header.s=sel1 header.a=rsa-sha256; " +
				"arc=pass (1 set, sealer lists.example.org) header.oldest-pass=1; dmarc=pass (policy reject) header.from=example.com"},
		{"several From: fields", noFrom,
			"mx.moat.test; spf=pass smtp.mailfrom=example.com; dkim=pass header.d=example.com header.s=sel1 header.a=rsa-sha256; " +
				`arc=none; dmarc=permerror reason="2 From: fields, RFC 5322 section 3.6 allows exactly one"`},
		{"no signature, nothing else known", Results{SPF: SPFResult{Result: Unknown}, HELO: SPFResult{Result: Unknown}, ARC: ARCResult{Result: Unknown}},
			"mx.moat.test; dkim=none"},
		{"unknown is never written", unknownDKIM, "mx.moat.test; none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AuthResultsValue("mx.moat.test", tc.r)
			if got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestAuthResultsRoundTrip parses what AuthResultsValue writes with
// go-msgauth's parser and finds every result and property again.
func TestAuthResultsRoundTrip(t *testing.T) {
	for _, r := range []Results{arPassResults(), arFailResults()} {
		v := AuthResultsValue("mx.moat.test", r)
		id, res, err := authres.Parse(v)
		if err != nil || id != "mx.moat.test" {
			t.Fatalf("Parse(%q) = %q, %v", v, id, err)
		}
		var spf []*authres.SPFResult
		var dkim []*authres.DKIMResult
		var arc *authres.ARCResult
		var dmarc *authres.DMARCResult
		for _, x := range res {
			switch x := x.(type) {
			case *authres.SPFResult:
				spf = append(spf, x)
			case *authres.DKIMResult:
				dkim = append(dkim, x)
			case *authres.ARCResult:
				arc = x
			case *authres.DMARCResult:
				dmarc = x
			default:
				t.Fatalf("unexpected result %T %+v", x, x)
			}
		}
		if len(spf) == 0 || string(spf[0].Value) != string(r.SPF.Result) || spf[0].From != "example.com" {
			t.Errorf("spf %+v", spf)
		}
		if r.HELO.Result != None && (len(spf) != 2 || string(spf[1].Value) != string(r.HELO.Result) || spf[1].Helo != r.HELO.Domain) {
			t.Errorf("helo spf %+v", spf)
		}
		var wantDKIM []DKIMResult
		for _, k := range r.DKIM {
			if k.Result != Unknown {
				wantDKIM = append(wantDKIM, k)
			}
		}
		if len(dkim) != len(wantDKIM) {
			t.Fatalf("%d dkim results, want %d", len(dkim), len(wantDKIM))
		}
		for i, k := range wantDKIM {
			if string(dkim[i].Value) != string(k.Result) || dkim[i].Domain != k.Domain {
				t.Errorf("dkim %d: %+v, want %+v", i, dkim[i], k)
			}
		}
		if arc == nil || string(arc.Value) != string(r.ARC.Result) || arc.OldestPass != r.ARC.OldestPass {
			t.Errorf("arc %+v", arc)
		}
		if dmarc == nil || string(dmarc.Value) != string(r.DMARC.Result) || dmarc.From != r.DMARC.Domain {
			t.Errorf("dmarc %+v", dmarc)
		}
		// go-msgauth splits a quoted reason at its spaces; read the
		// reasons with the quoted-string grammar instead.
		for _, m := range regexp.MustCompile(`reason="([^"]*)"`).FindAllStringSubmatch(v, -1) {
			if m[1] == "" || strings.ContainsAny(m[1], `;=()"\`) {
				t.Errorf("reason %q", m[1])
			}
		}
	}
}

// TestAuthResultsHostile feeds the formatter what a hostile message can
// put into results — CR LF, semicolons, quotes, non-ASCII, length — and
// checks that the value stays one safe line with exactly the results
// moat wrote.
func TestAuthResultsHostile(t *testing.T) {
	evil := "evil.example\r\nX-Injected: yes; dmarc=pass header.from=bank.example"
	r := Results{
		SPF:  SPFResult{Identity: "mailfrom", Domain: evil, Result: Fail, Reason: "bad\r\n\r\n.\r\nMAIL FROM:<x>"},
		HELO: SPFResult{Identity: "helo", Domain: "(comment) helo", Result: Pass},
		DKIM: []DKIMResult{{Result: Fail, Domain: evil, Selector: `a"b\c`, Algorithm: "rsa-sha256; dkim=pass",
			Identifier: "x@y\nBcc: z", Reason: strings.Repeat("é;=\"(", 500)}},
		ARC:   ARCResult{Result: Pass, Instances: 1, Sealer: evil, OldestPass: 1},
		DMARC: DMARCResult{Result: Fail, Domain: "bank.example\x00", Policy: "reject\r\nX: y", Reason: "\x1b[31mred"},
	}
	v := AuthResultsValue("mx.moat.test\r\nX-Evil: 1", r)
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			t.Fatalf("byte %#x at %d in %q", v[i], i, v)
		}
	}
	if strings.Count(v, ";") != 5 {
		t.Errorf("%d semicolons in %q, want 5", strings.Count(v, ";"), v)
	}
	id, res, err := authres.Parse(v)
	if err != nil || len(res) != 5 || !strings.HasPrefix(id, "mx.moat.test") {
		t.Fatalf("Parse: %q %d results %v in %q", id, len(res), err, v)
	}
	if !HasAuthservID(v, "mx.moat.test\r\nX-Evil: 1") {
		t.Errorf("HasAuthservID false on its own value %q", v)
	}
	for _, x := range res {
		if d, ok := x.(*authres.DMARCResult); ok && (string(d.Value) != "fail" || d.From == "bank.example") {
			t.Errorf("dmarc read as %+v from %q", d, v)
		}
	}
	if len(v) > 2000 {
		t.Errorf("value of %d bytes", len(v))
	}
}

func TestAuthResultsHasAuthservID(t *testing.T) {
	const id = "mx.example.com"
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"mx.example.com; spf=pass smtp.mailfrom=example.com", true},
		{"mx.example.com; none", true},
		{"mx.example.com", true},
		{"MX.Example.COM; dkim=pass", true},
		{"mx.example.com.; dkim=pass", true},
		{"mx.example.com 1; spf=pass", true},
		{"mx.example.com 2; spf=pass", true}, // an unknown version is still our name
		{"  mx.example.com;spf=pass", true},
		{"\r\n\tmx.example.com;\r\n\tspf=pass", true},
		{"(forged) mx.example.com; spf=pass", true},
		{"(nested (comment) \\) here) mx.example.com; spf=pass", true},
		{"mx.example.com(comment); spf=pass", true},
		{"mx.example.com (comment) 1; spf=pass", true},
		{`"mx.example.com"; spf=pass`, true},
		{`"MX.example.com" 1; spf=pass`, true},
		{"mx.example.com;", true},
		{"mx.example.com; spf=pass reason=\"unterminated", true},
		{"mx.example.com; =broken", true},
		{"mx.example.com.evil; spf=pass", false},
		{"mx.example.com.evil.example; spf=pass", false},
		{"evil-mx.example.com; spf=pass", false},
		{"xmx.example.com; spf=pass", false},
		{"example.com; spf=pass", false},
		{"other.example; spf=pass (mx.example.com)", false},
		{"other.example; x=mx.example.com", false},
		{"(mx.example.com) other.example; spf=pass", false},
		{"mx.example.co; spf=pass", false},
		{"", false},
		{";", false},
		{"(unterminated mx.example.com", false},
		{`"unterminated mx.example.com`, false},
	} {
		if got := HasAuthservID(tc.value, id); got != tc.want {
			t.Errorf("HasAuthservID(%q, %q) = %v, want %v", tc.value, id, got, tc.want)
		}
	}
	if HasAuthservID("mx.example.com; none", "") || HasAuthservID("; none", " ") {
		t.Error("an empty authserv-id matched")
	}
}

// FuzzAuthResults: HasAuthservID and authres.Parse take any value; a
// value AuthResultsValue writes from any results is one line of
// printable ASCII, parses, has exactly the results written, and names
// its own authserv-id.
func FuzzAuthResults(f *testing.F) {
	f.Add("mx.example.com; spf=pass", "mx.example.com", "example.com", "sel", "reason", uint8(2), uint8(1), uint8(3))
	f.Add("(c) \"mx\" 1; arc=pass header.oldest-pass=0", "mx", "a;b=c", "s\r\n", "é(\")\\", uint8(255), uint8(0), uint8(7))
	f.Add("", "", "", "", "", uint8(0), uint8(0), uint8(0))
	results := []Result{None, Neutral, Pass, Fail, SoftFail, Policy, TempError, PermError, Unknown, "", "bogus"}
	f.Fuzz(func(t *testing.T, value, id, domain, selector, reason string, a, b, c uint8) {
		HasAuthservID(value, id)
		authres.Parse(value)

		pick := func(x uint8) Result { return results[int(x)%len(results)] }
		r := Results{
			SPF:  SPFResult{Identity: []string{"mailfrom", "helo"}[a&1], Domain: domain, Result: pick(a), Reason: reason},
			HELO: SPFResult{Identity: "helo", Domain: selector, Result: pick(b), Reason: reason},
			ARC: ARCResult{Result: pick(c), Instances: int(a % 4), OldestPass: int(b % 3), Sealer: domain,
				Reason: reason},
			DMARC: DMARCResult{Result: pick(a / 3), Domain: domain, Policy: []string{"", "none", "reject", reason}[b%4],
				Published: []string{"reject", "quarantine", reason}[c%3], Reason: reason},
		}
		for i := 0; i < int(c%4); i++ {
			r.DKIM = append(r.DKIM, DKIMResult{Result: pick(a + uint8(i)), Domain: domain, Selector: selector,
				Algorithm: reason, Identifier: selector + "@" + domain, Reason: reason})
		}
		v := AuthResultsValue(id, r)
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				t.Fatalf("byte %#x at %d in %q", v[i], i, v)
			}
		}
		pid, res, err := authres.Parse(v)
		if err != nil {
			t.Fatalf("Parse(%q): %v", v, err)
		}
		if !strings.EqualFold(pid, authservToken(id)) {
			t.Fatalf("Parse(%q) id %q, want %q", v, pid, authservToken(id))
		}
		written := strings.Count(v, ";")
		if strings.HasSuffix(v, "; none") {
			written = 0
		}
		if len(res) != written {
			t.Fatalf("Parse(%q): %d results, %d written", v, len(res), written)
		}
		if strings.TrimSpace(id) != "" && strings.TrimSuffix(authservToken(id), ".") != "" && !HasAuthservID(v, id) {
			t.Fatalf("HasAuthservID(%q, %q) = false", v, id)
		}
		if strings.Contains(v, "unknown") && !strings.Contains(id+reason+domain+selector, "unknown") {
			t.Fatalf("unknown written: %q", v)
		}
	})
}
