package state

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// benchStores runs fn on each backend, the embedded one on the real clock
// and a real file, and reports the round trips (Redis requests, bbolt
// transactions) per operation.
func benchStores(b *testing.B, fn func(b *testing.B, s Store)) {
	run := func(b *testing.B, cfg Config) {
		cfg.Defaults()
		s, err := New(cfg, Deps{Registerer: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		rt := s.(*checked).m.roundTrips
		before := testutil.ToFloat64(rt)
		b.ResetTimer()
		fn(b, s)
		b.StopTimer()
		b.ReportMetric((testutil.ToFloat64(rt)-before)/float64(b.N), "roundtrips/op")
	}
	b.Run("embedded", func(b *testing.B) {
		run(b, Config{Backend: BackendEmbedded, Dir: b.TempDir()})
	})
	b.Run("redis", func(b *testing.B) {
		srv := redistestStart(b)
		run(b, redisConfig(srv))
	})
}

func BenchmarkAllow(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		k := NewKey("rate", "bench")
		// A limit that admits most calls: the write path, the common one.
		rate := Rate{Events: 1_000_000, Period: time.Second}
		c := benchCtx(b)
		for i := 0; i < b.N; i++ {
			if _, _, err := s.Allow(c, k, rate, 1000, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSetNX(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		c := benchCtx(b)
		for i := 0; i < b.N; i++ {
			// Half new keys (set), half existing (not set).
			k := NewKey("grey", "192.0.2.0/24", "sender@example.org", strconv.Itoa(i/2))
			if _, err := s.SetNX(c, k, []byte("seen"), time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAllowParallel: 8 goroutines per core on one key, as concurrent
// sessions would be. bbolt serialises its writers (one fsync each); Redis
// runs them over the connection pool.
func BenchmarkAllowParallel(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		k := NewKey("rate", "bench")
		rate := Rate{Events: 1_000_000, Period: time.Second}
		c := benchCtx(b)
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := s.Allow(c, k, rate, 1000, 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
