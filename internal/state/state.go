// Package state is moat's memory across sessions and instances: the store
// that greylisting, rate limits and reputation counts keep their entries
// in.
//
// Two backends implement one interface, Store. The embedded backend (the
// default) keeps everything in one bbolt file under a state directory, for
// a single moat on one machine; entries survive restarts. The Redis
// backend is for several moat instances behind a load balancer: they
// share one redis-server, so a limit or a greylist entry set through one
// instance holds on all of them.
//
// Every operation is atomic on both backends: on bbolt each is one
// read-modify-write transaction, on Redis one Lua script (EVALSHA, one
// round trip), whose clock is the Redis server's (TIME), so that instances
// with skewed clocks still agree.
//
// The operations:
//
//   - Allow: a rate limit by the generic cell rate algorithm (GCRA, the
//     "virtual scheduling" form of ITU-T I.371). A key remembers only one
//     time, its theoretical arrival time (TAT): when the key would be idle
//     again had every admitted event been spaced by the emission interval
//     T = period/events. An event arriving at now is admitted when
//     TAT + n·T − burst·T ≤ now. So a fresh key admits burst events at
//     once, then one every T.
//   - Add and Count: counters over a sliding window (two fixed windows,
//     the previous one weighted by how much of it still overlaps).
//   - SetNX, Set and Get: values that remember when they were first set,
//     so that Get reports their age (a greylist triplet's first sighting).
//   - Remove: exactly the keys named, of any kind (a success resetting
//     a client's failure counters).
//   - Scan and Delete: by a glob pattern, bounded in count and time, for
//     operators (moat state get|del).
//
// Keys are namespaced and versioned (Prefix + namespace + escaped parts,
// see NewKey), and every entry expires by itself: no operation stores
// without a time to live. A store failure is an error wrapping
// ErrUnavailable, never a panic; callers fail open.
package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors. Every failure of the store itself (Redis down or slow, a disk
// error, a closed store) wraps ErrUnavailable: callers test for it with
// errors.Is and fail open. ErrInvalid marks a call that can never succeed
// (a bad key, rate, window or TTL): a bug in the caller, not an outage.
// ErrKind marks a key used by another kind of operation than the one that
// created it (a rate key read with Get).
var (
	ErrUnavailable = errors.New("state store unavailable")
	ErrInvalid     = errors.New("invalid state store request")
	ErrKind        = errors.New("state key holds another kind of entry")
)

// Store is what the engine reaches the state through. Implementations are
// safe for concurrent use by many goroutines (and, for Redis, by many
// processes), and every operation is atomic.
//
// Each key is used by one kind of operation: Allow (a rate), Add and Count
// (a counter), or SetNX, Set and Get (a value). Using a key of one kind
// with an operation of another returns an error wrapping ErrKind.
//
// Every error from a store failure wraps ErrUnavailable; no method panics
// on a store failure.
type Store interface {
	// Allow asks whether n more events fit the rate limit of key: rate
	// events per period, with bursts of up to burst events. When they do
	// (ok), they are counted. When not, nothing is counted and retryAfter
	// is how long until they would fit. When n exceeds burst they never
	// fit: ok is false and retryAfter 0. n = 0 only reports whether the
	// key is within its limit and counts nothing. The key expires once
	// the limit is back to a full burst.
	Allow(ctx context.Context, key Key, rate Rate, burst, n int) (ok bool, retryAfter time.Duration, err error)

	// Add adds n (≥ 0) to the counter key and returns its count over the
	// sliding window that ends now: the count of the current fixed window
	// plus the count of the previous one weighted by the share of it the
	// sliding window still covers, rounded to the nearest integer. A
	// counter expires two windows after its last Add. Use one window per
	// key.
	Add(ctx context.Context, key Key, n int64, window time.Duration) (int64, error)

	// Count is Add without adding: the counter's sliding-window count, 0
	// for a key that does not exist.
	Count(ctx context.Context, key Key, window time.Duration) (int64, error)

	// SetNX stores value under key with a time to live, unless the key
	// exists; set tells which. A value set by SetNX is first set now.
	SetNX(ctx context.Context, key Key, value []byte, ttl time.Duration) (set bool, err error)

	// Set stores value under key with a new time to live, whether it
	// exists or not. An existing entry keeps its first-set time, so its
	// age goes on (a greylist entry moved from "seen" to "passed").
	Set(ctx context.Context, key Key, value []byte, ttl time.Duration) error

	// Get returns the value of key and its age: how long ago it was first
	// set. found is false when the key does not exist or has expired.
	Get(ctx context.Context, key Key) (value []byte, age time.Duration, found bool, err error)

	// Remove deletes exactly keys, whatever their kind, in one atomic
	// operation (one round trip on Redis, DEL; one transaction on bbolt).
	// A key that does not exist is no error, and no keys is a no-op.
	// Unlike Delete it takes keys, not patterns: it is for the engine,
	// which knows what it stored, and costs no scan.
	Remove(ctx context.Context, keys ...Key) error

	// Scan returns up to max entries whose keys match pattern, a glob in
	// Redis's syntax (*, ?, [abc], [^a], [a-z], \ to quote) matched against
	// the key without Prefix, e.g. "grey:*". It stops at max entries or
	// when ctx is done, whichever comes first, and returns what it has
	// then; more is true when it stopped so, and there may be more
	// (Redis's SCAN cannot tell). The order is unspecified.
	Scan(ctx context.Context, pattern string, max int) (entries []Entry, more bool, err error)

	// Delete deletes up to max entries whose keys match pattern (as in
	// Scan) and returns how many it deleted; more is true when it stopped
	// at max or at ctx's deadline, and there may be more.
	Delete(ctx context.Context, pattern string, max int) (deleted int, more bool, err error)

	// Ping checks that the store answers.
	Ping(ctx context.Context) error

	// Close releases the store. Operations after Close fail with
	// ErrUnavailable.
	Close() error
}

// Rate is Events per Period, as in "100/1h".
type Rate struct {
	Events int64
	Period time.Duration
}

func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Events, r.Period) }

