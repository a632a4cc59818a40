package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect"
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
	cfg     Config
	engine  *inspect.Engine
	log     *slog.Logger
	metrics *metrics

	// caps caches what the upstream advertised in its last EHLO reply;
	// nil until the first successful probe or connection.
	caps atomic.Pointer[upstreamCaps]

	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// New builds a Server. cfg is completed with Defaults and validated.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
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
	return &Server{
		cfg:       cfg,
		engine:    deps.Engine,
		log:       log,
		metrics:   m,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}, nil
}

// Config returns the server's configuration with defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// ProbeUpstream connects to the upstream, reads its EHLO capabilities and
// caches them, so that the EHLO reply to clients offers SMTPUTF8 and DSN
// only when the upstream can honour them end to end.
func (s *Server) ProbeUpstream(ctx context.Context) error {
	u, err := dialUpstream(ctx, &s.cfg.Upstream)
	if err != nil {
		return err
	}
	s.caps.Store(&u.caps)
	u.quit()
	return nil
}

// Listen opens every configured listener. Serve them with Serve.
func (s *Server) Listen() ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range s.cfg.Listen {
		ln, err := net.Listen("tcp", string(a))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Serve accepts connections on ln until ln is closed or Shutdown is called.
// It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
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
		c := s.newConn(nc)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

// newConn registers a connection, or closes it when shutting down.
func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		nc.Close()
		return nil
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
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
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
