package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// arcSuiteCase is one validation case of the ValiMail suite.
type arcSuiteCase struct {
	name    string
	desc    string
	message string // CRLF line ends
	cv      string // expected: "none", "pass", "fail" or "" (no verdict)
	txt     map[string][]string
}

// arcLoadSuite reads testdata/arc/arc-draft-validation-tests.yml. It walks
// the YAML nodes rather than decoding into maps, because the file repeats
// four test names within one mapping (see SOURCES.md): every case is kept,
// the second of a name as NAME#2.
func arcLoadSuite(t testing.TB) []arcSuiteCase {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "arc", "arc-draft-validation-tests.yml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []arcSuiteCase
	seen := map[string]int{}
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
			t.Fatalf("line %d: scenario is not a mapping", doc.Line)
		}
		scen := arcYAMLMap(doc.Content[0])
		txt := map[string][]string{}
		if recs := scen["txt-records"]; recs != nil {
			for k, v := range arcYAMLMap(recs) {
				txt[strings.ToLower(k)] = []string{v.Value}
			}
		}
		tests := doc.Content[0]
		var testsNode *yaml.Node
		for i := 0; i+1 < len(tests.Content); i += 2 {
			if tests.Content[i].Value == "tests" {
				testsNode = tests.Content[i+1]
			}
		}
		if testsNode == nil {
			t.Fatalf("line %d: scenario without tests", doc.Line)
		}
		for i := 0; i+1 < len(testsNode.Content); i += 2 {
			name := testsNode.Content[i].Value
			seen[name]++
			if seen[name] > 1 {
				name = fmt.Sprintf("%s#%d", name, seen[name])
			}
			fields := arcYAMLMap(testsNode.Content[i+1])
			c := arcSuiteCase{name: name, txt: txt}
			if n := fields["description"]; n != nil {
				c.desc = n.Value
			}
			if n := fields["message"]; n != nil {
				c.message = strings.ReplaceAll(n.Value, "\n", "\r\n")
			}
			n := fields["cv"]
			if n == nil {
				t.Fatalf("%s: no cv", name)
			}
			c.cv = strings.ToLower(strings.TrimSpace(n.Value))
			out = append(out, c)
		}
	}
	return out
}

func arcYAMLMap(n *yaml.Node) map[string]*yaml.Node {
	m := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		m[n.Content[i].Value] = n.Content[i+1]
	}
	return m
}

// arcSuiteNow is the time the suite is run at: its t= values are 12345
// and 12346, far in the past of any date.
var arcSuiteNow = time.Date(2018, 11, 23, 18, 19, 40, 0, time.UTC)

// arcSuiteSkips are the suite's cases whose expectation moat does not
// follow, each with why; the test checks moat's own answer for them
// instead (arcSuiteOwn) and fails when a skip is no longer needed.
var arcSuiteSkips = map[string]string{
	"ams_fields_c_na":       arcSkipCDefault,
	"cv_fail_i1_as_cv_fail": arcSkipCVFail,
	"cv_fail_i2_as2_fail":   arcSkipCVFail,
	"cv_fail_i2_as1_fail":   arcSkipCVFail,
}

const arcSkipCVFail = "the suite expects no verdict (dkimpy's None: 'the chain is terminated') " +
	"for a chain with an ARC-Seal cv=fail; RFC 8617 §5.2 step 2 (newest seal cv=fail) and " +
	"step 3.3 (cv=fail anywhere) make the chain validation status fail"

const arcSkipCDefault = "the AMS has no c= and was signed relaxed/relaxed (dkimpy's default for ARC); " +
	"an AMS has the semantics of a DKIM-Signature but for v= and i= (RFC 8617 §4.1.2), whose c= " +
	"defaults to simple/simple (RFC 6376 §3.5), so the signature does not verify"

// arcSuiteOwn is moat's answer for the skipped cases.
var arcSuiteOwn = map[string]Result{
	"ams_fields_c_na":       Fail,
	"cv_fail_i1_as_cv_fail": Fail,
	"cv_fail_i2_as2_fail":   Fail,
	"cv_fail_i2_as1_fail":   Fail,
}

