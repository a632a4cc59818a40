package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"moat/internal/mtatest"
	"moat/internal/postfixtest"
)

// faultStages are the points of a session at which a fault strikes: after
// the greeting, after EHLO, after MAIL, after RCPT, inside the message
// (after 354, half of it sent), and after the message's final dot.
var faultStages = []string{"greeting", "ehlo", "mail", "rcpt", "in_data", "after_dot"}

// faultSession plays one transaction against the proxy at addr and calls
// strike once the session has reached stage. It returns the final reply
// the client got for its message ("" if it never got one) and whether the
// session was still usable.
func faultSession(t *testing.T, addr, stage string, strike func(), clientLeaves bool) (final string) {
	t.Helper()
	c := dial(t, addr)
	defer c.nc.Close()
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	at := func(s string) bool {
		if s != stage {
			return false
		}
		strike()
		return clientLeaves
	}
	step := func(line string) (int, string, bool) {
		if err := c.tp.PrintfLine("%s", line); err != nil {
			return 0, "", false
		}
		code, msg, err := c.tp.ReadResponse(0)
		if err != nil && code == 0 {
			return 0, "", false
		}
		return code, msg, true
	}
	if code, _, err := c.tp.ReadResponse(0); err != nil || code != 220 {
		t.Fatalf("greeting: %d %v", code, err)
	}
	if at("greeting") {
		return ""
	}
	if _, _, ok := step("EHLO client.test"); !ok || at("ehlo") {
		return ""
	}
	code, msg, ok := step("MAIL FROM:<a@client.test>")
	if !ok || code != 250 {
		return fmt.Sprintf("%d %s", code, msg)
	}
	if at("mail") {
		return ""
	}
	code, msg, ok = step("RCPT TO:<b@example.net>")
	if !ok || code != 250 {
		return fmt.Sprintf("%d %s", code, msg)
	}
	if at("rcpt") {
		return ""
	}
	code, msg, ok = step("DATA")
	if !ok || code != 354 {
		return fmt.Sprintf("%d %s", code, msg)
	}
	body := "Subject: fault at " + stage + "\r\n\r\n" + strings.Repeat("a line of the message body\r\n", 200)
	c.tp.W.WriteString(body[:len(body)/2])
	c.tp.W.Flush()
	if at("in_data") {
		return ""
	}
	c.tp.W.WriteString(body[len(body)/2:] + ".\r\n")
	c.tp.W.Flush()
	if stage == "after_dot" {
		// The fault strikes while moat relays the message.
		strike()
		if clientLeaves {
			return ""
		}
	}
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil && code == 0 {
		return ""
	}
	return fmt.Sprintf("%d %s", code, msg)
}

// leakCheck records the process's goroutines, file descriptors and the
// spool directory's files, and returns a function that waits (bounded)
// until all are back where they were, failing the test with what is left.
func leakCheck(t *testing.T, h *harness, spoolDir string) func() {
	t.Helper()
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	return func() {
		t.Helper()
		var g, fd, spooled int
		var conns int
		ok := mtatest.WaitFor(10*time.Second, func() bool {
			h.srv.mu.Lock()
			conns = len(h.srv.conns)
			h.srv.mu.Unlock()
			g, fd = runtime.NumGoroutine(), openFDs(t)
			entries, _ := os.ReadDir(spoolDir)
			spooled = len(entries)
			return conns == 0 && g <= g0 && fd <= fd0 && spooled == 0
		})
		if !ok {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("left over after the session: %d sessions, goroutines %d (before %d), fds %d (before %d: %s), spool files %d\n%s",
				conns, g, g0, fd, fd0, fdTargets(t), spooled, buf[:n])
		}
	}
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	return len(entries)
}

func fdTargets(t *testing.T) string {
	entries, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range entries {
		l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, l)
	}
	return strings.Join(out, " ")
}

// The upstream is killed, or stalled, at every stage of a transaction;
// the client disconnects at every stage. Whatever happens, the client is
// never given a 2xx for a message the upstream did not acknowledge, and
// once the session is over no goroutine, file descriptor or spool file
// is left behind (checked with the runtime and /proc). Real Postfix is
// the upstream: SIGKILL kills it mid-session, SIGSTOP stalls it.
func TestFaultsAtEveryStage(t *testing.T) {
	for _, fault := range []string{"upstream_killed", "upstream_stalled", "client_leaves"} {
		for _, stage := range faultStages {
			t.Run(fault+"/"+stage, func(t *testing.T) {
				pf := postfixtest.Start(t, postfixtest.Options{})
				spoolDir := t.TempDir()
				h := startProxy(t, pf.Addr, func(c *Config) {
					c.Data.SpoolMemory = 1024 // spill: the spool file must go too
					c.Data.SpoolDir = spoolDir
					c.Upstream.ConnectTimeout = time.Second
					c.Upstream.CommandTimeout = time.Second
					c.Upstream.DataTimeout = time.Second
				})
				done := leakCheck(t, h, spoolDir)
				var strike func()
				switch fault {
				case "upstream_killed":
					strike = func() { pf.Signal(t, syscall.SIGKILL) }
				case "upstream_stalled":
					strike = func() { pf.Signal(t, syscall.SIGSTOP) }
				default:
					strike = func() {}
				}
				final := faultSession(t, h.addr, stage, strike, fault == "client_leaves")
				if fault != "client_leaves" {
					switch {
					case strings.HasPrefix(final, "2"):
						t.Errorf("the client got %q for a message the upstream never acknowledged", final)
					case stage == "greeting" || stage == "ehlo":
						// The upstream is asked only from MAIL on: it is
						// down before moat ever needs it.
						if !strings.HasPrefix(final, "451") {
							t.Errorf("upstream down before MAIL: got %q, want 451", final)
						}
					case final != "" && !strings.HasPrefix(final, "4"):
						t.Errorf("upstream fault at %s: got %q, want a 4xx", stage, final)
					}
				}
				if fault != "client_leaves" {
					// The upstream is gone: a message it never took
					// cannot be in its mailbox either (the stalled one is
					// still stopped).
					if n := len(pf.Messages(t)); n != 0 && stage != "after_dot" {
						t.Errorf("%d messages delivered after a fault at %s", n, stage)
					}
				} else if n := len(pf.Messages(t)); n != 0 && stage != "after_dot" {
					t.Errorf("%d messages delivered from a client that left at %s", n, stage)
				}
				done()
			})
		}
	}
}
