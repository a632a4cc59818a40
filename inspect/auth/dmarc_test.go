package auth

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dmarc"
)

func dmarcSPF(r Result, domain string) SPFResult {
	return SPFResult{Identity: "mailfrom", Domain: domain, Result: r}
}

func dmarcDKIM(r Result, d string) DKIMResult {
	return DKIMResult{Result: r, Domain: d, Selector: "sel", Algorithm: "rsa-sha256"}
}

// dmarcKeys finds a sample key inside and one outside a pct= sample.
func dmarcKeys(t *testing.T, pct int) (in, out string) {
	t.Helper()
	for i := 0; in == "" || out == ""; i++ {
		k := fmt.Sprintf("<%d@example.com>", i)
		if pctSampled(k, pct) {
			in = k
		} else {
			out = k
		}
		if i > 10000 {
			t.Fatalf("no keys on both sides of pct=%d", pct)
		}
	}
	return in, out
}

func TestDMARCCheck(t *testing.T) {
	in50, out50 := dmarcKeys(t, 50)
	zone := map[string][]string{
		"_dmarc.example.com":           {"v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"},
		"_dmarc.own.example.com":       {"v=DMARC1; p=none; sp=reject"},
		"_dmarc.strict.example":        {"v=DMARC1; p=reject; adkim=s; aspf=s"},
		"_dmarc.nosp.example":          {"v=DMARC1; p=quarantine"},
		"_dmarc.pct0.example":          {"v=DMARC1; p=reject; pct=0"},
		"_dmarc.pct50.example":         {"v=DMARC1; p=reject; pct=50"},
		"_dmarc.pct100.example":        {"v=DMARC1; p=reject; pct=100"},
		"_dmarc.q50.example":           {"v=DMARC1; p=quarantine; pct=50"},
		"_dmarc.two.example":           {"v=DMARC1; p=reject", "v=DMARC1; p=none"},
		"_dmarc.mixed.example":         {"v=spf1 -all", "some verification token", "v=DMARC1; p=reject"},
		"_dmarc.other.example":         {"v=DMARC1; p=reject"},
		"_dmarc.none.example":          {"v=DMARC1; p=none"},
		"_dmarc.nov.example":           {"p=reject; v=DMARC1"},
		"_dmarc.v2.example":            {"v=DMARC2; p=reject"},
		"_dmarc.lowerv.example":        {"v=dmarc1; p=reject"},
		"_dmarc.caps.example":          {"V = DMARC1 ; P = Reject ; ADKIM = S"},
		"_dmarc.nop.example":           {"v=DMARC1"},
		"_dmarc.badp.example":          {"v=DMARC1; p=bogus"},
		"_dmarc.badprua.example":       {"v=DMARC1; p=bogus; rua=mailto:r@badprua.example"},
		"_dmarc.badsp.example":         {"v=DMARC1; p=reject; sp=bogus"},
		"_dmarc.badpct.example":        {"v=DMARC1; p=reject; pct=150; adkim=x; junk; zz=1"},
		"_dmarc.dup.example":           {"v=DMARC1; p=reject; p=none"},
		"_dmarc.xn--bcher-kva.example": {"v=DMARC1; p=reject"},
		"_dmarc.sub.orgfail.example":   {"v=DMARC1; p=reject"},
		"_dmarc.plain.test":            {"v=DMARC1; p=reject"},
	}
	tests := []struct {
		name string
		in   DMARCInput
		opts DMARCOptions
		fail map[string]error // names whose lookups fail

		result      Result
		domain, org string
		policy      string
		published   string
		spfAligned  bool
		dkimAligned bool
		reason      string   // a substring of Reason
		lookups     []string // the names asked, when given
	}{
		// §3.1.1 DKIM alignment.
		{name: "dkim exact", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true,
			lookups: []string{"_dmarc.example.com."}},
		{name: "dkim relaxed subdomain d=", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "mail.example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true},
		{name: "dkim relaxed org-domain d= for subdomain From", in: DMARCInput{From: []string{"a@news.example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "news.example.com", org: "example.com", policy: "quarantine", published: "quarantine", dkimAligned: true,
			lookups: []string{"_dmarc.news.example.com.", "_dmarc.example.com."}},
		{name: "dkim strict subdomain d= fails", in: DMARCInput{From: []string{"a@strict.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "mail.strict.example")}},
			result: Fail, domain: "strict.example", org: "strict.example", policy: "reject", published: "reject", reason: "adkim=s aspf=s"},
		{name: "dkim strict exact passes", in: DMARCInput{From: []string{"a@strict.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "strict.example")}},
			result: Pass, domain: "strict.example", org: "strict.example", policy: "reject", published: "reject", dkimAligned: true},
		{name: "dkim unrelated d=", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.net")}},
			result: Fail, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "dkim look-alike d= is not a subdomain", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "badexample.com")}},
			result: Fail, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "failing signature of the right domain does not align", in: DMARCInput{From: []string{"a@example.com"},
			DKIM: []DKIMResult{dmarcDKIM(Fail, "example.com"), dmarcDKIM(Pass, "example.net")}},
			result: Fail, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "second signature aligns", in: DMARCInput{From: []string{"a@example.com"},
			DKIM: []DKIMResult{dmarcDKIM(Pass, "esp.example.net"), dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true},

		// §3.1.2 SPF alignment.
		{name: "spf exact", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(Pass, "example.com")},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", spfAligned: true},
		{name: "spf relaxed bounce subdomain", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(Pass, "bounce.example.com")},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", spfAligned: true},
		{name: "spf strict subdomain fails", in: DMARCInput{From: []string{"a@strict.example"}, SPF: dmarcSPF(Pass, "bounce.strict.example")},
			result: Fail, domain: "strict.example", org: "strict.example", policy: "reject", published: "reject"},
		{name: "spf softfail aligned does not count", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(SoftFail, "example.com")},
			result: Fail, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "spf pass unrelated", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(Pass, "esp.example.net")},
			result: Fail, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "spf and dkim both aligned", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(Pass, "example.com"),
			DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", spfAligned: true, dkimAligned: true,
			reason: "SPF example.com and DKIM d=example.com aligned"},

		// Uncertain identifiers.
		{name: "aligned dkim temperror", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(TempError, "example.com")}},
			result: TempError, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "aligned spf unknown", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(Unknown, "example.com")},
			result: Unknown, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "unrelated temperror is a plain fail", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(TempError, "example.net")}},
			result: Fail, domain: "example.com", org: "example.com", policy: "reject", published: "reject"},
		{name: "pass despite another aligned temperror", in: DMARCInput{From: []string{"a@example.com"}, SPF: dmarcSPF(TempError, "example.com"),
			DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true},

		// §6.6.3 policy discovery and sp=.
		{name: "org-domain record, sp= for a subdomain", in: DMARCInput{From: []string{"a@news.example.com"}},
			result: Fail, domain: "news.example.com", org: "example.com", policy: "quarantine", published: "quarantine",
			lookups: []string{"_dmarc.news.example.com.", "_dmarc.example.com."}},
		{name: "org-domain record without sp=, p= applies", in: DMARCInput{From: []string{"a@deep.sub.nosp.example"}},
			result: Fail, domain: "deep.sub.nosp.example", org: "nosp.example", policy: "quarantine", published: "quarantine"},
		{name: "own record: p= applies, sp= does not", in: DMARCInput{From: []string{"a@own.example.com"}},
			result: Fail, domain: "own.example.com", org: "example.com", policy: "none", published: "none",
			lookups: []string{"_dmarc.own.example.com."}},
		{name: "subdomain record at a non-org name is not inherited", in: DMARCInput{From: []string{"a@x.sub.orgfail.example"}},
			result: None, domain: "x.sub.orgfail.example", org: "orgfail.example", reason: "no DMARC record",
			lookups: []string{"_dmarc.x.sub.orgfail.example.", "_dmarc.orgfail.example."}},
		{name: "no record", in: DMARCInput{From: []string{"a@norecord.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "norecord.example")}},
			result: None, domain: "norecord.example", org: "norecord.example", reason: "no DMARC record at _dmarc.norecord.example",
			lookups: []string{"_dmarc.norecord.example."}},
		{name: "multiple records: none", in: DMARCInput{From: []string{"a@two.example"}},
			result: None, domain: "two.example", org: "two.example", reason: "2 DMARC records"},
		{name: "multiple records at the From domain stop discovery", in: DMARCInput{From: []string{"a@two.example"}},
			opts:   DMARCOptions{OrgDomain: func(string) string { return "example.com" }},
			result: None, domain: "two.example", org: "example.com", lookups: []string{"_dmarc.two.example."}},
		{name: "other TXT records are discarded", in: DMARCInput{From: []string{"a@mixed.example"}},
			result: Fail, domain: "mixed.example", org: "mixed.example", policy: "reject", published: "reject"},
		{name: "v= not first: not a DMARC record", in: DMARCInput{From: []string{"a@nov.example"}},
			result: None, domain: "nov.example", org: "nov.example"},
		{name: "other version: not a DMARC record", in: DMARCInput{From: []string{"a@v2.example"}},
			result: None, domain: "v2.example", org: "v2.example"},
		{name: "DMARC1 is case-sensitive", in: DMARCInput{From: []string{"a@lowerv.example"}},
			result: None, domain: "lowerv.example", org: "lowerv.example"},
		{name: "tag names and keywords are case-insensitive", in: DMARCInput{From: []string{"a@caps.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "x.caps.example")}},
			result: Fail, domain: "caps.example", org: "caps.example", policy: "reject", published: "reject", reason: "adkim=s"},
		{name: "temperror on SERVFAIL", in: DMARCInput{From: []string{"a@example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			fail:   map[string]error{"_dmarc.example.com": errServFail},
			result: TempError, domain: "example.com", org: "example.com", reason: "SERVFAIL"},
		{name: "temperror on SERVFAIL at the org domain", in: DMARCInput{From: []string{"a@news.example.com"}},
			fail:   map[string]error{"_dmarc.example.com": errServFail},
			result: TempError, domain: "news.example.com", org: "example.com"},
		{name: "SERVFAIL at the From domain does not fall back", in: DMARCInput{From: []string{"a@news.example.com"}},
			fail:   map[string]error{"_dmarc.news.example.com": errServFail},
			result: TempError, domain: "news.example.com", org: "example.com", lookups: []string{"_dmarc.news.example.com."}},
		{name: "custom organizational domain", in: DMARCInput{From: []string{"a@news.example.com"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "news.example.com")}},
			opts:   DMARCOptions{OrgDomain: func(d string) string { return "plain.test" }},
			result: Pass, domain: "news.example.com", org: "plain.test", policy: "reject", published: "reject", dkimAligned: true,
			lookups: []string{"_dmarc.news.example.com.", "_dmarc.plain.test."}},

		// §6.3, §6.6.3 step 6: broken records.
		{name: "no p=: permerror", in: DMARCInput{From: []string{"a@nop.example"}},
			result: PermError, domain: "nop.example", org: "nop.example", reason: "no p= tag"},
		{name: "invalid p=: permerror", in: DMARCInput{From: []string{"a@badp.example"}},
			result: PermError, domain: "badp.example", org: "badp.example", reason: "invalid p="},
		{name: "invalid p= with rua=: read as p=none", in: DMARCInput{From: []string{"a@badprua.example"}},
			result: Fail, domain: "badprua.example", org: "badprua.example", policy: "none", published: "none", reason: "read as p=none"},
		{name: "invalid sp=: permerror", in: DMARCInput{From: []string{"a@badsp.example"}},
			result: PermError, domain: "badsp.example", org: "badsp.example"},
		{name: "invalid optional tags are ignored", in: DMARCInput{From: []string{"a@badpct.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "x.badpct.example")}},
			result: Pass, domain: "badpct.example", org: "badpct.example", policy: "reject", published: "reject", dkimAligned: true,
			reason: "ignored malformed or repeated tags junk, adkim, pct"},
		{name: "duplicate tag: the first wins", in: DMARCInput{From: []string{"a@dup.example"}},
			result: Fail, domain: "dup.example", org: "dup.example", policy: "reject", published: "reject", reason: "ignored malformed or repeated tags p "},

		// §6.6.4 pct=.
		{name: "pct=0 lowers reject to quarantine", in: DMARCInput{From: []string{"a@pct0.example"}, SampleKey: in50},
			result: Fail, domain: "pct0.example", org: "pct0.example", policy: "quarantine", published: "reject", reason: "not in pct=0 sample"},
		{name: "pct=100 keeps reject", in: DMARCInput{From: []string{"a@pct100.example"}, SampleKey: out50},
			result: Fail, domain: "pct100.example", org: "pct100.example", policy: "reject", published: "reject"},
		{name: "pct=50 sampled in", in: DMARCInput{From: []string{"a@pct50.example"}, SampleKey: in50},
			result: Fail, domain: "pct50.example", org: "pct50.example", policy: "reject", published: "reject"},
		{name: "pct=50 sampled out", in: DMARCInput{From: []string{"a@pct50.example"}, SampleKey: out50},
			result: Fail, domain: "pct50.example", org: "pct50.example", policy: "quarantine", published: "reject"},
		{name: "pct=50 sampled out of quarantine", in: DMARCInput{From: []string{"a@q50.example"}, SampleKey: out50},
			result: Fail, domain: "q50.example", org: "q50.example", policy: "none", published: "quarantine"},

		// §6.6.1 the author domain.
		{name: "no From:", in: DMARCInput{DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: None, reason: "no From: field", lookups: []string{}},
		{name: "several From: fields", in: DMARCInput{From: []string{"a@example.com", "b@example.com"}},
			result: PermError, reason: "2 From: fields", lookups: []string{}},
		{name: "From: without a domain", in: DMARCInput{From: []string{"undisclosed"}},
			result: None, reason: "no From: domain", lookups: []string{}},
		{name: "From: empty", in: DMARCInput{From: []string{""}},
			result: None, reason: "no From: domain"},
		{name: "From: domain literal", in: DMARCInput{From: []string{"a@[192.0.2.1]"}},
			result: None, reason: "no From: domain"},
		{name: "display name and comments", in: DMARCInput{From: []string{`"Example, Inc. <ceo@other.example>" (the bank) <News@Example.COM> (comment)`},
			DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true},
		{name: "encoded display name", in: DMARCInput{From: []string{`=?utf-8?q?J=C3=B6rg?= <j@example.com>`}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true},
		{name: "several addresses, one domain", in: DMARCInput{From: []string{"a@example.com, B <b@EXAMPLE.com>"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true,
			lookups: []string{"_dmarc.example.com."}},
		{name: "several domains, the rejecting failure wins", in: DMARCInput{From: []string{"a@none.example, b@other.example"}},
			result: Fail, domain: "other.example", org: "other.example", policy: "reject", published: "reject", reason: "strictest",
			lookups: []string{"_dmarc.none.example.", "_dmarc.other.example."}},
		{name: "several domains, a pass does not hide a failure", in: DMARCInput{From: []string{"a@example.com, b@nosp.example"},
			DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com")}},
			result: Fail, domain: "nosp.example", org: "nosp.example", policy: "quarantine", published: "quarantine"},
		{name: "several domains, all pass", in: DMARCInput{From: []string{"a@example.com, b@other.example"},
			DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com"), dmarcDKIM(Pass, "other.example")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true},
		{name: "unparseable list: every <addr-spec>", in: DMARCInput{From: []string{`Bank <x@none.example> <y@other.example>`}},
			result: Fail, domain: "other.example", org: "other.example", policy: "reject", published: "reject"},
		{name: "unparseable list: bare words", in: DMARCInput{From: []string{`x@other.example (unclosed`}},
			result: Fail, domain: "other.example", org: "other.example", policy: "reject", published: "reject"},
		{name: "too many From: domains", in: DMARCInput{From: []string{"a@a.example, b@b.example, c@c.example, d@d.example, e@e.example, " +
			"f@f.example, g@g.example, h@h.example, i@i.example"}},
			result: PermError, reason: "9 domains", lookups: []string{}},
		{name: "upper-case domains", in: DMARCInput{From: []string{"A@EXAMPLE.COM"}, SPF: dmarcSPF(Pass, "Bounce.Example.Com"),
			DKIM: []DKIMResult{dmarcDKIM(Pass, "EXAMPLE.com")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", spfAligned: true, dkimAligned: true},
		{name: "trailing dots", in: DMARCInput{From: []string{"a@example.com."}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.com.")}},
			result: Pass, domain: "example.com", org: "example.com", policy: "reject", published: "reject", dkimAligned: true,
			lookups: []string{"_dmarc.example.com."}},
		{name: "IDN U-label From, A-label d=", in: DMARCInput{From: []string{"a@BÜCHER.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "xn--bcher-kva.example")}},
			result: Pass, domain: "xn--bcher-kva.example", org: "xn--bcher-kva.example", policy: "reject", published: "reject", dkimAligned: true,
			lookups: []string{"_dmarc.xn--bcher-kva.example."}},
		{name: "IDN A-label From, U-label SPF domain", in: DMARCInput{From: []string{"a@xn--bcher-kva.example"}, SPF: dmarcSPF(Pass, "mail.bücher.example")},
			result: Pass, domain: "xn--bcher-kva.example", org: "xn--bcher-kva.example", policy: "reject", published: "reject", spfAligned: true},
		{name: "IDN look-alike does not align", in: DMARCInput{From: []string{"a@bücher.example"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "bucher.example")}},
			result: Fail, domain: "xn--bcher-kva.example", org: "xn--bcher-kva.example", policy: "reject", published: "reject"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &memDNS{txt: zone, fail: tc.fail}
			got := CheckDMARC(context.Background(), r, tc.in, tc.opts)
			if got.Result != tc.result || got.Domain != tc.domain || got.OrgDomain != tc.org ||
				got.Policy != tc.policy || got.Published != tc.published ||
				got.SPFAligned != tc.spfAligned || got.DKIMAligned != tc.dkimAligned {
				t.Errorf("got result=%s domain=%q org=%q policy=%q published=%q spf=%v dkim=%v (%s)\n"+
					"want result=%s domain=%q org=%q policy=%q published=%q spf=%v dkim=%v",
					got.Result, got.Domain, got.OrgDomain, got.Policy, got.Published, got.SPFAligned, got.DKIMAligned, got.Reason,
					tc.result, tc.domain, tc.org, tc.policy, tc.published, tc.spfAligned, tc.dkimAligned)
			}
			if got.Reason == "" || !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("reason %q, want it to hold %q", got.Reason, tc.reason)
			}
			if tc.lookups != nil {
				var names []string
				for _, l := range got.Lookups {
					names = append(names, l.Name)
				}
				if strings.Join(names, " ") != strings.Join(tc.lookups, " ") {
					t.Errorf("lookups %q, want %q", names, tc.lookups)
				}
			}
		})
	}
}

// TestDMARCSampling: pct= sampling depends on the key alone, and splits
// keys in the published proportion.
func TestDMARCSampling(t *testing.T) {
	r := &memDNS{txt: map[string][]string{"_dmarc.example.com": {"v=DMARC1; p=reject; pct=30"}}}
	in := DMARCInput{From: []string{"a@example.com"}}
	rejected := 0
	const n = 2000
	for i := 0; i < n; i++ {
		in.SampleKey = fmt.Sprintf("<msg%d@example.net>", i)
		first := CheckDMARC(context.Background(), r, in, DMARCOptions{})
		again := CheckDMARC(context.Background(), r, in, DMARCOptions{})
		if first.Policy != again.Policy {
			t.Fatalf("key %q: policy %q, then %q", in.SampleKey, first.Policy, again.Policy)
		}
		switch first.Policy {
		case "reject":
			rejected++
		case "quarantine":
		default:
			t.Fatalf("key %q: policy %q", in.SampleKey, first.Policy)
		}
	}
	if rejected < n*25/100 || rejected > n*35/100 {
		t.Errorf("pct=30: %d of %d keys sampled", rejected, n)
	}
}

func TestDMARCOrganizationalDomain(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"mail.example.com", "example.com"},
		{"a.b.c.Example.COM.", "example.com"},
		{"www.example.co.uk", "example.co.uk"},
		{"co.uk", "co.uk"},
		{"com", "com"},
		{"com.", "com"},
		{"", ""},
		{"mail.example.test", "example.test"},
		{"foo.github.io", "foo.github.io"}, // a private-section public suffix
		{"a.bücher.example", "xn--bcher-kva.example"},
		{"x.食狮.公司.cn", "xn--85x722f.xn--55qx5d.cn"},
	} {
		if got := OrganizationalDomain(tc.in); got != tc.want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDMARCRecordDiscoveryTag(t *testing.T) {
	for _, tc := range []struct {
		txt  string
		want bool
	}{
		{"v=DMARC1; p=none", true},
		{"v=DMARC1", true},
		{"v = DMARC1 ;p=none", true},
		{"V=DMARC1; p=none", true},
		{"v=DMARC1;", true},
		{"v=DMARC10; p=none", false},
		{"v=dmarc1; p=none", false},
		{" v=DMARC1; p=none", false},
		{"p=none; v=DMARC1", false},
		{"v=DMARC1 p=none", false},
		{"v=spf1 -all", false},
		{"", false},
	} {
		if got := isDMARCRecord(tc.txt); got != tc.want {
			t.Errorf("isDMARCRecord(%q) = %v, want %v", tc.txt, got, tc.want)
		}
	}
}

// FuzzDMARCRecord sends arbitrary text through record discovery and
// parsing as the record at _dmarc.example.com: the check never panics,
// its result is the one the record and the SPF result call for, and a
// policy comes with it exactly when a record applied.
func FuzzDMARCRecord(f *testing.F) {
	for _, s := range []string{
		"v=DMARC1; p=reject",
		"v=DMARC1; p=quarantine; sp=none; pct=50; adkim=s; aspf=r; fo=1:d:s; rf=afrf; ri=3600; rua=mailto:a@b.c!10m; ruf=mailto:x@y",
		"v=DMARC1",
		"v=DMARC1; p=bogus; rua=mailto:r@example.com",
		"v=DMARC1; p=reject; pct=-1; pct=+5",
		"V = DMARC1 ; P = Reject ;;; ; = ; x",
		"v=DMARC1; p=none; rua=%zz; ruf=,,,",
		"v=DMARC1;p=reject;\x00;\xff=\xfe",
	} {
		f.Add(s, "<id@example.com>", uint8(0))
	}
	f.Fuzz(func(t *testing.T, record, key string, which uint8) {
		r := &memDNS{txt: map[string][]string{"_dmarc.example.com": {record}}}
		// The SPF domain is the From: domain itself, aligned in both
		// modes, so the result follows from the SPF result alone.
		spf := []Result{Pass, Fail, TempError, Unknown}[which%4]
		in := DMARCInput{From: []string{"a@mail.example.com"}, SampleKey: key,
			SPF: dmarcSPF(spf, "mail.example.com"), DKIM: []DKIMResult{dmarcDKIM(Fail, "example.com")}}
		res := CheckDMARC(context.Background(), r, in, DMARCOptions{})

		want := None
		if isDMARCRecord(record) {
			if _, _, err := parseDMARCRecord(record); err != nil {
				want = PermError
			} else if want = spf; spf == Fail {
				want = Fail
			}
		}
		if res.Result != want {
			t.Fatalf("result %s, want %s, for %q (%s)", res.Result, want, record, res.Reason)
		}
		if res.SPFAligned != (want == Pass) || res.DKIMAligned {
			t.Fatalf("alignment %+v", res)
		}
		switch want {
		case None, PermError:
			if res.Policy != "" || res.Published != "" {
				t.Fatalf("%s with a policy: %+v", res.Result, res)
			}
		default:
			switch res.Published {
			case "none", "quarantine", "reject":
			default:
				t.Fatalf("published policy %q", res.Published)
			}
			if res.Policy != res.Published && res.Policy != string(lowerPolicy(dmarc.Policy(res.Published))) {
				t.Fatalf("policy %q from published %q", res.Policy, res.Published)
			}
		}
		if res.Reason == "" || res.Domain != "mail.example.com" || res.OrgDomain != "example.com" {
			t.Fatalf("result %+v", res)
		}
	})
}
