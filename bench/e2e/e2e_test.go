//go:build e2ebench

package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"moat/internal/rbldnstest"
)

var (
	flagQuick   = flag.Bool("quick", false, "send a tenth of each workload's messages")
	flagDivide  = flag.Int("divide", 0, "send 1/N of each workload's messages (-quick is -divide 10; a larger N is a smoke test)")
	flagRounds  = flag.Int("rounds", 3, "rounds of each workload on each path")
	flagHaraka  = flag.Bool("haraka", true, "include the Haraka path (needs `npm ci` in bench/haraka)")
	flagProfile = flag.Bool("profile", true, "take moat CPU and allocation profiles during the first 5 KB workload")
	flagOut     = flag.String("out", "", "folder for the results and profiles (default: bench/out)")
	flagTimeout = flag.Duration("round-timeout", 15*time.Minute, "bound on one path's run of one workload")
)

// workload is what smtp-source sends in one round on one path.
type workload struct {
	name       string
	messages   int
	size       int // payload bytes, smtp-source -l
	sessions   int // SMTP sessions at the same time
	perSession int // messages in each session
}

// workloads are issue 8's, in full; -quick divides the counts by ten.
var workloads = []workload{
	{"5 KB, 1 msg/session", 20000, 5 << 10, 50, 1},
	{"5 KB, 10 msgs/session", 20000, 5 << 10, 50, 10},
	{"200 KB, 1 msg/session", 2000, 200 << 10, 50, 1},
}

// sessionsPerProc is how many sessions each smtp-source process of a
// multi-message workload runs. smtp-source -d keeps a session open for
// the next message, but its message count is shared by all the sessions
// of a process: with 5 sessions and 5×N messages per process, the
// sessions carry N messages each on average.
const sessionsPerProc = 5

// The envelope and headers every message carries. The HELO name is a
// FQDN and the sender and recipient domain is Haraka's host_list entry.
var sourceArgs = []string{
	"-M", "client.bench.test",
	"-f", "sender@bench.test",
	"-t", "rcpt@bench.test",
	"-S", "Weekly report for the bench team",
}

