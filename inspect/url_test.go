package inspect

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestScanTextURLs(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []URL
	}{
		{"plain http", "see http://example.com/path?q=1 now", []URL{{"http://example.com/path?q=1", "example.com"}}},
		{"https and ftp", "https://a.example ftp://files.example/pub", []URL{{"https://a.example", "a.example"}, {"ftp://files.example/pub", "files.example"}}},
		{"scheme in any case, host lower-cased", "HTTP://WWW.Example.COM/Path", []URL{{"HTTP://WWW.Example.COM/Path", "www.example.com"}}},
		{"bare www.", "visit www.example.org today", []URL{{"www.example.org", "www.example.org"}}},
		{"sentence punctuation is not part of it", "Go to http://example.com/a. Or (http://example.net/b), or http://example.org!", []URL{{"http://example.com/a", "example.com"}, {"http://example.net/b", "example.net"}, {"http://example.org", "example.org"}}},
		{"balanced parentheses stay", "http://en.example/wiki/Foo_(bar)", []URL{{"http://en.example/wiki/Foo_(bar)", "en.example"}}},
		{"angle brackets and quotes end it", `<http://a.example/x> "http://b.example/y"`, []URL{{"http://a.example/x", "a.example"}, {"http://b.example/y", "b.example"}}},
		{"port and user info dropped from the host", "http://user:pw@paypal.example.com@evil.example:8080/login", []URL{{"http://user:pw@paypal.example.com@evil.example:8080/login", "evil.example"}}},
		{"IPv4 host kept", "http://192.0.2.1/x", []URL{{"http://192.0.2.1/x", "192.0.2.1"}}},
		{"IPv6 host kept", "http://[2001:DB8::1]:80/x", []URL{{"http://[2001:DB8::1]:80/x", "2001:db8::1"}}},
		{"IDN punycode left as is", "http://xn--80ak6aa92e.example/", []URL{{"http://xn--80ak6aa92e.example/", "xn--80ak6aa92e.example"}}},
		{"Unicode host lower-cased", "http://ПРИМЕР.example/", []URL{{"http://ПРИМЕР.example/", "пример.example"}}},
		{"percent-encoded host decoded", "http://%77%77%77.example.com/", []URL{{"http://%77%77%77.example.com/", "www.example.com"}}},
		{"backslash and extra slashes, as browsers read them", `http:\\evil.example\path https:///x.example`, []URL{{`http:\\evil.example\path`, "evil.example"}, {"https:///x.example", "x.example"}}},
		{"duplicates once", "http://a.example http://a.example", []URL{{"http://a.example", "a.example"}}},
		{"CJK punctuation ends it", "链接：http://a.example/x，谢谢", []URL{{"http://a.example/x", "a.example"}}},
		{"no host", "http:// and http:/// and www. alone", nil},
		{"inside a word or address", "xhttp://a.example user@www.example.com", nil},
		{"e-mail and mailto are not URLs", "mailto:a@b.example write to a@b.example", nil},
		{"host of only punctuation", "http://-/x http://.../", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := urlSet{max: 100, flaws: &flaws{}}
			s.scanText(tt.text)
			if !slices.Equal(s.list, tt.want) {
				t.Errorf("URLs = %q, want %q", s.list, tt.want)
			}
		})
	}
}

func TestURLLimit(t *testing.T) {
	f := &flaws{}
	s := urlSet{max: 2, flaws: f}
	s.scanText("http://a.example http://b.example http://a.example")
	if len(s.list) != 2 || f.has(MalformedURLsTruncated) {
		t.Fatalf("URLs %q, flaws %q", s.list, f.list)
	}
	s.scanText("http://c.example")
	if len(s.list) != 2 || !f.has(MalformedURLsTruncated) {
		t.Errorf("URLs %q, flaws %q", s.list, f.list)
	}
}

// scanTextReference is the byte-by-byte scanner scanText replaced: it
// tries every position that starts with h, f or w. scanText must find
// exactly what it finds, in the same order.
func (s *urlSet) scanTextReference(text string) {
	for i := 0; i < len(text); i++ {
		switch text[i] {
		case 'h', 'H', 'f', 'F', 'w', 'W':
		default:
			continue
		}
		if i > 0 && !urlBoundary(text[i-1]) {
			continue
		}
		n := urlPrefixLen(text[i:])
		if n == 0 {
			continue
		}
		end := i + n
		for end < len(text) {
			r, size := utf8.DecodeRuneInString(text[end:])
			if urlStop(r) {
				break
			}
			end += size
		}
		raw := trimURLTail(text[i:end])
		if len(raw) > n {
			s.add(raw)
		}
		i = end - 1
		if len(s.list) >= s.max && s.flaws.has(MalformedURLsTruncated) {
			return
		}
	}
}

func TestScanTextAgreesWithReference(t *testing.T) {
	pieces := []string{"http", "HTTPS", "ftp", "www", "WwW", ":", "//", `\\`, ".", "a", "b.example", " ", "\n", "x", "@", "(", ")",
		"<", ">", "，", "é", "\xff", "/", "-", "?q=1", "s"}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for range r.IntN(30) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		text := b.String()
		max := 1 + r.IntN(4)
		got, want := urlSet{max: max, flaws: &flaws{}}, urlSet{max: max, flaws: &flaws{}}
		got.scanText(text)
		want.scanTextReference(text)
		if !slices.Equal(got.list, want.list) || got.flaws.has(MalformedURLsTruncated) != want.flaws.has(MalformedURLsTruncated) {
			t.Fatalf("in %q (max %d): scanText found %q, the reference %q", text, max, got.list, want.list)
		}
	}
}
