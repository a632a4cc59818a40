package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The embedded store: one bbolt file, one bucket, keys as Key.String().
// A record starts with a header — the kind (1 byte) and the expiry (unix
// nanoseconds, 8 bytes big-endian) — followed by the kind's fields:
//
//	value:   first-set time (8) | value
//	counter: window index (8) | current count (8) | previous count (8)
//	rate:    base time (8) | offset (8, float64 bits)
//
// Expired records are invisible: reads treat them as absent and delete
// them, and a periodic sweep deletes a bounded batch at a time.

// FileName is the embedded store's file in its directory.
const FileName = "state.db"

var bucketName = []byte("entries")

const headerLen = 9

// sweepBatch bounds the records one sweep transaction examines, so that
// the sweep never holds the write lock for long.
const sweepBatch = 1000

type boltStore struct {
	db  *bolt.DB
	now func() time.Time
	m   *metrics

	sweepMu   sync.Mutex
	sweepFrom []byte // where the next sweep batch starts; nil: the start

	writers atomic.Int32 // write calls in flight: above 1, writes batch

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func openBolt(cfg Config, now func() time.Time, m *metrics) (*boltStore, error) {
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	path := filepath.Join(cfg.Dir, FileName)
	// The timeout is for the file lock: another process (a second moat on
	// the same directory) holding it is a configuration error, not a wait.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("state: opening %s: %w", path, err)
	}
	// A write that joins a batch waits at most this long for others to
	// join it (bbolt's default, 10ms, is for bulk loads, not sessions).
	db.MaxBatchDelay = time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("state: %s: %w", path, err)
	}
	s := &boltStore{db: db, now: now, m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go s.sweeper(cfg.SweepInterval)
	return s, nil
}

func (s *boltStore) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A failed sweep is retried at the next tick; expired
			// records are invisible meanwhile.
			s.sweep(sweepBatch)
		}
	}
}

// sweep examines up to limit records, starting where the last sweep
// stopped, deletes the expired ones, and returns how many it examined and
// deleted.
func (s *boltStore) sweep(limit int) (examined, deleted int, err error) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	now := s.now().UnixNano()
	// Not s.update: this body moves sweepFrom, so it must run once.
	s.m.roundTrips.Inc()
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return errClosed
		}
		var dead [][]byte
		c := b.Cursor()
		k, v := c.First()
		if s.sweepFrom != nil {
			k, v = c.Seek(s.sweepFrom)
		}
		for ; k != nil && examined < limit; k, v = c.Next() {
			examined++
			if expired(v, now) {
				dead = append(dead, bytes.Clone(k))
			}
		}
		if k != nil {
			s.sweepFrom = bytes.Clone(k)
		} else {
			s.sweepFrom = nil
		}
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		deleted = len(dead)
		return nil
	})
	s.m.expired.Add(float64(deleted))
	return examined, deleted, err
}

func expired(v []byte, now int64) bool {
	return len(v) < headerLen || int64(binary.BigEndian.Uint64(v[1:9])) <= now
}

// record returns the live record of key in b: its kind and fields, or
// ok false when it is absent or expired.
func record(b *bolt.Bucket, key []byte, now int64) (kind Kind, fields []byte, ok bool) {
	v := b.Get(key)
	if v == nil || expired(v, now) {
		return 0, nil, false
	}
	return Kind(v[0]), v[headerLen:], true
}

func encode(kind Kind, expires int64, fields ...[]byte) []byte {
	n := headerLen
	for _, f := range fields {
		n += len(f)
	}
	out := make([]byte, headerLen, n)
	out[0] = byte(kind)
	binary.BigEndian.PutUint64(out[1:], uint64(expires))
	for _, f := range fields {
		out = append(out, f...)
	}
	return out
}

func u64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func i64(b []byte, i int) int64 { return int64(binary.BigEndian.Uint64(b[8*i:])) }

func wrongKind(key []byte, have, want Kind) error {
	return fmt.Errorf("%w: %s is a %v, not a %v", ErrKind, key, have, want)
}

// errClosed: bbolt reports operations on a closed database with its own
// error; this one says it the same way on both paths.
var errClosed = errors.New("store closed")

// update runs fn in a write transaction. Alone, it commits at once; when
// other writes are in flight (concurrent sessions), it joins bbolt's
// Batch, which commits many in one transaction and one fsync instead of
// one each, so the file's writes scale with concurrency. fn may then run
// more than once (Batch reruns the others when one fails); every fn here
// only sets its results, so that is harmless.
func (s *boltStore) update(fn func(b *bolt.Bucket) error) error {
	s.m.roundTrips.Inc()
	run := s.db.Update
	if s.writers.Add(1) > 1 {
		run = s.db.Batch
	}
	defer s.writers.Add(-1)
	return run(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return errClosed
		}
		return fn(b)
	})
}

