package proxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Faults a real Postfix cannot be made to produce on demand — a hang after
// the message, a close without a reply, a 421 mid-transaction — come from
// this scripted upstream. It answers like a minimal MTA and misbehaves at
// the point named by fail.
type fakeUpstream struct {
	addr string
	mu   sync.Mutex
	got  []string // commands received
	// release ends failHangAtQuit's wait; the test closes it.
	release chan struct{}
}

// Failure points for fakeUpstream.
const (
	failNone        = ""
	failGreeting554 = "greeting554" // refuses every connection
	failRcpt421     = "rcpt421"     // 421 to RCPT, then close
	failCloseAtDot  = "closeAtDot"  // reads the message, closes without a reply
	failHangAtDot   = "hangAtDot"   // reads the message, never answers
	failData452     = "data452"     // reads the message, answers 452
	failCloseInData = "closeInData" // closes after 354 without reading the message
	failIdleClose   = "idleClose"   // accepts a message, then closes as an idle timeout would
	failHangAtQuit  = "hangAtQuit"  // never answers QUIT, until release is closed
	// rcptBatch answers no RCPT until it holds three (a server that
	// needs its client to pipeline), then refuses the second.
	rcptBatch = "rcptBatch"
)

func startFakeUpstream(t *testing.T, fail string) *fakeUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUpstream{addr: ln.Addr().String(), release: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(30 * time.Second))
				f.serve(nc, fail)
			}()
		}
	}()
	return f
}

func (f *fakeUpstream) serve(nc net.Conn, fail string) {
	r := bufio.NewReader(nc)
	say := func(s string) { nc.Write([]byte(s + "\r\n")) }
	if fail == failGreeting554 {
		say("554 5.3.2 go away")
		return
	}
	say("220 fake.test ESMTP")
	rcpts := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.mu.Lock()
		f.got = append(f.got, line)
		f.mu.Unlock()
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch {
		case verb == "EHLO":
			say("250-fake.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME")
		case verb == "RCPT" && fail == failRcpt421:
			say("421 4.3.0 fake.test closing")
			return
		case verb == "RCPT" && fail == rcptBatch:
			if rcpts++; rcpts == 3 {
				say("250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok")
			}
		case verb == "MAIL", verb == "RCPT", verb == "RSET", verb == "NOOP":
			say("250 2.0.0 ok")
		case verb == "DATA":
			say("354 go ahead")
			if fail == failCloseInData {
				return
			}
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			switch fail {
			case failCloseAtDot:
				return
			case failHangAtDot:
				io.Copy(io.Discard, r) // until moat gives up and closes
				return
			case failData452:
				say("452 4.3.1 fake.test out of space")
			case failIdleClose:
				say("250 2.0.0 queued as FAKE")
				return
			default:
				say("250 2.0.0 queued as FAKE")
			}
		case verb == "QUIT" && fail == failHangAtQuit:
			<-f.release
			return
		case verb == "QUIT":
			say("221 bye")
			return
		default:
			say("502 5.5.1 no")
		}
	}
}

// sendOne runs one transaction through the proxy and returns the final
// reply to the message (or the first refusal before it).
func sendOne(t *testing.T, addr string) (int, string) {
	t.Helper()
	c := ehloed(t, addr)
	c.send("MAIL FROM:<a@client.test>\r\n")
	if code, msg := c.reply(); code != 250 {
		return code, msg
	}
	c.send("RCPT TO:<b@example.net>\r\n")
	if code, msg := c.reply(); code != 250 {
		return code, msg
	}
	c.cmd(354, "DATA")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
	return c.reply()
}

// Whatever the upstream does wrong, the client gets a 4xx — never a 250 —
// for a message the upstream did not accept.
func TestUpstreamFaults(t *testing.T) {
	tests := []struct {
		fail string
		code int
		enh  string
	}{
		{failNone, 250, "2.0.0"},
		{failGreeting554, 451, "4.4.1"},
		{failRcpt421, 451, "4.4.2"},
		{failCloseAtDot, 451, "4.4.2"},
		{failHangAtDot, 451, "4.4.2"},
		{failCloseInData, 451, "4.4.2"},
		{failData452, 452, "4.3.1"}, // the upstream's own 4xx, verbatim
	}
	for _, tt := range tests {
		name := tt.fail
		if name == "" {
			name = "healthy"
		}
		t.Run(name, func(t *testing.T) {
			up := startFakeUpstream(t, tt.fail)
			h := startProxy(t, up.addr, func(c *Config) { c.Upstream.DataTimeout = 300 * time.Millisecond })
			code, msg := sendOne(t, h.addr)
			if code != tt.code || !strings.HasPrefix(msg, tt.enh) {
				t.Fatalf("got %d %q, want %d %s", code, msg, tt.code, tt.enh)
			}
		})
	}
}

