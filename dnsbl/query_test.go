package dnsbl

import (
	"testing"
)

func TestQueryName(t *testing.T) {
	for _, c := range []struct {
		kind      Kind
		key, want string
	}{
		// RFC 5782 §2.1: IPv4 octets reversed.
		{KindIP, "192.0.2.99", "99.2.0.192.bl.test."},
		{KindIP, "127.0.0.2", "2.0.0.127.bl.test."},
		{KindIP, "10.200.0.255", "255.0.200.10.bl.test."},
		// An IPv4 client behind a dual-stack socket is an IPv4 client.
		{KindIP, "::ffff:192.0.2.99", "99.2.0.192.bl.test."},
		// RFC 5782 §2.4: IPv6 nibbles reversed.
		{KindIP, "2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."},
		{KindIP, "2001:DB8:abcd:12::ff%eth0", "f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.1.0.0.d.c.b.a.8.b.d.0.1.0.0.2.bl.test."},
		// RFC 5782 §2.2: domains as they are, in lower case.
		{KindDomain, "Example.COM.", "example.com.bl.test."},
		{KindDomain, "mail_1.example-2.org", "mail_1.example-2.org.bl.test."},
		{KindURI, "spam.example", "spam.example.bl.test."},
		{KindURI, "192.0.2.7", "7.2.0.192.bl.test."},
		{KindURI, "[2001:db8::1]", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."},
	} {
		k, ok := parseKey(c.kind, c.key)
		if !ok {
			t.Errorf("%s %q: refused", c.kind, c.key)
			continue
		}
		if got := queryName(k, "bl.test."); got != c.want {
			t.Errorf("%s %q: %q, want %q", c.kind, c.key, got, c.want)
		}
	}
}

func TestParseKeyRefuses(t *testing.T) {
	for _, c := range []struct {
		kind Kind
		key  string
	}{
		{KindIP, "example.com"},
		{KindIP, ""},
		{KindIP, "192.0.2"},
		{KindIP, "[192.0.2.1"},
		{KindDomain, "192.0.2.1"}, // RHSBLs list names
		{KindDomain, "[192.0.2.1]"},
		{KindDomain, ""},
		{KindDomain, "."},
		{KindDomain, "a..b"},
		{KindDomain, ".example.com"},
		{KindDomain, "exa mple.com"},
		{KindDomain, "bücher.example"}, // U-labels: the caller gives A-labels
		{KindDomain, "a/b.example"},
		{KindDomain, "*.example.com"},
		{KindDomain, string(make([]byte, 64)) + ".example"},
		{KindURI, "http://example.com/"},
		{Kind(0), "192.0.2.1"},
	} {
		if k, ok := parseKey(c.kind, c.key); ok {
			t.Errorf("%s %q: accepted as %q", c.kind, c.key, k)
		}
	}
	long := ""
	for len(long) < 250 {
		long += "abcdefghi."
	}
	if _, ok := parseKey(KindDomain, long+"example"); ok {
		t.Error("a name over 253 bytes was accepted")
	}
}

// A normal-form key is parsed without allocating: the cached lookup path
// depends on it.
func TestParseKeyNoAlloc(t *testing.T) {
	for _, c := range []struct {
		kind Kind
		key  string
	}{{KindIP, "192.0.2.1"}, {KindDomain, "example.com"}, {KindURI, "spam.example"}} {
		if n := testing.AllocsPerRun(100, func() { parseKey(c.kind, c.key) }); n != 0 {
			t.Errorf("parseKey(%s, %q): %v allocations", c.kind, c.key, n)
		}
	}
}

func TestCleanTXT(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"Listed by bl.test, see https://bl.test/q?192.0.2.1"}, "Listed by bl.test, see https://bl.test/q?192.0.2.1"},
		{[]string{"part one, ", "part two"}, "part one, part two"},
		// No CR LF may reach an SMTP reply.
		{[]string{"evil\r\n250 OK\r\n"}, "evil  250 OK"},
		{[]string{"caf\xc3\xa9"}, "caf"},
		{[]string{string(make([]byte, 500))}, ""},
	} {
		if got := cleanTXT(c.in); got != c.want {
			t.Errorf("cleanTXT(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := cleanTXT([]string{string(make([]byte, 100)) + "x" + string(make([]byte, 500)) + "y"})
	if len(long) > 200 {
		t.Errorf("cleanTXT kept %d bytes", len(long))
	}
}

func TestDescribe(t *testing.T) {
	listed := Result{List: "zen", Zone: "zen.spamhaus.org", Listed: true, Reasons: []string{"sbl", "xbl"}, TXT: "see https://www.spamhaus.org/"}
	hidden := listed
	hidden.hideZone = true
	for _, c := range []struct {
		r    Result
		want string
	}{
		{listed, "listed on zen.spamhaus.org (sbl, xbl): see https://www.spamhaus.org/"},
		{hidden, "listed (sbl, xbl)"},
		{Result{Zone: "bl.test"}, "not listed"},
		{Result{Zone: "bl.test", Err: ErrServfail, ErrKind: ErrKindServfail}, "lookup failed (servfail)"},
	} {
		if got := c.r.Describe(); got != c.want {
			t.Errorf("Describe() = %q, want %q", got, c.want)
		}
	}
}
