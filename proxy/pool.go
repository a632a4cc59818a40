package proxy

import (
	"sync"
	"time"
)

// upstreamPool keeps upstream connections open between client sessions.
// Most client sessions carry one message; without the pool each would pay
// the upstream a TCP connect, greeting, EHLO and QUIT — the largest single
// cost in moat's profile. A connection is pooled only when it is idle and
// sound, and only when it speaks for moat itself: with XCLIENT or a PROXY
// header each connection carries one client's identity, so there is no
// pool.
type upstreamPool struct {
	mu     sync.Mutex
	idle   []pooled // most recently used last
	closed bool
}

type pooled struct {
	u     *upstream
	since time.Time
}

// poolable reports whether cfg allows sharing upstream connections.
func poolable(cfg *Config) bool {
	return *cfg.Upstream.PoolSize > 0 && !cfg.Upstream.XClient && cfg.Upstream.ProxyProtocol == ""
}

// get returns the most recently used idle connection that has not been
// idle for longer than maxIdle, or nil. Expired ones are closed.
func (p *upstreamPool) get(maxIdle time.Duration) *upstream {
	now := time.Now()
	var u *upstream
	var stale []*upstream
	p.mu.Lock()
	keep := p.idle[:0]
	for _, e := range p.idle {
		if now.Sub(e.since) > maxIdle {
			stale = append(stale, e.u)
			continue
		}
		keep = append(keep, e)
	}
	p.idle = keep
	if n := len(p.idle); n > 0 {
		u = p.idle[n-1].u
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	for _, s := range stale {
		go s.quit() // a polite goodbye, off the session's path
	}
	return u
}

// put offers an idle, sound connection to the pool; false means the
// caller keeps it (and closes it). A connection with a transaction still
// open upstream, or with replies not read yet, would hand the next
// session someone else's state: it is never pooled.
func (p *upstreamPool) put(u *upstream, size int) bool {
	if u.broken || u.inTx || u.r.Buffered() > 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= size {
		return false
	}
	p.idle = append(p.idle, pooled{u, time.Now()})
	return true
}

// close says QUIT on every idle connection; the pool takes no more.
func (p *upstreamPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, e := range idle {
		e.u.quit()
	}
}