func TestARCSuite(t *testing.T) {
	cases := arcLoadSuite(t)
	if len(cases) != 175 {
		t.Fatalf("loaded %d cases, want the suite's 175", len(cases))
	}
	pass := 0
	var failures []string
	for _, c := range cases {
		res := verifyARCAt(context.Background(), &memDNS{txt: c.txt}, strings.NewReader(c.message), arcSuiteNow)
		got := string(res.Result)
		if got == c.cv {
			pass++
			if reason, ok := arcSuiteSkips[c.name]; ok {
				t.Errorf("%s: passes now, remove it from the skip list (%s)", c.name, reason)
			}
			continue
		}
		line := fmt.Sprintf("%s (%s): got %s, want %q; reason %q", c.name, c.desc, got, c.cv, res.Reason)
		failures = append(failures, line)
		if _, ok := arcSuiteSkips[c.name]; ok {
			if own := arcSuiteOwn[c.name]; res.Result != own {
				t.Errorf("%s: skipped, but got %s, not moat's own answer %s", c.name, got, own)
			}
			continue
		}
		t.Errorf("FAIL %s", line)
	}
	t.Logf("ARC suite: %d of %d validation cases pass", pass, len(cases))
	for _, f := range failures {
		name, _, _ := strings.Cut(f, " ")
		if reason, ok := arcSuiteSkips[name]; ok {
			t.Logf("  skipped %s\n    why: %s", f, reason)
		}
	}
}

// arcSuiteResult runs one suite case by name, for the tests below.
func arcSuiteCaseByName(t *testing.T, name string) arcSuiteCase {
	t.Helper()
	for _, c := range arcLoadSuite(t) {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no suite case %s", name)
	return arcSuiteCase{}
}

// The one-shot and the streaming verifier agree however the body is cut,
// and the details of a pass are filled in.
func TestARCStreamingOneByte(t *testing.T) {
	c := arcSuiteCaseByName(t, "cv_pass_i3_1")
	header, body := arcSplit(t, c.message)
	for _, chunk := range []int{1, 2, 3, 7, 64, len(body) + 1} {
		v := newARCVerifierAt(context.Background(), &memDNS{txt: c.txt}, header, arcSuiteNow)
		for b := []byte(body); len(b) > 0; {
			n := min(chunk, len(b))
			v.Write(b[:n])
			b = b[n:]
		}
		v.Close()
		res := v.Result(context.Background())
		if res.Result != Pass || res.Instances != 3 || res.OldestPass != 1 ||
			res.Sealer != "example.org" || len(res.Sealers) != 3 {
			t.Fatalf("chunk %d: %+v", chunk, res)
		}
		if len(res.Lookups) != 1 || res.Lookups[0].Name != "dummy._domainkey.example.org" {
			t.Errorf("chunk %d: lookups %+v, want the one key", chunk, res.Lookups)
		}
		if again := v.Result(context.Background()); again.Result != res.Result || again.Reason != res.Reason {
			t.Errorf("second Result differs: %+v", again)
		}
	}
}

// arcSplit cuts a CRLF message into header fields and body.
func arcSplit(t testing.TB, msg string) ([]string, string) {
	t.Helper()
	head, body, ok := strings.Cut(msg, "\r\n\r\n")
	if !ok {
		head, body = strings.TrimSuffix(msg, "\r\n"), ""
	}
	return arcFields(strings.SplitAfter(head+"\r\n", "\r\n")), body
}

// oldest-pass: cv_pass_i2_1_ams1_invalid changed a header field AMS(1)
// signed, so only AMS(2) still verifies.
func TestARCOldestPass(t *testing.T) {
	c := arcSuiteCaseByName(t, "cv_pass_i2_1_ams1_invalid")
	res := verifyARCAt(context.Background(), &memDNS{txt: c.txt}, strings.NewReader(c.message), arcSuiteNow)
	if res.Result != Pass || res.OldestPass != 2 || res.Instances != 2 {
		t.Fatalf("%+v, want pass with oldest-pass 2", res)
	}
}

// A key that cannot be had makes the chain fail, and says why: a
// temporary DNS failure differs from a missing key in the reason.
func TestARCKeyLookupFailure(t *testing.T) {
	c := arcSuiteCaseByName(t, "cv_pass_i1_1")
	res := verifyARCAt(context.Background(), &memDNS{err: errServFail}, strings.NewReader(c.message), arcSuiteNow)
	if res.Result != Fail || !strings.Contains(res.Reason, "temporary DNS failure") {
		t.Errorf("temporary failure: %+v", res)
	}
	res = verifyARCAt(context.Background(), &memDNS{}, strings.NewReader(c.message), arcSuiteNow)
	if res.Result != Fail || !strings.Contains(res.Reason, "no key at dummy._domainkey.example.org") {
		t.Errorf("no key: %+v", res)
	}
	if len(res.Lookups) != 1 || res.Lookups[0].Err != "not found" {
		t.Errorf("lookups %+v", res.Lookups)
	}
}

// Lookups start with the header, before any body, and end when the
// verifier's context is cancelled or when Result gives up.
func TestARCLookupsStartEarlyAndEnd(t *testing.T) {
	c := arcSuiteCaseByName(t, "ams_as_diff_s_d") // two keys
	header, body := arcSplit(t, c.message)

	t.Run("ctx cancel", func(t *testing.T) {
		r := &memDNS{gate: make(chan struct{}), asked: make(chan string, 8)}
		ctx, cancel := context.WithCancel(context.Background())
		v := newARCVerifierAt(ctx, r, header, arcSuiteNow)
		<-r.asked // a lookup runs though no body was written
		<-r.asked
		cancel()
		arcWaitZero(t, r)
		v.Close()
		if res := v.Result(context.Background()); res.Result != Fail {
			t.Errorf("%+v", res)
		}
	})
	t.Run("result deadline", func(t *testing.T) {
		r := &memDNS{gate: make(chan struct{}), asked: make(chan string, 8)}
		v := newARCVerifierAt(context.Background(), r, header, arcSuiteNow)
		<-r.asked
		<-r.asked
		v.Write([]byte(body))
		v.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		res := v.Result(ctx)
		if res.Result != Fail || !strings.Contains(res.Reason, "deadline") {
			t.Errorf("%+v", res)
		}
		arcWaitZero(t, r) // Result cancelled what was left
	})
}

func arcWaitZero(t *testing.T, r *memDNS) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.running() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups still running", r.running())
		}
		time.Sleep(time.Millisecond)
	}
}

