package state

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The conformance suite: every test here runs against both backends.

func TestSetNX(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		k := NewKey("grey", "192.0.2.0/24", "a@example.org", "b@example.net")
		set, err := f.s.SetNX(ctx(t), k, []byte("seen"), time.Hour)
		if err != nil || !set {
			t.Fatalf("first SetNX = %v, %v; want set", set, err)
		}
		set, err = f.s.SetNX(ctx(t), k, []byte("other"), time.Hour)
		if err != nil || set {
			t.Fatalf("second SetNX = %v, %v; want not set", set, err)
		}
		v, age, found, err := f.s.Get(ctx(t), k)
		if err != nil || !found || string(v) != "seen" {
			t.Fatalf("Get = %q, %v, %v; want the first value", v, found, err)
		}
		if age < 0 || age > 5*time.Second {
			t.Errorf("age right after SetNX = %v", age)
		}
		if _, _, found, err := f.s.Get(ctx(t), NewKey("grey", "other")); err != nil || found {
			t.Errorf("Get of an absent key: found %v, %v", found, err)
		}
		// Values are bytes, any bytes.
		bin := []byte{0, 1, 0xff, '\r', '\n', '"', '\\'}
		if set, err := f.s.SetNX(ctx(t), NewKey("grey", "bin"), bin, time.Hour); err != nil || !set {
			t.Fatalf("SetNX binary = %v, %v", set, err)
		}
		if v, _, _, err := f.s.Get(ctx(t), NewKey("grey", "bin")); err != nil || string(v) != string(bin) {
			t.Fatalf("Get binary = %q, %v", v, err)
		}
		// An empty value is a value.
		e := NewKey("grey", "empty")
		if set, err := f.s.SetNX(ctx(t), e, nil, time.Hour); err != nil || !set {
			t.Fatalf("SetNX empty = %v, %v", set, err)
		}
		if v, _, found, err := f.s.Get(ctx(t), e); err != nil || !found || len(v) != 0 {
			t.Fatalf("Get empty = %q, %v, %v", v, found, err)
		}
	})
}

func TestAge(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		k := NewKey("grey", "age")
		if _, err := f.s.SetNX(ctx(t), k, []byte("1"), time.Hour); err != nil {
			t.Fatal(err)
		}
		d := 120 * time.Millisecond
		f.wait(d)
		_, age, found, err := f.s.Get(ctx(t), k)
		if err != nil || !found {
			t.Fatalf("Get: %v %v", found, err)
		}
		if age < d || age > d+5*time.Second || f.clock != nil && age != d {
			t.Errorf("age = %v after waiting %v", age, d)
		}
		// Set changes the value and TTL but keeps the first-set time.
		if err := f.s.Set(ctx(t), k, []byte("2"), 2*time.Hour); err != nil {
			t.Fatal(err)
		}
		f.wait(d)
		v, age2, found, err := f.s.Get(ctx(t), k)
		if err != nil || !found || string(v) != "2" {
			t.Fatalf("Get after Set = %q %v %v", v, found, err)
		}
		if age2 < 2*d || f.clock != nil && age2 != 2*d {
			t.Errorf("age after Set = %v, want %v since the first set", age2, 2*d)
		}
		// Set on an absent key sets it, first set now.
		n := NewKey("grey", "new")
		if err := f.s.Set(ctx(t), n, []byte("x"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, age, found, _ := f.s.Get(ctx(t), n); !found || age > 5*time.Second || f.clock != nil && age != 0 {
			t.Errorf("Set on an absent key: found %v, age %v", found, age)
		}
	})
}

