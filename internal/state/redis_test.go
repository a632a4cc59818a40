package state

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/internal/redistest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// everyOp runs each operation once on s and returns their errors by name.
func everyOp(t *testing.T, s Store) map[string]error {
	k := NewKey("x", "k")
	errs := map[string]error{}
	_, _, errs["allow"] = s.Allow(ctx(t), NewKey("x", "r"), Rate{Events: 1, Period: time.Hour}, 5, 1)
	_, errs["add"] = s.Add(ctx(t), NewKey("x", "c"), 1, time.Hour)
	_, errs["count"] = s.Count(ctx(t), NewKey("x", "c"), time.Hour)
	_, errs["setnx"] = s.SetNX(ctx(t), k, []byte("v"), time.Hour)
	errs["set"] = s.Set(ctx(t), k, []byte("v"), time.Hour)
	_, _, _, errs["get"] = s.Get(ctx(t), k)
	_, _, errs["scan"] = s.Scan(ctx(t), "x:*", 10)
	errs["remove"] = s.Remove(ctx(t), NewKey("x", "gone"), NewKey("x", "gone2"))
	_, _, errs["delete"] = s.Delete(ctx(t), "x:nothing", 10)
	errs["ping"] = s.Ping(ctx(t))
	return errs
}

// failsFast checks that every operation fails with ErrUnavailable, each
// within bound.
func failsFast(t *testing.T, s Store, bound time.Duration) {
	t.Helper()
	start := time.Now()
	errs := everyOp(t, s)
	for op, err := range errs {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", op, err)
		}
	}
	if took := time.Since(start); took > time.Duration(len(errs))*bound {
		t.Errorf("%d failing operations took %v, over %v each", len(errs), took, bound)
	}
}

// TestRedisKilled: with Redis gone every operation fails quickly with
// ErrUnavailable, and operations resume once it is back — also for a load
// running across the kill and the restart.
func TestRedisKilled(t *testing.T) {
	f := newRedis(t)
	for op, err := range everyOp(t, f.s) {
		if err != nil {
			t.Fatalf("%s with Redis up: %v", op, err)
		}
	}
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		slowest time.Duration
		okOps   int
		failed  int
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := NewKey("rate", "load", strconv.Itoa(w))
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, _, err := f.s.Allow(ctx(t), k, Rate{Events: 1000, Period: time.Second}, 1000, 1)
				took := time.Since(start)
				mu.Lock()
				slowest = max(slowest, took)
				if err == nil {
					okOps++
				} else if errors.Is(err, ErrUnavailable) {
					failed++
				} else {
					t.Errorf("under load: %v", err)
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
		t.Logf("load: %d ok, %d failed with ErrUnavailable, slowest %v", okOps, failed, slowest)
		if slowest > time.Second {
			t.Errorf("an operation took %v", slowest)
		}
		if failed == 0 {
			t.Error("no operation failed while Redis was down")
		}
	}()
	time.Sleep(50 * time.Millisecond) // some load before the kill
	f.redis.Kill()
	failsFast(t, f.s, time.Second)
	if got := testutil.ToFloat64(f.s.(*checked).m.ops.WithLabelValues("redis", "allow", "error")); got < 1 {
		t.Errorf("allow errors counted: %v", got)
	}

	f.redis.Restart()
	eventually(t, 10*time.Second, "operations resumed after the restart", func() bool {
		return f.s.Ping(ctx(t)) == nil
	})
	// Every operation works again — the restarted server has lost the
	// scripts, so this also takes the EVAL fallback of EVALSHA.
	for op, err := range everyOp(t, f.s) {
		if err != nil {
			t.Errorf("%s after the restart: %v", op, err)
		}
	}
}

// TestRedisHung: a server that accepts but never answers (SIGSTOP) costs
// an operation its read timeout, no more, and ErrUnavailable.
func TestRedisHung(t *testing.T) {
	f := newRedis(t)
	if err := f.s.Ping(ctx(t)); err != nil {
		t.Fatal(err)
	}
	f.redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			f.redis.Resume()
		}
	}()
	// Read timeout 250ms (the default); a margin for a loaded machine.
	failsFast(t, f.s, time.Second)
	f.redis.Resume()
	resumed = true
	eventually(t, 10*time.Second, "operations resumed", func() bool {
		_, err := f.s.SetNX(ctx(t), NewKey("x", "after"), nil, time.Hour)
		return err == nil
	})
}

