package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"moat/inspect"
	"moat/internal/postfixtest"
)

// The load test: what one moat holds at once on loopback, in front of a
// real Postfix.
const (
	loadIdle    = 1000 // connections that greet, say EHLO and sit idle
	loadSenders = 200  // concurrent sessions that each send one message
	// Clients come from this many loopback source addresses (127.77.0.1
	// and up; Linux routes all of 127.0.0.0/8 to lo), so the per-address
	// accounting is exercised, not bypassed.
	loadAddrs    = 100
	loadBodySize = 10 << 10
	// At most this many dials wait for moat's accept at once, so the
	// listen backlog never overflows.
	loadDialers = 100
	// The whole test fails rather than hangs past this; it normally takes
	// a fraction of it. Every socket carries it as its deadline.
	loadBudget = 3 * time.Minute

	// Memory ceilings for the test process, which holds both sides of
	// every connection: 1,200 client sockets and goroutines as well as
	// moat's 1,200 sessions and 200 upstream connections. They are
	// generous — the race detector multiplies memory several times — but
	// a per-connection leak of a few hundred kilobytes still trips them.
	loadMaxRSS  = 1 << 30   // VmHWM, peak resident set
	loadMaxHeap = 300 << 20 // Go heap in use
)

// One moat holds 1,000 idle sessions and, at the same time, 200 sessions
// each relaying a 10 KB message to a real Postfix. Every message is
// acknowledged with 250 and delivered once, every idle session still
// answers afterwards, the connection and per-address accounting adds up,
// and memory stays bounded.
func TestLoadIdleAndSending(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), loadBudget)
	t.Cleanup(cancel)
	deadline, _ := ctx.Deadline()

	// Postfix's default_process_limit of 100 would leave half the senders
	// waiting for an smtpd, and the barrier below needs all 200 upstream
	// sessions open at once.
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{"default_process_limit = 250"}})
	perIP := (loadIdle + loadSenders) / loadAddrs
	h := startProxy(t, pf.Addr, func(c *Config) {
		// Idle sessions must outlive the test.
		c.Timeouts.Command = 2 * loadBudget
		c.Timeouts.Session = 2 * loadBudget
		// Postfix forks an smtpd per upstream connection: 200 of them
		// on two busy cores take a while.
		c.Upstream.ConnectTimeout = 30 * time.Second
		c.Upstream.CommandTimeout = 30 * time.Second
		c.Upstream.DataTimeout = 30 * time.Second
		// The limits admit exactly the load and nothing more, so a
		// session counted twice or released late fails the test.
		c.Limits.MaxConnections = loadIdle + loadSenders
		c.Limits.MaxConnectionsPerIP = perIP
		c.Limits.PerIPExempt = []Prefix{} // the load comes from loopback
	})

	srcs := make([]netip.Addr, loadAddrs)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{127, 77, byte((i + 1) >> 8), byte(i + 1)})
	}
	var retries atomic.Int64
	dials := make(chan struct{}, loadDialers)

	before := loadMemory(t, "before", true)
	// Peak RSS from here on, not from whatever test ran before
	// (proc(5): writing 5 to clear_refs resets VmHWM).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Logf("cannot reset the peak RSS (%v): it includes earlier tests", err)
	}
	sampler := loadSample()
	t.Cleanup(func() { sampler.stop() })

	// 1,000 idle sessions: greeting, EHLO, then nothing. Only the socket
	// is kept; no goroutine or buffer waits on it.
	idle := make([]net.Conn, loadIdle)
	t.Cleanup(func() {
		for _, nc := range idle {
			if nc != nil {
				nc.Close()
			}
		}
	})
	openStart := time.Now()
	errs := loadEach(loadIdle, loadDialers, func(i int) error {
		nc, r, err := loadDial(ctx, dials, srcs[i%loadAddrs], h.addr, deadline, &retries)
		if err != nil {
			return err
		}
		idle[i] = nc
		if err := loadCmd(nc, r, "EHLO idle.test", 250); err != nil {
			return err
		}
		if r.Buffered() != 0 {
			return fmt.Errorf("unexpected bytes after the EHLO reply: %q", loadPeek(r))
		}
		return nil
	})
	loadFailures(t, "idle session setup", errs)
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d idle sessions opened in %v", loadIdle, time.Since(openStart).Round(time.Millisecond))

	// 200 senders. Each stops after RCPT, holding its upstream session
	// open, until all have got there: that is the peak, measured, before
	// the messages go.
	var (
		arrived sync.WaitGroup
		mu      sync.Mutex
		sendErr []error
		senders sync.WaitGroup
	)
	release := make(chan struct{})
	arrived.Add(loadSenders)
	senders.Add(loadSenders)
	sendStart := time.Now()
	for i := range loadSenders {
		go func() {
			defer senders.Done()
			atBarrier := false
			arrive := func() {
				if !atBarrier {
					atBarrier = true
					arrived.Done()
				}
			}
			defer arrive()
			if err := loadSend(ctx, i, srcs[i%loadAddrs], h.addr, deadline, dials, &retries, arrive, release); err != nil {
				mu.Lock()
				sendErr = append(sendErr, fmt.Errorf("sender %d: %w", i, err))
				mu.Unlock()
			}
		}()
	}
	if !loadWait(ctx, &arrived) {
		close(release)
		t.Fatalf("senders did not reach RCPT within %v", loadBudget)
	}
	h.srv.mu.Lock()
	peakConns := len(h.srv.conns)
	h.srv.mu.Unlock()
	gauge := loadGauge(h)
	atPeak := loadMemory(t, "peak", false)
	close(release)
	if !loadWait(ctx, &senders) {
		t.Fatalf("senders did not finish within %v", loadBudget)
	}
	sendTime := time.Since(sendStart)
	loadFailures(t, "sending session", sendErr)
	if peakConns < loadIdle+loadSenders || gauge < loadIdle+loadSenders {
		t.Errorf("at the peak moat tracked %d connections (gauge %v), want %d", peakConns, gauge, loadIdle+loadSenders)
	}

	// The senders' sessions are forgotten and their addresses released:
	// every source address is back to its idle sessions.
	idlePerIP := loadIdle / loadAddrs
	var counts map[netip.Addr]int
	var conns int
	settled := loadPoll(ctx, 10*time.Second, func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		conns = len(h.srv.conns)
		counts = make(map[netip.Addr]int, len(h.srv.perIP))
		for a, n := range h.srv.perIP {
			counts[a] = n
		}
		if conns != loadIdle || len(counts) != loadAddrs {
			return false
		}
		for _, n := range counts {
			if n != idlePerIP {
				return false
			}
		}
		return true
	})
	if !settled {
		t.Errorf("after the senders left moat tracks %d connections, want %d; per address: %v", conns, loadIdle, counts)
	}

	// Every idle session is still there and answers.
	errs = loadEach(loadIdle, loadDialers, func(i int) error {
		return loadCmd(idle[i], bufio.NewReaderSize(idle[i], 1024), "NOOP", 250)
	})
	loadFailures(t, "idle session NOOP", errs)

	// Postfix has each message exactly once.
	msgs := pf.WaitMessages(t, loadSenders, 60*time.Second)
	seen := make(map[int]int)
	idRE := regexp.MustCompile(`(?m)^Message-ID: <load-(\d+)@client\.test>$`)
	wantBody := lf(loadBody)
	for _, m := range msgs {
		sm := idRE.FindSubmatch(m)
		if sm == nil {
			t.Errorf("delivered message without a load Message-ID:\n%.400s", m)
			continue
		}
		n, _ := strconv.Atoi(string(sm[1]))
		seen[n]++
		if !bytes.HasSuffix(m, wantBody) {
			t.Errorf("message %d: body changed in transit", n)
		}
	}
	for i := range loadSenders {
		if seen[i] != 1 {
			t.Errorf("message %d delivered %d times", i, seen[i])
		}
	}
	if len(msgs) != loadSenders {
		t.Errorf("Postfix delivered %d messages, want %d", len(msgs), loadSenders)
	}

	stats := sampler.stop()
	after := loadMemory(t, "after", true)
	perConn := (int64(stats.heapInuse) + int64(stats.stackInuse) - int64(before.heapInuse) - int64(before.stackInuse)) / (loadIdle + loadSenders)
	t.Logf("race detector: %v; %d dial retries", loadRace(), retries.Load())
	t.Logf("peak: %d connections tracked by moat (gauge %v), %d goroutines", peakConns, gauge, stats.goroutines)
	t.Logf("%d messages of %d KB relayed by %d concurrent sessions in %v", loadSenders, loadBodySize>>10, loadSenders, sendTime.Round(time.Millisecond))
	for _, m := range []loadMem{before, atPeak, after} {
		t.Logf("memory %-6s RSS %4d MiB, heap in use %4d MiB, stacks %3d MiB, Go sys %4d MiB, goroutines %d",
			m.label, m.rss>>20, m.heapInuse>>20, m.stackInuse>>20, m.sys>>20, m.goroutines)
	}
	t.Logf("sampled peaks: RSS (VmHWM) %d MiB, heap in use %d MiB, stacks %d MiB, Go sys %d MiB; ~%d KiB of heap+stack per connection, both sides",
		after.hwm>>20, stats.heapInuse>>20, stats.stackInuse>>20, stats.sys>>20, perConn>>10)
	retained := (int64(after.heapInuse) + int64(after.stackInuse) - int64(before.heapInuse) - int64(before.stackInuse)) / loadIdle
	t.Logf("retained with the %d idle sessions left: ~%d KiB of live heap+stack each, both sides", loadIdle, retained>>10)
	// One goroutine per open session, none left behind by the senders'.
	if extra := after.goroutines - before.goroutines - loadIdle; extra > 20 {
		t.Errorf("%d goroutines with %d idle sessions open, %d before: %d unaccounted for", after.goroutines, loadIdle, before.goroutines, extra)
	}
	if after.hwm > loadMaxRSS {
		t.Errorf("peak RSS %d MiB exceeds %d MiB", after.hwm>>20, loadMaxRSS>>20)
	}
	if stats.heapInuse > loadMaxHeap {
		t.Errorf("peak heap in use %d MiB exceeds %d MiB", stats.heapInuse>>20, loadMaxHeap>>20)
	}
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}