func TestExpiry(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		ttl := 200 * time.Millisecond
		k := NewKey("grey", "expiring")
		if set, err := f.s.SetNX(ctx(t), k, []byte("1"), ttl); err != nil || !set {
			t.Fatalf("SetNX: %v %v", set, err)
		}
		if _, _, found, _ := f.s.Get(ctx(t), k); !found {
			t.Fatal("not found before its TTL")
		}
		start := time.Now()
		f.wait(ttl)
		eventually(t, 3*time.Second, "entry expired", func() bool {
			_, _, found, err := f.s.Get(ctx(t), k)
			return err == nil && !found
		})
		if f.clock == nil && time.Since(start) < ttl {
			t.Errorf("gone after %v, before its TTL %v", time.Since(start), ttl)
		}
		// Expired is absent: SetNX sets it anew, first set now.
		if set, err := f.s.SetNX(ctx(t), k, []byte("2"), time.Hour); err != nil || !set {
			t.Fatalf("SetNX after expiry = %v, %v; want set", set, err)
		}
		if v, age, _, _ := f.s.Get(ctx(t), k); string(v) != "2" || age > 5*time.Second || f.clock != nil && age != 0 {
			t.Errorf("after re-set: %q, age %v", v, age)
		}
		// Set moves the expiry.
		if err := f.s.Set(ctx(t), k, []byte("3"), ttl); err != nil {
			t.Fatal(err)
		}
		f.wait(ttl)
		eventually(t, 3*time.Second, "Set's TTL expired", func() bool {
			_, _, found, err := f.s.Get(ctx(t), k)
			return err == nil && !found
		})
	})
}

func TestCounter(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		k := NewKey("rep", "net", "192.0.2.0/24", "rejected")
		w := 1000 * time.Hour
		for i, n := range []int64{1, 2, 3, 0} {
			got, err := f.s.Add(ctx(t), k, n, w)
			want := []int64{1, 3, 6, 6}[i]
			if err != nil || got != want {
				t.Fatalf("Add(%d) = %d, %v; want %d", n, got, err, want)
			}
		}
		if got, err := f.s.Count(ctx(t), k, w); err != nil || got != 6 {
			t.Fatalf("Count = %d, %v; want 6", got, err)
		}
		if got, err := f.s.Count(ctx(t), NewKey("rep", "absent"), w); err != nil || got != 0 {
			t.Fatalf("Count of an absent key = %d, %v", got, err)
		}
		// A short window slides: the count decays to 0 within two
		// windows and never grows without Add.
		s := NewKey("rep", "short")
		sw := 200 * time.Millisecond
		if _, err := f.s.Add(ctx(t), s, 10, sw); err != nil {
			t.Fatal(err)
		}
		last := int64(10)
		f.wait(sw / 2)
		eventually(t, 3*time.Second, "count decayed to 0", func() bool {
			got, err := f.s.Count(ctx(t), s, sw)
			if err != nil || got > last {
				t.Fatalf("Count = %d, %v; was %d", got, err, last)
			}
			last = got
			if f.clock != nil {
				f.clock.Advance(sw / 4)
			}
			return got == 0
		})
	})
}

// TestCounterWindowExact checks the sliding window's arithmetic on the
// fake clock.
func TestCounterWindowExact(t *testing.T) {
	f := newEmbedded(t, t.TempDir(), newFakeClock())
	k := NewKey("rep", "x")
	w := time.Hour
	if _, err := f.s.Add(ctx(t), k, 10, w); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(90 * time.Minute) // half into the next window
	if got, _ := f.s.Count(ctx(t), k, w); got != 5 {
		t.Errorf("half a window on: %d, want 5 (10 × ½)", got)
	}
	if got, _ := f.s.Add(ctx(t), k, 4, w); got != 9 {
		t.Errorf("Add 4 then: %d, want 9 (4 + 10 × ½)", got)
	}
	f.clock.Advance(15 * time.Minute) // ¾ into it
	if got, _ := f.s.Count(ctx(t), k, w); got != 7 {
		t.Errorf("¾ into the window: %d, want 7 (4 + round(10 × ¼))", got)
	}
	f.clock.Advance(time.Hour) // the 10 are two windows back
	if got, _ := f.s.Count(ctx(t), k, w); got != 1 {
		t.Errorf("a window later: %d, want 1 (round(4 × ¼))", got)
	}
	f.clock.Advance(time.Hour)
	if got, _ := f.s.Count(ctx(t), k, w); got != 0 {
		t.Errorf("two windows later: %d, want 0", got)
	}
}

