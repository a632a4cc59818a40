package inspect

import (
	"encoding/base64"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"testing"
)

// benchMessage builds a realistic multipart/mixed message of about size
// bytes: a full relay header, a text/plain part in quoted-printable, a
// text/html part in base64 with links, and a base64 attachment that
// takes up the rest.
func benchMessage(size int) string {
	var b strings.Builder
	for i := range 4 {
		fmt.Fprintf(&b, "Received: from mx%d.example.net (mx%d.example.net [192.0.2.%d])\r\n\tby mail.example.com (Postfix) with ESMTPS id 4F%dB2C3D\r\n\tfor <user@example.com>; Mon, 1 Jan 2024 10:00:0%d +0000 (UTC)\r\n", i, i, i+1, i, i)
	}
	b.WriteString("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=sel;\r\n\th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\tb=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR\r\n")
	b.WriteString("From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.net>\r\n")
	b.WriteString("To: \"User, Some\" <user@example.com>, other@example.org\r\n")
	b.WriteString("Cc: list@lists.example.org\r\n")
	b.WriteString("Subject: =?UTF-8?B?w5xiZXJwcsO8ZnVuZyBJaHJlcyBLb250b3M=?= - Rechnung\r\n")
	b.WriteString("Date: Mon, 1 Jan 2024 10:59:59 +0100\r\n")
	b.WriteString("Message-ID: <20240101105959.4F0B2C3D@mail.example.net>\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/mixed; boundary=\"----=_Part_1234_5678.1704103199\"\r\n\r\n")
	b.WriteString("This is a multi-part message in MIME format.\r\n\r\n")

	b.WriteString("------=_Part_1234_5678.1704103199\r\nContent-Type: multipart/alternative; boundary=\"alt-42\"\r\n\r\n")
	plain := strings.Repeat("Sehr geehrte Kundin, sehr geehrter Kunde, bitte prüfen Sie Ihre Rechnung unter https://billing.example.net/invoice?id=42 – vielen Dank.\n", 8)
	b.WriteString("--alt-42\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qw := quotedprintable.NewWriter(&b)
	qw.Write([]byte(plain))
	qw.Close()
	b.WriteString("\r\n--alt-42\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	html := "<html><head><style>p{font:12px sans-serif}</style></head><body>" +
		strings.Repeat("<p>Bitte prüfen Sie Ihre <a href=\"https://billing.example.net/invoice?id=42&amp;u=1\">Rechnung</a> &ndash; <img src=\"https://cdn.example.net/logo.png\"> vielen Dank.</p>\n", 8) +
		"</body></html>"
	writeBase64(&b, []byte(html))
	b.WriteString("--alt-42--\r\n\r\n")

	b.WriteString("------=_Part_1234_5678.1704103199\r\nContent-Type: application/pdf; name=\"Rechnung_2024-001.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"Rechnung_2024-001.pdf\"\r\n\r\n")
	if room := size - b.Len() - 60; room > 0 {
		raw := make([]byte, room*3/4)
		for i := range raw {
			raw[i] = byte(i * 7)
		}
		writeBase64(&b, raw)
	}
	b.WriteString("------=_Part_1234_5678.1704103199--\r\n")
	return b.String()
}

// writeBase64 writes data in base64 lines of 76 characters (RFC 2045 §6.8).
func writeBase64(b *strings.Builder, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
	b.WriteString("\r\n")
}

func TestBenchMessage(t *testing.T) {
	for _, size := range []int{5 << 10, 200 << 10} {
		msg := benchMessage(size)
		c := parse(msg, DepthText)
		checkContent(t, c, int64(len(msg)), DepthText)
		if len(c.Malformed) != 0 || len(c.Parts) != 5 || c.Parts[4].Filename != "Rechnung_2024-001.pdf" ||
			!strings.Contains(c.Text, "prüfen") || !strings.Contains(c.HTMLText, "Rechnung – ") || len(c.URLs) != 3 ||
			c.Subject != "Überprüfung Ihres Kontos - Rechnung" {
			t.Errorf("%d bytes: Malformed %q, %d parts, %d URLs, Subject %q", len(msg), c.Malformed, len(c.Parts), len(c.URLs), c.Subject)
		}
		if d := len(msg) - size; d < -size/10 || d > size/10 {
			t.Errorf("message of %d bytes, want about %d", len(msg), size)
		}
	}
}

// plainMessage is what Postfix's smtp-source sends (the end-to-end
// benchmark's load): five header fields and a body of size bytes, lines
// of 78 "X" after a line number, no MIME.
func plainMessage(size int) string {
	var b strings.Builder
	b.WriteString("From: <sender@bench.test>\r\nTo: <rcpt@bench.test>\r\nDate: Mon, 23 Nov 2026 00:17:17 +0000 (UTC)\r\n" +
		"Message-Id: <340d.0003.0000@client.bench.test>\r\nSubject: Weekly report for the bench team\r\n\r\n")
	for n := 1; n <= size/80; n++ {
		line := fmt.Sprintf("%d%s\r\n", n, strings.Repeat("X", 78))
		b.WriteString(line[:80])
	}
	return b.String()
}

func BenchmarkParseContent(b *testing.B) {
	for _, tc := range []struct {
		name string
		msg  string
	}{{"5KB", benchMessage(5 << 10)}, {"200KB", benchMessage(200 << 10)}, {"200KB-plain", plainMessage(200 << 10)}} {
		msg := tc.msg
		r := strings.NewReader(msg)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				ParseContent(r, int64(len(msg)), DepthText, DefaultContentLimits())
			}
		})
	}
}