// loadSend runs one sending session for message i: EHLO, MAIL, RCPT; then
// arrive and wait for release; then DATA, the message, QUIT. The message
// must be acknowledged with 250.
func loadSend(ctx context.Context, i int, src netip.Addr, addr string, deadline time.Time,
	dials chan struct{}, retries *atomic.Int64, arrive func(), release <-chan struct{}) error {
	nc, r, err := loadDial(ctx, dials, src, addr, deadline, retries)
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, c := range []struct {
		line string
		code int
	}{
		{"EHLO sender.test", 250},
		{"MAIL FROM:<sender-" + strconv.Itoa(i) + "@client.test>", 250},
		{"RCPT TO:<load-" + strconv.Itoa(i) + "@" + postfixtest.Domain + ">", 250},
	} {
		if err := loadCmd(nc, r, c.line, c.code); err != nil {
			return err
		}
	}
	arrive()
	select {
	case <-release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := loadCmd(nc, r, "DATA", 354); err != nil {
		return err
	}
	if _, err := nc.Write(loadMessage(i)); err != nil {
		return fmt.Errorf("sending the message: %w", err)
	}
	if err := loadReply(r, 250, "end of data"); err != nil {
		return err
	}
	return loadCmd(nc, r, "QUIT", 221)
}

// loadBody is the 10 KB message body: 76-character lines, one with a
// leading dot so that dot-stuffing is part of the work.
var loadBody = func() []byte {
	var b bytes.Buffer
	for n := 0; b.Len() < loadBodySize; n++ {
		line := fmt.Sprintf("line %04d ", n)
		if n == 7 {
			line = "." + line
		}
		b.WriteString(line + strings.Repeat("abcdefghij", 7)[:76-len(line)] + "\r\n")
	}
	return b.Bytes()
}()

// loadMessage is message i on the wire: header, body, and the final dot.
func loadMessage(i int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Load <sender-%d@client.test>\r\n", i)
	fmt.Fprintf(&b, "To: <load-%d@%s>\r\n", i, postfixtest.Domain)
	fmt.Fprintf(&b, "Subject: load %d\r\n", i)
	b.WriteString("Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n")
	fmt.Fprintf(&b, "Message-ID: <load-%d@client.test>\r\n\r\n", i)
	b.Write(bytes.Replace(loadBody, []byte("\r\n.line"), []byte("\r\n..line"), 1))
	b.WriteString(".\r\n")
	return b.Bytes()
}

// loadDial connects from src and reads the 220 greeting, with at most
// cap(dials) connections between dial and greeting at once, so that
// moat's listen backlog never holds more than that. A refused or reset
// connection — the backlog overflowing after all — is retried twice and
// counted.
func loadDial(ctx context.Context, dials chan struct{}, src netip.Addr, addr string, deadline time.Time, retries *atomic.Int64) (net.Conn, *bufio.Reader, error) {
	select {
	case dials <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	defer func() { <-dials }()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 10 * time.Second}
	var err error
	for attempt := range 3 {
		var nc net.Conn
		if nc, err = d.DialContext(ctx, "tcp", addr); err == nil {
			nc.SetDeadline(deadline)
			r := bufio.NewReaderSize(nc, 1024)
			if err = loadReply(r, 220, "greeting"); err == nil {
				return nc, r, nil
			}
			nc.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
			break
		}
		retries.Add(1)
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return nil, nil, fmt.Errorf("from %v: %w", src, err)
}

// loadCmd sends one command line and checks the reply's code.
func loadCmd(w io.Writer, r *bufio.Reader, line string, want int) error {
	if _, err := io.WriteString(w, line+"\r\n"); err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	return loadReply(r, want, line)
}

// loadReply reads one reply, multi-line or not (RFC 5321 §4.2.1), and
// checks its code. It allocates only when the reply is not the one
// wanted, so the benchmark counts moat's allocations, not its own.
func loadReply(r *bufio.Reader, want int, what string) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("%s: reading reply: %w", what, err)
		}
		if len(line) < 4 || line[0] < '0' || line[0] > '9' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
			return fmt.Errorf("%s: malformed reply %q", what, line)
		}
		if line[3] == '-' {
			continue
		}
		if code := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0'); code != want {
			return fmt.Errorf("%s: got %q, want %d", what, bytes.TrimRight(line, "\r\n"), want)
		}
		return nil
	}
}

