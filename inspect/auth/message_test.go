package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// readDKIMKeys reads a testdata key file: one record a line, "name record".
func readDKIMKeys(t testing.TB, file string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "dkim", file))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rec, ok := strings.Cut(sc.Text(), " ")
		if ok {
			keys[name] = append(keys[name], rec)
		}
	}
	return keys
}

func readDKIMMessage(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "dkim", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkNoMessagePanics fails the test if a verifier goroutine panicked (and
// was recovered) while it ran.
func checkNoMessagePanics(t testing.TB) {
	t.Helper()
	before := messagePanics.Load()
	t.Cleanup(func() {
		if n := messagePanics.Load() - before; n > 0 {
			t.Errorf("%d panics recovered in the message verifiers", n)
		}
	})
}

// dkimVerifyMessage writes msg to a Message in one piece and returns the
// result.
func dkimVerifyMessage(t testing.TB, r Resolver, opts MessageOptions, msg []byte) MessageResult {
	t.Helper()
	return dkimVerifyChunks(t, r, opts, [][]byte{msg})
}

func dkimVerifyChunks(t testing.TB, r Resolver, opts MessageOptions, chunks [][]byte) MessageResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := NewMessage(ctx, r, opts)
	for _, c := range chunks {
		if n, err := m.Write(c); n != len(c) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(c))
		}
	}
	m.Close()
	return m.Wait(ctx)
}

// dkimWant is the expected outcome of one signature.
type dkimWant struct {
	result    Result
	domain    string
	selector  string
	algorithm string
	reason    string // a substring of the reason
}

func checkDKIM(t testing.TB, got []DKIMResult, wants ...dkimWant) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%d DKIM results, want %d: %+v", len(got), len(wants), got)
	}
	for i, w := range wants {
		g := got[i]
		if g.Result != w.result || (w.domain != "" && g.Domain != w.domain) ||
			(w.selector != "" && g.Selector != w.selector) || (w.algorithm != "" && g.Algorithm != w.algorithm) ||
			!strings.Contains(g.Reason, w.reason) {
			t.Errorf("DKIM[%d] = %s d=%s s=%s a=%s (%s); want %s d=%s s=%s a=%s (%s)", i,
				g.Result, g.Domain, g.Selector, g.Algorithm, g.Reason,
				w.result, w.domain, w.selector, w.algorithm, w.reason)
		}
	}
}

// TestDKIMRFC8463 verifies the example of RFC 8463 Appendix A.3, signed
// twice (ed25519-sha256 with selector brisbane, rsa-sha256 with
// selector test), with the keys of Appendix A.2.
func TestDKIMRFC8463(t *testing.T) {
	checkNoMessagePanics(t)
	r := &memDNS{txt: readDKIMKeys(t, "rfc8463.keys")}
	res := dkimVerifyMessage(t, r, MessageOptions{}, readDKIMMessage(t, "rfc8463.eml"))
	checkDKIM(t, res.DKIM,
		dkimWant{result: Pass, domain: "football.example.com", selector: "brisbane", algorithm: "ed25519-sha256"},
		dkimWant{result: Pass, domain: "football.example.com", selector: "test", algorithm: "rsa-sha256"})
	for i, d := range res.DKIM {
		if d.Identifier != "@football.example.com" {
			t.Errorf("DKIM[%d].Identifier = %q", i, d.Identifier)
		}
		if len(d.Lookups) != 1 || d.Lookups[0].Type != "TXT" || d.Lookups[0].Err != "" ||
			d.Lookups[0].Name != d.Selector+"._domainkey.football.example.com" {
			t.Errorf("DKIM[%d].Lookups = %+v", i, d.Lookups)
		}
	}
	if len(res.From) != 1 || res.From[0] != "Joe SixPack <joe@football.example.com>" {
		t.Errorf("From = %q", res.From)
	}
	if res.ARC.Result != None {
		t.Errorf("ARC = %+v", res.ARC)
	}
}

// TestDKIMDkimpyVectors verifies dkimpy's signing of the same message
// with the same keys, c=simple/simple, stored with bare LF line ends
// (as dkimpy's test data is): the verifier takes them as CRLF.
func TestDKIMDkimpyVectors(t *testing.T) {
	checkNoMessagePanics(t)
	r := &memDNS{txt: readDKIMKeys(t, "rfc8463.keys")}
	msg := readDKIMMessage(t, "dkimpy-rfc6376.signed.msg")
	if bytes.Contains(msg, []byte("\r")) {
		t.Fatal("expected bare LF line ends in the dkimpy vector")
	}
	for _, m := range [][]byte{msg, bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))} {
		res := dkimVerifyMessage(t, r, MessageOptions{}, m)
		checkDKIM(t, res.DKIM,
			dkimWant{result: Pass, selector: "brisbane", algorithm: "ed25519-sha256"},
			dkimWant{result: Pass, selector: "test", algorithm: "rsa-sha256"})
	}
}