// interval is the GCRA emission interval T = Period/Events, in
// nanoseconds, as a float: 1h/7 is not a whole number of nanoseconds.
func (r Rate) interval() float64 { return float64(r.Period) / float64(r.Events) }

// Kind is the kind of an entry, after the operations that made it.
type Kind uint8

const (
	KindValue   Kind = 1 // SetNX, Set, Get
	KindCounter Kind = 2 // Add, Count
	KindRate    Kind = 3 // Allow
)

func (k Kind) String() string {
	switch k {
	case KindValue:
		return "value"
	case KindCounter:
		return "counter"
	case KindRate:
		return "rate"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry is one entry as Scan shows it to an operator.
type Entry struct {
	// Key is the full key, Prefix included.
	Key  string
	Kind Kind
	// Value is a value entry's value; nil for the other kinds.
	Value []byte
	// Count is a counter's count in its current fixed window.
	Count int64
	// Age is how long ago a value entry was first set.
	Age time.Duration
	// TTL is the time left until the entry expires.
	TTL time.Duration
}

// Deps are what a store needs from its owner.
type Deps struct {
	// Registerer receives the store's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Now is the embedded store's clock; nil means time.Now. (The Redis
	// store uses the server's clock.)
	Now func() time.Time
}

// New opens the store cfg describes. cfg must have passed Validate after
// Defaults. The Redis store connects lazily: New succeeds while Redis is
// down, and operations fail with ErrUnavailable until it is up (Ping
// tells).
func New(cfg Config, deps Deps) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Registerer, cfg.Backend)
	if err != nil {
		return nil, err
	}
	var b Store
	switch cfg.Backend {
	case BackendRedis:
		b, err = openRedis(cfg.Redis, m)
	default:
		now := deps.Now
		if now == nil {
			now = time.Now
		}
		b, err = openBolt(cfg, now, m)
	}
	if err != nil {
		return nil, err
	}
	return &checked{b: b, m: m}, nil
}