// TestRedisShared: two clients on one Redis, as two moat instances, share
// limits, greylist entries and counts.
func TestRedisShared(t *testing.T) {
	f := newRedis(t)
	a, b := f.s, f.another(t)
	rate := Rate{Events: 1, Period: time.Hour}
	k := NewKey("rate", "shared")
	admitted := 0
	for i := 0; i < 10; i++ {
		s := a
		if i%2 == 1 {
			s = b
		}
		ok, _, err := s.Allow(ctx(t), k, rate, 4, 1)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			admitted++
		}
	}
	if admitted != 4 {
		t.Errorf("two instances admitted %d together, want the one burst of 4", admitted)
	}

	g := NewKey("grey", "192.0.2.0/24", "a@example.org", "b@example.net")
	if set, _ := a.SetNX(ctx(t), g, []byte("seen"), time.Hour); !set {
		t.Fatal("SetNX through a: not set")
	}
	if set, _ := b.SetNX(ctx(t), g, []byte("seen"), time.Hour); set {
		t.Fatal("SetNX through b set a key a had set")
	}
	time.Sleep(20 * time.Millisecond) // let age grow past zero
	if v, age, found, err := b.Get(ctx(t), g); err != nil || !found || string(v) != "seen" || age < 20*time.Millisecond {
		t.Fatalf("Get through b: %q, age %v, found %v, %v", v, age, found, err)
	}

	c := NewKey("rep", "shared")
	a.Add(ctx(t), c, 3, 1000*time.Hour)
	if n, _ := b.Add(ctx(t), c, 4, 1000*time.Hour); n != 7 {
		t.Errorf("count through b = %d, want 7", n)
	}
}

// TestRedisScriptFlush: after SCRIPT FLUSH (or a restart) EVALSHA answers
// NOSCRIPT and the store falls back to EVAL.
func TestRedisScriptFlush(t *testing.T) {
	f := newRedis(t)
	k := NewKey("x", "flush")
	f.s.SetNX(ctx(t), k, nil, time.Hour)
	if _, err := f.redis.Do("SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	if _, _, found, err := f.s.Get(ctx(t), k); err != nil || !found {
		t.Fatalf("Get after SCRIPT FLUSH: %v %v", found, err)
	}
	if evals := commandCalls(t, f.redis, "eval"); evals < 1 {
		t.Errorf("EVAL calls %d: the fallback did not run", evals)
	}
}

// commandCalls is the calls count of one command in INFO commandstats.
func commandCalls(t *testing.T, srv *redistest.Server, cmd string) int {
	t.Helper()
	v, err := srv.Info("cmdstat_" + cmd)
	if err != nil {
		return 0
	}
	calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
	n, err := strconv.Atoi(calls)
	if err != nil {
		t.Fatalf("cmdstat_%s: %q", cmd, v)
	}
	return n
}

// TestRedisRoundTrips: every operation but Scan and Delete is one round
// trip once the server has the script: one EVALSHA (Remove: one DEL),
// counted by the client and by the server.
func TestRedisRoundTrips(t *testing.T) {
	f := newRedis(t)
	everyOp(t, f.s) // loads the scripts
	rt := f.s.(*checked).m.roundTrips
	before, evalsha, del := testutil.ToFloat64(rt), commandCalls(t, f.redis, "evalsha"), commandCalls(t, f.redis, "del")
	const n = 10
	k := NewKey("x", "rt")
	for range n {
		f.s.Allow(ctx(t), k, Rate{Events: 1, Period: time.Hour}, 1000, 1)
		f.s.SetNX(ctx(t), NewKey("x", "rt2"), nil, time.Hour)
		f.s.Get(ctx(t), NewKey("x", "rt2"))
		f.s.Add(ctx(t), NewKey("x", "rt3"), 1, time.Hour)
		// Remove is a plain DEL of several keys: one round trip too.
		f.s.Remove(ctx(t), NewKey("x", "rt2"), NewKey("x", "rt3"), NewKey("x", "absent"))
	}
	if got := testutil.ToFloat64(rt) - before; got != 5*n {
		t.Errorf("%v round trips for %d operations", got, 5*n)
	}
	if got := commandCalls(t, f.redis, "del") - del; got != n {
		t.Errorf("server counted %d DEL for %d Removes", got, n)
	}
	if got := commandCalls(t, f.redis, "evalsha") - evalsha; got != 4*n {
		t.Errorf("server counted %d EVALSHA for %d operations", got, 4*n)
	}
}

// TestRedisAuthDB: the password and the database number are used.
func TestRedisAuthDB(t *testing.T) {
	srv := redistest.StartPassword(t, "sekrit")
	open := func(password string, db int) Store {
		cfg := redisConfig(srv)
		cfg.Redis.Password, cfg.Redis.DB = password, db
		s, err := New(cfg, Deps{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	k := NewKey("x", "db")
	for _, db := range []int{1, 2} {
		if set, err := open("sekrit", db).SetNX(ctx(t), k, nil, time.Hour); err != nil || !set {
			t.Fatalf("SetNX in db %d: %v %v; want set (databases are separate)", db, set, err)
		}
	}
	if _, err := open("wrong", 1).SetNX(ctx(t), k, nil, time.Hour); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("wrong password: %v, want ErrUnavailable", err)
	}
}