// TestDKIMRFC6376 runs the example of RFC 6376 Appendix A.2 (its body
// and header as go-msgauth's tests carry them), with the key of
// Appendix C.
//
// The example is known not to work as printed: Appendix C publishes the
// key at brisbane._domainkey.example.org, while the signature says
// d=example.com, so a verifier that asks for the name the signature
// gives finds nothing. That is what moat must report: permerror, no key
// (RFC 6376 §6.1.2). Served at the name the signature asks for, the same
// key verifies the signature: that checks the RSA path and simple/simple
// canonicalization on an RFC text, with a key of 1024 bits, the least
// RFC 8301 §3.2 allows.
func TestDKIMRFC6376(t *testing.T) {
	checkNoMessagePanics(t)
	keys := readDKIMKeys(t, "rfc6376.keys")
	msg := readDKIMMessage(t, "rfc6376.eml")

	res := dkimVerifyMessage(t, &memDNS{txt: keys}, MessageOptions{}, msg)
	checkDKIM(t, res.DKIM, dkimWant{result: PermError, domain: "example.com", selector: "brisbane", algorithm: "rsa-sha256", reason: "no key"})
	if l := res.DKIM[0].Lookups; len(l) != 1 || l[0].Name != "brisbane._domainkey.example.com" || l[0].Err != "not found" {
		t.Errorf("Lookups = %+v", l)
	}
	if res.DKIM[0].Identifier != "joe@football.example.com" {
		t.Errorf("Identifier = %q", res.DKIM[0].Identifier)
	}

	keys["brisbane._domainkey.example.com"] = keys["brisbane._domainkey.example.org"]
	res = dkimVerifyMessage(t, &memDNS{txt: keys}, MessageOptions{}, msg)
	checkDKIM(t, res.DKIM, dkimWant{result: Pass, domain: "example.com", selector: "brisbane", algorithm: "rsa-sha256"})

	// The body as RFC 6376 Appendix A.1 has it differs from the RFC 8463
	// one by a space: the body hash must then fail.
	tampered := bytes.Replace(msg, []byte("game. Are"), []byte("game.  Are"), 1)
	res = dkimVerifyMessage(t, &memDNS{txt: keys}, MessageOptions{}, tampered)
	checkDKIM(t, res.DKIM, dkimWant{result: Fail, reason: "body hash"})
}

// dkimTestKeys are keys made once per test binary, for messages signed by
// go-msgauth in the tests.
var dkimTestKeys struct {
	once   sync.Once
	ed     ed25519.PrivateKey
	edTXT  string
	rsa    *rsa.PrivateKey
	rsaTXT string
}

func loadDKIMTestKeys(t testing.TB) {
	t.Helper()
	dkimTestKeys.once.Do(func() {
		seed := sha256.Sum256([]byte("moat dkim test key"))
		dkimTestKeys.ed = ed25519.NewKeyFromSeed(seed[:])
		dkimTestKeys.edTXT = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(dkimTestKeys.ed.Public().(ed25519.PublicKey))
		// A fixed key: generating one is slow, very slow in a fuzzing
		// build's instrumented code.
		b, err := os.ReadFile(filepath.Join("testdata", "dkim", "test-rsa.pem"))
		if err != nil {
			panic(err)
		}
		block, _ := pem.Decode(b)
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			panic(err)
		}
		k := key.(*rsa.PrivateKey)
		dkimTestKeys.rsa = k
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		dkimTestKeys.rsaTXT = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	})
}

