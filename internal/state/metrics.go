package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's collectors. Labels: backend (embedded, redis),
// op (allow, add, count, setnx, set, get, remove, scan, delete, ping) and result
// (ok, error) — all bounded.
type metrics struct {
	backend    string
	ops        *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	roundTrips prometheus.Counter
	expired    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, backend Backend) (*metrics, error) {
	m := &metrics{
		backend: string(backend),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_state_operations_total",
			Help: "State store operations, by backend, operation and result (ok or error; a denied Allow is ok).",
		}, []string{"backend", "op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_state_operation_duration_seconds",
			Help: "Time a state store operation took, errors included, by backend and operation.",
			// From an in-memory Redis answer on loopback (~50µs) to the
			// Redis read timeout and a bbolt fsync on a slow disk.
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"backend", "op"}),
		roundTrips: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "moat_state_round_trips_total",
			Help:        "Requests sent to Redis (one per command or pipeline), or transactions of the embedded store.",
			ConstLabels: prometheus.Labels{"backend": string(backend)},
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "moat_state_expired_deleted_total",
			Help:        "Expired entries the embedded store deleted, on read or by its periodic sweep (Redis expires its own).",
			ConstLabels: prometheus.Labels{"backend": string(backend)},
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ops, m.latency, m.roundTrips, m.expired} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("state: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// observe counts one operation.
func (m *metrics) observe(op string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.ops.WithLabelValues(m.backend, op, result).Inc()
	m.latency.WithLabelValues(m.backend, op).Observe(time.Since(start).Seconds())
}

// checked is the Store that New returns: it refuses requests that can
// never succeed before they reach a backend, and measures the rest.
type checked struct {
	b Store
	m *metrics
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func checkKey(k Key) error {
	if !k.Valid() {
		return invalid("key without a valid namespace")
	}
	return nil
}

// maxTTL bounds every time to live and window: far beyond any greylist
// lifetime or reputation window, and far from overflowing a clock.
const maxTTL = 400 * 24 * time.Hour

// checkTTL: every entry expires by itself, so a TTL is required, and
// Redis counts it in milliseconds.
func checkTTL(what string, ttl time.Duration) error {
	if ttl < time.Millisecond || ttl > maxTTL {
		return invalid("%s %v: must be from 1ms to 400 days", what, ttl)
	}
	return nil
}

func (c *checked) Allow(ctx context.Context, key Key, rate Rate, burst, n int) (ok bool, retryAfter time.Duration, err error) {
	start := time.Now()
	defer func() { c.m.observe("allow", start, err) }()
	switch {
	case checkKey(key) != nil:
		return false, 0, checkKey(key)
	case rate.Events <= 0 || rate.Period < time.Millisecond:
		return false, 0, invalid("rate %v: needs at least 1 event per at least 1ms", rate)
	case burst <= 0:
		return false, 0, invalid("burst %d: must be positive", burst)
	case n < 0:
		return false, 0, invalid("n %d: must not be negative", n)
	case float64(burst)*rate.interval() > float64(maxTTL):
		// The key would live longer than any sensible limit; also keeps
		// TTLs far from overflowing.
		return false, 0, invalid("rate %v with burst %d: the limit spans more than 400 days", rate, burst)
	case n > burst:
		return false, 0, nil
	}
	return c.b.Allow(ctx, key, rate, burst, n)
}

func (c *checked) Add(ctx context.Context, key Key, n int64, window time.Duration) (count int64, err error) {
	start := time.Now()
	defer func() { c.m.observe("add", start, err) }()
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, invalid("n %d: must not be negative", n)
	}
	if err := checkTTL("window", window); err != nil {
		return 0, err
	}
	return c.b.Add(ctx, key, n, window)
}

func (c *checked) Count(ctx context.Context, key Key, window time.Duration) (count int64, err error) {
	start := time.Now()
	defer func() { c.m.observe("count", start, err) }()
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := checkTTL("window", window); err != nil {
		return 0, err
	}
	return c.b.Count(ctx, key, window)
}

func (c *checked) SetNX(ctx context.Context, key Key, value []byte, ttl time.Duration) (set bool, err error) {
	start := time.Now()
	defer func() { c.m.observe("setnx", start, err) }()
	if err := checkKey(key); err != nil {
		return false, err
	}
	if err := checkTTL("ttl", ttl); err != nil {
		return false, err
	}
	return c.b.SetNX(ctx, key, value, ttl)
}

func (c *checked) Set(ctx context.Context, key Key, value []byte, ttl time.Duration) (err error) {
	start := time.Now()
	defer func() { c.m.observe("set", start, err) }()
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkTTL("ttl", ttl); err != nil {
		return err
	}
	return c.b.Set(ctx, key, value, ttl)
}

func (c *checked) Get(ctx context.Context, key Key) (value []byte, age time.Duration, found bool, err error) {
	start := time.Now()
	defer func() { c.m.observe("get", start, err) }()
	if err := checkKey(key); err != nil {
		return nil, 0, false, err
	}
	return c.b.Get(ctx, key)
}

func (c *checked) Remove(ctx context.Context, keys ...Key) (err error) {
	start := time.Now()
	defer func() { c.m.observe("remove", start, err) }()
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return c.b.Remove(ctx, keys...)
}

func (c *checked) Scan(ctx context.Context, pattern string, max int) (entries []Entry, more bool, err error) {
	start := time.Now()
	defer func() { c.m.observe("scan", start, err) }()
	if err := checkPattern(pattern); err != nil {
		return nil, false, err
	}
	if max <= 0 {
		return nil, false, invalid("max %d: must be positive", max)
	}
	return c.b.Scan(ctx, pattern, max)
}

func (c *checked) Delete(ctx context.Context, pattern string, max int) (deleted int, more bool, err error) {
	start := time.Now()
	defer func() { c.m.observe("delete", start, err) }()
	if err := checkPattern(pattern); err != nil {
		return 0, false, err
	}
	if max <= 0 {
		return 0, false, invalid("max %d: must be positive", max)
	}
	return c.b.Delete(ctx, pattern, max)
}

func (c *checked) Ping(ctx context.Context) (err error) {
	start := time.Now()
	defer func() { c.m.observe("ping", start, err) }()
	return c.b.Ping(ctx)
}

func (c *checked) Close() error { return c.b.Close() }

// unavailable wraps a backend failure in ErrUnavailable, keeping the
// cause for logs. Context errors are store failures too: the store did
// not answer in the time the caller could give it.
func unavailable(op string, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrKind) || errors.Is(err, ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}
