package inspect

import (
	"slices"
	"strings"
	"testing"
)

func TestBase64Decoder(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		invalid bool
	}{
		{"aGVsbG8=", "hello", false},
		{"aGVs\r\nbG8=\r\n", "hello", false},
		{"aGVsbG8", "hello", false}, // padding missing
		{"aG Vs\tbG 8=", "hello", false},
		{"aGVsbG8=aGVsbG8=", "hellohello", false}, // concatenated encodings
		{"aGVs!bG8=", "hello", true},              // garbage skipped
		{"aGVsbG8=x", "hello", true},              // a dangling sextet
		{"", "", false},
		{"====", "", false},
		{"#$%", "", true},
	}
	for _, tt := range tests {
		var d base64Decoder
		got := d.finish(d.decode(nil, []byte(tt.in)))
		if string(got) != tt.want || d.invalid != tt.invalid {
			t.Errorf("base64 %q = %q (invalid %v), want %q (invalid %v)", tt.in, got, d.invalid, tt.want, tt.invalid)
		}
	}
}

func TestQuotedPrintableLine(t *testing.T) {
	tests := []struct {
		in   string
		want string
		soft bool
		bad  bool
	}{
		{"plain", "plain", false, false},
		{"caf=C3=A9", "café", false, false},
		{"caf=c3=a9", "café", false, false}, // lower-case hex, tolerated
		{"soft break=", "soft break", true, false},
		{"trailing space   ", "trailing space", false, false}, // RFC 2045 §6.7 (3)
		{"soft after space =  ", "soft after space ", true, false},
		{"a=3Db", "a=b", false, false},
		{"a=ZZb", "a=ZZb", false, true},
		{"a=4", "a=4", false, true},
		{"=", "", true, false},
		{"8bit é", "8bit é", false, false},
	}
	for _, tt := range tests {
		var bad bool
		got, soft := qpDecodeLine(nil, []byte(tt.in), &bad)
		if string(got) != tt.want || soft != tt.soft || bad != tt.bad {
			t.Errorf("qp %q = %q soft %v bad %v; want %q %v %v", tt.in, got, soft, bad, tt.want, tt.soft, tt.bad)
		}
	}
}

