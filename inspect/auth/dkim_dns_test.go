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

// dnsResolver is a Resolver for tests that asks one DNS server directly,
// as a stub resolver asks its recursor: UDP with EDNS0 (4096-byte
// payload), again over TCP when the answer comes back truncated.
// NXDOMAIN, and NOERROR without an answer of the type (NODATA), are
// NotFound; any other rcode, and no answer in time, are errors.
type dnsResolver struct {
	addr    string
	timeout time.Duration // per exchange; 0 means 2 s
}

func (r dnsResolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.SetEdns0(4096, false)
	timeout := r.timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 4096}
	in, _, err := c.ExchangeContext(ctx, q, r.addr)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, q, r.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, dns.TypeToString[qtype], err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, NotFound{Name: name}
	default:
		return nil, fmt.Errorf("%s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])
	}
	var rrs []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			rrs = append(rrs, rr)
		}
	}
	if len(rrs) == 0 {
		return nil, NotFound{Name: name}
	}
	return rrs, nil
}

// LookupTXT returns one string per record, its character-strings joined
// (as net.LookupTXT does).
func (r dnsResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, err
}

func (r dnsResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, err
}

func (r dnsResolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var firstErr error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, qtype)
		if err != nil && !IsNotFound(err) {
			return nil, err
		}
		if firstErr == nil {
			firstErr = err
		}
		for _, rr := range rrs {
			var ip net.IP
			switch rr := rr.(type) {
			case *dns.A:
				ip = rr.A
			case *dns.AAAA:
				ip = rr.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

func (r dnsResolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	name, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, err
	}
	rrs, err := r.query(ctx, name, dns.TypePTR)
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, err
}

// faultServer is an in-process DNS server on loopback UDP whose handler
// answers every question with rcode — or, with rcode < 0, never answers.
func faultServer(t *testing.T, rcode int) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{
		PacketConn:        pc,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			if rcode < 0 {
				return
			}
			m := new(dns.Msg)
			m.SetRcode(q, rcode)
			w.WriteMsg(m)
		}),
	}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestDKIMDNSResolver checks the test resolver itself against NSD:
// answers, NXDOMAIN and NODATA as NotFound, and a TXT record too large
// for a 4096-byte UDP answer fetched again over TCP.
func TestDKIMDNSResolver(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 400) // 6400 bytes
	ns := nsdtest.Start(t, map[string][]string{"example.test": {
		"key._domainkey TXT " + nsdtest.TXT("v=DKIM1; k=ed25519; p=abc"),
		"big TXT " + nsdtest.TXT(big),
		"mail A 192.0.2.7",
		"@ MX 10 mail.example.test.",
	}})
	r := dnsResolver{addr: ns.Addr}
	ctx := context.Background()

	if txt, err := r.LookupTXT(ctx, "key._domainkey.example.test"); err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; k=ed25519; p=abc" {
		t.Errorf("LookupTXT = %q, %v", txt, err)
	}
	if _, err := r.LookupTXT(ctx, "nope._domainkey.example.test"); !IsNotFound(err) {
		t.Errorf("NXDOMAIN: %v, want not found", err)
	}
	if _, err := r.LookupTXT(ctx, "mail.example.test"); !IsNotFound(err) {
		t.Errorf("NODATA: %v, want not found", err)
	}
	if mx, err := r.LookupMX(ctx, "example.test"); err != nil || len(mx) != 1 || mx[0].Host != "mail.example.test." {
		t.Errorf("LookupMX = %v, %v", mx, err)
	}
	if ips, err := r.LookupIP(ctx, "mail.example.test"); err != nil || len(ips) != 1 || ips[0] != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("LookupIP = %v, %v", ips, err)
	}

	// Over UDP alone the big record is truncated: the resolver must have
	// asked again over TCP to get it whole.
	q := new(dns.Msg)
	q.SetQuestion("big.example.test.", dns.TypeTXT)
	q.SetEdns0(4096, false)
	in, _, err := (&dns.Client{Net: "udp", UDPSize: 4096}).Exchange(q, ns.Addr)
	if err != nil || !in.Truncated {
		t.Fatalf("UDP answer for the big record: truncated=%v, %v", in != nil && in.Truncated, err)
	}
	if txt, err := r.LookupTXT(ctx, "big.example.test"); err != nil || len(txt) != 1 || txt[0] != big {
		t.Errorf("LookupTXT(big) = %d records, %v", len(txt), err)
	}

	// Faults are errors, not NotFound.
	if _, err := (dnsResolver{addr: faultServer(t, dns.RcodeServerFailure)}).LookupTXT(ctx, "x.example.test"); err == nil || IsNotFound(err) {
		t.Errorf("SERVFAIL: %v", err)
	}
	if _, err := (dnsResolver{addr: faultServer(t, -1), timeout: 200 * time.Millisecond}).LookupTXT(ctx, "x.example.test"); err == nil || IsNotFound(err) {
		t.Errorf("no answer: %v", err)
	}
}
