package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect"
	"moat/inspect/smtp"
)

// Deps are what a Server needs from the rest of moat.
type Deps struct {
	// Engine judges every stage of every session. Required.
	Engine *inspect.Engine
	// Logger receives one line per transaction and per notable event.
	// Default: slog.Default().
	Logger *slog.Logger
	// Registerer receives the proxy's collectors. Default: none.
	Registerer prometheus.Registerer
}

// Server is moat's SMTP front end: it accepts clients, runs each session
// through the engine and relays accepted mail to the upstream MTA.
type Server struct {
	log     *slog.Logger
	metrics *metrics

	// cfg and engine are swapped whole by Reload; a session keeps the
	// ones it started with, so no session ever sees half of a reload.
	cfg    atomic.Pointer[Config]
	engine atomic.Pointer[inspect.Engine]
	cert   atomic.Pointer[tls.Certificate]

	// caps caches what the upstream advertised in its last EHLO reply;
	// nil until the first successful probe or connection.
	caps atomic.Pointer[upstreamCaps]
	// ready reports whether the upstream answered its last probe or
	// connection attempt.
	ready atomic.Bool

	pool upstreamPool // idle upstream connections between sessions

	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	perIP     map[netip.Addr]int
	wg        sync.WaitGroup
}

// New builds a Server. cfg is completed with Defaults and validated.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Engine == nil {
		return nil, errors.New("proxy: no inspect engine")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:       log,
		metrics:   m,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		perIP:     make(map[netip.Addr]int),
	}
	if err := s.Reload(cfg, deps.Engine); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload switches to a new configuration and engine. Sessions already
// running finish with the old ones. On error nothing changes. Listener
// addresses are fixed at Listen: changing them needs a restart.
func (s *Server) Reload(cfg Config, engine *inspect.Engine) error {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	cert, selfSigned, err := loadCertificate(cfg.TLS, cfg.Hostname)
	if err != nil {
		return err
	}
	if cfg.Upstream.TLS != "off" {
		if cfg.upstreamTLS, err = upstreamTLSConfig(&cfg.Upstream); err != nil {
			return err
		}
	}
	if old := s.cfg.Load(); old != nil {
		if !slices.Equal(old.Listen, cfg.Listen) || !slices.Equal(old.ListenTLS, cfg.ListenTLS) ||
			!slices.Equal(old.ListenSubmission, cfg.ListenSubmission) || !slices.Equal(old.ListenSubmissionTLS, cfg.ListenSubmissionTLS) {
			s.log.Warn("listener addresses changed: they take effect at the next restart")
			cfg.Listen, cfg.ListenTLS = old.Listen, old.ListenTLS
			cfg.ListenSubmission, cfg.ListenSubmissionTLS = old.ListenSubmission, old.ListenSubmissionTLS
		}
	}
	if selfSigned && s.cert.Load() == nil {
		s.log.Info("no tls.cert_file configured: using a self-signed certificate generated at startup", "hostname", cfg.Hostname)
	}
	if engine != nil {
		s.engine.Store(engine)
	}
	s.cert.Store(cert)
	s.cfg.Store(&cfg)
	// Pooled upstream connections were made under the old upstream
	// settings (address, TLS mode, names): none is used again.
	s.pool.drop(&cfg)
	return nil
}

// Config returns the configuration in force, with defaults filled in.
func (s *Server) Config() Config { return *s.cfg.Load() }

// Ready reports whether the upstream answered the last probe or
// connection attempt: what /readyz serves.
func (s *Server) Ready() bool { return s.ready.Load() }

// ProbeUpstream connects to the upstream, reads its EHLO capabilities and
// caches them, so that the EHLO reply to clients offers SMTPUTF8, DSN and
// CHUNKING passthrough only when the upstream can honour them.
func (s *Server) ProbeUpstream(ctx context.Context) error {
	cfg := s.cfg.Load()
	u, err := dialUpstream(ctx, cfg, nil)
	s.ready.Store(err == nil)
	s.metrics.upstreamReady(err == nil)
	if err != nil {
		return err
	}
	s.caps.Store(&u.caps)
	u.quit()
	return nil
}

