package state

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"
)

// boltOf is the embedded backend under a fixture's store.
func boltOf(f *fixture) *boltStore { return f.s.(*checked).b.(*boltStore) }

// rawCount is how many records the file holds, expired ones included.
func rawCount(t *testing.T, f *fixture) int {
	t.Helper()
	n := 0
	err := boltOf(f).db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketName).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEmbeddedRestart: entries, their ages and their limits survive a
// restart of the embedded store.
func TestEmbeddedRestart(t *testing.T) {
	dir, clock := t.TempDir(), newFakeClock()
	f := newEmbedded(t, dir, clock)
	g := NewKey("grey", "192.0.2.0/24", "a@example.org", "b@example.net")
	r := NewKey("rate", "ip", "192.0.2.1")
	c := NewKey("rep", "net", "192.0.2.0/24")
	rate := Rate{Events: 1, Period: time.Hour}
	f.s.SetNX(ctx(t), g, []byte("seen"), 48*time.Hour)
	f.s.Allow(ctx(t), r, rate, 2, 2)
	f.s.Add(ctx(t), c, 5, time.Hour)
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := f.s.Get(ctx(t), g); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get after Close: %v, want ErrUnavailable", err)
	}

	clock.Advance(10 * time.Minute)
	f2 := newEmbedded(t, dir, clock)
	v, age, found, err := f2.s.Get(ctx(t), g)
	if err != nil || !found || string(v) != "seen" || age != 10*time.Minute {
		t.Fatalf("greylist entry after restart: %q, age %v, found %v, %v", v, age, found, err)
	}
	if ok, retry, _ := f2.s.Allow(ctx(t), r, rate, 2, 1); ok || retry != 50*time.Minute {
		t.Fatalf("rate after restart: ok %v retry %v; want the burst still spent, 50m", ok, retry)
	}
	if n, _ := f2.s.Count(ctx(t), c, time.Hour); n != 5 {
		t.Fatalf("counter after restart: %d", n)
	}
}

// TestEmbeddedLocked: a second store on the same directory (a second
// moat misconfigured onto it) fails to open, in bounded time.
func TestEmbeddedLocked(t *testing.T) {
	dir := t.TempDir()
	newEmbedded(t, dir, newFakeClock())
	cfg := Config{Backend: BackendEmbedded, Dir: dir}
	cfg.Defaults()
	start := time.Now()
	s, err := New(cfg, Deps{})
	if err == nil {
		s.Close()
		t.Fatal("second open of a locked store succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v to fail", time.Since(start))
	}
}

// TestEmbeddedLazyExpiry: a read of an expired entry deletes it.
func TestEmbeddedLazyExpiry(t *testing.T) {
	f := newEmbedded(t, t.TempDir(), newFakeClock())
	k := NewKey("grey", "x")
	f.s.SetNX(ctx(t), k, nil, time.Minute)
	f.s.Add(ctx(t), NewKey("rep", "x"), 1, time.Minute)
	f.clock.Advance(2 * time.Minute)
	if n := rawCount(t, f); n != 2 {
		t.Fatalf("%d records before reading", n)
	}
	if _, _, found, _ := f.s.Get(ctx(t), k); found {
		t.Fatal("expired entry found")
	}
	if n, _ := f.s.Count(ctx(t), NewKey("rep", "x"), time.Minute); n != 0 {
		t.Fatalf("expired counter counts %d", n)
	}
	if n := rawCount(t, f); n != 0 {
		t.Errorf("%d records after reading both expired entries, want 0", n)
	}
	if got := testutil.ToFloat64(f.s.(*checked).m.expired); got != 2 {
		t.Errorf("expired metric %v, want 2", got)
	}
}

// TestEmbeddedSweep: the sweep deletes expired records a bounded batch
// at a time, resuming where it stopped, and keeps live ones.
func TestEmbeddedSweep(t *testing.T) {
	f := newEmbedded(t, t.TempDir(), newFakeClock())
	for i := range 2500 {
		ttl := time.Minute
		if i%5 == 0 {
			ttl = time.Hour // every fifth stays
		}
		f.s.SetNX(ctx(t), NewKey("grey", fmt.Sprintf("%05d", i)), nil, ttl)
	}
	f.clock.Advance(2 * time.Minute)
	b := boltOf(f)
	total := 0
	for round := 0; round < 3; round++ {
		examined, deleted, err := b.sweep(1000)
		if err != nil {
			t.Fatal(err)
		}
		if examined > 1000 {
			t.Fatalf("round %d examined %d, over the batch of 1000", round, examined)
		}
		total += deleted
	}
	if total != 2000 {
		t.Errorf("three sweeps deleted %d, want the 2000 expired", total)
	}
	if n := rawCount(t, f); n != 500 {
		t.Errorf("%d records left, want the 500 live", n)
	}
}

// TestEmbeddedSweeper: the periodic sweep runs by itself and stops with
// Close.
func TestEmbeddedSweeper(t *testing.T) {
	clock := newFakeClock()
	cfg := Config{Backend: BackendEmbedded, Dir: t.TempDir(), SweepInterval: 10 * time.Millisecond}
	cfg.Defaults()
	s, err := New(cfg, Deps{Registerer: prometheus.NewRegistry(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{s: s, clock: clock}
	s.SetNX(ctx(t), NewKey("grey", "a"), nil, time.Minute)
	clock.Advance(time.Hour)
	eventually(t, 5*time.Second, "sweeper deleted the expired record", func() bool { return rawCount(t, f) == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