// Bodies in base64 and quoted-printable, in the charsets real mail uses,
// come out as the right UTF-8 text.
func TestTextBodies(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		encoding    string
		body        string
		text        string // want Text (for text/plain) or HTMLText (for text/html)
		malformed   []string
	}{
		{"QP ISO-8859-1", "text/plain; charset=ISO-8859-1", "quoted-printable",
			"Gr=FC=DFe aus K=F6ln, =E7a va?\r\nzweite=\r\n Zeile\r\n", "Grüße aus Köln, ça va?\nzweite Zeile", nil},
		{"base64 windows-1252", "text/plain; charset=windows-1252", "base64",
			"R3L832UsIGNhZukglyCTcXVvdGVklCCAIDU=\r\n", "Grüße, café — “quoted” € 5", nil},
		{"8bit windows-1252", "text/plain; charset=\"windows-1252\"", "8bit",
			"caf\xe9 \x80\r\n", "café €", nil},
		{"base64 KOI8-R", "text/plain; charset=koi8-r", "base64",
			"89/F29gg1sUgxd2jINzUycggzdHHy8nIIMbSwc7D1drTy8nIIMLVzM/L\r\n", "Съешь же ещё этих мягких французских булок", nil},
		{"base64 ISO-2022-JP", "text/plain; charset=ISO-2022-JP", "base64",
			"GyRCJDMkcyRLJEEkTyEiQCQzJhsoQg==\r\n", "こんにちは、世界", nil},
		{"7bit ISO-2022-JP", "text/plain; charset=iso-2022-jp", "7bit",
			"\x1b$B$3$s$K$A$O!\"@$3&\x1b(B\r\n", "こんにちは、世界", nil},
		{"QP Shift_JIS", "text/plain; charset=Shift_JIS", "quoted-printable",
			"=93=FA=96{=8C=EA=82=CC=83e=83L=83X=83g\r\n", "日本語のテキスト", nil},
		{"base64 GB2312", "text/plain; charset=gb2312", "base64",
			"xOO6w6OsysC95w==", "你好，世界", nil},
		{"base64 split oddly, no padding", "text/plain; charset=utf-8", "base64",
			"w6ls\r\nw6h2\r\nZQ\r\n", "élève", nil},
		{"base64 with garbage", "text/plain; charset=utf-8", "base64",
			"aGVs!!bG8=\r\n", "hello", []string{MalformedBase64}},
		{"QP with bad escape", "text/plain; charset=utf-8", "quoted-printable",
			"100=\r\n% =XY\r\n", "100% =XY", []string{MalformedQuotedPrintable}},
		{"unknown charset, valid UTF-8", "text/plain; charset=x-made-up", "8bit",
			"café\r\n", "café", []string{MalformedCharsetUnknown}},
		{"unknown charset, Latin-1", "text/plain; charset=x-made-up", "8bit",
			"caf\xe9\r\n", "café", []string{MalformedCharsetUnknown}},
		{"invalid UTF-8 replaced", "text/plain; charset=utf-8", "8bit",
			"a\xffb\r\n", "a\uFFFDb", []string{MalformedCharsetInvalid}},
		{"us-ascii that is really UTF-8", "text/plain; charset=us-ascii", "8bit",
			"café\r\n", "café", nil},
		{"no charset, Latin-1 bytes", "text/plain", "8bit",
			"caf\xe9\r\n", "café", nil},
		{"unknown transfer encoding read as is", "text/plain", "x-uuencode",
			"begin 644\r\n", "begin 644", []string{MalformedEncodingUnknown}},
		{"CRLF inside base64 becomes LF", "text/plain", "base64",
			"bGluZTENCmxpbmUyDQo=", "line1\nline2\n", nil},
		{"HTML charset from meta", "text/html", "base64",
			"PGh0bWw+PGhlYWQ+PG1ldGEgaHR0cC1lcXVpdj0iQ29udGVudC1UeXBlIiBjb250ZW50PSJ0ZXh0L2h0bWw7IGNoYXJzZXQ9d2luZG93cy0xMjUxIj48L2hlYWQ+PGJvZHk+PHA+z/Do4uXyLCDs6PA8L3A+PC9ib2R5PjwvaHRtbD4=",
			"Привет, мир", nil},
		{"HTML QP ISO-8859-1", "text/html; charset=iso-8859-1", "quoted-printable",
			"<p>Gr=FC=DFe</p>=\r\n<p>K=F6ln &amp; Bonn</p>\r\n", "Grüße\nKöln & Bonn", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if !strings.HasSuffix(body, "\r\n") {
				body += "\r\n" // the line break before the delimiter is the delimiter's
			}
			msg := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
				"Content-Type: " + tt.contentType + "\r\nContent-Transfer-Encoding: " + tt.encoding + "\r\n\r\n" +
				body + "--b--\r\n"
			c := parse(msg, DepthText)
			checkContent(t, c, int64(len(msg)), DepthText)
			got := c.Text
			if strings.HasPrefix(tt.contentType, "text/html") {
				got = c.HTMLText
			}
			if got != tt.text {
				t.Errorf("text = %q, want %q", got, tt.text)
			}
			if !slices.Equal(c.Malformed, tt.malformed) {
				t.Errorf("Malformed = %q, want %q", c.Malformed, tt.malformed)
			}
		})
	}
}

func TestSniffHTMLCharset(t *testing.T) {
	tests := []struct{ in, want string }{
		{`<meta charset="utf-8">`, "utf-8"},
		{`<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=ISO-8859-1">`, "iso-8859-1"},
		{`<meta charset = 'koi8-r' />`, "koi8-r"},
		{`<p>charset is a word</p>`, ""},
		{strings.Repeat(" ", 5000) + `<meta charset="utf-8">`, ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := sniffHTMLCharset([]byte(tt.in)); got != tt.want {
			t.Errorf("sniffHTMLCharset(%.40q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
