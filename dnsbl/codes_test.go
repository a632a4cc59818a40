package dnsbl

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseCodeKey(t *testing.T) {
	for _, c := range []struct {
		key       string
		canonical string
		match     []string
		noMatch   []string
	}{
		{"127.0.0.2", "127.0.0.2", []string{"127.0.0.2"}, []string{"127.0.0.3", "127.0.1.2", "::1"}},
		{"127.0.0.[4..7]", "127.0.0.[4..7]", []string{"127.0.0.4", "127.0.0.7"}, []string{"127.0.0.3", "127.0.0.8"}},
		// postscreen's zen.spamhaus.org=127.0.0.[2..11]*3
		{"127.0.0.[2..11]", "127.0.0.[2..11]", []string{"127.0.0.2", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12", "127.255.255.254"}},
		// postscreen's wl.mailspike.net=127.0.0.[17;18]*-1
		{"127.0.0.[17;18]", "127.0.0.[17..18]", []string{"127.0.0.17", "127.0.0.18"}, []string{"127.0.0.19"}},
		{"127.0.0.[1;3..5;9]", "127.0.0.[1;3..5;9]", []string{"127.0.0.1", "127.0.0.4", "127.0.0.9"}, []string{"127.0.0.2", "127.0.0.6"}},
		{"127.0.0.[5..5]", "127.0.0.5", []string{"127.0.0.5"}, nil},
		// dnswl's trust octet, any category.
		{"127.0.*.3", "127.0.*.3", []string{"127.0.5.3", "127.0.15.3"}, []string{"127.0.5.2", "127.1.5.3"}},
		{"127.0.[0..255].3", "127.0.*.3", []string{"127.0.0.3"}, nil},
		{"127.255.255.*", "127.255.255.*", []string{"127.255.255.252", "127.255.255.254", "127.255.255.255"}, []string{"127.0.0.2"}},
		// SURBL/URIBL bitmasks: the last octet shares a bit with N.
		{"bit:8", "bit:8", []string{"127.0.0.8", "127.0.0.24", "127.0.0.254"}, []string{"127.0.0.2", "127.0.0.16", "127.0.0.247"}},
		{"bit:6", "bit:6", []string{"127.0.0.2", "127.0.0.4", "127.0.0.14"}, []string{"127.0.0.8", "127.0.0.1"}},
		{"bit:1", "bit:1", []string{"127.0.0.1"}, []string{"127.0.0.2"}},
	} {
		k, err := ParseCodeKey(c.key)
		if err != nil {
			t.Errorf("%q: %v", c.key, err)
			continue
		}
		if got := k.String(); got != c.canonical {
			t.Errorf("%q: String() = %q, want %q", c.key, got, c.canonical)
		}
		for _, a := range c.match {
			if !k.Match(netip.MustParseAddr(a)) {
				t.Errorf("%q does not match %s", c.key, a)
			}
		}
		for _, a := range c.noMatch {
			if k.Match(netip.MustParseAddr(a)) {
				t.Errorf("%q matches %s", c.key, a)
			}
		}
	}
}

func TestParseCodeKeyErrors(t *testing.T) {
	for _, c := range []struct{ key, err string }{
		{"127.0.0.[9..2]", `"127.0.0.[9..2]": range is backwards`},
		{"127.0.0", "want four octets"},
		{"127.0.0.2.1", "want four octets"},
		{"", "want four octets"},
		{"127.0.0.256", `bad octet "256"`},
		{"127.0.0.-1", `bad octet "-1"`},
		{"127.0.0.+1", `bad octet "+1"`},
		{"127.0.0.02", `bad octet "02"`},
		{"127.0.0.[]", `bad octet "[]"`},
		{"127.0.0.[2..]", `bad octet ""`},
		{"127.0.0.[2..3", `bad octet "[2..3"`},
		{"127.0.0.[;]", `bad octet ""`},
		{"127.0.0.x", `bad octet "x"`},
		{"127.0.0.2/32", `bad octet "2/32"`},
		{"bit:0", "bit:N needs N from 1 to 255"},
		{"bit:256", "bit:N needs N from 1 to 255"},
		{"bit:", "bit:N needs N from 1 to 255"},
		{"bit:+2", "bit:N needs N from 1 to 255"},
	} {
		_, err := ParseCodeKey(c.key)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: err = %v, want %q", c.key, err, c.err)
		}
	}
}

func TestCodesMerge(t *testing.T) {
	base := Codes{rule("127.0.0.2", "sbl", 4), rule("127.0.0.[4..7]", "xbl", 6), errorRule("127.255.255.*")}
	over := Codes{rule("127.0.0.[4..7]", "exploit", 9), rule("127.0.0.99", "local", 1)}
	got := base.merge(over)
	var s []string
	for _, r := range got {
		s = append(s, r.Key.String()+"="+r.Reason)
	}
	want := "127.0.0.2=sbl 127.0.0.[4..7]=exploit 127.255.255.*= 127.0.0.99=local"
	if strings.Join(s, " ") != want {
		t.Errorf("merge = %q, want %q", strings.Join(s, " "), want)
	}
	if len(base) != 3 || base[1].Reason != "xbl" {
		t.Error("merge modified the profile's table")
	}
}

// Every built-in profile is complete: a zone, a kind, a listing code.
func TestProfiles(t *testing.T) {
	for _, name := range ProfileNames() {
		p := profiles[Profile(name)]
		listing := false
		for _, r := range p.codes {
			listing = listing || !r.Error
			if !r.Error {
				if err := checkName("reason", r.Reason); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		}
		if p.zone == "" || p.kind == 0 || !listing {
			t.Errorf("profile %s is incomplete: %+v", name, p)
		}
	}
}

// Parsing a key, formatting it and parsing that gives the same key, and
// the canonical form is a fixed point.
func FuzzCodeKey(f *testing.F) {
	for _, s := range []string{"127.0.0.2", "127.0.0.[4..7]", "127.0.*.3", "127.0.0.[1;3..5;9]", "bit:8", "127.0.0.[9..2]", "bit:0"} {
		f.Add(s, uint32(0x7f000002))
	}
	f.Fuzz(func(t *testing.T, s string, probe uint32) {
		k, err := ParseCodeKey(s)
		if err != nil {
			return
		}
		if k.IsZero() {
			t.Fatalf("%q parsed to the zero key", s)
		}
		canon := k.String()
		k2, err := ParseCodeKey(canon)
		if err != nil {
			t.Fatalf("%q: canonical form %q does not parse: %v", s, canon, err)
		}
		if k2 != k {
			t.Fatalf("%q: %q parses to a different key", s, canon)
		}
		if k2.String() != canon {
			t.Fatalf("%q: canonical form not stable: %q then %q", s, canon, k2.String())
		}
		a := netip.AddrFrom4([4]byte{byte(probe >> 24), byte(probe >> 16), byte(probe >> 8), byte(probe)})
		if k.Match(a) != k2.Match(a) {
			t.Fatalf("%q and %q disagree on %s", s, canon, a)
		}
	})
}
