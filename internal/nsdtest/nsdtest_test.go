package nsdtest

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestServesZone(t *testing.T) {
	long := strings.Repeat("k", 600)
	s := Start(t, map[string][]string{
		"example.test": {
			`@ TXT "v=spf1 ip4:127.0.0.1 -all"`,
			`sel._domainkey TXT ` + TXT("v=DKIM1; p="+long),
			`mail A 127.0.0.2`,
		},
	})
	c := new(dns.Client)
	for _, q := range []struct {
		name  string
		qtype uint16
		want  string
		rcode int
	}{
		{"example.test.", dns.TypeTXT, "v=spf1 ip4:127.0.0.1 -all", dns.RcodeSuccess},
		{"sel._domainkey.example.test.", dns.TypeTXT, "v=DKIM1; p=" + long, dns.RcodeSuccess},
		{"mail.example.test.", dns.TypeA, "127.0.0.2", dns.RcodeSuccess},
		{"nope.example.test.", dns.TypeTXT, "", dns.RcodeNameError},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, false) // the DKIM key is longer than 512 bytes
		for _, net := range []string{"udp", "tcp"} {
			c.Net = net
			r, _, err := c.Exchange(m, s.Addr)
			if err != nil {
				t.Fatalf("%s %s over %s: %v", q.name, dns.TypeToString[q.qtype], net, err)
			}
			if r.Rcode != q.rcode {
				t.Fatalf("%s: rcode %s, want %s", q.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[q.rcode])
			}
			if q.want == "" {
				continue
			}
			if len(r.Answer) != 1 {
				t.Fatalf("%s: answer %v", q.name, r.Answer)
			}
			var got string
			switch rr := r.Answer[0].(type) {
			case *dns.TXT:
				got = strings.Join(rr.Txt, "")
			case *dns.A:
				got = rr.A.String()
			}
			if got != q.want {
				t.Errorf("%s over %s = %q, want %q", q.name, net, got, q.want)
			}
		}
	}
}