func loadPeek(r *bufio.Reader) []byte {
	b, _ := r.Peek(r.Buffered())
	return b
}

// loadEach runs fn(0) … fn(n-1) on workers goroutines and returns the
// errors.
func loadEach(n, workers int, fn func(i int) error) []error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("#%d: %w", i, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// loadFailures reports how many of what failed, with the first few errors.
func loadFailures(t *testing.T, what string, errs []error) {
	t.Helper()
	if len(errs) == 0 {
		return
	}
	var b strings.Builder
	for _, err := range errs[:min(len(errs), 10)] {
		fmt.Fprintf(&b, "\n  %v", err)
	}
	t.Errorf("%d %s failure(s); the first:%s", len(errs), what, b.String())
}

// loadWait waits for wg, or reports false when ctx ends first.
func loadWait(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// loadPoll checks cond every 10ms until it holds, for at most timeout.
func loadPoll(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}

// loadRace reports whether the test binary was built with -race.
func loadRace() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// loadGauge reads moat_proxy_connections_current.
func loadGauge(h *harness) float64 {
	var m dto.Metric
	if err := h.srv.metrics.connsCurrent.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// loadMem is the process's memory at one moment.
type loadMem struct {
	label                      string
	rss, hwm                   int64 // VmRSS, VmHWM (peak) from /proc/self/status
	heapInuse, stackInuse, sys uint64
	goroutines                 int
}

// loadMemory measures memory now; with gc, after a collection, so that
// the heap figure is what is live rather than what awaits collection.
func loadMemory(t *testing.T, label string, gc bool) loadMem {
	t.Helper()
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := loadMem{label: label, heapInuse: ms.HeapInuse, stackInuse: ms.StackInuse, sys: ms.Sys, goroutines: runtime.NumGoroutine()}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Logf("no /proc/self/status: %v", err)
		return m
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
	}
	return m
}

// loadSampler records the highest Go memory figures seen, every 50ms.
type loadSampler struct {
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	peaks loadMem
}

func loadSample() *loadSampler {
	s := &loadSampler{done: make(chan struct{})}
	s.wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			s.peaks.heapInuse = max(s.peaks.heapInuse, ms.HeapInuse)
			s.peaks.stackInuse = max(s.peaks.stackInuse, ms.StackInuse)
			s.peaks.sys = max(s.peaks.sys, ms.Sys)
			s.peaks.goroutines = max(s.peaks.goroutines, runtime.NumGoroutine())
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
		}
	})
	return s
}