// TestGCRAExact: on the fake clock, a fresh key admits exactly burst
// events, then one per emission interval, with exact retry times.
func TestGCRAExact(t *testing.T) {
	f := newEmbedded(t, t.TempDir(), newFakeClock())
	k := NewKey("rate", "ip", "192.0.2.1")
	rate := Rate{Events: 10, Period: time.Minute} // T = 6s
	allow := func(n int) (bool, time.Duration) {
		t.Helper()
		ok, retry, err := f.s.Allow(ctx(t), k, rate, 3, n)
		if err != nil {
			t.Fatal(err)
		}
		return ok, retry
	}
	for i := 0; i < 3; i++ {
		if ok, _ := allow(1); !ok {
			t.Fatalf("event %d of the burst denied", i+1)
		}
	}
	if ok, retry := allow(1); ok || retry != 6*time.Second {
		t.Fatalf("over the burst: ok %v, retry %v; want denied, 6s", ok, retry)
	}
	f.clock.Advance(2 * time.Second)
	if ok, retry := allow(1); ok || retry != 4*time.Second {
		t.Fatalf("2s on: ok %v, retry %v; want denied, 4s", ok, retry)
	}
	if ok, _ := allow(0); !ok {
		t.Fatal("n=0 on a key within its limit: denied")
	}
	f.clock.Advance(4 * time.Second)
	if ok, _ := allow(1); !ok {
		t.Fatal("one interval on: denied")
	}
	if ok, retry := allow(1); ok || retry != 6*time.Second {
		t.Fatalf("right after: ok %v, retry %v", ok, retry)
	}
	// A long idle time refills the burst, never more.
	f.clock.Advance(time.Hour)
	if ok, retry := allow(2); !ok {
		t.Fatalf("n=2 after an hour: denied (retry %v)", retry)
	}
	if ok, _ := allow(1); !ok {
		t.Fatal("third of the refilled burst denied")
	}
	if ok, retry := allow(1); ok || retry != 6*time.Second {
		t.Fatalf("fourth after an hour: ok %v, retry %v", ok, retry)
	}
	// n above burst never fits.
	f.clock.Advance(time.Hour)
	if ok, retry := allow(4); ok || retry != 0 {
		t.Fatalf("n=4 > burst 3: ok %v, retry %v; want false, 0", ok, retry)
	}
	// The key expires when it is back to a full burst.
	f.clock.Advance(time.Hour)
	boltOf(f).sweep(1000)
	if n := rawCount(t, f); n != 0 {
		t.Errorf("%d records left after the rate key drained", n)
	}
	// A period that is no whole number of nanoseconds per event:
	// T = 1h/7. Exactly 7, then exactly 7 an hour later.
	odd := NewKey("rate", "odd")
	for round := 0; round < 3; round++ {
		admitted := 0
		for i := 0; i < 10; i++ {
			if ok, _, _ := f.s.Allow(ctx(t), odd, Rate{Events: 7, Period: time.Hour}, 7, 1); ok {
				admitted++
			}
		}
		if admitted != 7 {
			t.Fatalf("round %d: %d admitted, want 7", round, admitted)
		}
		f.clock.Advance(time.Hour)
	}
}

