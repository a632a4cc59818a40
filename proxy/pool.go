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

// usable reports whether a pooled connection may serve a session under
// cfg: it was made under cfg's upstream settings (a reload to another
// address or TLS mode must not keep using the old ones), it has not sat
// idle longer than pool_idle, and it is younger than pool_max_age,
// counted from its connect so that reuse never extends it.
func (e pooled) usable(cfg *Config, now time.Time) bool {
	return e.u.cfg == &cfg.Upstream && now.Sub(e.since) <= cfg.Upstream.PoolIdle &&
		now.Sub(e.u.dialed) <= cfg.Upstream.PoolMaxAge
}

// get returns the most recently used idle connection usable under cfg,
// or nil. The others are closed.
func (p *upstreamPool) get(cfg *Config) *upstream {
	var u *upstream
	p.mu.Lock()
	stale := p.prune(cfg)
	if n := len(p.idle); n > 0 {
		u = p.idle[n-1].u
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	closeAll(stale)
	return u
}

// drop closes every idle connection not usable under cfg: after a reload,
// those made under the old upstream settings.
func (p *upstreamPool) drop(cfg *Config) {
	p.mu.Lock()
	stale := p.prune(cfg)
	p.mu.Unlock()
	closeAll(stale)
}

// prune removes the connections not usable under cfg from the pool and
// returns them. p.mu is held.
func (p *upstreamPool) prune(cfg *Config) []*upstream {
	now := time.Now()
	var stale []*upstream
	keep := p.idle[:0]
	for _, e := range p.idle {
		if !e.usable(cfg, now) {
			stale = append(stale, e.u)
			continue
		}
		keep = append(keep, e)
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	return stale
}

func closeAll(us []*upstream) {
	for _, u := range us {
		go u.quit() // a polite goodbye, off the session's path
	}
}

// put offers an idle, sound connection to the pool; false means the
// caller keeps it (and closes it). A connection with a transaction still
// open upstream, or with replies not read yet, would hand the next
// session someone else's state: it is never pooled.
//
// cfg is the configuration in force now, which may be newer than the
// one the connection was made under.
func (p *upstreamPool) put(u *upstream, cfg *Config) bool {
	if u.broken || u.inTx || u.authenticated || u.r.Buffered() > 0 || !poolable(cfg) {
		return false
	}
	e := pooled{u, time.Now()}
	if !e.usable(cfg, e.since) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= *cfg.Upstream.PoolSize {
		return false
	}
	p.idle = append(p.idle, e)
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
