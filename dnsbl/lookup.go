package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Pending is a lookup under way. Wait collects its results.
type Pending struct {
	results []Result
	waits   []wait
}

// newPending returns a Pending with room for n results, allocated together
// with it in one object for up to 8 lists: a cached lookup allocates
// nothing else.
func newPending(n int) *Pending {
	var p *Pending
	var buf []Result
	switch {
	case n <= 1:
		x := new(struct {
			p   Pending
			buf [1]Result
		})
		p, buf = &x.p, x.buf[:]
	case n <= 2:
		x := new(struct {
			p   Pending
			buf [2]Result
		})
		p, buf = &x.p, x.buf[:]
	case n <= 4:
		x := new(struct {
			p   Pending
			buf [4]Result
		})
		p, buf = &x.p, x.buf[:]
	case n <= 8:
		x := new(struct {
			p   Pending
			buf [8]Result
		})
		p, buf = &x.p, x.buf[:]
	default:
		p, buf = new(Pending), make([]Result, n)
	}
	p.results = buf[:n]
	return p
}

type wait struct {
	i    int // index in results
	k    cacheKey
	e    *entry
	stop func() bool // undoes the context.AfterFunc that releases e
}

// Lookup starts queries for key on every list of kind, in parallel, and
// returns at once: lookups start when a fact is known and are awaited only
// when a rule needs them.
//
// For KindIP key is an IP address (asked as reversed octets or nibbles);
// for KindDomain a domain; for KindURI a domain or an IP address found in
// a URL. A key of the wrong form is not asked: its results are "not
// listed". Answers come from the cache when they can, and concurrent
// lookups of one key on one list share one query. When ctx ends, the
// queries it alone waits for are stopped.
func (c *Checker) Lookup(ctx context.Context, kind Kind, key string) *Pending {
	var lists []*list
	if int(kind) < len(c.byKind) {
		lists = c.byKind[kind]
	}
	p := newPending(len(lists))
	k, ok := parseKey(kind, key)
	if !ok {
		for i, l := range lists {
			p.results[i] = l.base(key)
		}
		return p
	}
	type start struct {
		l *list
		w wait
	}
	var starts []start
	now := c.now()
	c.mu.Lock()
	for i, l := range lists {
		if !l.healthy.Load() {
			p.results[i] = l.base(key)
			l.fail(&p.results[i], ErrKindUnhealthy, ErrUnhealthy)
			continue
		}
		ck := cacheKey{list: l.idx, addr: k.addr, name: k.name}
		e := c.cache[ck]
		if e != nil && e.ready {
			if now.Before(e.expires) {
				p.results[i] = e.res
				p.results[i].Cached = true
				l.m.cacheHits.Inc()
				continue
			}
			delete(c.cache, ck)
			e = nil
		}
		p.results[i] = l.base(key)
		if e == nil {
			l.m.cacheMisses.Inc()
			e = &entry{done: make(chan struct{})}
			c.insertLocked(ck, e, now)
			starts = append(starts, start{l, wait{i: i, k: ck, e: e}})
		} else {
			l.m.cacheHits.Inc() // joins a query in flight
		}
		e.waiters++
		p.waits = append(p.waits, wait{i: i, k: ck, e: e})
	}
	// The queries outlive the Lookup's context by design: others may
	// join them. release stops one when its last waiter is gone.
	for _, s := range starts {
		s.w.e.ctx, s.w.e.cancel = context.WithTimeout(context.WithoutCancel(ctx), s.l.timeout)
	}
	c.mu.Unlock()
	for _, s := range starts {
		go c.resolve(s.l, k, s.w.k, s.w.e)
	}
	for j := range p.waits {
		w := &p.waits[j]
		w.stop = context.AfterFunc(ctx, func() { c.release(w.k, w.e) })
	}
	return p
}

// Wait waits for the lookups to finish, or for ctx to end, and returns
// one result per list of the kind, in configuration order whatever the
// order the answers came in. A list still unanswered when ctx ends has
// ErrKind "canceled" (or "timeout" when ctx's deadline passed). Wait may be
// called again; the returned slice is the Pending's own.
func (p *Pending) Wait(ctx context.Context) []Result {
	for j := range p.waits {
		w := &p.waits[j]
		if w.e == nil {
			continue
		}
		select {
		case <-w.e.done:
		default:
			select {
			case <-w.e.done:
			case <-ctx.Done():
				r := &p.results[w.i]
				kind := ErrKindCanceled
				if ctx.Err() == context.DeadlineExceeded {
					kind = ErrKindTimeout
				}
				r.Err, r.ErrKind = fmt.Errorf("dnsbl %s (%s): %w", r.List, r.Zone, ctx.Err()), kind
				continue
			}
		}
		p.results[w.i] = w.e.res
		w.stop()
		w.e = nil
	}
	return p.results
}

// resolve runs the query of entry e (list l, key k) and publishes it.
func (c *Checker) resolve(l *list, k queryKey, ck cacheKey, e *entry) {
	defer e.cancel()
	begin := time.Now()
	res, ttl := c.lookupList(e.ctx, l, k)
	if res.ErrKind != ErrKindCanceled {
		l.m.queries.Inc()
		l.m.duration.Observe(time.Since(begin).Seconds())
		l.m.record(res)
	}
	c.finish(ck, e, res, ttl)
}

// lookupList asks list l about key k: the A query, then the TXT query for
// a listing when l.txt is set. It returns the result and how long it may
// be cached. It records no metrics: health probes use it too.
func (c *Checker) lookupList(ctx context.Context, l *list, k queryKey) (Result, time.Duration) {
	res := l.base(k.String())
	name := queryName(k, l.fqdn)
	r, kind, err := c.ask(ctx, name, dns.TypeA)
	if err != nil {
		l.fail(&res, kind, err)
		return res, 0
	}
	rrs, ttl := answerRecords(r, name, dns.TypeA)
	if len(rrs) == 0 {
		return res, ttl // NXDOMAIN or no A record: not listed
	}
	res.Answers = make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.A).A); ok {
			res.Answers = append(res.Answers, a.Unmap())
		}
	}
	if kind, err := l.classify(&res); err != nil {
		l.fail(&res, kind, err)
		return res, 0
	}
	if res.Listed && l.txt {
		if r, _, err := c.ask(ctx, name, dns.TypeTXT); err == nil {
			txts, tttl := answerRecords(r, name, dns.TypeTXT)
			var parts []string
			for i, rr := range txts {
				if i > 0 {
					parts = append(parts, "; ")
				}
				parts = append(parts, rr.(*dns.TXT).Txt...)
			}
			res.TXT = cleanTXT(parts)
			if len(txts) > 0 {
				ttl = min(ttl, tttl)
			}
		}
		// A missing TXT only costs the reject text its detail.
	}
	return res, ttl
}
