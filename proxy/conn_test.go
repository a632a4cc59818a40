package proxy

import (
	"net"
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/internal/postfixtest"
)

// deadUpstream returns a loopback address nothing listens on.
func deadUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Commands moat answers itself, and commands out of sequence, each get the
// RFC 5321 reply. No upstream is involved (the one configured is down).
func TestCommandReplies(t *testing.T) {
	h := startProxy(t, deadUpstream(t), nil)
	tests := []struct {
		name  string
		setup []string // commands sent first, each expected to succeed
		line  string
		code  int
		enh   string // enhanced code the reply must start with, if any
	}{
		{"MAIL before HELO", nil, "MAIL FROM:<a@b.test>", 503, "5.5.1"},
		{"RCPT before MAIL", []string{"EHLO c.test"}, "RCPT TO:<a@b.test>", 503, "5.5.1"},
		{"DATA before MAIL", []string{"EHLO c.test"}, "DATA", 503, "5.5.1"},
		{"unknown command", nil, "FROBNICATE now", 500, "5.5.2"},
		{"empty line", nil, "", 500, "5.5.2"},
		{"VRFY", nil, "VRFY postmaster", 252, "2.0.0"},
		{"EXPN", nil, "EXPN staff", 252, "2.0.0"},
		{"NOOP", nil, "NOOP", 250, "2.0.0"},
		{"NOOP with argument", nil, "NOOP whatever", 250, "2.0.0"},
		{"HELP", nil, "HELP", 214, "2.0.0"},
		{"RSET", nil, "RSET", 250, "2.0.0"},
		{"lower case", nil, "noop", 250, "2.0.0"},
		{"STARTTLS with argument", []string{"EHLO c.test"}, "STARTTLS now", 501, "5.5.4"},
		{"BDAT without transaction", []string{"EHLO c.test"}, "BDAT 0 LAST", 503, "5.5.1"},
		{"AUTH not offered", []string{"EHLO c.test"}, "AUTH PLAIN AGFiAGM=", 502, "5.5.1"},
		{"HELO without name", nil, "HELO", 501, "5.5.4"},
		{"EHLO without name", nil, "EHLO", 501, "5.5.4"},
		{"MAIL bad syntax", []string{"EHLO c.test"}, "MAIL FROM:a@b.test", 501, "5.5.4"},
		{"MAIL unknown parameter", []string{"EHLO c.test"}, "MAIL FROM:<a@b.test> FOO=bar", 555, "5.5.4"},
		{"MAIL AUTH parameter not offered", []string{"EHLO c.test"}, "MAIL FROM:<a@b.test> AUTH=<>", 555, "5.5.4"},
		{"MAIL SIZE over limit", []string{"EHLO c.test"}, "MAIL FROM:<a@b.test> SIZE=999999999999", 552, "5.3.4"},
		{"MAIL bad BODY", []string{"EHLO c.test"}, "MAIL FROM:<a@b.test> BODY=BINARYMIME", 501, "5.5.4"},
		{"MAIL params after HELO", []string{"HELO c.test"}, "MAIL FROM:<a@b.test> SIZE=10", 555, "5.5.4"},
		{"SMTPUTF8 not offered", []string{"EHLO c.test"}, "MAIL FROM:<a@b.test> SMTPUTF8", 555, "5.5.4"},
		{"line too long", nil, "NOOP " + strings.Repeat("a", 3000), 500, "5.5.2"},
		{"NUL in command", nil, "NOOP \x00", 500, "5.5.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := greeted(t, h.addr)
			for _, s := range tt.setup {
				c.cmd(250, s)
			}
			msg := c.cmd(tt.code, tt.line)
			if !strings.HasPrefix(msg, tt.enh) {
				t.Fatalf("%q: reply %d %q, want enhanced code %s", tt.line, tt.code, msg, tt.enh)
			}
			// The session is still in step: the next command works.
			c.cmd(250, "NOOP")
			c.cmd(221, "QUIT")
		})
	}
}