// goSign signs msg with go-msgauth: o's Domain defaults to example.test
// and its Signer to the ed25519 test key.
func goSign(t testing.TB, msg []byte, o dkim.SignOptions) []byte {
	t.Helper()
	loadDKIMTestKeys(t)
	if o.Domain == "" {
		o.Domain = "example.test"
	}
	if o.Selector == "" {
		o.Selector = "ed"
	}
	if o.Signer == nil {
		o.Signer = dkimTestKeys.ed
	}
	var b bytes.Buffer
	if err := dkim.Sign(&b, bytes.NewReader(msg), &o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// dkimTestResolver serves the test keys: ed._domainkey.example.test and
// rsa._domainkey.example.test.
func dkimTestResolver(t testing.TB) *memDNS {
	t.Helper()
	loadDKIMTestKeys(t)
	return &memDNS{txt: map[string][]string{
		"ed._domainkey.example.test":  {dkimTestKeys.edTXT},
		"rsa._domainkey.example.test": {dkimTestKeys.rsaTXT},
	}}
}

// dkimPlainMessage is an unsigned message whose body is body.
func dkimPlainMessage(body string) []byte {
	return []byte("From: Alice <alice@example.test>\r\n" +
		"To: Bob <bob@example.net>\r\n" +
		"Subject: lunch\r\n" +
		"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n" +
		"Message-ID: <1@example.test>\r\n" +
		"\r\n" + body)
}

// dkimBigBody is n bytes of text lines.
func dkimBigBody(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d of a large message, to fill the body\r\n", i)
	}
	return b.String()[:n]
}

func TestDKIMMessageTooManySignatures(t *testing.T) {
	checkNoMessagePanics(t)
	msg := dkimPlainMessage("Hello.\r\n")
	for i := 0; i < 7; i++ {
		msg = goSign(t, msg, dkim.SignOptions{HeaderKeys: []string{"From", "Subject"}})
	}
	r := dkimTestResolver(t)
	res := dkimVerifyMessage(t, r, MessageOptions{}, msg)
	var wants []dkimWant
	for i := 0; i < 7; i++ {
		w := dkimWant{result: Pass, domain: "example.test", selector: "ed", algorithm: "ed25519-sha256"}
		if i >= 5 {
			w.result, w.reason = Policy, "too many signatures"
		}
		wants = append(wants, w)
	}
	checkDKIM(t, res.DKIM, wants...)
	if n := r.lookups(); n != 1 {
		t.Errorf("%d key lookups for one key, want 1", n)
	}
	for i, d := range res.DKIM {
		if (i < 5) != (len(d.Lookups) == 1) {
			t.Errorf("DKIM[%d].Lookups = %+v", i, d.Lookups)
		}
	}

	res = dkimVerifyMessage(t, dkimTestResolver(t), MessageOptions{MaxSignatures: 1}, msg)
	if res.DKIM[0].Result != Pass || res.DKIM[1].Result != Policy || len(res.DKIM) != 7 {
		t.Errorf("MaxSignatures 1: %+v", res.DKIM)
	}
}

// TestDKIMMessageShapes feeds messages of odd shapes: none may hang, panic,
// or lose a signature's result.
func TestDKIMMessageShapes(t *testing.T) {
	checkNoMessagePanics(t)
	signed := goSign(t, dkimPlainMessage("Hi.\r\n\r\nBye.\r\n"), dkim.SignOptions{
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed})
	simple := goSign(t, dkimPlainMessage("Hi.\r\n\r\nBye.\r\n"), dkim.SignOptions{})
	headerOnly := goSign(t, dkimPlainMessage(""), dkim.SignOptions{})
	lf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }
	rng := rand.New(rand.NewSource(1))
	garbage := make([]byte, 4096)
	rng.Read(garbage)

	for _, tc := range []struct {
		name        string
		msg         []byte
		want        []Result
		headerBytes int
	}{
		{"signed", signed, []Result{Pass}, bytes.Index(signed, []byte("\r\n\r\n")) + 4},
		{"bare LF relaxed", lf(signed), []Result{Pass}, bytes.Index(lf(signed), []byte("\n\n")) + 2},
		// go-msgauth fixes bare LF to CRLF in both canonicalizations.
		{"bare LF simple", lf(simple), []Result{Pass}, -1},
		{"mixed line ends", bytes.Replace(signed, []byte("Hi.\r\n"), []byte("Hi.\n"), 1), []Result{Pass}, -1},
		{"header and empty line, no body", headerOnly, []Result{Pass}, len(headerOnly)},
		{"header only, no empty line", headerOnly[:len(headerOnly)-2], []Result{Pass}, len(headerOnly) - 2},
		{"header only, last line without CRLF", headerOnly[:len(headerOnly)-4], []Result{Pass}, len(headerOnly) - 4},
		{"cut inside the signature", signed[:40], []Result{PermError}, 40},
		{"empty", nil, nil, 0},
		{"only an empty line", []byte("\r\n"), nil, 2},
		{"body without header", []byte("\r\nDKIM-Signature: v=1\r\n"), nil, 2},
		{"garbage", garbage, nil, -1},
		{"no colon", []byte("DKIM-Signature\r\n\r\nbody\r\n"), []Result{PermError}, -1},
		{"signature first line folded", append([]byte(" DKIM-Signature: x\r\n"), signed...), []Result{PermError, Pass}, -1},
		{"lone CR line does not end the header", []byte("A: b\r\n\r\r\nDKIM-Signature: v=1\r\n\r\n"), []Result{PermError}, -1},
		{"NUL and high bytes", []byte("From: \x00\xff\r\nDKIM-Signature: v=1; a=\xff\r\n\r\n"), []Result{PermError}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunks := range [][][]byte{{tc.msg}, dkimOneByteChunks(tc.msg)} {
				res := dkimVerifyChunks(t, dkimTestResolver(t), MessageOptions{}, chunks)
				var got []Result
				for _, d := range res.DKIM {
					got = append(got, d.Result)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("results %v, want %v: %+v", got, tc.want, res.DKIM)
				}
				if tc.headerBytes >= 0 && res.HeaderBytes != int64(tc.headerBytes) {
					t.Errorf("HeaderBytes = %d, want %d", res.HeaderBytes, tc.headerBytes)
				}
				if res.HeaderBytes > int64(len(tc.msg)) {
					t.Errorf("HeaderBytes = %d beyond the message (%d)", res.HeaderBytes, len(tc.msg))
				}
			}
		})
	}
}