// stop ends the sampling and returns the peaks; it may be called again.
func (s *loadSampler) stop() loadMem {
	s.once.Do(func() { close(s.done) })
	s.wg.Wait()
	return s.peaks
}

// BenchmarkRelayMessage measures moat relaying 10 KB messages to an
// upstream that accepts everything at once: a new session (and upstream
// connection) per message, and 100 messages per session. Allocations
// counted are moat's: the client and the upstream here do not allocate
// per message.
func BenchmarkRelayMessage(b *testing.B) {
	up := loadSinkUpstream(b)
	addr := loadStartProxy(b, up.addr)
	msg := loadMessage(0)
	for _, perSession := range []int{1, 100} {
		b.Run(fmt.Sprintf("%d-per-session", perSession), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			var c *loadBenchClient
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			for i := 0; b.Loop(); i++ {
				if c == nil {
					c = loadBenchDial(b, addr)
				}
				c.send(b, msg)
				if (i+1)%perSession == 0 {
					c.quit(b)
					c = nil
				}
			}
		})
	}
}

// loadBenchClient is a pipelining SMTP client with its command bytes
// prepared beforehand.
type loadBenchClient struct {
	nc net.Conn
	r  *bufio.Reader
}

var (
	loadEHLO     = []byte("EHLO bench.test\r\n")
	loadEnvelope = []byte("MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	loadQUIT     = []byte("QUIT\r\n")
)

func loadBenchDial(b *testing.B, addr string) *loadBenchClient {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	c := &loadBenchClient{nc: nc, r: bufio.NewReader(nc)}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := loadReply(c.r, 220, "greeting"); err != nil {
		b.Fatal(err)
	}
	c.write(b, loadEHLO)
	if err := loadReply(c.r, 250, "EHLO"); err != nil {
		b.Fatal(err)
	}
	return c
}

func (c *loadBenchClient) write(b *testing.B, p []byte) {
	if _, err := c.nc.Write(p); err != nil {
		b.Fatal(err)
	}
}

// send runs one transaction, MAIL, RCPT and DATA pipelined (RFC 2920).
func (c *loadBenchClient) send(b *testing.B, msg []byte) {
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.write(b, loadEnvelope)
	for _, want := range []struct {
		code int
		what string
	}{{250, "MAIL"}, {250, "RCPT"}, {354, "DATA"}} {
		if err := loadReply(c.r, want.code, want.what); err != nil {
			b.Fatal(err)
		}
	}
	c.write(b, msg)
	if err := loadReply(c.r, 250, "end of data"); err != nil {
		b.Fatal(err)
	}
}

func (c *loadBenchClient) quit(b *testing.B) {
	c.write(b, loadQUIT)
	if err := loadReply(c.r, 221, "QUIT"); err != nil {
		b.Fatal(err)
	}
	c.close()
}

func (c *loadBenchClient) close() { c.nc.Close() }

// loadStartProxy is startProxy for a benchmark: the log lines are
// formatted, as in production, but thrown away rather than kept.
func loadStartProxy(tb testing.TB, upstream string) string {
	tb.Helper()
	engine, err := inspect.New(inspect.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	_, addr := serveProxy(tb, testConfig(upstream), engine, io.Discard)
	return addr
}

// loadSink is an upstream MTA that accepts every message, like
// fakeUpstream with failNone, but without recording or allocating per
// line, so that a benchmark measures moat and not its test double.
type loadSink struct {
	addr string
}

var (
	loadSinkGreeting = []byte("220 sink.test ESMTP\r\n")
	loadSinkEHLO     = []byte("250-sink.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250 8BITMIME\r\n")
	loadSinkOK       = []byte("250 2.0.0 ok\r\n")
	loadSinkGoAhead  = []byte("354 go ahead\r\n")
	loadSinkQueued   = []byte("250 2.0.0 queued\r\n")
	loadSinkBye      = []byte("221 2.0.0 bye\r\n")
	loadSinkNo       = []byte("502 5.5.1 no\r\n")
	loadSinkDot      = []byte(".\r\n")
)

func loadSinkUpstream(tb testing.TB) *loadSink {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &loadSink{addr: ln.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[nc] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, nc)
					mu.Unlock()
					nc.Close()
				}()
				s.serve(nc)
			})
		}
	})
	return s
}

