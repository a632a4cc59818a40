package inspect

import (
	"bytes"
	"os"
	"slices"
	"testing"
	"time"
)

// smallLimits make the fuzzer reach every limit with short inputs.
var smallLimits = ContentLimits{MaxParts: 5, MaxNesting: 3, MaxHeaderFields: 5, MaxURLs: 3, MaxTextBytes: 200, MaxHeaderBytes: 300}

// FuzzParseContent checks the properties of every parse, whatever the
// input: no panic, the depth asked for, parts within the input, URLs with
// hosts, valid UTF-8 text, and a result that does not depend on how the
// input is read. Seeds are the mail corpus and the hostile shapes of
// TestHostileMIME in miniature.
//
// arg selects the depth (arg&3) and the small limits (arg&4).
func FuzzParseContent(f *testing.F) {
	for _, file := range corpusFiles(f) {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(DepthText))
	}
	for _, s := range []string{
		"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--a--\r\n",
		"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: =?utf-8?q?x?=\r\n\r\ny",
		"Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?= =?koi8-r?q?=F0?=\r\nFrom: \"a\" <b@c>, d@e\r\nDate: Thu Oct 18 22:48:39 2012\r\n\r\n",
		"Content-Type: text/html; charset=windows-1251\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<a href=3D\"http://x.example/\">=CF=F0</a>=\r\n",
		"Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\nSABpAA==\r\n",
		"Content-Type: application/pdf; name*0*=utf-8''%E2%82; name*1*=%AC.pdf\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(DepthText))
		f.Add([]byte(s), uint8(DepthText|4))
	}
	f.Fuzz(func(t *testing.T, data []byte, arg uint8) {
		depth := Depth(arg & 3)
		limits := DefaultContentLimits()
		if arg&4 != 0 {
			limits = smallLimits
		}
		size := int64(len(data))
		start := time.Now()
		c := ParseContent(bytes.NewReader(data), size, depth, limits)
		if d := time.Since(start); d > 2*time.Second {
			// Fuzz inputs are small: a second means something grows
			// faster than linearly.
			t.Errorf("%d bytes took %v", size, d)
		}
		checkContent(t, c, size, depth)
		if len(c.Parts) > limits.MaxParts || len(c.URLs) > limits.MaxURLs || len(c.Header) > limits.MaxHeaderFields {
			t.Errorf("limits exceeded: %d parts, %d URLs, %d fields", len(c.Parts), len(c.URLs), len(c.Header))
		}
		if int64(len(c.Text)+len(c.HTML)) > limits.MaxTextBytes || int64(len(c.HTMLText)) > limits.MaxTextBytes {
			t.Errorf("text limit exceeded: %d + %d, %d", len(c.Text), len(c.HTML), len(c.HTMLText))
		}
		if c.MaxDepth > limits.MaxNesting {
			t.Errorf("MaxDepth %d past the limit", c.MaxDepth)
		}
		// The same bytes read through a reader that returns one byte at a
		// time must give the same facts: line fragments must not change
		// what a line means. (Large inputs only slow the fuzzer down;
		// TestOneByteReads covers the corpus.)
		if size > 16<<10 {
			return
		}
		again := ParseContent(oneByteReaderAt{data}, size, depth, limits)
		if again.Subject != c.Subject || again.Text != c.Text || again.HTMLText != c.HTMLText ||
			len(again.Parts) != len(c.Parts) || !slices.Equal(again.Malformed, c.Malformed) {
			t.Errorf("one-byte reads differ:\n%+v\n%+v", again, c)
		}
	})
}

// oneByteReaderAt returns at most one byte per ReadAt.
type oneByteReaderAt struct{ b []byte }

func (r oneByteReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return bytes.NewReader(r.b).ReadAt(p, off)
}

func TestOneByteReads(t *testing.T) {
	for _, file := range corpusFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		want := ParseContent(bytes.NewReader(b), int64(len(b)), DepthText, DefaultContentLimits())
		got := ParseContent(oneByteReaderAt{b}, int64(len(b)), DepthText, DefaultContentLimits())
		if got.Text != want.Text || got.HTMLText != want.HTMLText || !slices.Equal(got.Parts, want.Parts) || !slices.Equal(got.Malformed, want.Malformed) {
			t.Errorf("%s: one-byte reads give different facts", file)
		}
	}
}