func dkimOneByteChunks(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// TestDKIMMessageHeaderFields checks From and the Authentication-Results
// spans, with CRLF and bare LF line ends.
func TestDKIMMessageHeaderFields(t *testing.T) {
	checkNoMessagePanics(t)
	msg := "Received: from x\r\n" +
		"Authentication-Results: mx.example.net;\r\n" +
		"\tspf=pass smtp.mailfrom=example.test\r\n" +
		"From: Alice\r\n <alice@example.test>\r\n" +
		"authentication-results : forged.example; dkim=pass\r\n" +
		"X-Authentication-Results: not this one\r\n" +
		"From: second@example.test\r\n" +
		"\r\n" +
		"Authentication-Results: in the body\r\n"
	for _, m := range []string{msg, strings.ReplaceAll(msg, "\r\n", "\n")} {
		res := dkimVerifyMessage(t, dkimTestResolver(t), MessageOptions{}, []byte(m))
		if want := []string{"Alice <alice@example.test>", "second@example.test"}; !reflect.DeepEqual(res.From, want) {
			t.Errorf("From = %q, want %q", res.From, want)
		}
		wantFields := []string{
			"Authentication-Results: mx.example.net;\r\n\tspf=pass smtp.mailfrom=example.test\r\n",
			"authentication-results : forged.example; dkim=pass\r\n",
		}
		wantValues := []string{"mx.example.net;\tspf=pass smtp.mailfrom=example.test", "forged.example; dkim=pass"}
		if len(res.AuthResults) != len(wantFields) {
			t.Fatalf("AuthResults = %+v", res.AuthResults)
		}
		for i, s := range res.AuthResults {
			field := m[s.Start:s.End]
			if strings.ReplaceAll(field, "\r\n", "\n") != strings.ReplaceAll(wantFields[i], "\r\n", "\n") {
				t.Errorf("AuthResults[%d] spans %q, want %q", i, field, wantFields[i])
			}
			if s.Value != wantValues[i] {
				t.Errorf("AuthResults[%d].Value = %q, want %q", i, s.Value, wantValues[i])
			}
		}
		if want := strings.Index(m, "Authentication-Results: in"); res.HeaderBytes != int64(want) {
			t.Errorf("HeaderBytes = %d, want %d", res.HeaderBytes, want)
		}
	}
}

// TestDKIMMessageHeaderTooLong: past MaxHeaderBytes nothing is verified, the
// signatures seen are permerror, and the length is still counted.
func TestDKIMMessageHeaderTooLong(t *testing.T) {
	checkNoMessagePanics(t)
	signed := goSign(t, dkimPlainMessage("Hi.\r\n"), dkim.SignOptions{})
	filler := "X-Filler: " + strings.Repeat("x", 100) + "\r\n"
	msg := append(append([]byte(nil), signed[:bytes.Index(signed, []byte("\r\n\r\n"))+2]...), strings.Repeat(filler, 20)...)
	hdrLen := len(msg) + 2
	msg = append(msg, "\r\nHi.\r\n"...)
	for _, chunks := range [][][]byte{{msg}, dkimOneByteChunks(msg)} {
		r := dkimTestResolver(t)
		res := dkimVerifyChunks(t, r, MessageOptions{MaxHeaderBytes: 1000}, chunks)
		checkDKIM(t, res.DKIM, dkimWant{result: PermError, selector: "ed", reason: "header section longer than 1000 bytes"})
		if res.ARC.Result != None || !strings.Contains(res.ARC.Reason, "longer than 1000") {
			t.Errorf("ARC = %+v", res.ARC)
		}
		if res.HeaderBytes != int64(hdrLen) {
			t.Errorf("HeaderBytes = %d, want %d", res.HeaderBytes, hdrLen)
		}
		if len(res.From) != 1 {
			t.Errorf("From = %q", res.From)
		}
		if r.lookups() != 0 {
			t.Errorf("%d lookups for a header not verified", r.lookups())
		}
	}
	// Within the bound, the same message verifies.
	res := dkimVerifyMessage(t, dkimTestResolver(t), MessageOptions{MaxHeaderBytes: hdrLen}, msg)
	checkDKIM(t, res.DKIM, dkimWant{result: Pass})
}

// dkimSeedFlag replays TestDKIMMessageChunking with one seed.
var dkimSeedFlag = flag.Int64("dkim.seed", 0, "seed of TestDKIMMessageChunking's chunk sizes (0: from the clock)")

// TestDKIMMessageChunking writes the same messages in random pieces: the
// results must not depend on how the bytes arrive.
func TestDKIMMessageChunking(t *testing.T) {
	checkNoMessagePanics(t)
	seed := *dkimSeedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	rng := rand.New(rand.NewSource(seed))
	loadDKIMTestKeys(t)
	big := dkimPlainMessage(dkimBigBody(200 << 10))
	msgs := [][]byte{
		readDKIMMessage(t, "rfc8463.eml"),
		readDKIMMessage(t, "dkimpy-rfc6376.signed.msg"),
		goSign(t, goSign(t, big, dkim.SignOptions{}), dkim.SignOptions{Selector: "rsa", Signer: dkimTestKeys.rsa,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed}),
		append(goSign(t, big, dkim.SignOptions{}), "tampered\r\n"...),
		goSign(t, dkimPlainMessage(""), dkim.SignOptions{}),
	}
	r := dkimTestResolver(t)
	for k, v := range readDKIMKeys(t, "rfc8463.keys") {
		r.txt[k] = v
	}
	for i, msg := range msgs {
		whole := dkimVerifyMessage(t, r, MessageOptions{}, msg)
		if len(whole.DKIM) == 0 {
			t.Fatalf("message %d: no DKIM results", i)
		}
		for round := 0; round < 10; round++ {
			var chunks [][]byte
			for rest := msg; len(rest) > 0; {
				n := 1 + rng.Intn(min(len(rest), []int{3, 100, 5000, 70000}[rng.Intn(4)]))
				chunks = append(chunks, rest[:n])
				rest = rest[n:]
			}
			got := dkimVerifyChunks(t, r, MessageOptions{}, chunks)
			if !reflect.DeepEqual(got, whole) {
				t.Fatalf("message %d, round %d (seed %d, -dkim.seed=%d replays it): in %d pieces\n%+v\nwhole\n%+v",
					i, round, seed, seed, len(chunks), got, whole)
			}
		}
	}
}

// TestDKIMMessageWriteDoesNotWaitForKeys: while the key lookup is pending,
// Write takes the header and up to the queue bound of body without
// blocking; beyond it, Write waits (back-pressure) and the queue never
// holds more than the bound.
func TestDKIMMessageWriteDoesNotWaitForKeys(t *testing.T) {
	checkNoMessagePanics(t)
	msg := goSign(t, dkimPlainMessage(dkimBigBody(5<<20)), dkim.SignOptions{})
	r := dkimTestResolver(t)
	r.gate = make(chan struct{})
	r.asked = make(chan string, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := NewMessage(ctx, r, MessageOptions{})

	split := bytes.Index(msg, []byte("\r\n\r\n")) + 4 + bodyQueueBytes
	underBound := make(chan struct{})
	resume := make(chan struct{})
	written := make(chan struct{})
	go func() {
		defer close(written)
		write := func(b []byte) {
			for len(b) > 0 {
				n := min(len(b), 4096)
				m.Write(b[:n])
				b = b[n:]
			}
		}
		write(msg[:split])
		close(underBound)
		<-resume
		write(msg[split:])
		m.Close()
	}()

	select {
	case name := <-r.asked:
		if name != "ed._domainkey.example.test" {
			t.Errorf("asked for %q", name)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the key lookup did not start")
	}
	select {
	case <-underBound:
	case <-time.After(20 * time.Second):
		t.Fatal("Write blocked on a pending key lookup with less than the queue bound written")
	}
	close(resume)
	close(r.gate) // the key arrives
	<-written
	res := m.Wait(ctx)
	checkDKIM(t, res.DKIM, dkimWant{result: Pass})
	if peak := m.q.peak; peak != bodyQueueBytes {
		t.Errorf("queue peak %d bytes, want the bound %d", peak, bodyQueueBytes)
	}
}

// TestDKIMMessageLookupFailures maps key lookup outcomes to results.
func TestDKIMMessageLookupFailures(t *testing.T) {
	checkNoMessagePanics(t)
	msg := goSign(t, dkimPlainMessage("Hi.\r\n"), dkim.SignOptions{})
	for _, tc := range []struct {
		name   string
		txt    []string
		fail   error
		want   Result
		reason string
	}{
		{"no record", nil, nil, PermError, "no key for signature"},
		{"revoked", []string{"v=DKIM1; k=ed25519; p="}, nil, PermError, "key revoked"},
		{"two records", []string{dkimTestKeys.edTXT, dkimTestKeys.edTXT}, nil, PermError, "multiple TXT records"},
		{"wrong key type", []string{dkimTestKeys.rsaTXT}, nil, PermError, "inappropriate key algorithm"},
		{"garbled", []string{"v=DKIM1; k=ed25519; p=!!!"}, nil, PermError, "key syntax error"},
		{"server failure", nil, errors.New("SERVFAIL"), TempError, "key unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &memDNS{txt: map[string][]string{}, fail: map[string]error{"ed._domainkey.example.test": tc.fail}}
			if tc.txt != nil {
				r.txt["ed._domainkey.example.test"] = tc.txt
			}
			res := dkimVerifyMessage(t, r, MessageOptions{}, msg)
			checkDKIM(t, res.DKIM, dkimWant{result: tc.want, reason: tc.reason})
			if len(res.DKIM[0].Lookups) != 1 {
				t.Errorf("Lookups = %+v", res.DKIM[0].Lookups)
			}
		})
	}
	// Without a Resolver nothing can be looked up: temperror.
	checkDKIM(t, dkimVerifyMessage(t, nil, MessageOptions{}, msg).DKIM, dkimWant{result: TempError, reason: "no resolver"})
}

// TestDKIMMessageSignatureSyntax: a tag list go-msgauth would accept but RFC
// 6376 §3.2 does not is permerror, and names that make no DNS name are
// not asked.
func TestDKIMMessageSignatureSyntax(t *testing.T) {
	checkNoMessagePanics(t)
	msg := goSign(t, dkimPlainMessage("Hi.\r\n"), dkim.SignOptions{})
	for _, tc := range []struct{ from, to, reason string }{
		{"s=ed;", "s=ed; x\x01=1;", "signature syntax error"},
		{"d=example.test;", "d=exa mple..test;", "no key for signature"},
	} {
		m := bytes.Replace(msg, []byte(tc.from), []byte(tc.to), 1)
		r := dkimTestResolver(t)
		res := dkimVerifyMessage(t, r, MessageOptions{}, m)
		checkDKIM(t, res.DKIM, dkimWant{result: PermError, reason: tc.reason})
	}
}

// waitDKIMGoroutines waits (bounded) until no more than n goroutines run.
func waitDKIMGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDKIMMessageGoroutinesEnd: every goroutine a Message starts ends after
// Close, or after its ctx is cancelled, or after Wait gives up — also
// with a key lookup that never answers on its own and a writer blocked
// on a full queue.
func TestDKIMMessageGoroutinesEnd(t *testing.T) {
	checkNoMessagePanics(t)
	loadDKIMTestKeys(t)
	one := goSign(t, dkimPlainMessage(dkimBigBody(3<<20)), dkim.SignOptions{})
	three := goSign(t, goSign(t, one, dkim.SignOptions{Selector: "rsa", Signer: dkimTestKeys.rsa}), dkim.SignOptions{})
	before := runtime.NumGoroutine()

	for _, msg := range [][]byte{one, three} {
		// Complete, Closed, Waited.
		dkimVerifyMessage(t, dkimTestResolver(t), MessageOptions{}, msg)

		// Cancelled while the writer is blocked on the full queue and the
		// lookup hangs; never Closed.
		r := dkimTestResolver(t)
		r.gate = make(chan struct{})
		r.asked = make(chan string, 3)
		ctx, cancel := context.WithCancel(context.Background())
		m := NewMessage(ctx, r, MessageOptions{})
		done := make(chan struct{})
		go func() { m.Write(msg); close(done) }()
		<-r.asked
		cancel()
		<-done

		// Closed, then Wait gives up on a lookup that hangs.
		r = dkimTestResolver(t)
		r.gate = make(chan struct{})
		r.asked = make(chan string, 3)
		m = NewMessage(context.Background(), r, MessageOptions{})
		m.Write(msg[:bytes.Index(msg, []byte("\r\n\r\n"))+4])
		<-r.asked
		m.Close()
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		res := m.Wait(expired)
		for _, d := range res.DKIM {
			if d.Result != TempError {
				t.Errorf("given-up Wait: %+v", d)
			}
		}

		// Never written to beyond the header, then cancelled.
		ctx, cancel = context.WithCancel(context.Background())
		m = NewMessage(ctx, dkimTestResolver(t), MessageOptions{})
		m.Write([]byte("From: a\r\n"))
		cancel()
	}
	waitDKIMGoroutines(t, before)
}

// FuzzMessage feeds arbitrary messages, whole and in pieces, with keys
// for the RFC 8463 and the test selectors and nothing else. Properties:
// no panic; the same results however the bytes arrive; one result per
// DKIM-Signature field, the same verdict go-msgauth gives reading the
// whole message at once (unless moat's stricter tag parser refused the
// signature), policy beyond the limit; Authentication-Results spans that
// lie within the header section and hold the fields they name.
func FuzzMessage(f *testing.F) {
	loadDKIMTestKeys(f)
	f.Add(readDKIMMessage(f, "rfc8463.eml"), uint16(0), uint8(0))
	f.Add(readDKIMMessage(f, "dkimpy-rfc6376.signed.msg"), uint16(5), uint8(2))
	f.Add(readDKIMMessage(f, "rfc6376.eml"), uint16(100), uint8(1))
	f.Add(goSign(f, dkimPlainMessage("Hi.\r\n"), dkim.SignOptions{}), uint16(3), uint8(0))
	f.Add(goSign(f, goSign(f, dkimPlainMessage("Hi.\r\n"), dkim.SignOptions{}), dkim.SignOptions{
		HeaderCanonicalization: dkim.CanonicalizationRelaxed}), uint16(7), uint8(6))
	f.Add([]byte("Authentication-Results: a; dkim=pass\r\n folded\r\nDKIM-Signature: v=1; d=x; s=y\r\nFrom: a\r\n\r\nbody"), uint16(1), uint8(0))
	f.Add([]byte("From: a\nDKIM-Signature\n"), uint16(2), uint8(1))
	f.Add([]byte{}, uint16(0), uint8(0))
	keys := readDKIMKeys(f, "rfc8463.keys")
	keys["ed._domainkey.example.test"] = []string{dkimTestKeys.edTXT}
	keys["rsa._domainkey.example.test"] = []string{dkimTestKeys.rsaTXT}

	f.Fuzz(func(t *testing.T, msg []byte, split uint16, opt uint8) {
		panics := messagePanics.Load()
		var opts MessageOptions
		if opt&1 != 0 {
			opts.MaxHeaderBytes = 16 + int(split)%2048
		}
		if opt&2 != 0 {
			opts.MaxSignatures = 1 + int(opt>>2)%3
		}
		full := opts.withDefaults()
		r := &memDNS{txt: keys}
		whole := dkimVerifyMessage(t, r, opts, msg)

		var chunks [][]byte
		for rest, n := msg, 1+int(split)%97; len(rest) > 0; n = n*7%97 + 1 {
			k := min(n, len(rest))
			chunks = append(chunks, rest[:k])
			rest = rest[k:]
		}
		if got := dkimVerifyChunks(t, r, opts, chunks); !reflect.DeepEqual(got, whole) {
			t.Fatalf("in %d pieces:\n%+v\nwhole:\n%+v", len(chunks), got, whole)
		}
		if n := messagePanics.Load() - panics; n > 0 {
			t.Fatalf("%d panics recovered", n)
		}

		if whole.HeaderBytes < 0 || whole.HeaderBytes > int64(len(msg)) {
			t.Fatalf("HeaderBytes %d, message %d bytes", whole.HeaderBytes, len(msg))
		}
		end := int64(0)
		for _, s := range whole.AuthResults {
			if s.Start < end || s.End <= s.Start || s.End > whole.HeaderBytes {
				t.Fatalf("span %d-%d after %d, header %d bytes", s.Start, s.End, end, whole.HeaderBytes)
			}
			end = s.End
			field := msg[s.Start:s.End]
			if field[len(field)-1] != '\n' && s.End != int64(len(msg)) {
				t.Fatalf("span %d-%d cuts a line: %q", s.Start, s.End, field)
			}
			name, value, _ := strings.Cut(crlfLines(field), ":")
			if !strings.EqualFold(strings.TrimSpace(name), "Authentication-Results") {
				t.Fatalf("span %d-%d holds %q", s.Start, s.End, field)
			}
			if v := strings.Trim(strings.ReplaceAll(value, "\r\n", ""), " \t"); v != s.Value {
				t.Fatalf("span %d-%d value %q, field says %q", s.Start, s.End, s.Value, v)
			}
		}

		tooLong := whole.HeaderBytes > int64(full.MaxHeaderBytes)
		// The one-shot scan (authenticated mail) finds what the
		// streaming verifier finds.
		if got := AuthResultsFields(msg); !tooLong && !reflect.DeepEqual(got, whole.AuthResults) && len(got)+len(whole.AuthResults) > 0 {
			t.Fatalf("AuthResultsFields: %+v\nstreaming: %+v", got, whole.AuthResults)
		}
		for i, d := range whole.DKIM {
			switch {
			case i >= full.MaxSignatures:
				if d.Result != Policy || d.Reason != "too many signatures" {
					t.Fatalf("DKIM[%d] beyond the limit: %+v", i, d)
				}
			case tooLong:
				if d.Result != PermError {
					t.Fatalf("DKIM[%d] of a header too long: %+v", i, d)
				}
			case d.Result == TempError || d.Result == Policy:
				t.Fatalf("DKIM[%d]: %+v", i, d)
			}
		}
		if tooLong {
			return
		}

		// go-msgauth on the whole message, as a reference. A message
		// without the empty line gets one (and an empty body), as
		// Message gives it.
		ref := msg
		if !hasDKIMHeaderEnd(msg) {
			ref = append(bytes.Clone(msg), "\r\n\r\n"...)
		}
		keyc := &dkimKeys{ctx: context.Background(), r: r, m: map[string]*dkimKeyEntry{}}
		verifs, err := dkim.VerifyWithOptions(bytes.NewReader(ref), &dkim.VerifyOptions{LookupTXT: keyc.lookup})
		if err != nil {
			return // a reader failure: not comparable
		}
		if len(verifs) != len(whole.DKIM) {
			t.Fatalf("%d DKIM results, go-msgauth finds %d signatures", len(whole.DKIM), len(verifs))
		}
		for i, v := range verifs[:min(len(verifs), full.MaxSignatures)] {
			want, _ := dkimResult(v.Err)
			got := whole.DKIM[i]
			if got.Result != want && !(got.Result == PermError && strings.HasPrefix(got.Reason, "signature syntax error")) {
				t.Fatalf("DKIM[%d] = %+v; go-msgauth: %s (%v)", i, got, want, v.Err)
			}
		}
	})
}

// hasDKIMHeaderEnd reports whether msg has the empty line that ends a header
// section, read as net/textproto reads lines.
func hasDKIMHeaderEnd(msg []byte) bool {
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(msg)))
	for {
		l, err := tr.ReadLine()
		if err != nil {
			return false
		}
		if l == "" {
			return true
		}
	}
}