// No ARC header fields: none, without a lookup; a broken structure: fail,
// without a lookup either.
func TestARCNoneAndStructure(t *testing.T) {
	r := &memDNS{gate: make(chan struct{}), asked: make(chan string, 1)}
	for _, tc := range []struct {
		name   string
		header []string
		want   Result
		reason string
	}{
		{"no arc", []string{"From: a@example.org\r\n", "Subject: x\r\n"}, None, ""},
		{"aar only", []string{"ARC-Authentication-Results: i=1; x.example; spf=pass\r\n"}, Fail, "no ARC-Message-Signature"},
		{"instance 51", []string{"ARC-Authentication-Results: i=51; x.example; spf=pass\r\n"}, Fail, "1 to 50"},
		{"gap", []string{
			"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=example.org; s=s; b=AAAA\r\n",
			"ARC-Message-Signature: i=2; a=rsa-sha256; d=example.org; s=s; h=from; bh=AAAA; b=AAAA\r\n",
			"ARC-Authentication-Results: i=2; x.example; spf=pass\r\n",
		}, Fail, "ARC set i=1 missing"},
		{"newest cv=fail", []string{
			"ARC-Seal: i=1; a=rsa-sha256; cv=fail; d=example.org; s=s; b=AAAA\r\n",
		}, Fail, "cv=fail"},
		{"malformed tags", []string{"ARC-Seal: i=1;; a=rsa-sha256\r\n"}, Fail, "malformed"},
	} {
		v := newARCVerifierAt(context.Background(), r, tc.header, arcSuiteNow)
		v.Write([]byte("body\r\n"))
		v.Close()
		res := v.Result(context.Background())
		if res.Result != tc.want || !strings.Contains(res.Reason, tc.reason) || len(res.Lookups) != 0 {
			t.Errorf("%s: %+v, want %s (%q)", tc.name, res, tc.want, tc.reason)
		}
	}
	// More than 50 sets.
	var h []string
	for i := 1; i <= 51; i++ {
		h = append(h,
			fmt.Sprintf("ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=example.org; s=s; b=AAAA\r\n", i),
			fmt.Sprintf("ARC-Message-Signature: i=%d; a=rsa-sha256; d=example.org; s=s; h=from; bh=AAAA; b=AAAA\r\n", i),
			fmt.Sprintf("ARC-Authentication-Results: i=%d; x.example; spf=pass\r\n", i))
	}
	v := newARCVerifierAt(context.Background(), r, h, arcSuiteNow)
	if res := v.Result(context.Background()); res.Result != Fail || len(res.Lookups) != 0 {
		t.Errorf("51 sets: %+v", res)
	}
	if r.running() != 0 {
		t.Errorf("lookups were made")
	}
}

