package auth

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/nsdtest"
)

// dmarcWireResolver is a test-only Resolver that asks one DNS server over
// the wire with miekg/dns, as production asks its resolvers: EDNS0 with
// a 4096-byte buffer, TCP when a UDP answer comes back truncated, and
// NXDOMAIN or an answer without records of the type as NotFound.
type dmarcWireResolver struct {
	addr string
}

func (r dmarcWireResolver) ask(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	name = dns.Fqdn(name)
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, false)
	c := &dns.Client{Net: "udp", UDPSize: 4096, Timeout: 2 * time.Second}
	in, _, err := c.ExchangeContext(ctx, m, r.addr)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.addr)
	}
	if err != nil {
		return nil, err
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, NotFound{Name: name}
	default:
		return nil, fmt.Errorf("%s %s: %s", dns.TypeToString[qtype], name, dns.RcodeToString[in.Rcode])
	}
	var out []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, NotFound{Name: name} // NODATA
	}
	return out, nil
}

func (r dmarcWireResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.ask(ctx, name, dns.TypeTXT)
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, err
}

func (r dmarcWireResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.ask(ctx, name, dns.TypeMX)
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, err
}

func (r dmarcWireResolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var firstErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.ask(ctx, host, qt)
		if err != nil && !IsNotFound(err) && firstErr == nil {
			firstErr = err
		}
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A); ok {
					out = append(out, a.Unmap())
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					out = append(out, a)
				}
			}
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case firstErr != nil:
		return nil, firstErr
	}
	return nil, NotFound{Name: dns.Fqdn(host)}
}

func (r dmarcWireResolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	name, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, err
	}
	rrs, err := r.ask(ctx, name, dns.TypePTR)
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, err
}

// TestDMARCRealDNS publishes policies in a real NSD on loopback and
// checks them through the wire resolver: pass, fail, none, the
// organizational-domain fallback with sp=, and an answer too big for UDP.
func TestDMARCRealDNS(t *testing.T) {
	filler := make([]string, 0, 20)
	for i := 0; i < 20; i++ {
		filler = append(filler, "_dmarc.big TXT "+nsdtest.TXT(fmt.Sprintf("filler-%02d-", i)+strings.Repeat("x", 240)))
	}
	srv := nsdtest.Start(t, map[string][]string{
		"example.test": append([]string{
			`_dmarc TXT "v=DMARC1; p=reject; sp=quarantine"`,
			`_dmarc.own TXT "v=DMARC1; p=none"`,
			`_dmarc.big TXT "v=DMARC1; p=reject; adkim=s"`,
			`_dmarc.split TXT "v=DMARC1; " "p=reject"`,
			`_dmarc.two TXT "v=DMARC1; p=reject"`,
			`_dmarc.two TXT "v=DMARC1; p=none"`,
			`_dmarc.nodata A 192.0.2.1`,
		}, filler...),
		"other.test": {`@ TXT "v=spf1 -all"`},
	})
	r := dmarcWireResolver{addr: srv.Addr}
	ctx := context.Background()

	// The filler makes the answer at _dmarc.big larger than 4096 bytes.
	m := new(dns.Msg)
	m.SetQuestion("_dmarc.big.example.test.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	if in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, srv.Addr); err != nil || !in.Truncated {
		t.Fatalf("the big answer is not truncated over UDP (err %v)", err)
	}

	tests := []struct {
		name    string
		in      DMARCInput
		result  Result
		policy  string
		lookups int
	}{
		{"pass", DMARCInput{From: []string{"a@example.test"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.test")}}, Pass, "reject", 1},
		{"fail", DMARCInput{From: []string{"a@example.test"}, SPF: dmarcSPF(Pass, "other.test")}, Fail, "reject", 1},
		{"none: no record", DMARCInput{From: []string{"a@other.test"}, SPF: dmarcSPF(Pass, "other.test")}, None, "", 1},
		{"temperror: REFUSED for a zone the server does not serve", DMARCInput{From: []string{"a@nowhere.test"}}, TempError, "", 1},
		{"NODATA falls back to the org domain", DMARCInput{From: []string{"a@nodata.example.test"}}, Fail, "quarantine", 2},
		{"org-domain fallback with sp=", DMARCInput{From: []string{"a@mail.example.test"}, SPF: dmarcSPF(Pass, "example.test")}, Pass, "quarantine", 2},
		{"org-domain fallback, fail", DMARCInput{From: []string{"a@deep.mail.example.test"}}, Fail, "quarantine", 2},
		{"own record", DMARCInput{From: []string{"a@own.example.test"}}, Fail, "none", 1},
		{"record split in strings", DMARCInput{From: []string{"a@split.example.test"}}, Fail, "reject", 1},
		{"two records: none", DMARCInput{From: []string{"a@two.example.test"}}, None, "", 1},
		{"truncated answer over TCP", DMARCInput{From: []string{"a@big.example.test"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.test")}}, Fail, "reject", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckDMARC(ctx, r, tc.in, DMARCOptions{})
			if got.Result != tc.result || got.Policy != tc.policy || len(got.Lookups) != tc.lookups {
				t.Errorf("got %s policy %q with %d lookups (%s), want %s policy %q with %d lookups",
					got.Result, got.Policy, len(got.Lookups), got.Reason, tc.result, tc.policy, tc.lookups)
			}
		})
	}
}