// The EHLO reply offers what moat honours end to end. Without a probed
// upstream, SMTPUTF8 and DSN are not offered.
func TestEHLOReply(t *testing.T) {
	h := startProxy(t, deadUpstream(t), func(c *Config) { c.Limits.MaxMessageSize = 12345 })
	c := greeted(t, h.addr)
	msg := c.cmd(250, "EHLO client.test")
	lines := strings.Split(msg, "\n")
	if lines[0] != "moat.test greets client.test" {
		t.Errorf("first line %q", lines[0])
	}
	want := []string{"PIPELINING", "SIZE 12345", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS", "CHUNKING"}
	if strings.Join(lines[1:], ",") != strings.Join(want, ",") {
		t.Errorf("extensions %q, want %q", lines[1:], want)
	}
	// A second EHLO is allowed and answered the same way (RFC 5321 §4.1.4).
	c.cmd(250, "EHLO client.test")
	c.cmd(250, "HELO client.test")

	// With STARTTLS switched off it is neither offered nor accepted.
	off := false
	h2 := startProxy(t, deadUpstream(t), func(c *Config) { c.TLS.STARTTLS = &off })
	c2 := greeted(t, h2.addr)
	if msg := c2.cmd(250, "EHLO client.test"); strings.Contains(msg, "STARTTLS") {
		t.Errorf("STARTTLS offered although switched off: %q", msg)
	}
	c2.cmd(502, "STARTTLS")
}

// A client that keeps sending bad commands is cut off with 421.
func TestTooManyErrors(t *testing.T) {
	h := startProxy(t, deadUpstream(t), func(c *Config) { c.Limits.MaxErrors = 3 })
	c := greeted(t, h.addr)
	c.cmd(500, "BAD1")
	c.cmd(500, "BAD2")
	c.send("BAD3\r\n")
	c.expect(500)
	c.expect(421)
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after 421")
	}
}

// A client that says nothing is timed out with 421 4.4.2.
func TestCommandTimeout(t *testing.T) {
	h := startProxy(t, deadUpstream(t), func(c *Config) { c.Timeouts.Command = 200 * time.Millisecond })
	c := greeted(t, h.addr)
	msg := c.expect(421)
	if !strings.HasPrefix(msg, "4.4.2 ") {
		t.Fatalf("timeout reply %q", msg)
	}
}

// Shutdown says 421 to idle sessions and closes them.
func TestShutdownClosesIdleSessions(t *testing.T) {
	h := startProxy(t, deadUpstream(t), nil)
	c := ehloed(t, h.addr)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	msg := c.expect(421)
	if !strings.HasPrefix(msg, "4.3.2 ") {
		t.Fatalf("shutdown reply %q", msg)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// RFC 2920 §3.1: a reply is flushed when no complete command is waiting,
// even with part of the next command already received.
func TestReplyFlushedBeforePartialCommand(t *testing.T) {
	h := startProxy(t, deadUpstream(t), nil)
	c := greeted(t, h.addr)
	c.send("NOOP\r\nNO")
	c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	c.expect(250)
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	c.send("OP\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")
}

// panicJudge accepts everything but panics judging the HELO "panic.test":
// a stand-in for any bug in a session.
type panicJudge struct{}

func (panicJudge) Needs(inspect.Stage) inspect.Needs { return inspect.Needs{} }

func (panicJudge) Evaluate(stage inspect.Stage, f *inspect.Facts) inspect.Verdict {
	if stage == inspect.StageHelo && f.Session.Helo == "panic.test" {
		panic("injected panic for the test")
	}
	return inspect.Verdict{Action: inspect.Accept}
}

// A panic in one session is recovered in that session: its client gets
// 421 4.3.0 and is disconnected, the panic is logged with the session ID
// and counted in moat_proxy_panics_total, and a session open at the
// same time carries on and delivers its message.
func TestSessionPanicRecovered(t *testing.T) {
	engine, err := inspect.New(inspect.Config{Judge: panicJudge{}})
	if err != nil {
		t.Fatal(err)
	}
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxyEngine(t, pf.Addr, engine, nil)

	other := ehloed(t, h.addr)
	other.cmd(250, "MAIL FROM:<ana@client.test>")
	other.cmd(250, "RCPT TO:<bo@example.net>")

	before := panicsRecovered.Load()
	c := greeted(t, h.addr)
	if msg := c.cmd(421, "EHLO panic.test"); !strings.HasPrefix(msg, "4.3.0 ") {
		t.Fatalf("reply to the panicking command: %q", msg)
	}
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("the session that panicked is still open")
	}
	// TestMain fails the run on unexpected panics; this one was expected.
	if n := panicsRecovered.Load() - before; n != 1 {
		t.Fatalf("%d panics recovered, want 1", n)
	}
	panicsRecovered.Add(-1)

	other.cmd(354, "DATA")
	other.send("Subject: survivor\r\n\r\nbody\r\n.\r\n")
	other.expect(250)
	other.cmd(221, "QUIT")
	pf.WaitMessages(t, 1, 20*time.Second)

	if n := counterValue(t, h.srv.metrics.panics); n != 1 {
		t.Errorf("moat_proxy_panics_total = %v, want 1", n)
	}
	var line string
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"session panic"`) {
			line = l
		}
	}
	if !strings.Contains(line, `"session":"`) || !strings.Contains(line, "injected panic for the test") || !strings.Contains(line, "panicJudge") {
		t.Errorf("panic log line lacks the session, the panic or the stack: %s", line)
	}
}