func (s *loadSink) serve(nc net.Conn) {
	r := bufio.NewReader(nc)
	w := bufio.NewWriter(nc)
	say := func(p []byte) bool {
		w.Write(p)
		return r.Buffered() > 0 || w.Flush() == nil // RFC 2920: flush before waiting
	}
	nc.SetDeadline(time.Now().Add(time.Minute))
	if !say(loadSinkGreeting) {
		return
	}
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		verb := line[:min(4, len(line))]
		switch {
		case bytes.EqualFold(verb, []byte("EHLO")):
			say(loadSinkEHLO)
		case bytes.EqualFold(verb, []byte("MAIL")):
			nc.SetDeadline(time.Now().Add(time.Minute))
			say(loadSinkOK)
		case bytes.EqualFold(verb, []byte("RCPT")), bytes.EqualFold(verb, []byte("RSET")), bytes.EqualFold(verb, []byte("NOOP")):
			say(loadSinkOK)
		case bytes.EqualFold(verb, []byte("DATA")):
			w.Write(loadSinkGoAhead)
			if w.Flush() != nil {
				return
			}
			// Lines longer than the buffer come in pieces; only a
			// whole line can be the final dot.
			whole := true
			for {
				l, err := r.ReadSlice('\n')
				if errors.Is(err, bufio.ErrBufferFull) {
					whole = false
					continue
				}
				if err != nil {
					return
				}
				if whole && bytes.Equal(l, loadSinkDot) {
					break
				}
				whole = true
			}
			say(loadSinkQueued)
		case bytes.EqualFold(verb, []byte("QUIT")):
			say(loadSinkBye)
			return
		default:
			say(loadSinkNo)
		}
	}
}