func (s *boltStore) view(fn func(b *bolt.Bucket) error) error {
	s.m.roundTrips.Inc()
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b == nil {
			return errClosed
		}
		return fn(b)
	})
}

func (s *boltStore) Allow(ctx context.Context, key Key, rate Rate, burst, n int) (ok bool, retryAfter time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return false, 0, unavailable("allow", err)
	}
	k := []byte(key.String())
	t := rate.interval()
	err = s.update(func(b *bolt.Bucket) error {
		ok, retryAfter = false, 0 // a batch may run this twice
		now := s.now().UnixNano()
		kind, f, exists := record(b, k, now)
		if exists && kind != KindRate {
			return wrongKind(k, kind, KindRate)
		}
		var base int64
		var off float64
		if exists {
			base, off = i64(f, 0), math.Float64frombits(uint64(i64(f, 1)))
		}
		var after, newOff float64
		ok, after, newOff = gcra(exists, base, off, now, t, float64(burst)*t, n)
		retryAfter = time.Duration(after)
		if !ok || n == 0 {
			return nil
		}
		// The key expires at its TAT: from then on it is a full burst,
		// as an absent key is.
		expires := now + int64(math.Ceil(newOff))
		return b.Put(k, encode(KindRate, expires, u64(now), u64(int64(math.Float64bits(newOff)))))
	})
	return ok, retryAfter, unavailable("allow", err)
}

func (s *boltStore) Add(ctx context.Context, key Key, n int64, window time.Duration) (count int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, unavailable("add", err)
	}
	k := []byte(key.String())
	err = s.update(func(b *bolt.Bucket) error {
		count, err = s.counter(b, k, n, window, true)
		return err
	})
	return count, unavailable("add", err)
}

func (s *boltStore) Count(ctx context.Context, key Key, window time.Duration) (count int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, unavailable("count", err)
	}
	k := []byte(key.String())
	stale := false
	err = s.view(func(b *bolt.Bucket) error {
		stale = b.Get(k) != nil && expired(b.Get(k), s.now().UnixNano())
		count, err = s.counter(b, k, 0, window, false)
		return err
	})
	if err == nil && stale {
		s.deleteExpired(k)
	}
	return count, unavailable("count", err)
}

// counter is Add's and Count's transaction body.
func (s *boltStore) counter(b *bolt.Bucket, k []byte, n int64, window time.Duration, write bool) (int64, error) {
	now := s.now().UnixNano()
	w := int64(window)
	kind, f, exists := record(b, k, now)
	if exists && kind != KindCounter {
		return 0, wrongKind(k, kind, KindCounter)
	}
	idx := now / w
	var idx0, cur0, prev0 int64
	if exists {
		idx0, cur0, prev0 = i64(f, 0), i64(f, 1), i64(f, 2)
	}
	cur, prev := slide(exists, idx0, cur0, prev0, idx)
	cur += n
	if write && n > 0 {
		// Kept until the end of the next window, while it still counts
		// as the previous one.
		expires := (idx + 2) * w
		if err := b.Put(k, encode(KindCounter, expires, u64(idx), u64(cur), u64(prev))); err != nil {
			return 0, err
		}
	}
	return estimate(cur, prev, float64(now-idx*w), float64(w)), nil
}

func (s *boltStore) SetNX(ctx context.Context, key Key, value []byte, ttl time.Duration) (set bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, unavailable("setnx", err)
	}
	k := []byte(key.String())
	err = s.update(func(b *bolt.Bucket) error {
		set = false // a batch may run this twice
		now := s.now().UnixNano()
		if kind, _, exists := record(b, k, now); exists {
			if kind != KindValue {
				return wrongKind(k, kind, KindValue)
			}
			return nil
		}
		set = true
		return b.Put(k, encode(KindValue, now+int64(ttl), u64(now), value))
	})
	return set && err == nil, unavailable("setnx", err)
}

func (s *boltStore) Set(ctx context.Context, key Key, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return unavailable("set", err)
	}
	k := []byte(key.String())
	err := s.update(func(b *bolt.Bucket) error {
		now := s.now().UnixNano()
		first := now
		kind, f, exists := record(b, k, now)
		if exists {
			if kind != KindValue {
				return wrongKind(k, kind, KindValue)
			}
			first = i64(f, 0)
		}
		return b.Put(k, encode(KindValue, now+int64(ttl), u64(first), value))
	})
	return unavailable("set", err)
}