// TestGCRA on both backends: burst, then the rate, on the real clock for
// Redis.
func TestGCRA(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		k := NewKey("rate", "slow")
		hourly := Rate{Events: 1, Period: time.Hour}
		for i := 0; i < 3; i++ {
			if ok, _, err := f.s.Allow(ctx(t), k, hourly, 3, 1); err != nil || !ok {
				t.Fatalf("event %d of the burst: %v %v", i+1, ok, err)
			}
		}
		ok, retry, err := f.s.Allow(ctx(t), k, hourly, 3, 1)
		if err != nil || ok || retry > time.Hour || retry < time.Hour-time.Minute {
			t.Fatalf("over the burst: ok %v, retry %v, %v; want denied, ~1h", ok, retry, err)
		}
		// Then the rate: one more after the retry time, and not before.
		fast := NewKey("rate", "fast")
		// One a second: the checks below hold unless the machine stalls
		// for most of a second between two calls.
		r := Rate{Events: 1, Period: time.Second}
		for i := 0; i < 2; i++ {
			if ok, _, _ := f.s.Allow(ctx(t), fast, r, 2, 1); !ok {
				t.Fatalf("burst event %d denied", i+1)
			}
		}
		ok, r1, _ := f.s.Allow(ctx(t), fast, r, 2, 1)
		if ok || r1 <= 0 || r1 > time.Second {
			t.Fatalf("after the burst: ok %v, retry %v; want denied, in (0, 1s]", ok, r1)
		}
		ok, r2, _ := f.s.Allow(ctx(t), fast, r, 2, 1)
		if ok || r2 > r1 {
			t.Fatalf("again at once: ok %v, retry %v (first %v)", ok, r2, r1)
		}
		f.wait(r2 + time.Millisecond)
		if ok, retry, _ := f.s.Allow(ctx(t), fast, r, 2, 1); !ok {
			t.Fatalf("after waiting the retry time: denied, retry %v", retry)
		}
		if ok, _, _ := f.s.Allow(ctx(t), fast, r, 2, 1); ok {
			t.Fatal("a second event one interval later: admitted")
		}
	})
}

// TestConcurrency: many goroutines on one key lose no increment and
// never over-admit.
func TestConcurrency(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		const workers, each = 8, 100
		ck := NewKey("rep", "concurrent")
		rk := NewKey("rate", "concurrent")
		w := 1000 * time.Hour
		var admitted atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if _, err := f.s.Add(ctx(t), ck, 1, w); err != nil {
						errs <- err
						return
					}
					ok, _, err := f.s.Allow(ctx(t), rk, Rate{Events: 1, Period: time.Hour}, 50, 1)
					if err != nil {
						errs <- err
						return
					}
					if ok {
						admitted.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got, _ := f.s.Count(ctx(t), ck, w); got != workers*each {
			t.Errorf("count = %d, want %d", got, workers*each)
		}
		if got := admitted.Load(); got != 50 {
			t.Errorf("admitted %d of %d, want exactly the burst, 50", got, workers*each)
		}

		// SetNX races: for each key exactly one goroutine sets it.
		const keys = 20
		var won [keys]atomic.Int32
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range keys {
					set, err := f.s.SetNX(ctx(t), NewKey("grey", "race", fmt.Sprint(i)), nil, time.Hour)
					if err != nil {
						t.Error(err)
						return
					}
					if set {
						won[i].Add(1)
					}
				}
			}()
		}
		wg.Wait()
		for i := range won {
			if n := won[i].Load(); n != 1 {
				t.Errorf("key %d set by %d goroutines, want 1", i, n)
			}
		}
	})
}

