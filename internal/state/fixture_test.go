package state

import (
	"context"
	"sync"
	"testing"
	"time"

	"moat/internal/redistest"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeClock is the embedded store's clock in tests: time moves only when
// the test says so, so GCRA and windows can be checked to the nanosecond.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// epoch is a whole number of hours (and days) since 1970, so fixed
// windows start exactly at it.
var epoch = time.Unix(1_800_000_000-1_800_000_000%86400, 0)

func newFakeClock() *fakeClock { return &fakeClock{t: epoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is one backend under test.
type fixture struct {
	name  string
	s     Store
	clock *fakeClock // the embedded store's; nil on Redis, whose clock is real
	reg   *prometheus.Registry
	redis *redistest.Server // nil for the embedded store
	cfg   Config
}

// wait lets d pass: on the fake clock at once, on Redis for real.
func (f *fixture) wait(d time.Duration) {
	if f.clock != nil {
		f.clock.Advance(d)
		return
	}
	time.Sleep(d)
}

// another opens a second client of the same store, as a second moat
// instance would (Redis only; the embedded file has one owner).
func (f *fixture) another(t *testing.T) Store {
	t.Helper()
	s, err := New(f.cfg, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newEmbedded(t *testing.T, dir string, clock *fakeClock) *fixture {
	t.Helper()
	cfg := Config{Backend: BackendEmbedded, Dir: dir}
	cfg.Defaults()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Deps{Registerer: reg, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{name: "embedded", s: s, clock: clock, reg: reg, cfg: cfg}
}

func redisConfig(srv *redistest.Server) Config {
	cfg := Config{Backend: BackendRedis, Redis: RedisConfig{Address: srv.Addr, Password: srv.Password}}
	cfg.Defaults()
	return cfg
}

func newRedis(t *testing.T) *fixture {
	t.Helper()
	srv := redistest.Start(t)
	cfg := redisConfig(srv)
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{name: "redis", s: s, reg: reg, redis: srv, cfg: cfg}
}

// both runs fn against each backend, a fresh store for each.
func both(t *testing.T, fn func(t *testing.T, f *fixture)) {
	t.Run("embedded", func(t *testing.T) { fn(t, newEmbedded(t, t.TempDir(), newFakeClock())) })
	t.Run("redis", func(t *testing.T) { fn(t, newRedis(t)) })
}

// ctx is a test's context for one operation: bounded, so that a hung
// store fails the test instead of hanging it.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// eventually polls cond every 10ms until it holds or bound passes.
func eventually(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func redistestStart(tb testing.TB) *redistest.Server { return redistest.Start(tb) }

func benchCtx(b *testing.B) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return c
}
