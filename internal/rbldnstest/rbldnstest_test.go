package rbldnstest

import (
	"testing"

	"github.com/miekg/dns"
)

// The server answers listed keys with their A and TXT records, unlisted
// ones with NXDOMAIN carrying the SOA, and logs every query.
func TestStart(t *testing.T) {
	s := Start(t, map[string]Zone{
		"bl.test": {Default: "127.0.0.2:Listed $", Entries: []Entry{
			{Key: "127.0.0.2"},
			{Key: "192.0.2.5", A: "127.0.0.4", TXT: "xbl $"},
		}},
		"v6.bl.test": {Type: "ip6trie", Entries: []Entry{{Key: "2001:db8::1", A: "127.0.0.3"}}},
		"dbl.test":   {Type: "dnset", Entries: []Entry{{Key: "spam.example", A: "127.0.1.2", TXT: "spam $"}}},
	})
	ask := func(name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, err := dns.Exchange(m, s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"5.2.0.192.bl.test.", dns.TypeA, "127.0.0.4"},
		{"5.2.0.192.bl.test.", dns.TypeTXT, `"xbl 192.0.2.5"`},
		{"2.0.0.127.bl.test.", dns.TypeTXT, `"Listed 127.0.0.2"`},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.v6.bl.test.", dns.TypeA, "127.0.0.3"},
		{"spam.example.dbl.test.", dns.TypeA, "127.0.1.2"},
	} {
		r := ask(c.name, c.qtype)
		if len(r.Answer) != 1 {
			t.Errorf("%s: %v", c.name, r)
			continue
		}
		var got string
		switch rr := r.Answer[0].(type) {
		case *dns.A:
			got = rr.A.String()
		case *dns.TXT:
			got = `"` + rr.Txt[0] + `"`
		}
		if got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
	r := ask("1.0.0.127.bl.test.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Minttl != 30 {
		t.Errorf("unlisted: %v", r)
	}
	if n := s.Count(t, "5.2.0.192.bl.test"); n != 2 {
		t.Errorf("Count = %d, want 2 (A and TXT); log: %q", n, s.Queries(t))
	}
}