// TestConcurrentRate: under concurrency over real time, the admitted sum
// stays within burst + rate × elapsed.
func TestConcurrentRate(t *testing.T) {
	f := newRedis(t)
	k := NewKey("rate", "load")
	rate := Rate{Events: 100, Period: time.Second} // T = 10ms
	const burst = 20
	var admitted atomic.Int64
	start := time.Now()
	stop := start.Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for calls := 0; time.Now().Before(stop) && calls < 5000; calls++ {
				ok, _, err := f.s.Allow(ctx(t), k, rate, burst, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	limit := burst + int64(elapsed/(10*time.Millisecond)) + 1
	got := admitted.Load()
	t.Logf("admitted %d in %v (limit %d)", got, elapsed, limit)
	if got > limit {
		t.Errorf("admitted %d in %v: over burst + rate × elapsed = %d", got, elapsed, limit)
	}
	if got < burst {
		t.Errorf("admitted %d: fewer than the burst", got)
	}
}

func TestWrongKind(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		v, c, r := NewKey("x", "value"), NewKey("x", "counter"), NewKey("x", "rate")
		f.s.SetNX(ctx(t), v, []byte("1"), time.Hour)
		f.s.Add(ctx(t), c, 1, time.Hour)
		f.s.Allow(ctx(t), r, Rate{Events: 1, Period: time.Hour}, 5, 1)
		checks := map[string]error{}
		_, _, checks["Allow on a value"] = f.s.Allow(ctx(t), v, Rate{Events: 1, Period: time.Hour}, 5, 1)
		_, checks["Add on a rate"] = f.s.Add(ctx(t), r, 1, time.Hour)
		_, checks["Count on a value"] = f.s.Count(ctx(t), v, time.Hour)
		_, _, _, checks["Get on a counter"] = f.s.Get(ctx(t), c)
		_, checks["SetNX on a rate"] = f.s.SetNX(ctx(t), r, nil, time.Hour)
		checks["Set on a counter"] = f.s.Set(ctx(t), c, nil, time.Hour)
		for what, err := range checks {
			if !errors.Is(err, ErrKind) || errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: %v, want ErrKind", what, err)
			}
		}
	})
}

func TestInvalid(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		k := NewKey("x", "k")
		checks := map[string]error{}
		_, checks["zero key"] = f.s.SetNX(ctx(t), Key{}, nil, time.Hour)
		_, checks["bad namespace"] = f.s.SetNX(ctx(t), NewKey("Grey:", "a"), nil, time.Hour)
		_, checks["no TTL"] = f.s.SetNX(ctx(t), k, nil, 0)
		_, checks["TTL of 100 years"] = f.s.SetNX(ctx(t), k, nil, 100*365*24*time.Hour)
		checks["negative TTL"] = f.s.Set(ctx(t), k, nil, -time.Second)
		_, checks["no window"] = f.s.Add(ctx(t), k, 1, 0)
		_, checks["negative n"] = f.s.Add(ctx(t), k, -1, time.Hour)
		_, _, checks["no rate"] = f.s.Allow(ctx(t), k, Rate{}, 1, 1)
		_, _, checks["no burst"] = f.s.Allow(ctx(t), k, Rate{Events: 1, Period: time.Second}, 0, 1)
		_, _, checks["empty pattern"] = f.s.Scan(ctx(t), "", 10)
		_, _, checks["space in pattern"] = f.s.Scan(ctx(t), "a b", 10)
		_, _, checks["no max"] = f.s.Delete(ctx(t), "*", 0)
		for what, err := range checks {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", what, err)
			}
		}
	})
}