// Body canonicalization, RFC 6376 §3.4.3 to §3.4.5, with the examples of
// §3.4.5 among them; each input is also fed one byte at a time.
func TestARCBodyCanon(t *testing.T) {
	for _, tc := range []struct {
		in      string
		simple  string
		relaxed string
	}{
		{"", "\r\n", ""},
		{"\r\n", "\r\n", ""},
		{"\r\n\r\n\r\n", "\r\n", ""},
		{"a", "a\r\n", "a\r\n"},
		{"a\r\n", "a\r\n", "a\r\n"},
		{"a\r\n\r\n\r\n", "a\r\n", "a\r\n"},
		{" C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"}, // §3.4.5
		{"a \t\r\n \t\r\n", "a \t\r\n \t\r\n", "a\r\n"},
		{"a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
		{"a\nb\r", "a\nb\r\r\n", "a\nb\r\r\n"}, // bare LF and CR are bytes
		{"a\r\r\n", "a\r\r\n", "a\r\r\n"},
		{"  x  ", "  x  \r\n", " x\r\n"},
	} {
		for _, c := range []arcCanon{arcSimple, arcRelaxed} {
			want := tc.simple
			if c == arcRelaxed {
				want = tc.relaxed
			}
			for _, step := range []int{len(tc.in) + 1, 1} {
				var got bytes.Buffer
				bc := newARCBodyCanon(c, arcBufHash{&got}, -1)
				for s := tc.in; len(s) > 0; {
					n := min(step, len(s))
					bc.Write([]byte(s[:n]))
					s = s[n:]
				}
				n := bc.Close()
				if got.String() != want || n != int64(len(want)) {
					t.Errorf("%s %q step %d: %q (%d), want %q", c, tc.in, step, got.String(), n, want)
				}
			}
		}
	}
	// l= cuts the canonical body but counts all of it.
	var got bytes.Buffer
	bc := newARCBodyCanon(arcRelaxed, arcBufHash{&got}, 3)
	bc.Write([]byte("ab  c\r\n\r\n"))
	if n := bc.Close(); got.String() != "ab " || n != 6 {
		t.Errorf("l=3: %q %d", got.String(), n)
	}
}

// arcBufHash is a hash.Hash that keeps what it is given.
type arcBufHash struct{ b *bytes.Buffer }

func (h arcBufHash) Write(p []byte) (int, error) { return h.b.Write(p) }
func (h arcBufHash) Sum(b []byte) []byte         { return append(b, h.b.Bytes()...) }
func (h arcBufHash) Reset()                      { h.b.Reset() }
func (h arcBufHash) Size() int                   { return 0 }
func (h arcBufHash) BlockSize() int              { return 1 }

func TestARCHeaderCanon(t *testing.T) {
	for _, tc := range []struct{ in, relaxed string }{
		{"A: X\r\n", "a:X\r\n"}, // RFC 6376 §3.4.5
		{"B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n"},
		{"Subject:\r\n", "subject:\r\n"},
		{"X-Ä: v\r\n", "x-Ä:v\r\n"},
		{"Name:  a \t b\r\n  c \r\n", "name:a b c\r\n"},
		{"NoColon\r\n", "nocolon:\r\n"},
	} {
		if got := arcCanonHeader(tc.in, arcRelaxed); got != tc.relaxed {
			t.Errorf("relaxed %q: %q, want %q", tc.in, got, tc.relaxed)
		}
		if got := arcCanonHeader(tc.in, arcSimple); got != tc.in {
			t.Errorf("simple %q: %q", tc.in, got)
		}
	}
}

func TestARCStripB(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ARC-Seal: i=1; b=abc; d=x\r\n", "ARC-Seal: i=1; b=; d=x"},
		{"ARC-Seal: i=1; bh=q; b = a\r\n bc \r\n", "ARC-Seal: i=1; bh=q; b ="},
		{"ARC-Seal: b=abc;bh=x\r\n", "ARC-Seal: b=;bh=x"},
		{"ARC-Seal: i=1; bh=x\r\n", "ARC-Seal: i=1; bh=x"},
	} {
		if got := arcStripB(tc.in); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestARCParseCanon(t *testing.T) {
	for _, tc := range []struct {
		in   string
		h, b arcCanon
		ok   bool
	}{
		{"relaxed/relaxed", arcRelaxed, arcRelaxed, true},
		{"relaxed", arcRelaxed, arcSimple, true},
		{"simple/relaxed", arcSimple, arcRelaxed, true},
		{"Relaxed/Simple", arcRelaxed, arcSimple, true},
		{"", 0, 0, false},
		{"relaxed/", 0, 0, false},
		{"pancake/waffle", 0, 0, false},
	} {
		h, b, err := arcParseCanon(tc.in)
		if (err == nil) != tc.ok || tc.ok && (h != tc.h || b != tc.b) {
			t.Errorf("%q: %v %v %v", tc.in, h, b, err)
		}
	}
}

func TestARCInstances(t *testing.T) {
	for _, tc := range []struct {
		aar string
		n   int
	}{
		{"i=1; example.org; spf=pass", 1},
		{" i = 50 ;x", 50},
		{"\r\n i=07; x", 7},
		{"i=0; x", 0},
		{"i=51; x", 0},
		{"i=100; x", 0},
		{"i=1 x", 0},
		{"x; i=1;", 0},
		{"i=; x", 0},
		{"i=a; x", 0},
		{"I=1; x", 0},
	} {
		n, err := arcAARInstance(tc.aar)
		if n != tc.n || (err == nil) != (tc.n != 0) {
			t.Errorf("%q: %d %v", tc.aar, n, err)
		}
	}
}

// Key records (RFC 6376 §3.6.1), with the RSA and ed25519 keys of RFC 8463
// appendix A.2.
func TestARCParseKey(t *testing.T) {
	const rsa1024 = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
	const rsa512 = "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAIWmlgix/84GJ+dfgjm7LTc9EPdfkftlgiPpCq4/kbDAZmU0VvYKDljjleJ1dfvS+CGy9U/kk1tG3EeEvb82xAcCAwEAAQ=="
	const ed = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" // RFC 8463 A.2
	for _, tc := range []struct {
		rec  string
		kind string // "rsa", "ed25519", or the error's text
	}{
		{"v=DKIM1; k=rsa; p=" + rsa1024, "rsa"},
		{"p=" + rsa1024, "rsa"},
		{"v=DKIM1; p=" + rsa1024[:40] + " \r\n\t" + rsa1024[40:], "rsa"},
		{"v=DKIM1; k=ed25519; p=" + ed, "ed25519"},
		{"v=DKIM1; h=sha1:sha256; s=email; t=y; n=notes; x=unknown; p=" + rsa1024, "rsa"},
		{"s=*; p=" + rsa1024, "rsa"},
		{"k=rsa; v=DKIM1; p=" + rsa1024, "v= is not DKIM1"},
		{"v=DKIM2; p=" + rsa1024, "v= is not DKIM1"},
		{"h=sha1; p=" + rsa1024, "h= does not allow sha256"},
		{"s=tlsrpt; p=" + rsa1024, "s= does not include email"},
		{"k=dsa; p=" + rsa1024, "unknown key type"},
		{"v=DKIM1; p=", "revoked"},
		{"v=DKIM1; k=rsa", "not a valid public key"},
		{"p=!!!!", "not a valid public key"},
		{"k=ed25519; p=" + rsa1024, "not a valid public key"},
		{"k=rsa; p=" + ed, "not a valid public key"},
		{"p=" + rsa512, "shorter than 1024"},
		{"v=DKIM1; k=rsa; omgwhatsgoingon", "malformed"},
	} {
		k, err := arcParseKey(tc.rec)
		got := ""
		switch {
		case err != nil:
			got = err.Error()
		case k.rsa != nil:
			got = "rsa"
		case k.ed != nil:
			got = "ed25519"
		}
		if !strings.Contains(got, tc.kind) {
			t.Errorf("%.50q: %q, want %q", tc.rec, got, tc.kind)
		}
	}
}

// RFC 8463 appendix A: a message signed with ed25519-sha256 and with
// rsa-sha256, relaxed/relaxed. The signatures are DKIM-Signatures, but an
// AMS is hashed the same way with its own name, so the vector checks the
// relaxed canonicalization, the b= stripping, the header selection and
// the ed25519 verification against an independent signer.
func TestARCRFC8463Vector(t *testing.T) {
	const msg = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n" +
		" d=football.example.com; i=@football.example.com;\r\n" +
		" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n" +
		" subject : date : message-id : from : subject : date;\r\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" +
		" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n" +
		" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n" +
		"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n" +
		" d=football.example.com; i=@football.example.com;\r\n" +
		" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n" +
		" date : message-id : from : subject : date;\r\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" +
		" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n" +
		" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n" +
		" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n" +
		"From: Joe SixPack <joe@football.example.com>\r\n" +
		"To: Suzie Q <suzie@shopping.example.net>\r\n" +
		"Subject: Is dinner ready?\r\n" +
		"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n" +
		"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n" +
		"\r\n" +
		"Hi.\r\n" +
		"\r\n" +
		"We lost the game.  Are you hungry yet?\r\n" +
		"\r\n" +
		"Joe.\r\n"
	keys := map[string]string{
		"brisbane": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		"test": "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3id" +
			"Y6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lx" +
			"j+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
	}
	header, body := arcSplit(t, msg)
	byName := map[string][]string{}
	for _, f := range header {
		byName[arcFieldName(f)] = append(byName[arcFieldName(f)], f)
	}
	for i, f := range header[:2] {
		s := &arcSig{field: f}
		var err error
		if s.tags, err = ParseTags(arcFieldValue(f)); err != nil {
			t.Fatal(err)
		}
		if err := s.parseAMS(arcSuiteNow.AddDate(10, 0, 0)); err != nil {
			t.Fatal(err)
		}
		bc := newARCBodyCanon(s.bcanon, sha256.New(), s.limit)
		bc.Write([]byte(body))
		bc.Close()
		if got := base64.StdEncoding.EncodeToString(bc.h.Sum(nil)); got != base64.StdEncoding.EncodeToString(s.bh) {
			t.Errorf("signature %d: body hash %s", i, got)
		}
		k, err := arcParseKey(keys[s.sel])
		if err != nil {
			t.Fatal(err)
		}
		if err := k.verify(s.alg, arcHashAMS(s, byName), s.sig); err != nil {
			t.Errorf("signature %d (%s): %v", i, s.alg, err)
		}
		// One changed byte in a signed field breaks it.
		bad := map[string][]string{}
		for n, fs := range byName {
			bad[n] = fs
		}
		bad["subject"] = []string{"Subject: Is dinner ready!\r\n"}
		if err := k.verify(s.alg, arcHashAMS(s, bad), s.sig); err == nil {
			t.Errorf("signature %d verifies over a changed Subject", i)
		}
	}
}

// t= in the future beyond a day is refused (RFC 6376 §3.5 allows it);
// the clock is the verifier's.
func TestARCFutureTimestamp(t *testing.T) {
	c := arcSuiteCaseByName(t, "cv_pass_i1_1")
	early := time.Unix(12345, 0).Add(-25 * time.Hour)
	res := verifyARCAt(context.Background(), &memDNS{txt: c.txt}, strings.NewReader(c.message), early)
	if res.Result != Fail || !strings.Contains(res.Reason, "future") {
		t.Errorf("%+v", res)
	}
	res = verifyARCAt(context.Background(), &memDNS{txt: c.txt}, strings.NewReader(c.message), time.Unix(12345, 0).Add(-23*time.Hour))
	if res.Result != Pass {
		t.Errorf("%+v", res)
	}
}

// VerifyARC takes LF line ends as CRLF, and a message with CRLF as is.
func TestARCLineEnds(t *testing.T) {
	c := arcSuiteCaseByName(t, "cv_pass_i2_2")
	lf := strings.ReplaceAll(c.message, "\r\n", "\n")
	for name, m := range map[string]string{"crlf": c.message, "lf": lf} {
		res := verifyARCAt(context.Background(), &memDNS{txt: c.txt}, strings.NewReader(m), arcSuiteNow)
		if res.Result != Pass {
			t.Errorf("%s: %+v", name, res)
		}
	}
	// A field of 200,000 continuation lines is read in linear time (the
	// fuzzer found the quadratic joining of an earlier version).
	folded := "X-Folded: a" + strings.Repeat("\r\n b", 200000) + "\r\n\r\nbody\r\n"
	start := time.Now()
	if res := VerifyARC(context.Background(), &memDNS{}, strings.NewReader(folded)); res.Result != None {
		t.Errorf("folded: %+v", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("folded header took %v", d)
	}
	// A header larger than the bound fails without reading on.
	huge := "X-Big: " + strings.Repeat("a", arcMaxHeader) + "\r\n\r\n"
	if res := VerifyARC(context.Background(), &memDNS{}, strings.NewReader(huge)); res.Result != Fail {
		t.Errorf("huge header: %+v", res)
	}
}

// FuzzARCHeaders feeds whole messages to VerifyARC with the suite's keys
// in memory. Properties: no panic and no hang; the result is none, pass
// or fail; none exactly when no ARC header field is present; a pass has
// its instances, sealers and oldest-pass consistent; and the verdict does
// not depend on how the body is cut into writes.
func FuzzARCHeaders(f *testing.F) {
	cases := arcLoadSuite(f)
	txt := map[string][]string{}
	for _, c := range cases {
		for k, v := range c.txt {
			txt[k] = v
		}
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	for _, c := range cases {
		f.Add([]byte(c.message))
	}
	r := &memDNS{txt: txt}
	f.Fuzz(func(t *testing.T, msg []byte) {
		ctx := context.Background()
		start := time.Now()
		res := verifyARCAt(ctx, r, bytes.NewReader(msg), arcSuiteNow)
		// A generous wall-clock bound: far above any linear work on a
		// loaded machine, far below a quadratic blow-up's.
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("%d bytes took %v", len(msg), d)
		}
		switch res.Result {
		case None, Pass, Fail:
		default:
			t.Fatalf("result %q", res.Result)
		}
		header, body := arcSplitBytes(msg)
		hasARC, size := false, 0
		for _, field := range header {
			size += len(field)
			switch arcFieldName(field) {
			case arcNameAAR, arcNameAMS, arcNameAS:
				hasARC = true
			}
		}
		if size < arcMaxHeader && hasARC != (res.Result != None) {
			t.Fatalf("ARC fields %v, result %+v", hasARC, res)
		}
		if res.Result == Pass {
			if res.Instances < 1 || res.Instances > arcMaxSets || len(res.Sealers) != res.Instances ||
				res.Sealer != res.Sealers[len(res.Sealers)-1] || res.OldestPass < 1 || res.OldestPass > res.Instances {
				t.Fatalf("inconsistent pass %+v", res)
			}
		}
		// The streaming verifier, one byte per write.
		v := newARCVerifierAt(ctx, r, header, arcSuiteNow)
		for i := range body {
			v.Write(body[i : i+1])
		}
		v.Close()
		if one := v.Result(ctx); one.Result != res.Result || one.Reason != res.Reason || one.OldestPass != res.OldestPass {
			t.Fatalf("one byte at a time: %+v, whole: %+v", one, res)
		}
	})
}

// arcSplitBytes splits as verifyARCAt does: LF taken as CRLF, header up to
// the first empty line.
func arcSplitBytes(msg []byte) ([]string, []byte) {
	var crlf bytes.Buffer
	(&arcCRLFWriter{w: &crlf}).Write(msg)
	m := crlf.String()
	var lines []string
	for len(m) > 0 {
		line, rest, ok := strings.Cut(m, "\r\n")
		if !ok {
			line, rest = m, ""
		}
		m = rest
		if line == "" {
			break
		}
		lines = append(lines, line+"\r\n")
	}
	return arcFields(lines), []byte(m)
}

// arcFields joins header lines into fields: a line that starts with WSP
// continues the field before it.
func arcFields(lines []string) []string {
	var fields []string
	start := 0
	for i := 1; i <= len(lines); i++ {
		if i == len(lines) || lines[i] != "" && lines[i][0] != ' ' && lines[i][0] != '\t' {
			if f := strings.Join(lines[start:i], ""); f != "" {
				fields = append(fields, f)
			}
			start = i
		}
	}
	return fields
}
