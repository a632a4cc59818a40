package dnsbl

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNS answers every other DNS question moat asks with the same
// resolvers, transport, answer checks and cache as the lists: the
// reverse DNS behind the rDNS facts (the client's PTR name and whether it
// is forward-confirmed) and the TXT, MX and address records of sender
// authentication (SPF, DKIM keys, DMARC and ARC). It implements
// inspect.Resolver and auth.Resolver.
type DNS struct{ c *Checker }

// DNS returns c's general-purpose DNS client.
func (c *Checker) DNS() DNS { return DNS{c} }

// notFound is the answer "no such name or no such record": not a failure,
// an answer the rules see as "no rDNS".
type notFound struct{ name string }

func (e notFound) Error() string    { return e.name + ": no such record" }
func (e notFound) IsNotFound() bool { return true }

// rdnsCache keeps PTR, address, TXT and MX answers for their TTL (RFC 2308's
// negative TTL for "no such name"), so a client that connects again does
// not cost another round of queries. Failures are not cached.
type rdnsCache struct {
	mu sync.Mutex
	m  map[rdnsKey]rdnsEntry
}

type rdnsKey struct {
	name  string
	qtype uint16
}

type rdnsEntry struct {
	msg     *dns.Msg
	expires time.Time
}

const rdnsCacheMax = 10000

// ask is Checker.ask through the cache.
func (r DNS) ask(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	c := &r.c.rdns
	k := rdnsKey{name, qtype}
	now := r.c.now()
	c.mu.Lock()
	if e, ok := c.m[k]; ok && now.Before(e.expires) {
		c.mu.Unlock()
		return e.msg, nil
	}
	c.mu.Unlock()
	m, _, err := r.c.ask(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	_, ttl := answerRecords(m, name, qtype)
	if ttl > 0 {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= rdnsCacheMax {
			c.m = make(map[rdnsKey]rdnsEntry) // bounded: start over when full
		}
		c.m[k] = rdnsEntry{msg: m, expires: now.Add(ttl)}
		c.mu.Unlock()
	}
	return m, nil
}

// LookupPTR returns the PTR names of ip (RFC 1035 §3.5).
func (r DNS) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	if ip.Unmap().IsLoopback() {
		// 127.in-addr.arpa and ::1's reverse zone are served by every
		// resolver itself (RFC 6303 §4.2, §4.3): no query needed.
		return []string{"localhost."}, nil
	}
	name, err := dns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return nil, err
	}
	m, err := r.ask(ctx, name, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	rrs, _ := answerRecords(m, name, dns.TypePTR)
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	if len(out) == 0 {
		return nil, notFound{name}
	}
	return out, nil
}

// LookupAddr returns the A and AAAA addresses of host.
func (r DNS) LookupAddr(ctx context.Context, host string) ([]netip.Addr, error) {
	name := dns.Fqdn(host)
	if strings.EqualFold(name, "localhost.") {
		// RFC 6761 §6.3: localhost is the loopback address, never asked.
		return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}, nil
	}
	var out []netip.Addr
	var firstErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := r.ask(ctx, name, qt)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		rrs, _ := answerRecords(m, name, qt)
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
	if len(out) == 0 {
		if firstErr != nil {
			return nil, firstErr
		}
		return nil, notFound{name}
	}
	return out, nil
}

// LookupIP returns the A and AAAA addresses of host (auth.DNS's
// name for LookupAddr).
func (r DNS) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return r.LookupAddr(ctx, host)
}

// maxTXTRecords bounds the TXT records of one name that are returned: SPF,
// DKIM and DMARC each want one, and a name with hundreds is an attack on
// the parser, not a policy.
const maxTXTRecords = 50

// LookupTXT returns the TXT records of name, the character-strings of
// each record joined into one string (RFC 7208 §3.3, RFC 6376 §3.6.2.2:
// a record split into several strings is read as their concatenation).
func (r DNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	name = dns.Fqdn(name)
	m, err := r.ask(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	rrs, _ := answerRecords(m, name, dns.TypeTXT)
	out := make([]string, 0, min(len(rrs), maxTXTRecords))
	for _, rr := range rrs {
		if len(out) == maxTXTRecords {
			break
		}
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	if len(out) == 0 {
		return nil, notFound{name}
	}
	return out, nil
}

// LookupMX returns the MX records of name.
func (r DNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	name = dns.Fqdn(name)
	m, err := r.ask(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	rrs, _ := answerRecords(m, name, dns.TypeMX)
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	if len(out) == 0 {
		return nil, notFound{name}
	}
	return out, nil
}
