package capture

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"sync"
	"testing"

	"moat/inspect"
	"moat/rules"

	"moat/internal/pcaptest"
)

// benchSessions is the size of the generated benchmark capture.
const benchSessions = 10000

var (
	benchOnce sync.Once
	benchData []byte
)

func benchCapture(b testing.TB) []byte {
	benchOnce.Do(func() {
		benchData = pcaptest.Write(b, pcaptest.Capture(benchSessions, 50, 2025))
	})
	return benchData
}

// BenchmarkAnalyze analyses a generated capture of 10,000 sessions (50
// open at a time, ~3 KB messages), judged by testJudge, on one core
// (one shard) and on all cores (connections sharded across them). It
// reports MB/s of capture file and sessions/s.
func BenchmarkAnalyze(b *testing.B) {
	data := benchCapture(b)
	for _, bc := range []struct {
		name   string
		shards int
	}{{"one-core", 1}, {"all-cores", runtime.GOMAXPROCS(0)}} {
		b.Run(bc.name, func(b *testing.B) {
			engine, _ := inspect.New(inspect.Config{Judge: &nopJudge{}})
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			b.ResetTimer()
			sessions := 0
			for i := 0; i < b.N; i++ {
				src, err := NewReader(bytes.NewReader(data), "bench", nil)
				if err != nil {
					b.Fatal(err)
				}
				a, _ := New(Config{Shards: bc.shards}, Deps{Engine: engine})
				st, err := a.Run(context.Background(), src, func(*Session) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				if st.Sessions != benchSessions {
					b.Fatalf("%d sessions, want %d", st.Sessions, benchSessions)
				}
				sessions += int(st.Sessions)
			}
			b.ReportMetric(float64(sessions)/b.Elapsed().Seconds(), "sessions/s")
		})
	}
}

// nopJudge accepts everything but asks for the header section, so the
// data stage does its parsing.
type nopJudge struct{}

func (nopJudge) Needs(st inspect.Stage) inspect.Needs {
	if st == inspect.StageData {
		return inspect.Needs{Depth: inspect.DepthHeaders}
	}
	return inspect.Needs{}
}

func (nopJudge) Evaluate(inspect.Stage, *inspect.Facts) inspect.Verdict {
	return inspect.Verdict{Action: inspect.Accept}
}

// BenchmarkAnalyzeFile analyses the capture file $MOAT_BENCH_PCAP (one
// recorded by bench/e2e's TestAnalyzer, say) with moat's default rules,
// on one shard, the way `moat analyze --shards 1` does: for profiling on
// real traffic,
//
//	MOAT_BENCH_PCAP=FILE go test -run '^$' -bench AnalyzeFile -cpuprofile cpu.out ./capture
//
// Without the variable it is skipped.
func BenchmarkAnalyzeFile(b *testing.B) {
	file := os.Getenv("MOAT_BENCH_PCAP")
	if file == "" {
		b.Skip("MOAT_BENCH_PCAP not set")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	set, err := rules.Default(rules.Options{})
	if err != nil {
		b.Fatal(err)
	}
	engine, err := inspect.New(inspect.Config{Judge: set})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	sessions := 0
	for b.Loop() {
		src, err := NewReader(bytes.NewReader(data), file, nil)
		if err != nil {
			b.Fatal(err)
		}
		a, _ := New(Config{Shards: 1}, Deps{Engine: engine})
		st, err := a.Run(context.Background(), src, func(*Session) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		sessions += int(st.Sessions)
	}
	b.ReportMetric(float64(sessions)/b.Elapsed().Seconds(), "sessions/s")
}
