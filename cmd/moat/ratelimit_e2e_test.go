package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// Through the moat binary to a real Postfix, on the embedded store: a
// limit of 3 messages an hour per client IP (burst 3) delivers three
// messages from one client and answers the fourth 451 4.7.0; a message
// to postmaster still goes through.
func TestRateLimitEndToEnd(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	cfg := configFor(t, pf.Addr, fmt.Sprintf("state:\n  dir: %q\nrate_limits:\n  - {name: per-ip, key: client_ip, count: messages, rate: 3/1h, burst: 3, action: tempfail}\n",
		filepath.Join(dir, "state")))
	m := startMoat(t, "--config", cfg)
	for i := range 3 {
		if out, err := swaks(t, m.smtp, "--to", "bo@example.net"); err != nil || !strings.Contains(out, "<-  250") {
			t.Fatalf("message %d: %v\n%s", i+1, err, out)
		}
	}
	out, err := swaks(t, m.smtp, "--to", "bo@example.net")
	if err == nil || !strings.Contains(out, "<** 451 4.7.0 Rate limit exceeded, try again later") {
		t.Fatalf("message 4: %v\n%s", err, out)
	}
	if out, err := swaks(t, m.smtp, "--to", "postmaster@example.net"); err != nil || !strings.Contains(out, "<-  250") {
		t.Fatalf("to postmaster over the limit: %v\n%s", err, out)
	}
	if msgs := pf.WaitMessages(t, 4, 20*time.Second); len(msgs) != 4 {
		t.Fatalf("%d messages delivered, want 4", len(msgs))
	}
	resp, err := http.Get("http://" + m.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`moat_ratelimit_decisions_total{decision="allowed",limit="per-ip"} 3`,
		`moat_ratelimit_decisions_total{decision="limited",limit="per-ip"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics: no %s\n%s", want, grepLines(string(body), "moat_ratelimit"))
		}
	}
}
