package capture

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"sync"
	"testing"

	"moat/inspect"
)

// benchSessions is the size of the generated benchmark capture.
const benchSessions = 10000

var (
	benchOnce sync.Once
	benchData []byte
)

func benchCapture(b testing.TB) []byte {
	benchOnce.Do(func() {
		benchData = writePcap(b, genCapture(benchSessions, 50, 2025))
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

// TestWriteBenchCapture writes the benchmark capture to $MOAT_BENCH_PCAP,
// for scripts/bench-capture.sh; without the variable it does nothing.
func TestWriteBenchCapture(t *testing.T) {
	path := os.Getenv("MOAT_BENCH_PCAP")
	if path == "" {
		t.Skip("MOAT_BENCH_PCAP not set")
	}
	if err := os.WriteFile(path, benchCapture(t), 0o644); err != nil {
		t.Fatal(err)
	}
}
