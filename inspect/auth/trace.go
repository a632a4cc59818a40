package auth

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// Tracer is a Resolver that remembers every question asked through it and
// the answer, for a check's Lookups. It is safe for concurrent use.
type Tracer struct {
	r       Resolver
	mu      sync.Mutex
	lookups []Lookup
}

// maxTraced bounds what one Tracer keeps; SPF alone may ask up to ~30
// questions (RFC 7208 §4.6.4: ten terms, ten MX names each).
const maxTraced = 64

// NewTracer wraps r.
func NewTracer(r Resolver) *Tracer { return &Tracer{r: r} }

// Lookups returns the questions asked so far, in order.
func (t *Tracer) Lookups() []Lookup {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Lookup(nil), t.lookups...)
}

func (t *Tracer) note(typ, name string, answer []string, err error) {
	l := Lookup{Type: typ, Name: name, Answer: answer}
	if err != nil {
		if IsNotFound(err) {
			l.Err = "not found"
		} else {
			l.Err = err.Error()
		}
	}
	t.mu.Lock()
	if len(t.lookups) < maxTraced {
		t.lookups = append(t.lookups, l)
	}
	t.mu.Unlock()
}

// LookupTXT implements Resolver.
func (t *Tracer) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, err := t.r.LookupTXT(ctx, name)
	t.note("TXT", name, txt, err)
	return txt, err
}

// LookupMX implements Resolver.
func (t *Tracer) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mx, err := t.r.LookupMX(ctx, name)
	var ans []string
	for _, m := range mx {
		if m != nil {
			ans = append(ans, strconv.Itoa(int(m.Pref))+" "+m.Host)
		}
	}
	t.note("MX", name, ans, err)
	return mx, err
}

// LookupIP implements Resolver.
func (t *Tracer) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	ips, err := t.r.LookupIP(ctx, host)
	var ans []string
	for _, ip := range ips {
		ans = append(ans, ip.String())
	}
	t.note("A/AAAA", host, ans, err)
	return ips, err
}

// LookupPTR implements Resolver.
func (t *Tracer) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	names, err := t.r.LookupPTR(ctx, ip)
	t.note("PTR", ip.String(), names, err)
	return names, err
}