// After an upstream failure the next transaction in the same session gets
// a fresh upstream connection.
func TestUpstreamReconnectsAfterFailure(t *testing.T) {
	up := startFakeUpstream(t, failData452)
	h := startProxy(t, up.addr, nil)
	c := ehloed(t, h.addr)
	for range 2 {
		c.cmd(250, "MAIL FROM:<a@client.test>")
		c.cmd(250, "RCPT TO:<b@example.net>")
		c.cmd(354, "DATA")
		c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
		c.expect(452)
	}
	c.cmd(221, "QUIT")

	hang := startFakeUpstream(t, failCloseAtDot)
	h2 := startProxy(t, hang.addr, nil)
	c2 := ehloed(t, h2.addr)
	for range 2 {
		c2.cmd(250, "MAIL FROM:<a@client.test>")
		c2.cmd(250, "RCPT TO:<b@example.net>")
		c2.cmd(354, "DATA")
		c2.send("Subject: x\r\n\r\nbody\r\n.\r\n")
		c2.expect(451)
	}
	hang.mu.Lock()
	defer hang.mu.Unlock()
	if n := strings.Count(strings.Join(hang.got, "\n"), "EHLO"); n != 2 {
		t.Fatalf("upstream saw %d EHLOs, want a new connection per failed transaction: %q", n, hang.got)
	}
}

// With upstream.pool_size set, upstream connections are pooled between
// client sessions: three sessions in a row cost the upstream one
// connection. With the pool off (the default) every session gets its own,
// as with XCLIENT or PROXY (see poolable).
func TestUpstreamPool(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	pool := 4
	h := startProxy(t, up.addr, func(c *Config) { c.Upstream.PoolSize = &pool })
	for range 3 {
		if code, msg := sendAndQuit(t, h.addr); code != 250 {
			t.Fatalf("%d %s", code, msg)
		}
	}
	if n := up.count("EHLO"); n != 1 {
		t.Fatalf("upstream saw %d connections for 3 sessions, want 1 (pooled)", n)
	}

	x := startFakeUpstream(t, failNone)
	off := 0
	hx := startProxy(t, x.addr, func(c *Config) { c.Upstream.PoolSize = &off })
	for range 2 {
		sendAndQuit(t, hx.addr)
	}
	if n := x.count("EHLO"); n != 2 {
		t.Fatalf("with the pool off the upstream saw %d connections for 2 sessions, want 2", n)
	}
}

// A pooled connection the upstream closed while it sat idle is replaced
// transparently: the next session still gets its 250.
func TestUpstreamPoolStaleConnection(t *testing.T) {
	up := startFakeUpstream(t, failIdleClose)
	pool := 4
	h := startProxy(t, up.addr, func(c *Config) { c.Upstream.PoolSize = &pool })
	for i := range 2 {
		if code, msg := sendAndQuit(t, h.addr); code != 250 {
			t.Fatalf("session %d: %d %s", i, code, msg)
		}
	}
	if n := up.count("EHLO"); n != 2 {
		t.Fatalf("upstream saw %d connections, want 2 (the stale one replaced)", n)
	}
}

// sendAndQuit is sendOne followed by QUIT, returning once moat has closed
// the session (and so has pooled or closed its upstream connection).
func sendAndQuit(t *testing.T, addr string) (int, string) {
	t.Helper()
	c := ehloed(t, addr)
	code, msg := 0, ""
	for _, step := range []struct {
		line string
		want int
	}{{"MAIL FROM:<a@client.test>", 250}, {"RCPT TO:<b@example.net>", 250}, {"DATA", 354}} {
		c.send(step.line + "\r\n")
		if code, msg = c.reply(); code != step.want {
			return code, msg
		}
	}
	c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
	code, msg = c.reply()
	c.cmd(221, "QUIT")
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c.nc) // until moat closes the session
	return code, msg
}

// count is how many commands with verb the upstream received.
func (f *fakeUpstream) count(verb string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.got {
		if strings.HasPrefix(strings.ToUpper(l), verb) {
			n++
		}
	}
	return n
}

// A connection that speaks for one client (XCLIENT, PROXY header) is never
// pooled, whatever pool_size says.
func TestPoolableOnlyForMoatsOwnIdentity(t *testing.T) {
	n := 8
	for _, tt := range []struct {
		mod  func(*Config)
		want bool
	}{
		{func(c *Config) {}, true},
		{func(c *Config) { c.Upstream.XClient = true }, false},
		{func(c *Config) { c.Upstream.ProxyProtocol = "v2" }, false},
	} {
		cfg := Config{}
		cfg.Upstream.PoolSize = &n
		tt.mod(&cfg)
		cfg.Defaults()
		if got := poolable(&cfg); got != tt.want {
			t.Errorf("poolable(%+v) = %v", cfg.Upstream, got)
		}
	}
}
