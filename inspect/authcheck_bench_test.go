package inspect_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"moat/inspect"
	"moat/inspect/smtp"
)

// BenchmarkEngineAuth is the CPU sender authentication costs one signed
// 5 KB message: SPF for MAIL FROM and HELO, two DKIM signatures (RSA and
// ed25519), ARC, DMARC and the Authentication-Results field, with DNS
// answered from memory (a warm cache's cost, not the network's).
func BenchmarkEngineAuth(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchEngineAuth(b, false, 1) })
	b.Run("on/rsa", func(b *testing.B) { benchEngineAuth(b, true, 1) })
	b.Run("on/rsa+ed25519", func(b *testing.B) { benchEngineAuth(b, true, 2) })
}

func benchEngineAuth(b *testing.B, on bool, sigs int) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	zone := map[string][]string{
		"bench.test":                {"v=spf1 ip4:192.0.2.0/24 -all"},
		"client.bench.test":         {"v=spf1 ip4:192.0.2.1 -all"},
		"rsa._domainkey.bench.test": {"v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)},
		"ed._domainkey.bench.test":  {"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edKey.Public().(ed25519.PublicKey))},
		"_dmarc.bench.test":         {"v=DMARC1; p=reject"},
	}
	var body strings.Builder
	for body.Len() < 5<<10 {
		body.WriteString("The quarterly figures for the bench team are attached below, as every week.\r\n")
	}
	msg := []byte("From: Reports <reports@bench.test>\r\nTo: rcpt@bench.test\r\nSubject: Weekly report\r\n\r\n" + body.String())
	for _, o := range []*dkim.SignOptions{
		{Domain: "bench.test", Selector: "rsa", Signer: rsaKey, HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed},
		{Domain: "bench.test", Selector: "ed", Signer: edKey, HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed},
	}[:sigs] {
		var signed bytes.Buffer
		if err := dkim.Sign(&signed, bytes.NewReader(msg), o); err != nil {
			b.Fatal(err)
		}
		msg = signed.Bytes()
	}
	cfg := inspect.Config{}
	if on {
		cfg.Auth = &inspect.AuthConfig{Resolver: zoneResolver{txt: zone}, AuthservID: "mx.bench.test"}
	}
	e, err := inspect.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s := &inspect.Session{ID: "b", Client: netip.MustParseAddrPort("192.0.2.1:4000"), HeloVerb: "EHLO", Helo: "client.bench.test"}
		e.Connect(ctx, s)
		e.Helo(ctx, s)
		tx := &inspect.Transaction{From: smtp.Path{Local: "reports", Domain: "bench.test"}}
		e.Mail(ctx, s, tx)
		if w := e.MessageWriter(s, tx); w != nil {
			for i := 0; i < len(msg); i += 4096 {
				w.Write(msg[i:min(i+4096, len(msg))])
			}
		}
		v := e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(msg)), Body: bytes.NewReader(msg)})
		if on && (v.Auth == nil || v.Auth.DMARC.Result != "pass" || len(v.Auth.DKIM) != sigs || v.Auth.DKIM[sigs-1].Result != "pass") {
			b.Fatalf("auth: %+v", v.Auth)
		}
		e.End(s)
	}
}
