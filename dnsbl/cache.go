package dnsbl

import (
	"context"
	"net/netip"
	"time"
)

// The cache holds one entry per list and key, shared by every session:
//
//   - An entry is created by the first Lookup that misses and is "in
//     flight" until its query is done; later Lookups of the same key on the
//     same list join it instead of asking again (single flight), so a burst
//     of connections from one IP makes one query per list.
//   - A finished entry keeps its Result until the answer's TTL runs out
//     (negative answers: the SOA minimum, RFC 2308 §5). Failures are never
//     kept: the next Lookup asks again.
//   - The cache is bounded: past CacheSize entries, inserting evicts a
//     finished entry, the one expiring first among a few sampled (the
//     sampling eviction of Redis: no LRU list to update on every hit).
//
// All of it is guarded by Checker.mu.

// cacheKey names an entry: a list and a normal-form key. It holds the
// address as a netip.Addr, so a hit needs no string built.
type cacheKey struct {
	list int
	addr netip.Addr
	name string
}

// entry is one list's answer for one key, or the query that will give it.
type entry struct {
	done    chan struct{} // closed once res is final
	ready   bool          // res is final; read under Checker.mu
	res     Result        // immutable once ready
	expires time.Time

	// While in flight: the Lookups waiting for it and how to stop the
	// query when none is left.
	waiters int
	ctx     context.Context // the query's, detached from any one Lookup
	cancel  context.CancelFunc
}

// evictSample is how many entries eviction looks at.
const evictSample = 8

// insertLocked adds a new in-flight entry under k, evicting one finished
// entry first if the cache is full. Checker.mu is held.
func (c *Checker) insertLocked(k cacheKey, e *entry, now time.Time) {
	if len(c.cache) >= c.cacheSize {
		var victim cacheKey
		var at time.Time
		found, n := false, 0
		for ck, ce := range c.cache {
			if n++; n > evictSample && found {
				break
			}
			if !ce.ready {
				continue
			}
			if !found || ce.expires.Before(at) {
				victim, at, found = ck, ce.expires, true
			}
			if !at.After(now) {
				break // already expired: no better victim
			}
		}
		if found {
			delete(c.cache, victim)
		}
		// With every entry in flight the cache grows past its bound
		// for as long as those queries last (at most a timeout).
	}
	c.cache[k] = e
}

// release is called when a Lookup's context ends: that Lookup no longer
// waits for e. The last waiter to leave stops the query, and the entry
// leaves the cache so that a new Lookup asks afresh.
func (c *Checker) release(k cacheKey, e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.ready {
		return
	}
	e.waiters--
	if e.waiters > 0 {
		return
	}
	if c.cache[k] == e {
		delete(c.cache, k)
	}
	e.cancel()
}

// finish stores the result of e's query and wakes its waiters. A result
// is kept for ttl if it is an answer (not a failure) and ttl is positive.
func (c *Checker) finish(k cacheKey, e *entry, res Result, ttl time.Duration) {
	c.mu.Lock()
	e.res, e.ready = res, true
	e.expires = c.now().Add(ttl)
	if c.cache[k] == e && (res.Err != nil || ttl <= 0) {
		delete(c.cache, k)
	}
	c.mu.Unlock()
	close(e.done)
}