// send runs w's messages (n of them) from smtp-source to addr and returns
// when every smtp-source has exited. smtp-source stops with an error at
// the first reply that is not the positive one it expects.
func send(ctx context.Context, w workload, n int, addr string) error {
	args := append(slices.Clone(sourceArgs), "-l", strconv.Itoa(w.size))
	if w.perSession <= 1 {
		args = append(args, "-s", strconv.Itoa(min(w.sessions, n)), "-m", strconv.Itoa(n), addr)
		return smtpSource(ctx, args)
	}
	perProc := sessionsPerProc * w.perSession
	procs := max(1, n/perProc)
	args = append(args, "-d", "-s", strconv.Itoa(sessionsPerProc), "-m", strconv.Itoa(perProc), addr)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, w.sessions)
	for range max(1, w.sessions/sessionsPerProc) {
		wg.Go(func() {
			for next.Add(1) <= int64(procs) {
				if err := smtpSource(ctx, args); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func smtpSource(ctx context.Context, args []string) error {
	out, err := exec.CommandContext(ctx, "/usr/sbin/smtp-source", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("smtp-source %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sample is one round of one workload on one path.
type sample struct {
	dur  time.Duration
	cpu  time.Duration // the proxy's, user and system
	rss  int64         // the proxy's peak in the round, bytes
	dnsq int           // queries rbldnsd answered in the round
	sys  int64         // the proxy's read and write system calls
	logb int64         // bytes the proxy logged
}

// bench holds what the rounds share.
type bench struct {
	t     *testing.T
	sink  *sink
	rbl   *rbldnstest.Server
	paths []*path
}

// measure runs w once on p.
func (b *bench) measure(w workload, p *path) (sample, error) {
	pids := p.pids()
	if err := resetPeakRSS(pids); err != nil {
		return sample{}, err
	}
	cpu0, sys0, log0 := treeCPU(pids), treeSyscalls(pids), p.logSize()
	q0 := len(b.rbl.Queries(b.t))
	m0 := b.sink.mesg.Load()
	ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
	defer cancel()
	start := time.Now()
	err := send(ctx, w, w.messages, p.addr)
	s := sample{dur: time.Since(start), cpu: treeCPU(pids) - cpu0, rss: peakRSS(pids), sys: treeSyscalls(pids) - sys0}
	if err != nil {
		return s, err
	}
	if p.proc != nil {
		if err := p.proc.alive(); err != nil {
			return s, err
		}
	}
	if err := b.sink.waitCount(m0+int64(w.messages), 30*time.Second); err != nil {
		return s, err
	}
	s.dnsq = len(b.rbl.Queries(b.t)) - q0
	s.logb = p.logSize() - log0
	return s, nil
}

func TestEndToEnd(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/smtp-source", "/usr/sbin/smtp-sink", rbldnstest.Binary} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing (Debian packages postfix and rbldnsd; scripts/install-test-deps.sh installs them): %v", bin, err)
		}
	}
	root, out := benchDirs(t)
	ws := slices.Clone(workloads)
	div := *flagDivide
	if div == 0 && *flagQuick {
		div = 10
	}
	for i := range ws {
		ws[i].messages /= max(div, 1)
	}
	dir := t.TempDir()

	moatBin := buildMoat(t, root, dir)
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeRules(t, moatBin, rulesFile, 200)

	// One list, zen.bench.test, that lists 127.0.0.2 (the RFC 5782 test
	// entry) but not the clients' 127.0.0.1, so every session is looked
	// up and accepted; its "not listed" answers live an hour (the SOA
	// minimum), so moat's cache stays warm. The in-addr.arpa zone gives
	// the rDNS lookups of both proxies a quick NXDOMAIN, as a local
	// resolver would for an address without a PTR record.
	rbl := rbldnstest.Start(t, map[string]rbldnstest.Zone{
		"zen.bench.test": {Default: "127.0.0.2", Entries: []rbldnstest.Entry{{Key: "127.0.0.2"}},
			TTL: time.Hour, NegativeTTL: time.Hour},
		"in-addr.arpa": {TTL: time.Hour, NegativeTTL: time.Hour},
	})
	snk := startSink(t, dir)
	b := &bench{t: t, sink: snk, rbl: rbl}
	b.paths = append(b.paths, &path{name: "direct", addr: snk.addr}, startRelay(t, dir, snk.addr))
	const clientQuery = "1.0.0.127.zen.bench.test" // the clients' 127.0.0.1 on the list
	asked := rbl.Count(t, clientQuery)
	moatPath, moatHTTP := startMoat(t, dir, moatSetup{bin: moatBin, rules: rulesFile, sink: snk.addr, dns: rbl.Addr})
	t.Logf("moat asked rbldnsd about its client %d times while starting (its RFC 5782 health check and the readiness probe's session)", rbl.Count(t, clientQuery)-asked)
	b.paths = append(b.paths, moatPath)
	if *flagHaraka {
		b.paths = append(b.paths, startHaraka(t, dir, harakaSetup{home: filepath.Join(root, "bench", "haraka"), sink: snk.addr, dns: rbl.Addr}))
	}

	// Warm up every path: node's JIT, moat's DNS cache, the sockets.
	for _, p := range b.paths {
		asked := rbl.Count(t, clientQuery)
		for _, w := range ws {
			warm := w
			warm.messages = min(w.messages, 20*w.sessions)
			ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
			err := send(ctx, warm, warm.messages, p.addr)
			cancel()
			if err != nil {
				t.Fatalf("warm-up of %s: %v", p.name, err)
			}
		}
		t.Logf("warm-up of %s: rbldnsd was asked about the client %d times", p.name, rbl.Count(t, clientQuery)-asked)
	}

	results := map[string]map[string][]sample{} // workload, path
	var profileReport string
	for wi, w := range ws {
		results[w.name] = map[string][]sample{}
		for round := range *flagRounds {
			// Alternate the paths, and rotate who goes first, so that
			// drifts in the machine's load spread over all of them.
			for i := range b.paths {
				p := b.paths[(i+round)%len(b.paths)]
				s, err := b.measure(w, p)
				if err != nil {
					t.Fatalf("%s, round %d, %s: %v", w.name, round+1, p.name, err)
				}
				results[w.name][p.name] = append(results[w.name][p.name], s)
				t.Logf("%-22s round %d %-9s %8.0f msgs/s  cpu %6.3f ms/msg  rss %6.1f MB  dns %d  r/w syscalls %d",
					w.name, round+1, p.name, float64(w.messages)/s.dur.Seconds(),
					msPerMsg(s.cpu, w.messages), mb(s.rss), s.dnsq, s.sys)
			}
		}
		// Profile moat on the small-message workload the issue names, and
		// on the large messages, where it is furthest from the floor.
		if *flagProfile && (wi == 0 || w.size > 100<<10) {
			tag := fmt.Sprintf("%dkb", w.size>>10)
			secs := median(results[w.name]["moat"], func(s sample) float64 { return s.dur.Seconds() })
			profileReport += profileMoat(t, w, moatPath, moatHTTP, out, tag, secs)
		}
	}

	metrics := moatMetrics(t, moatHTTP, out)
	report := renderReport(ws, b.paths, results, div, machine(root))
	full := report + "\n" + metrics + "\n" + profileReport
	fmt.Println("\n" + full)
	resultsFile := filepath.Join(out, "results.md")
	if err := os.WriteFile(resultsFile, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("results written to %s", resultsFile)
}

// benchDirs returns the repository's root and the results folder
// (-out, default bench/out), which it creates.
func benchDirs(t *testing.T) (root, out string) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out = *flagOut
	if out == "" {
		out = filepath.Join(root, "bench", "out")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return root, out
}

// buildMoat builds cmd/moat without cgo into dir and returns its path.
func buildMoat(t *testing.T, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "moat")
	build := exec.Command("go", "build", "-o", bin, "./cmd/moat")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/moat: %v\n%s", err, o)
	}
	return bin
}

// writeRules writes moat's default rules plus n generated regex rules
// over subject and body, the shape of rules/bench_test.go's: words that
// never occur, so that every rule is evaluated on every message.
func writeRules(t *testing.T, moatBin, file string, n int) {
	t.Helper()
	def, err := exec.Command(moatBin, "rules", "default").Output()
	if err != nil {
		t.Fatalf("moat rules default: %v", err)
	}
	var src strings.Builder
	src.Write(def)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		word := fmt.Sprintf("w%03dx%c%c", i, 'a'+r.IntN(26), 'a'+r.IntN(26))
		fact := "body"
		if i%4 == 0 {
			fact = "subject"
		}
		fmt.Fprintf(&src, "  - {name: GEN_%03d, stage: data, when: {%s: {matches: '(?i)\\b%s\\b'}}, score: 0.1}\n", i, fact, word)
	}
	if err := os.WriteFile(file, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func msPerMsg(d time.Duration, n int) float64 {
	return float64(d) / float64(time.Millisecond) / float64(n)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func median[S any](ss []S, f func(S) float64) float64 {
	if len(ss) == 0 {
		return 0
	}
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// machine describes where the run happened and what ran.
func machine(root string) string {
	return fmt.Sprintf("%s; node %s, Haraka %s", hostAndBuild(root), firstLine("node", "--version"), harakaVersion(root))
}

// hostAndBuild describes the machine, moat's revision and Go, and the
// Postfix whose smtp-source and smtp-sink ran.
func hostAndBuild(root string) string {
	model := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	rev := firstLine("git", "-C", root, "rev-parse", "--short", "HEAD")
	if firstLine("git", "-C", root, "status", "--porcelain", "--untracked-files=no") != "" {
		rev += " with uncommitted changes"
	}
	return fmt.Sprintf("%d cores, %s, Linux %s; moat at %s, built with %s; postfix %s",
		runtime.NumCPU(), model, strings.TrimSpace(string(kernel)), rev, runtime.Version(),
		firstLine("postconf", "-h", "mail_version"))
}

// firstLine is the first line a command prints, or "n/a".
func firstLine(name string, args ...string) string {
	o, err := exec.Command(name, args...).Output()
	if err != nil {
		return "n/a"
	}
	l, _, _ := strings.Cut(strings.TrimSpace(string(o)), "\n")
	return l
}

// harakaVersion is the installed Haraka's version.
func harakaVersion(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "bench", "haraka", "node_modules", "Haraka", "package.json"))
	if err != nil {
		return "not installed"
	}
	var pkg struct{ Version string }
	if json.Unmarshal(data, &pkg) != nil {
		return "unknown"
	}
	return pkg.Version
}
