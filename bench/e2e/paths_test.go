//go:build e2ebench

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// path is one way from smtp-source to smtp-sink.
type path struct {
	name string
	addr string // where smtp-source connects
	proc *process
}

// pids returns the proxy's processes, none for the direct path.
func (p *path) pids() []int {
	if p.proc == nil {
		return nil
	}
	return processTree(p.proc.cmd.Process.Pid)
}

// logSize is the size of the proxy's log so far.
func (p *path) logSize() int64 {
	if p.proc == nil {
		return 0
	}
	fi, err := os.Stat(p.proc.logf)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// process is a child the harness started, in a process group of its own
// so that stop ends it and any workers it forked, and nothing else.
type process struct {
	name   string
	cmd    *exec.Cmd
	logf   string
	exited chan struct{}
	err    error
}

// startProcess starts cmd with its stderr, and its stdout unless the
// caller took it, going to logf, and stops it when the test ends.
func startProcess(t *testing.T, name, logf string, cmd *exec.Cmd) *process {
	t.Helper()
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cmd.Stderr = f
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	// Pdeathsig: no orphan is left behind if the harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logf: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop sends SIGTERM to the process group, and SIGKILL 10 seconds later.
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
}

// alive reports an error if the process has exited.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v; log %s:\n%s", p.name, p.err, p.logf, tail(p.logf, 20))
	default:
		return nil
	}
}

// tail returns the last n lines of a file.
func tail(file string, n int) string {
	data, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitGreeting waits until addr answers a connection with a 220 greeting.
func waitGreeting(p *process, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if p != nil {
			if err := p.alive(); err != nil {
				return err
			}
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "QUIT\r\n")
			c.Close()
			if strings.HasPrefix(line, "220") {
				return nil
			}
			last = fmt.Errorf("greeting %q, %v", line, rerr)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s gave no 220 greeting within %v: %v", addr, limit, last)
}

// sink is the smtp-sink all paths deliver to. Its -c counters tell how
// many messages it has taken, so that every round checks that each
// message really arrived.
type sink struct {
	addr string
	proc *process
	mesg atomic.Int64
}

func startSink(t *testing.T, dir string) *sink {
	t.Helper()
	s := &sink{addr: freeAddr(t)}
	cmd := exec.Command("/usr/sbin/smtp-sink",
		"-u", "nobody", // required when started as root
		"-c",         // counters on stdout
		"-m", "2000", // simultaneous connections
		s.addr, "1024")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.proc = startProcess(t, "smtp-sink", filepath.Join(dir, "smtp-sink.log"), cmd)
	go s.count(out)
	if err := waitGreeting(s.proc, s.addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}

// count follows smtp-sink's counter lines, "sess=N quit=N mesg=N",
// which it rewrites in place with CR.
func (s *sink) count(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		for i, b := range data {
			if b == '\r' || b == '\n' {
				return i + 1, data[:i], nil
			}
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "mesg="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					s.mesg.Store(n)
				}
			}
		}
	}
}

// waitCount waits until the sink has taken at least n messages in all.
func (s *sink) waitCount(n int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for s.mesg.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("smtp-sink took %d messages, want %d", s.mesg.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// startRelay runs the test binary as the tcp-relay (see TestMain).
func startRelay(t *testing.T, dir, target string) *path {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), relayListenEnv+"="+addr, relayTargetEnv+"="+target)
	p := startProcess(t, "tcp-relay", filepath.Join(dir, "tcp-relay.log"), cmd)
	if err := waitGreeting(p, addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return &path{name: "tcp-relay", addr: addr, proc: p}
}

// moatSetup is what the moat path is built from.
type moatSetup struct {
	bin, rules, sink, dns string
}

// startMoat runs the built moat with the benchmark's configuration and
// returns its path and its HTTP address (metrics, pprof).
func startMoat(t *testing.T, dir string, s moatSetup) (*path, string) {
	t.Helper()
	addr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`# moat for the end-to-end benchmark (bench/e2e).
listen: [%q]
hostname: moat.bench.test
tls:
  starttls: false        # smtp-source does not use it
upstream:
  address: %q          # smtp-sink
  helo: moat.bench.test
  # Keep upstream connections between client sessions, as Haraka's
  # smtp_forward does with its connection pool.
  pool_size: 16
limits:
  # Every client is 127.0.0.1: the per-IP cap must not bite.
  max_connections: 4000
  max_connections_per_ip: 4000
rules:
  file: %q
  mode: enforce
http:
  listen: %q
  pprof: true
log:
  level: info
  format: json
dnsbl:
  resolver: [%q]       # rbldnsd
  lists:
    - name: zen          # CLIENT_ON_ZEN in the default rules
      zone: zen.bench.test
      kind: ip
      codes:
        "127.0.0.2": {reason: sbl, weight: 4}
`, addr, s.sink, s.rules, httpAddr, s.dns)
	cfgFile := filepath.Join(dir, "moat.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(s.bin, "config", "check", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("moat config check: %v\n%s", err, out)
	}
	p := startProcess(t, "moat", filepath.Join(dir, "moat.log"), exec.Command(s.bin, "serve", "--config", cfgFile))
	if err := waitGreeting(p, addr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return &path{name: "moat", addr: addr, proc: p}, httpAddr
}

// harakaSetup is what the Haraka path is built from.
type harakaSetup struct {
	home      string // bench/haraka: config, plugins, node_modules
	sink, dns string
}

// startHaraka lays out a Haraka install in dir — Haraka's shipped config
// files (as `haraka -i` would copy them) overlaid with bench/haraka's —
// and runs it with node's resolvers pointed at rbldnsd.
func startHaraka(t *testing.T, dir string, s harakaSetup) *path {
	t.Helper()
	pkg := filepath.Join(s.home, "node_modules", "Haraka")
	if _, err := os.Stat(filepath.Join(pkg, "haraka.js")); err != nil {
		t.Fatalf("Haraka is not installed (%v): run `npm ci` in %s (make bench does), or pass -haraka=false", err, s.home)
	}
	addr := freeAddr(t)
	_, sinkPort, _ := net.SplitHostPort(s.sink)
	home := filepath.Join(dir, "haraka")
	copyTree(t, filepath.Join(pkg, "config"), filepath.Join(home, "config"), nil)
	repl := strings.NewReplacer("{{LISTEN}}", addr, "{{SINK_PORT}}", sinkPort)
	copyTree(t, filepath.Join(s.home, "config"), filepath.Join(home, "config"), repl)
	copyTree(t, filepath.Join(s.home, "plugins"), filepath.Join(home, "plugins"), nil)

	cmd := exec.Command("node", "--require", filepath.Join(s.home, "bench-dns.js"),
		filepath.Join(pkg, "bin", "haraka"), "-c", home)
	cmd.Env = append(os.Environ(), "MOAT_BENCH_DNS="+s.dns)
	p := startProcess(t, "haraka", filepath.Join(dir, "haraka.log"), cmd)
	if err := waitGreeting(p, addr, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return &path{name: "haraka", addr: addr, proc: p}
}

// copyTree copies the regular files of src into dst, through repl when
// given.
func copyTree(t *testing.T, src, dst string, repl *strings.Replacer) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if repl != nil {
			data = []byte(repl.Replace(string(data)))
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fetch GETs url into file; the context bounds it.
func fetch(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}
