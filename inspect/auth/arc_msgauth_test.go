package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// go-msgauth signs DKIM-Signatures with all four canonicalizations; an AMS
// is hashed as a DKIM-Signature is, so moat's canonicalization, b=
// stripping, header selection and signature checks must accept every
// signature go-msgauth makes, over messages full of the whitespace,
// folding and trailing-line cases canonicalization is about. An
// independent signer catches what testing one's own signer cannot.
func TestARCCanonAgainstGoMsgauth(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]arcKey{
		"rsa": {rsa: &rsaKey.PublicKey},
		"ed":  {ed: edKey.Public().(ed25519.PublicKey)},
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	canons := []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed}
	for n := 0; n < 400; n++ {
		msg := arcRandomMessage(rng)
		hc, bc := canons[n%2], canons[n/2%2]
		sel := "rsa"
		opts := &dkim.SignOptions{
			Domain: "example.test", Selector: sel, Signer: rsaKey,
			HeaderCanonicalization: hc, BodyCanonicalization: bc,
			HeaderKeys: []string{"From", "Subject", "X-Odd", "X-Odd", "X-Missing"},
		}
		if n%3 == 0 {
			opts.Selector, opts.Signer = "ed", edKey
		}
		var signed bytes.Buffer
		if err := dkim.Sign(&signed, strings.NewReader(msg), opts); err != nil {
			t.Fatalf("go-msgauth: %v\n%q", err, msg)
		}
		header, body := arcSplit(t, signed.String())
		byName := map[string][]string{}
		for _, f := range header {
			byName[arcFieldName(f)] = append(byName[arcFieldName(f)], f)
		}
		s := &arcSig{field: header[0]}
		if s.tags, err = ParseTags(arcFieldValue(header[0])); err != nil {
			t.Fatal(err)
		}
		if err := s.parseAMS(arcSuiteNow.AddDate(20, 0, 0)); err != nil {
			t.Fatal(err)
		}
		canon := newARCBodyCanon(s.bcanon, sha256.New(), s.limit)
		for b := body; len(b) > 0; {
			k := min(1+rng.IntN(7), len(b))
			canon.Write([]byte(b[:k]))
			b = b[k:]
		}
		canon.Close()
		if !bytes.Equal(canon.h.Sum(nil), s.bh) {
			t.Errorf("%s/%s: body hash differs for body %q", hc, bc, body)
			continue
		}
		if err := keys[opts.Selector].verify(s.alg, arcHashAMS(s, byName), s.sig); err != nil {
			t.Errorf("%s/%s %s: %v for header %q", hc, bc, s.alg, err, header)
		}
	}
}

// arcRandomMessage builds a message of CRLF lines from pieces that
// canonicalization treats specially: runs of SP and HTAB, empty lines
// (also at the end), folded header fields, WSP around the colon.
func arcRandomMessage(rng *mrand.Rand) string {
	pieces := []string{"a", "Bc", " ", "  ", "\t", " \t ", "x:y", ";", "é"}
	text := func(max int) string {
		var b strings.Builder
		for i := rng.IntN(max); i > 0; i-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	var b strings.Builder
	b.WriteString("From: " + text(6) + "<a@example.test>\r\n")
	for i := rng.IntN(4); i > 0; i-- {
		name := []string{"X-Odd", "x-odd", "X-ODD ", "Subject", "X-Other"}[rng.IntN(5)]
		b.WriteString(name + ":" + text(5))
		for j := rng.IntN(3); j > 0; j-- {
			b.WriteString("\r\n" + []string{" ", "\t", "  \t"}[rng.IntN(3)] + text(4))
		}
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	for i := rng.IntN(6); i > 0; i-- {
		b.WriteString(text(8) + "\r\n")
	}
	switch rng.IntN(3) {
	case 0:
		b.WriteString(text(4)) // no final CRLF
	case 1:
		b.WriteString(strings.Repeat("\r\n", rng.IntN(3)))
	}
	return b.String()
}

// RSA keys from 1024 to 8192 bits are taken; smaller and larger are not.
func TestARCRSAKeySizes(t *testing.T) {
	for _, tc := range []struct {
		bits int
		ok   bool
	}{{1023, false}, {1024, true}, {8192, true}, {8193, false}} {
		n := new(big.Int).Lsh(big.NewInt(1), uint(tc.bits-1))
		n.Add(n, big.NewInt(1))
		der := x509.MarshalPKCS1PublicKey(&rsa.PublicKey{N: n, E: 65537})
		_, err := arcParseRSA(der)
		if (err == nil) != tc.ok {
			t.Errorf("%d bits: %v", tc.bits, err)
		}
	}
}
