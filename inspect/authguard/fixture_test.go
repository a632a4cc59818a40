package authguard

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"moat/internal/redistest"
	"moat/internal/state"

	"github.com/prometheus/client_golang/prometheus"
)

// clock is the embedded store's clock in tests: time moves only when the
// test says so.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is one backend under test.
type fixture struct {
	name  string
	store state.Store
	clock *clock // the embedded store's; nil on Redis, whose clock is real
	cfg   state.Config
}

// guard builds a Guard with cfg (after Defaults) on the fixture's store,
// with its own metrics.
func (f *fixture) guard(t *testing.T, cfg Config) (*Guard, *Metrics, *prometheus.Registry) {
	t.Helper()
	return newGuard(t, f.store, cfg)
}

func newGuard(t *testing.T, store state.Store, cfg Config) (*Guard, *Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Defaults()
	g, err := New(store, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	return g, m, reg
}

// another opens a second client of the same Redis, as a second moat
// instance would.
func (f *fixture) another(t *testing.T) state.Store {
	t.Helper()
	s, err := state.New(f.cfg, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// advance lets d pass: on the fake clock at once; on Redis it polls
// cond (the event the passing time brings) every 20ms for up to d plus
// 5s, never a fixed sleep.
func (f *fixture) advance(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if f.clock != nil {
		f.clock.Advance(d)
		if !cond() {
			t.Fatalf("%s: not after %v", what, d)
		}
		return
	}
	deadline := time.Now().Add(d + 5*time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d+5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// epoch is a whole number of days since 1970, so fixed windows start at
// it and a test's failures never straddle two.
var epoch = time.Unix(1_800_000_000-1_800_000_000%86400, 0)

func newEmbedded(t *testing.T) *fixture {
	t.Helper()
	c := &clock{t: epoch}
	cfg := state.Config{Dir: filepath.Join(t.TempDir(), "state")}
	cfg.Defaults()
	s, err := state.New(cfg, state.Deps{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{name: "embedded", store: s, clock: c, cfg: cfg}
}

func newRedis(t *testing.T) *fixture {
	t.Helper()
	srv := redistest.Start(t)
	cfg := state.Config{Backend: state.BackendRedis, Redis: state.RedisConfig{Address: srv.Addr}}
	cfg.Defaults()
	s, err := state.New(cfg, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{name: "redis", store: s, cfg: cfg}
}

// both runs fn against each backend, a fresh store for each.
func both(t *testing.T, fn func(t *testing.T, f *fixture)) {
	t.Run("embedded", func(t *testing.T) { fn(t, newEmbedded(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, newRedis(t)) })
}

// ctx is a test's context for one call: bounded, so that a hung store
// fails the test instead of hanging it.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
