package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"moat/inspect"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if n := panicsRecovered.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d session panic(s) were recovered during the tests\n", n)
		code = 1
	}
	os.Exit(code)
}

// syncBuffer is a log sink tests can read while sessions write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a running proxy on a loopback port.
type harness struct {
	srv  *Server
	addr string
	logs *syncBuffer
}

// startProxy runs a proxy in front of upstream; mod may adjust the config.
// The proxy is shut down when the test ends.
func startProxy(t *testing.T, upstream string, mod func(*Config)) *harness {
	t.Helper()
	engine, err := inspect.New(inspect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return startProxyEngine(t, upstream, engine, mod)
}

// startProxyEngine is startProxy with the given engine.
func startProxyEngine(t *testing.T, upstream string, engine *inspect.Engine, mod func(*Config)) *harness {
	t.Helper()
	cfg := testConfig(upstream)
	if mod != nil {
		mod(&cfg)
	}
	logs := &syncBuffer{}
	srv, addr := serveProxy(t, cfg, engine, logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", logs.String())
		}
	})
	return &harness{srv: srv, addr: addr, logs: logs}
}

// testConfig is the tests' proxy configuration in front of upstream.
func testConfig(upstream string) Config {
	cfg := Config{Hostname: "moat.test"}
	cfg.Upstream.Address = HostPort(upstream)
	cfg.Upstream.Helo = "moat.test"
	cfg.Upstream.ConnectTimeout = 5 * time.Second
	cfg.Upstream.CommandTimeout = 10 * time.Second
	cfg.Upstream.DataTimeout = 10 * time.Second
	cfg.Timeouts.Command = 30 * time.Second
	cfg.Timeouts.Data = 30 * time.Second
	return cfg
}

// serveProxy runs a proxy with cfg on a loopback port, logging JSON to
// logs, and shuts it down when the test ends.
func serveProxy(tb testing.TB, cfg Config, engine *inspect.Engine, logs io.Writer) (*Server, string) {
	tb.Helper()
	srv, err := New(cfg, Deps{Engine: engine, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, false) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// client is a raw SMTP client for driving sessions command by command.
type client struct {
	t  *testing.T
	nc net.Conn
	tp *textproto.Conn
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{t: t, nc: nc, tp: textproto.NewConn(nc)}
	t.Cleanup(func() { c.tp.Close() })
	return c
}

// greeted dials and reads the 220 greeting.
func greeted(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect(220)
	return c
}

// ehloed dials, reads the greeting and says EHLO.
func ehloed(t *testing.T, addr string) *client {
	t.Helper()
	c := greeted(t, addr)
	c.cmd(250, "EHLO client.test")
	return c
}

// reply reads one reply.
func (c *client) reply() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

// expect reads one reply and checks its code.
func (c *client) expect(code int) string {
	c.t.Helper()
	got, msg := c.reply()
	if got != code {
		c.t.Fatalf("got %d %q, want %d", got, msg, code)
	}
	return msg
}

// cmd sends a line and checks the reply code.
func (c *client) cmd(code int, line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// send writes raw bytes.
func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// lf turns CRLF into LF, as Postfix's Maildir delivery stores messages.
func lf(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }

// transactionLogs returns the proxy's "transaction" log lines.
func transactionLogs(h *harness) []string {
	var out []string
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"transaction"`) {
			out = append(out, l)
		}
	}
	return out
}

func newTextproto(nc net.Conn) *textproto.Conn { return textproto.NewConn(nc) }

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// counterValue reads a counter of the proxy's metrics.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
