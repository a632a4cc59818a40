package dnsbl

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ReverseResolver answers the reverse-DNS questions behind moat's rDNS
// facts (the client's PTR name and whether it is forward-confirmed) with
// the same resolvers, transport and answer checks as the lists. It
// implements inspect.Resolver.
type ReverseResolver struct{ c *Checker }

// Resolver returns c's reverse resolver.
func (c *Checker) Resolver() ReverseResolver { return ReverseResolver{c} }

// notFound is the answer "no such name or no such record": not a failure,
// an answer the rules see as "no rDNS".
type notFound struct{ name string }

func (e notFound) Error() string    { return e.name + ": no such record" }
func (e notFound) IsNotFound() bool { return true }

// rdnsCache keeps PTR and address answers for their TTL (RFC 2308's
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
func (r ReverseResolver) ask(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
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
func (r ReverseResolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
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
func (r ReverseResolver) LookupAddr(ctx context.Context, host string) ([]netip.Addr, error) {
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