// TestDKIMMessageCostBounds: headers and bodies that would make
// go-msgauth's work grow with the square of their size are not verified
// (policy, with the reason), and the largest real shapes still are.
func TestDKIMMessageCostBounds(t *testing.T) {
	checkNoMessagePanics(t)
	loadDKIMTestKeys(t)
	var recipients []string
	for i := 0; i < 2000; i++ {
		recipients = append(recipients, fmt.Sprintf("Recipient %d <r%d@example.net>", i, i))
	}
	bigTo := "To: " + strings.Join(recipients, ",\r\n ") + "\r\n"
	manyFields := strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 12:00:00 +0000\r\n", 2000)
	names := func(n int) []string {
		keys := []string{"From"}
		for len(keys) < n {
			keys = append(keys, "Received")
		}
		return keys
	}
	run := func(n int) string { return "a" + strings.Repeat("\r\n", n/2) + "b\r\n" } // a run of n line-end bytes

	for _, tc := range []struct {
		name   string
		msg    []byte
		want   Result
		reason string
	}{
		{"2,000 recipients folded one a line",
			goSign(t, append([]byte(bigTo), dkimPlainMessage("Hi.\r\n")...), dkim.SignOptions{}), Pass, ""},
		{"a field folded over 20,000 lines",
			goSign(t, append([]byte("X-Fold: a\r\n"+strings.Repeat(" a\r\n", 20000)), dkimPlainMessage("Hi.\r\n")...), dkim.SignOptions{}),
			Policy, "folded over too many lines"},
		{"500 names in h=, 2,000 fields",
			goSign(t, append([]byte(manyFields), dkimPlainMessage("Hi.\r\n")...), dkim.SignOptions{HeaderKeys: names(500)}), Pass, ""},
		{"1,000 names in h=, 2,000 fields",
			goSign(t, append([]byte(manyFields), dkimPlainMessage("Hi.\r\n")...), dkim.SignOptions{HeaderKeys: names(1000)}),
			Policy, "signature 1 names 1000 fields in a header of 2006"},
		{"64 KiB of empty lines, simple",
			goSign(t, dkimPlainMessage(run(maxLineEndRun)), dkim.SignOptions{}), Pass, ""},
		{"1 MiB of empty lines, simple",
			goSign(t, dkimPlainMessage(run(1<<20)), dkim.SignOptions{}), Policy, "run of more than 65536 line-end bytes"},
		{"1 MiB of empty lines, relaxed",
			goSign(t, dkimPlainMessage(run(1<<20)), dkim.SignOptions{BodyCanonicalization: dkim.CanonicalizationRelaxed}),
			Policy, "run of more than 65536 line-end bytes"},
		{"1 MiB of bare LF, simple",
			goSign(t, dkimPlainMessage("a\n"+strings.Repeat("\n", 1<<20)+"b\n"), dkim.SignOptions{}), Policy, "run of more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := dkimVerifyIn(t, dkimTestResolver(t), tc.msg, 32<<10)
			checkDKIM(t, res.DKIM, dkimWant{result: tc.want, reason: tc.reason})
		})
	}

	// A signature whose key is missing stays permerror when the body is
	// cut: that verdict did not depend on the body.
	msg := goSign(t, goSign(t, dkimPlainMessage(run(1<<20)), dkim.SignOptions{Selector: "missing"}), dkim.SignOptions{})
	res := dkimVerifyIn(t, dkimTestResolver(t), msg, 32<<10)
	checkDKIM(t, res.DKIM, dkimWant{result: Policy, reason: "run of more than"}, dkimWant{result: PermError, reason: "no key"})
}