// hostile are key parts an attacker chooses (HELO names, addresses).
var hostile = []string{
	"*", "?", "[a-z]", `\`, "a:b", ":", "", "%", "%41", "A", "a*", "a", "moat:v1:grey:a",
	"\x00\r\n", "é", strings.Repeat("x", 10000), strings.Repeat("x", 10000) + "y", "#", "..", "/",
}

// TestNamespacing: keys from hostile parts are distinct, stay in their
// namespace, and a key's Pattern matches it and only it.
func TestNamespacing(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		var keys []Key
		for _, ns := range []string{"grey", "rate"} {
			for _, p := range hostile {
				keys = append(keys, NewKey(ns, p), NewKey(ns, p, "z"), NewKey(ns, "z", p))
			}
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k.String()] {
				continue // NewKey("grey", "", "z") style duplicates are the same key
			}
			seen[k.String()] = true
			if set, err := f.s.SetNX(ctx(t), k, []byte(k.String()), time.Hour); err != nil || !set {
				t.Fatalf("SetNX %q = %v, %v; keys collide", k, set, err)
			}
		}
		for _, k := range keys {
			es, more, err := f.s.Scan(ctx(t), k.Pattern(), 10)
			if err != nil || more || len(es) != 1 || es[0].Key != k.String() || string(es[0].Value) != k.String() {
				t.Fatalf("Scan(%q): %v entries, more %v, %v; want exactly the key", k.Pattern(), len(es), more, err)
			}
		}
		es, _, err := f.s.Scan(ctx(t), "grey:*", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if !strings.HasPrefix(e.Key, Prefix+"grey:") {
				t.Errorf("grey:* found %q", e.Key)
			}
		}
		if len(es) != len(seen)/2 {
			t.Errorf("grey:* found %d, want %d", len(es), len(seen)/2)
		}
		// Deleting one key by its pattern deletes only it.
		if n, _, err := f.s.Delete(ctx(t), NewKey("grey", "*").Pattern(), 100); err != nil || n != 1 {
			t.Fatalf("Delete of the key made of \"*\": %d, %v; want 1", n, err)
		}
		if es2, _, _ := f.s.Scan(ctx(t), "grey:*", 1000); len(es2) != len(es)-1 {
			t.Errorf("after deleting one: %d grey entries, want %d", len(es2), len(es)-1)
		}
	})
}

func TestScanDelete(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		for i := range 50 {
			f.s.SetNX(ctx(t), NewKey("grey", fmt.Sprint(i)), []byte(fmt.Sprint(i)), time.Hour)
		}
		f.s.Add(ctx(t), NewKey("rep", "c"), 7, time.Hour)
		f.s.Allow(ctx(t), NewKey("rate", "r"), Rate{Events: 1, Period: time.Hour}, 5, 1)
		f.s.SetNX(ctx(t), NewKey("grey", "short"), []byte("x"), 100*time.Millisecond)
		f.wait(100 * time.Millisecond)
		eventually(t, 3*time.Second, "short entry expired", func() bool {
			_, _, found, _ := f.s.Get(ctx(t), NewKey("grey", "short"))
			return !found
		})

		es, more, err := f.s.Scan(ctx(t), "grey:*", 10)
		if err != nil || len(es) != 10 || !more {
			t.Fatalf("Scan max 10: %d entries, more %v, %v", len(es), more, err)
		}
		es, more, err = f.s.Scan(ctx(t), "grey:*", 100)
		if err != nil || len(es) != 50 || more {
			t.Fatalf("Scan max 100: %d entries, more %v, %v; want 50, no more (the expired one hidden)", len(es), more, err)
		}
		for _, e := range es {
			if e.Kind != KindValue || e.TTL <= 0 || e.TTL > time.Hour || e.Age < 0 || "moat:v1:grey:"+string(e.Value) != e.Key {
				t.Errorf("entry %+v", e)
			}
		}
		es, _, _ = f.s.Scan(ctx(t), "re[p]:*", 10)
		if len(es) != 1 || es[0].Kind != KindCounter || es[0].Count != 7 {
			t.Errorf("counter entry: %+v", es)
		}
		es, _, _ = f.s.Scan(ctx(t), "rat?:*", 10)
		if len(es) != 1 || es[0].Kind != KindRate || es[0].TTL <= 0 {
			t.Errorf("rate entry: %+v", es)
		}
		es, _, _ = f.s.Scan(ctx(t), "grey:[1-2]?", 100)
		var names []string
		for _, e := range es {
			names = append(names, string(e.Value))
		}
		sort.Strings(names)
		if strings.Join(names, ",") != "10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29" {
			t.Errorf("grey:[1-2]? found %v", names)
		}

		n, _, err := f.s.Delete(ctx(t), "grey:*", 20)
		if err != nil || n != 20 {
			t.Fatalf("Delete max 20: %d, %v", n, err)
		}
		n, more, err = f.s.Delete(ctx(t), "grey:*", 100)
		if err != nil || n != 30 || more {
			t.Fatalf("Delete the rest: %d, more %v, %v; want 30", n, more, err)
		}
		if es, _, _ := f.s.Scan(ctx(t), "*", 100); len(es) != 2 {
			t.Errorf("left: %+v, want the counter and the rate", es)
		}
	})
}

// TestRemove: Remove deletes exactly the keys named, of every kind, in
// one call; absent keys and no keys are no error; an invalid key refuses
// the whole call before anything is deleted; a read-only view refuses.
func TestRemove(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		v, c, r, keep := NewKey("auth", "v"), NewKey("auth", "c"), NewKey("auth", "r"), NewKey("auth", "keep")
		f.s.SetNX(ctx(t), v, []byte("x"), time.Hour)
		f.s.Add(ctx(t), c, 3, time.Hour)
		f.s.Allow(ctx(t), r, Rate{Events: 1, Period: time.Hour}, 5, 5)
		f.s.SetNX(ctx(t), keep, []byte("k"), time.Hour)

		if err := f.s.Remove(ctx(t), v, NewKey("auth", "c", "x")); err != nil {
			t.Fatal(err)
		}
		if err := ReadOnly(f.s).Remove(ctx(t), keep); !errors.Is(err, ErrReadOnly) {
			t.Errorf("read-only Remove: %v", err)
		}
		if err := f.s.Remove(ctx(t), c, Key{}, r); !errors.Is(err, ErrInvalid) {
			t.Errorf("Remove with a zero key: %v, want ErrInvalid", err)
		}
		if n, _ := f.s.Count(ctx(t), c, time.Hour); n != 3 {
			t.Errorf("a refused Remove deleted the counter: %d", n)
		}
		if err := f.s.Remove(ctx(t), c, r, NewKey("auth", "absent"), c); err != nil {
			t.Fatal(err)
		}
		if err := f.s.Remove(ctx(t)); err != nil {
			t.Errorf("Remove of no keys: %v", err)
		}
		if _, _, found, _ := f.s.Get(ctx(t), v); found {
			t.Error("value still there")
		}
		if n, err := f.s.Count(ctx(t), c, time.Hour); err != nil || n != 0 {
			t.Errorf("counter after Remove: %d, %v", n, err)
		}
		// A removed rate starts over with a full burst.
		if ok, _, err := f.s.Allow(ctx(t), r, Rate{Events: 1, Period: time.Hour}, 5, 5); err != nil || !ok {
			t.Errorf("rate after Remove: %v, %v; want a full burst", ok, err)
		}
		if _, _, found, _ := f.s.Get(ctx(t), keep); !found {
			t.Error("Remove deleted a key it was not given")
		}
		// The key can be used as another kind afterwards: nothing is left.
		if _, err := f.s.Add(ctx(t), v, 1, time.Hour); err != nil {
			t.Errorf("Add to a removed value's key: %v", err)
		}
		if got := testutil.ToFloat64(f.s.(*checked).m.ops.WithLabelValues(f.name, "remove", "ok")); got != 3 {
			t.Errorf("remove ok = %v, want 3", got)
		}
	})
}

func TestMetrics(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		k := NewKey("x", "m")
		f.s.SetNX(ctx(t), k, nil, time.Hour)
		f.s.SetNX(ctx(t), k, nil, time.Hour)
		f.s.SetNX(ctx(t), Key{}, nil, time.Hour)
		if got := testutil.ToFloat64(f.s.(*checked).m.ops.WithLabelValues(f.name, "setnx", "ok")); got != 2 {
			t.Errorf("setnx ok = %v, want 2", got)
		}
		if got := testutil.ToFloat64(f.s.(*checked).m.ops.WithLabelValues(f.name, "setnx", "error")); got != 1 {
			t.Errorf("setnx error = %v, want 1", got)
		}
		n, err := testutil.GatherAndCount(f.reg, "moat_state_operations_total", "moat_state_operation_duration_seconds", "moat_state_round_trips_total")
		if err != nil || n < 4 {
			t.Errorf("gathered %d series, %v", n, err)
		}
		if lint, err := testutil.GatherAndLint(f.reg); err != nil || len(lint) > 0 {
			t.Errorf("metric lint: %v %v", lint, err)
		}
	})
}
