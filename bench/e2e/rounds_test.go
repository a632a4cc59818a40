//go:build e2ebench

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rounds are the results of sending n messages through each path,
// round after round, the paths alternating: wall time and the path's
// processes' CPU, per path.
type rounds struct {
	n         int
	dur, cpus map[string][]time.Duration
}

// runRounds sends n copies of msg through every path in 50 concurrent
// sessions of one message, *flagRounds times, the starting path moving
// each round so no path always runs first. Every message must be
// accepted and reach the sink. hook, when set, is called before (after
// false) and after each path's run; what it returns after is appended
// to the round's log line (store operations per message, say).
func runRounds(t *testing.T, paths []*path, snk *sink, msg []byte, n int, hook func(p *path, after bool) string) *rounds {
	t.Helper()
	r := &rounds{n: n, dur: map[string][]time.Duration{}, cpus: map[string][]time.Duration{}}
	for round := range *flagRounds {
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			pids := p.pids()
			if hook != nil {
				hook(p, false)
			}
			cpu0 := treeCPU(pids)
			c0 := snk.mesg.Load()
			start := time.Now()
			refused, err := sendSigned(p.addr, msg, n, 50)
			d := time.Since(start)
			if err != nil {
				t.Fatalf("%s round %d: %v", p.name, round+1, err)
			}
			if refused > 0 {
				t.Fatalf("%s round %d: %d messages refused: every message must pass", p.name, round+1, refused)
			}
			if err := snk.waitCount(c0+int64(n), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			cpu := treeCPU(pids) - cpu0
			r.dur[p.name] = append(r.dur[p.name], d)
			r.cpus[p.name] = append(r.cpus[p.name], cpu)
			line := fmt.Sprintf("round %d %-16s %7.0f msgs/s  cpu %.3f ms/msg", round+1, p.name, float64(n)/d.Seconds(), msPerMsg(cpu, n))
			if hook != nil {
				line += hook(p, true)
			}
			t.Log(line)
		}
	}
	return r
}

func (r *rounds) med(ds []time.Duration) float64 {
	return median(ds, func(d time.Duration) float64 { return d.Seconds() })
}

// rate is a path's median throughput in messages per second.
func (r *rounds) rate(name string) float64 { return float64(r.n) / r.med(r.dur[name]) }

// cpu is a path's median CPU in milliseconds per message.
func (r *rounds) cpu(name string) float64 { return r.med(r.cpus[name]) * 1000 / float64(r.n) }

// table writes the results as BENCHMARKS.md's table, with extra columns
// from extra (header, then one cell per path) when set.
func (r *rounds) table(b *strings.Builder, paths []*path, extra ...func(p *path) string) {
	b.WriteString("| path | msgs/s | vs tcp-relay | proxy CPU ms/msg |")
	sep := "|---|---|---|---|"
	for range extra {
		sep += "---|"
	}
	cols := make([]string, len(extra))
	for i, f := range extra {
		cols[i] = f(nil)
	}
	if len(cols) > 0 {
		b.WriteString(" " + strings.Join(cols, " | ") + " |")
	}
	b.WriteString("\n" + sep + "\n")
	for _, p := range paths {
		c := "-"
		if p.proc != nil {
			c = fmt.Sprintf("%.3f", r.cpu(p.name))
		}
		fmt.Fprintf(b, "| %s | %.0f | %.2f× | %s |", p.name, r.rate(p.name), r.rate(p.name)/r.rate("tcp-relay"), c)
		for _, f := range extra {
			b.WriteString(" " + f(p) + " |")
		}
		b.WriteString("\n")
	}
}

// workloadSize is a benchmark's message count after -quick and -divide.
func workloadSize(full int) int {
	switch {
	case *flagDivide > 0:
		return full / *flagDivide
	case *flagQuick:
		return full / 10
	}
	return full
}

// startBenchMoat runs moat serve as path name in front of the sink, with
// the settings every benchmark shares (no STARTTLS, an upstream pool,
// limits far above the load, JSON logs at info) and extra appended. It
// returns the path and moat's HTTP listener.
func startBenchMoat(t *testing.T, dir, bin, name, sink, extra string) (*path, string) {
	t.Helper()
	addr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`listen: [%q]
hostname: moat.bench.test
tls:
  starttls: false
upstream:
  address: %q
  helo: moat.bench.test
  pool_size: 16
limits:
  max_connections: 4000
  max_connections_per_ip: 4000
http:
  listen: %q
log:
  level: info
  format: json
%s`, addr, sink, httpAddr, extra)
	cfgFile := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("moat config check: %v\n%s", err, out)
	}
	p := startProcess(t, name, filepath.Join(dir, name+".log"), exec.Command(bin, "serve", "--config", cfgFile))
	if err := waitGreeting(p, addr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return &path{name: name, addr: addr, proc: p}, httpAddr
}