// BenchmarkDKIMMessage measures a Message on a 1 MiB message written in
// 32 KiB pieces, against go-msgauth reading the same bytes at once.
func BenchmarkDKIMMessage(b *testing.B) {
	loadDKIMTestKeys(b)
	body := dkimBigBody(1 << 20)
	relaxed := dkim.SignOptions{HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed}
	msgs := map[string][]byte{
		"unsigned":    dkimPlainMessage(body),
		"ed25519":     goSign(b, dkimPlainMessage(body), relaxed),
		"ed25519+rsa": goSign(b, goSign(b, dkimPlainMessage(body), relaxed), dkim.SignOptions{Selector: "rsa", Signer: dkimTestKeys.rsa}),
	}
	for _, name := range []string{"unsigned", "ed25519", "ed25519+rsa"} {
		msg := msgs[name]
		b.Run(name+"/Message", func(b *testing.B) {
			r := dkimTestResolver(b)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				m := NewMessage(context.Background(), r, MessageOptions{})
				for rest := msg; len(rest) > 0; {
					n := min(len(rest), 32<<10)
					m.Write(rest[:n])
					rest = rest[n:]
				}
				m.Close()
				if res := m.Wait(context.Background()); len(res.DKIM) > 0 && res.DKIM[0].Result != Pass {
					b.Fatal(res.DKIM)
				}
			}
		})
		b.Run(name+"/go-msgauth", func(b *testing.B) {
			keys := &dkimKeys{ctx: context.Background(), r: dkimTestResolver(b), m: map[string]*dkimKeyEntry{}}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: keys.lookup}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
