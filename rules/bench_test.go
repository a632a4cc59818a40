package rules

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"moat/inspect"
)

// benchRules is the default rule set plus n generated regex rules over
// subject and body, the shape of a tuned SpamAssassin-style set.
func benchRules(b *testing.B, n int) *Set {
	b.Helper()
	var src strings.Builder
	src.Write(defaultRules)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		word := fmt.Sprintf("w%03dx%c%c", i, 'a'+r.IntN(26), 'a'+r.IntN(26))
		fact := "body"
		if i%4 == 0 {
			fact = "subject"
		}
		fmt.Fprintf(&src, "  - {name: GEN_%03d, stage: data, when: {%s: {matches: '(?i)\\b%s\\b'}}, score: 0.1}\n", i, fact, word)
	}
	set, err := Parse("bench.yaml", []byte(src.String()), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return set
}

// benchMessage is a multipart message of about size bytes: a text part,
// an HTML part with links, and a base64 attachment.
func benchMessage(size int) []byte {
	var m bytes.Buffer
	m.WriteString("From: \"Shop\" <news@shop.example>\r\nTo: bob@example.net\r\nSubject: =?UTF-8?Q?Gro=C3=9Fe_Angebote?=\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@shop.example>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n" +
		"--b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	para := "Dear customer, our new collection is here. Visit http://shop.example/offers?id=42 for details =E2=82=AC.\r\n"
	for m.Len() < size/2 {
		m.WriteString(para)
	}
	m.WriteString("--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>")
	for m.Len() < size*3/4 {
		m.WriteString("<p>New <b>offers</b> at <a href=\"https://shop.example/p/1\">our shop</a>.</p>\r\n")
	}
	m.WriteString("</body></html>\r\n--b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"catalog.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"catalog.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for m.Len() < size-100 {
		m.WriteString("JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURlY29kZT4+CnN0cmVhbQp4\r\n")
	}
	m.WriteString("--b1--\r\n")
	return m.Bytes()
}

// BenchmarkEvaluate measures the data stage over the default rules plus
// 200 generated regex rules: parse+evaluate as the proxy does, and
// evaluation alone on a parsed message.
func BenchmarkEvaluate(b *testing.B) {
	set := benchRules(b, 200)
	for _, size := range []int{5 << 10, 200 << 10} {
		msg := benchMessage(size)
		name := fmt.Sprintf("%dKB", size>>10)
		e, _ := inspect.New(inspect.Config{Judge: set})
		run := func(b *testing.B, content func() *inspect.Content) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				s := &inspect.Session{ID: "BENCH", Client: netip.MustParseAddrPort("192.0.2.1:4000"), HeloVerb: "EHLO", Helo: "mail.shop.example"}
				tx := &inspect.Transaction{}
				e.DataWithContent(context.Background(), s, tx, &inspect.Message{Size: int64(len(msg))}, content())
			}
		}
		b.Run(name+"/parse+rules", func(b *testing.B) {
			depth := set.Needs(inspect.StageData).Depth
			run(b, func() *inspect.Content {
				return inspect.ParseContent(bytes.NewReader(msg), int64(len(msg)), depth, inspect.DefaultContentLimits())
			})
		})
		b.Run(name+"/rules", func(b *testing.B) {
			c := inspect.ParseContent(bytes.NewReader(msg), int64(len(msg)), inspect.DepthText, inspect.DefaultContentLimits())
			run(b, func() *inspect.Content { return c })
		})
	}
}
