//go:build e2ebench

package e2e

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The analyzer benchmark (issue 8): smtp-source sends N sessions of one
// 5 KB message each to smtp-sink over loopback while dumpcap records
// them; then `moat analyze` reads the capture on one core and on all of
// them, next to tshark extracting the same envelope fields, in alternating
// rounds.
var (
	flagAnSessions = flag.Int("analyzer-sessions", 10000, "TestAnalyzer: SMTP sessions to record")
	flagAnCapture  = flag.String("analyzer-capture", "", "TestAnalyzer: also keep the recorded capture in this file (for profiling: MOAT_BENCH_PCAP=FILE go test -bench AnalyzeFile ./capture)")
)

// tsharkFields are the envelope fields tshark extracts: each command and
// its parameter, each reply code, and the message's Subject.
var tsharkFields = []string{"-T", "fields",
	"-e", "smtp.req.command", "-e", "smtp.req.parameter", "-e", "smtp.response.code", "-e", "imf.subject"}

// anTool is one way of reading the capture.
type anTool struct {
	name    string
	oneCore bool
	args    []string // the command, without taskset
	env     []string
}

// anSample is one run of a tool.
type anSample struct {
	wall, cpu time.Duration
	rss       int64 // peak, bytes
}

func TestAnalyzer(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing (Debian package postfix; scripts/install-test-deps.sh installs it): %v", bin, err)
		}
	}
	for _, bin := range []string{"dumpcap", "tshark", "taskset"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing (Debian packages tshark and util-linux): %v", bin, err)
		}
	}
	root, out := benchDirs(t)
	dir := t.TempDir()
	moatBin := buildMoat(t, root, dir)

	n := *flagAnSessions
	snk := startSink(t, dir)
	_, port, _ := net.SplitHostPort(snk.addr)
	pcap := filepath.Join(dir, "smtp.pcapng")
	record(t, dir, pcap, snk, port, n)
	if *flagAnCapture != "" {
		data, err := os.ReadFile(pcap)
		if err == nil {
			err = os.WriteFile(*flagAnCapture, data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(pcap)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()

	// The capture must hold every session, whole: moat finds them all.
	sum, err := exec.Command(moatBin, "analyze", "--ports", port, "--out", os.DevNull, pcap).CombinedOutput()
	if err != nil {
		t.Fatalf("moat analyze: %v\n%s", err, sum)
	}
	got := summaryCount(string(sum), "sessions")
	incomplete := summaryCount(string(sum), "incomplete")
	t.Logf("moat analyze summary:\n%s", sum)
	if got != n || incomplete != 0 {
		t.Fatalf("moat analyze found %d SMTP sessions (%d incomplete) in the capture, want %d (all complete)", got, incomplete, n)
	}

	// moat is told the sink's port, and tshark to decode it as SMTP: the
	// same knowledge for both.
	tools := []anTool{
		{name: "moat analyze", oneCore: true, env: []string{"GOMAXPROCS=1"},
			args: []string{moatBin, "analyze", "--quiet", "--shards", "1", "--ports", port, pcap}},
		{name: "moat analyze", args: []string{moatBin, "analyze", "--quiet", "--ports", port, pcap}},
		{name: "tshark", oneCore: true, args: append([]string{"tshark", "-n", "-r", pcap, "-d", "tcp.port==" + port + ",smtp", "-Y", "smtp"}, tsharkFields...)},
		{name: "tshark", args: append([]string{"tshark", "-n", "-r", pcap, "-d", "tcp.port==" + port + ",smtp", "-Y", "smtp"}, tsharkFields...)},
	}
	results := make([][]anSample, len(tools))
	for round := range *flagRounds {
		// Alternate the tools, and rotate who goes first, so that drifts
		// in the machine's load spread over all of them.
		for i := range tools {
			k := (i + round) % len(tools)
			s, err := runTool(tools[k])
			if err != nil {
				t.Fatalf("round %d, %s: %v", round+1, tools[k].label(), err)
			}
			results[k] = append(results[k], s)
			t.Logf("round %d %-28s %6.3f s  %7.1f MB/s  cpu %6.3f s", round+1, tools[k].label(),
				s.wall.Seconds(), float64(size)/1e6/s.wall.Seconds(), s.cpu.Seconds())
		}
	}
	report := renderAnalyzer(tools, results, size, n, analyzerMachine(root))
	fmt.Println("\n" + report)
	file := filepath.Join(out, "analyzer.md")
	if err := os.WriteFile(file, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("results written to %s", file)
}

func (a anTool) label() string {
	if a.oneCore {
		return a.name + " (1 core)"
	}
	return fmt.Sprintf("%s (%d cores)", a.name, runtime.NumCPU())
}

// record captures n sessions from smtp-source to the sink into pcap.
func record(t *testing.T, dir, pcap string, snk *sink, port string, n int) {
	t.Helper()
	logf := filepath.Join(dir, "dumpcap.log")
	// -B 64: a 64 MiB kernel buffer, so that nothing is dropped while
	// smtp-source runs flat out.
	dc := startProcess(t, "dumpcap", logf, exec.Command("dumpcap", "-i", "lo", "-f", "tcp port "+port,
		"-B", "64", "-s", "0", "-w", pcap))
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(readFile(logf), "Capturing on") {
		if err := dc.alive(); err != nil {
			t.Fatalf("dumpcap (capturing on lo needs root or CAP_NET_RAW): %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("dumpcap did not start capturing within 15 s; its log:\n%s", tail(logf, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the filter attached, the ring buffer mapped

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m0 := snk.mesg.Load()
	args := append(slices.Clone(sourceArgs), "-l", strconv.Itoa(5<<10), "-s", "20", "-m", strconv.Itoa(n), snk.addr)
	start := time.Now()
	if err := smtpSource(ctx, args); err != nil {
		t.Fatal(err)
	}
	if err := snk.waitCount(m0+int64(n), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("smtp-source sent %d sessions in %v", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // the last FINs and RSTs

	// SIGINT: dumpcap writes its statistics and closes the file cleanly.
	syscall.Kill(dc.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-dc.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("dumpcap did not stop within 30 s of SIGINT")
	}
	log := readFile(logf)
	m := regexp.MustCompile(`Packets received/dropped on interface .*?: (\d+)/(\d+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("dumpcap reported no packet counts; its log:\n%s", tail(logf, 20))
	}
	if m[2] != "0" {
		t.Fatalf("dumpcap dropped %s of %s packets: the capture is incomplete", m[2], m[1])
	}
	t.Logf("dumpcap captured %s packets, dropped none", m[1])
}

func readFile(name string) string {
	data, _ := os.ReadFile(name)
	return string(data)
}

// summaryCount reads "NAME: N" from moat analyze's summary; -1 if absent.
func summaryCount(summary, name string) int {
	m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`).FindStringSubmatch(summary)
	if m == nil {
		return -1
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// runTool runs a tool once, its output to /dev/null.
func runTool(a anTool) (anSample, error) {
	args := a.args
	if a.oneCore {
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), a.env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	s := anSample{wall: time.Since(start)}
	if err != nil {
		return s, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	s.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.rss = ru.Maxrss << 10
	}
	return s, nil
}

// renderAnalyzer is the results as Markdown.
func renderAnalyzer(tools []anTool, results [][]anSample, size int64, sessions int, machine string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Analyzer results — %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %s.\n\n", machine)
	fmt.Fprintf(&b, "Capture: %d SMTP sessions, one 5 KB message each (smtp-source -s 20 -l 5120), "+
		"recorded on lo by dumpcap from smtp-source to smtp-sink: %.1f MB (pcapng). "+
		"Rounds: %d, the tools alternating within each round; medians, the range in brackets. "+
		"MB/s is capture-file megabytes (10^6 bytes) per second of wall time; CPU is user + system. "+
		"moat analyze runs with its built-in configuration (default rules, DNS lists off) and writes its JSON records to /dev/null; "+
		"tshark runs `-Y smtp %s` to /dev/null. One core: `taskset -c 0`, and GOMAXPROCS=1 for moat.\n\n",
		sessions, float64(size)/1e6, *flagRounds, strings.Join(tsharkFields, " "))
	b.WriteString("| tool | cores | wall s | MB/s | sessions/s | CPU s | peak RSS MB | MB/s ÷ tshark (1 core) |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	mbps := func(s anSample) float64 { return float64(size) / 1e6 / s.wall.Seconds() }
	var base float64
	for i, a := range tools {
		if a.name == "tshark" && a.oneCore {
			base = median(results[i], mbps)
		}
	}
	rate := map[string]float64{}
	for i, a := range tools {
		ss := results[i]
		v := median(ss, mbps)
		lo, hi := v, v
		var rss int64
		for _, s := range ss {
			lo, hi = min(lo, mbps(s)), max(hi, mbps(s))
			rss = max(rss, s.rss)
		}
		cores := "1"
		if !a.oneCore {
			cores = fmt.Sprintf("all (%d)", runtime.NumCPU())
		}
		ratio := "—"
		if base > 0 {
			ratio = fmt.Sprintf("%.1f", v/base)
		}
		rate[a.label()] = v
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.1f [%.1f–%.1f] | %.0f | %.2f | %.0f | %s |\n",
			a.name, cores, median(ss, func(s anSample) float64 { return s.wall.Seconds() }), v, lo, hi,
			median(ss, func(s anSample) float64 { return float64(sessions) / s.wall.Seconds() }),
			median(ss, func(s anSample) float64 { return s.cpu.Seconds() }), mb(rss), ratio)
	}
	if base > 0 {
		r := rate["moat analyze (1 core)"] / base
		verdict := "not met"
		if r >= 10 {
			verdict = "met"
		}
		fmt.Fprintf(&b, "\nIssue 8's target, analyzer ≥ 10× tshark's MB/s on one core: %.1f× (%s).\n", r, verdict)
		var mc, tc float64
		for i, a := range tools {
			c := median(results[i], func(s anSample) float64 { return s.cpu.Seconds() })
			switch {
			case a.oneCore && a.name == "tshark":
				tc = c
			case a.oneCore:
				mc = c
			}
		}
		if mc > 0 {
			fmt.Fprintf(&b, "By CPU time, less sensitive to the machine's other load: tshark ÷ moat on one core %.1f×.\n", tc/mc)
		}
	}
	return b.String()
}

// analyzerMachine describes where the run happened and what ran.
func analyzerMachine(root string) string {
	return fmt.Sprintf("%s; %s", hostAndBuild(root), strings.TrimSuffix(firstLine("tshark", "--version"), "."))
}