func (s *boltStore) Get(ctx context.Context, key Key) (value []byte, age time.Duration, found bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, unavailable("get", err)
	}
	k := []byte(key.String())
	stale := false
	err = s.view(func(b *bolt.Bucket) error {
		now := s.now().UnixNano()
		kind, f, exists := record(b, k, now)
		if !exists {
			stale = b.Get(k) != nil
			return nil
		}
		if kind != KindValue {
			return wrongKind(k, kind, KindValue)
		}
		found = true
		age = time.Duration(now - i64(f, 0))
		value = bytes.Clone(f[8:])
		return nil
	})
	if err == nil && stale {
		s.deleteExpired(k)
	}
	return value, age, found, unavailable("get", err)
}

// deleteExpired is the lazy clean-up after a read found k expired. It
// checks again in its own transaction: the key may have been set anew in
// between. Its failure is not the reader's: the sweep retries.
func (s *boltStore) deleteExpired(k []byte) {
	deleted := 0
	s.update(func(b *bolt.Bucket) error {
		deleted = 0
		if v := b.Get(k); v != nil && expired(v, s.now().UnixNano()) {
			deleted = 1
			return b.Delete(k)
		}
		return nil
	})
	s.m.expired.Add(float64(deleted))
}

// matches calls fn for every live record whose key matches pattern, until
// fn returns false or ctx is done; it reports whether it stopped early.
func (s *boltStore) matches(ctx context.Context, b *bolt.Bucket, pattern string, fn func(k, v []byte, now int64) bool) (stopped bool, err error) {
	seek := []byte(Prefix + literalPrefix(pattern))
	now := s.now().UnixNano()
	c := b.Cursor()
	i := 0
	for k, v := c.Seek(seek); k != nil && bytes.HasPrefix(k, seek); k, v = c.Next() {
		if i++; i%256 == 0 && ctx.Err() != nil {
			return true, nil
		}
		if expired(v, now) || !globMatch(pattern, string(k[len(Prefix):])) {
			continue
		}
		if !fn(k, v, now) {
			return true, nil
		}
	}
	return false, ctx.Err()
}

func (s *boltStore) Scan(ctx context.Context, pattern string, max int) (entries []Entry, more bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, unavailable("scan", err)
	}
	err = s.view(func(b *bolt.Bucket) error {
		more, err = s.matches(ctx, b, pattern, func(k, v []byte, now int64) bool {
			if len(entries) == max {
				return false
			}
			entries = append(entries, boltEntry(k, v, now))
			return true
		})
		return err
	})
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Out of time after some entries: a partial answer, not a failure.
		return entries, true, nil
	}
	return entries, more, unavailable("scan", err)
}

func boltEntry(k, v []byte, now int64) Entry {
	e := Entry{Key: string(k), Kind: Kind(v[0]), TTL: time.Duration(i64(v[1:9], 0) - now)}
	f := v[headerLen:]
	switch e.Kind {
	case KindValue:
		e.Age = time.Duration(now - i64(f, 0))
		e.Value = bytes.Clone(f[8:])
	case KindCounter:
		e.Count = i64(f, 1)
	}
	return e
}

func (s *boltStore) Remove(ctx context.Context, keys ...Key) error {
	if err := ctx.Err(); err != nil {
		return unavailable("remove", err)
	}
	if len(keys) == 0 {
		return nil
	}
	return unavailable("remove", s.update(func(b *bolt.Bucket) error {
		for _, k := range keys {
			if err := b.Delete([]byte(k.String())); err != nil {
				return err
			}
		}
		return nil
	}))
}

func (s *boltStore) Delete(ctx context.Context, pattern string, max int) (deleted int, more bool, err error) {
	if err := ctx.Err(); err != nil {
		return 0, false, unavailable("delete", err)
	}
	err = s.update(func(b *bolt.Bucket) error {
		var keys [][]byte
		more, err = s.matches(ctx, b, pattern, func(k, v []byte, now int64) bool {
			if len(keys) == max {
				return false
			}
			keys = append(keys, bytes.Clone(k))
			return true
		})
		if err != nil && ctx.Err() == nil {
			return err
		}
		if ctx.Err() != nil {
			more = true
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		deleted = len(keys)
		return nil
	})
	return deleted, more, unavailable("delete", err)
}

func (s *boltStore) Ping(ctx context.Context) error {
	return unavailable("ping", s.view(func(*bolt.Bucket) error { return nil }))
}

func (s *boltStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		err = s.db.Close()
	})
	return err
}
