package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/nsdtest"
)

// The package's tests get their DNS from three places, one for each kind
// of test: wireDNS asks a real server (NSD, from internal/nsdtest) over
// the wire; faultServer is an in-process server for the faults a real one
// is not made to produce on purpose; memDNS answers the tables from a
// map. (moat's production Resolver is package dnsbl's client; these are
// for tests only.)

// wireDNS is a Resolver that asks one DNS server directly, as a stub
// resolver asks its recursor: UDP with EDNS0 (a 4096-byte payload, room
// for a 2048-bit DKIM key), again over TCP when the answer comes back
// truncated. NXDOMAIN, and NOERROR without an answer of the type
// (NODATA), are NotFound; any other rcode, and no answer in time, are
// errors. Names under a zone in zones go to that zone's server instead.
type wireDNS struct {
	addr    string
	zones   map[string]string // zone → address of the server asked for names under it
	timeout time.Duration     // per exchange; 0 means 2 s
}

func (r wireDNS) server(name string) string {
	for zone, addr := range r.zones {
		if dns.IsSubDomain(dns.Fqdn(zone), dns.Fqdn(name)) {
			return addr
		}
	}
	return r.addr
}

func (r wireDNS) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.SetEdns0(4096, false)
	timeout := r.timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	addr := r.server(name)
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 4096}
	in, _, err := c.ExchangeContext(ctx, q, addr)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, q, addr)
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
		return nil, NotFound{Name: name} // NODATA
	}
	return rrs, nil
}

// LookupTXT returns one string per record, its character-strings joined
// (RFC 6376 §3.6.2.2, RFC 7208 §3.3), as net.LookupTXT gives them.
func (r wireDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, err
}

func (r wireDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.query(ctx, name, dns.TypeMX)
	var out []*net.MX
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, err
}

// LookupIP asks for A, then AAAA; a failure of either (other than
// NotFound) is the answer.
func (r wireDNS) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, host, qtype)
		if err != nil && !IsNotFound(err) {
			return nil, err
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
		return nil, NotFound{Name: host}
	}
	return out, nil
}

func (r wireDNS) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
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

// faultServer starts an in-process DNS server on loopback UDP, with its
// own handler, that answers every question with rcode — or, with
// rcode < 0, never answers. It returns its address; it stops when the
// test ends.
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

// errServFail is the failure memDNS tables give names that SERVFAIL.
var errServFail = errors.New("SERVFAIL")

// memDNS is an in-memory Resolver for the tables: TXT records by name,
// names compared in lower case without the final dot. A name not in txt,
// or in it without records, does not exist, and so does every MX,
// address and PTR record — except that every lookup of a name in fail
// fails with its error (a nil error there is no failure), and every
// lookup fails with err when it is set.
//
// When gate is set, every TXT lookup first sends the name asked on asked
// (when set), then waits for gate to close or its context to end: a
// lookup that is pending, as long as the test wants it to be. Use a
// *memDNS; it counts its TXT lookups.
type memDNS struct {
	txt  map[string][]string
	fail map[string]error
	err  error

	gate  chan struct{}
	asked chan string

	mu       sync.Mutex
	asks     int // TXT lookups begun
	inflight int // TXT lookups not yet returned
}

// lookups is the number of TXT lookups asked so far.
func (m *memDNS) lookups() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.asks
}

// running is the number of TXT lookups that have not returned yet.
func (m *memDNS) running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.inflight
}

func memKey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// failure is the error every lookup of name fails with, if any.
func (m *memDNS) failure(name string) error {
	if m.err != nil {
		return m.err
	}
	return m.fail[memKey(name)]
}

func (m *memDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	m.mu.Lock()
	m.asks++
	m.inflight++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inflight--
		m.mu.Unlock()
	}()
	if m.gate != nil {
		if m.asked != nil {
			select {
			case m.asked <- name:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case <-m.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := m.failure(name); err != nil {
		return nil, err
	}
	if txt := m.txt[memKey(name)]; len(txt) > 0 {
		return txt, nil
	}
	return nil, NotFound{Name: name}
}

func (m *memDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if err := m.failure(name); err != nil {
		return nil, err
	}
	return nil, NotFound{Name: name}
}

func (m *memDNS) LookupIP(_ context.Context, host string) ([]netip.Addr, error) {
	if err := m.failure(host); err != nil {
		return nil, err
	}
	return nil, NotFound{Name: host}
}

func (m *memDNS) LookupPTR(_ context.Context, ip netip.Addr) ([]string, error) {
	if m.err != nil {
		return nil, m.err
	}
	return nil, NotFound{Name: ip.String()}
}

// TestWireDNS checks the test resolver itself against NSD: answers,
// NXDOMAIN and NODATA as NotFound, a TXT record too large for 512 bytes
// whole over EDNS0, and one too large for a 4096-byte UDP answer fetched
// again over TCP.
func TestWireDNS(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 400) // 6400 bytes
	ns := nsdtest.Start(t, map[string][]string{"example.test": {
		"key._domainkey TXT " + nsdtest.TXT("v=DKIM1; k=ed25519; p=abc"),
		"long TXT " + nsdtest.TXT(strings.Repeat("k", 3000)),
		"big TXT " + nsdtest.TXT(big),
		"mail A 192.0.2.7",
		"@ MX 10 mail.example.test.",
	}})
	r := wireDNS{addr: ns.Addr}
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
	if txt, err := r.LookupTXT(ctx, "long.example.test"); err != nil || len(txt) != 1 || len(txt[0]) != 3000 {
		t.Errorf("LookupTXT(long) = %d records, %v", len(txt), err)
	}
	if txt, err := r.LookupTXT(ctx, "big.example.test"); err != nil || len(txt) != 1 || txt[0] != big {
		t.Errorf("LookupTXT(big) = %d records, %v", len(txt), err)
	}
}

// TestWireDNSFaults: a server's faults are errors, not NotFound.
func TestWireDNSFaults(t *testing.T) {
	ctx := context.Background()
	if _, err := (wireDNS{addr: faultServer(t, dns.RcodeServerFailure)}).LookupTXT(ctx, "x.example.test"); err == nil || IsNotFound(err) {
		t.Errorf("SERVFAIL: %v", err)
	}
	if _, err := (wireDNS{addr: faultServer(t, -1), timeout: 200 * time.Millisecond}).LookupTXT(ctx, "x.example.test"); err == nil || IsNotFound(err) {
		t.Errorf("no answer: %v", err)
	}
}