// ProbeLoop probes the upstream every upstream.probe_interval until ctx
// ends, logging changes of readiness.
func (s *Server) ProbeLoop(ctx context.Context) {
	for {
		t := time.NewTimer(s.cfg.Load().Upstream.ProbeInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		was := s.ready.Load()
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Load().Upstream.ConnectTimeout)
		err := s.ProbeUpstream(pctx)
		cancel()
		if now := err == nil; now != was {
			if now {
				s.log.Info("upstream answers again", "upstream", string(s.cfg.Load().Upstream.Address))
			} else {
				s.log.Warn("upstream probe failed", "upstream", string(s.cfg.Load().Upstream.Address), "err", err)
			}
		}
	}
}

// Listener is an open SMTP listener: whether it speaks implicit TLS,
// and whether it is a submission listener, where AUTH is offered.
type Listener struct {
	net.Listener
	ImplicitTLS bool
	Submission  bool
}

// Listen opens every configured listener. Serve them with Serve.
func (s *Server) Listen() ([]Listener, error) {
	cfg := s.cfg.Load()
	var lns []Listener
	for _, group := range []struct {
		addrs      []HostPort
		implicit   bool
		submission bool
	}{{cfg.Listen, false, false}, {cfg.ListenTLS, true, false},
		{cfg.ListenSubmission, false, true}, {cfg.ListenSubmissionTLS, true, true}} {
		for _, a := range group.addrs {
			ln, err := net.Listen("tcp", string(a))
			if err != nil {
				for _, l := range lns {
					l.Close()
				}
				return nil, fmt.Errorf("listen %s: %w", a, err)
			}
			lns = append(lns, Listener{ln, group.implicit, group.submission})
		}
	}
	return lns, nil
}

// Serve accepts connections on ln until ln is closed or Shutdown is called.
// It returns nil after Shutdown. With implicitTLS, every connection does a
// TLS handshake before the greeting (RFC 8314 §3.3).
func (s *Server) Serve(ln net.Listener, implicitTLS bool) error {
	return s.ServeListener(Listener{Listener: ln, ImplicitTLS: implicitTLS})
}

// ServeListener is Serve for a listener of any kind, submission
// listeners included.
func (s *Server) ServeListener(l Listener) error {
	ln := l.Listener
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of file descriptors or similar: back off rather than
				// spin, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, backing off", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc, l)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

// newConn registers a connection, or turns it away when shutting down or
// over the connection limit.
func (s *Server) newConn(nc net.Conn, l Listener) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg.Load()
	if s.closing.Load() {
		nc.Close()
		return nil
	}
	if len(s.conns) >= cfg.Limits.MaxConnections {
		s.metrics.connRefused("max_connections")
		s.log.Info("session refused", "reason", "max_connections", "connections", len(s.conns))
		go turnAway(nc, l.ImplicitTLS, replyTooManyConnections(cfg.Hostname))
		return nil
	}
	c := newConn(s, cfg, nc, l)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

// turnAway answers a connection that will not be served with a 421 and
// closes it, bounded in time so a stuck client cannot hold the goroutine.
func turnAway(nc net.Conn, implicitTLS bool, r smtp.Reply) {
	defer nc.Close()
	if implicitTLS {
		return // no TLS session to say it in
	}
	nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	r.WriteTo(nc)
}

// admitIP counts a session against its client address; false when the
// address is over its limit.
func (s *Server) admitIP(a netip.Addr, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[a] >= limit {
		return false
	}
	s.perIP[a]++
	return true
}

func (s *Server) releaseIP(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[a]--; s.perIP[a] <= 0 {
		delete(s.perIP, a)
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, tells idle sessions 421 and closes them, and
// waits for sessions in the middle of a command — a DATA transfer or an
// upstream round trip — to finish, so that no message a client is sending
// is cut off. When ctx ends first, the remaining connections are closed
// and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.interruptIdle()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); s.pool.close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.closeNow()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
