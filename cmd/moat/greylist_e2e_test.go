package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// Through the moat binary to a real Postfix, on the embedded store:
// the first attempt is greylisted with 451 4.7.1; moat restarts on the
// same state directory; the retry after the (1s) delay is delivered —
// at the first attempt, so the entry survived the restart.
func TestGreylistEndToEnd(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	const rulesSrc = "rules:\n  - {name: GREYLIST_ALL, stage: rcpt, when: {rcpt: {ends_with: \"@example.net\"}}, action: greylist}\n"
	if err := os.WriteFile(rulesPath, []byte(rulesSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	const delay = time.Second
	cfg := configFor(t, pf.Addr, fmt.Sprintf("rules:\n  file: %q\nstate:\n  dir: %q\ngreylist:\n  delay: %s\n",
		rulesPath, filepath.Join(dir, "state"), delay))

	m := startMoat(t, "--config", cfg)
	out, err := swaks(t, m.smtp, "--to", "bo@example.net")
	if err == nil || !strings.Contains(out, "<** 451 4.7.1 Greylisted, please try again later") {
		t.Fatalf("first attempt: %v\n%s", err, out)
	}
	// The entry was made before the 451 came back: the delay counts from
	// here at the latest. (Taken before swaks ran, a slow swaks start
	// under load made the retry come early: a flake seen in CI.)
	first := time.Now()
	// A retry at once is refused again.
	if out, err := swaks(t, m.smtp, "--to", "bo@example.net"); err == nil || !strings.Contains(out, "<** 451 4.7.1 Greylisted") {
		t.Fatalf("early retry: %v\n%s", err, out)
	}

	// Restart on the same state directory (the store's file lock makes
	// the first moat's exit a precondition).
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("moat did not stop")
	}
	// Its log is complete now: one line per refusal, with the reason.
	if n := strings.Count(m.log.String(), `"reason":"greylisted"`); n < 2 {
		t.Errorf("%d log lines with reason greylisted, want 2:\n%s", n, m.log.String())
	}
	m = startMoat(t, "--config", cfg)

	// Wait out the configured delay (bounded), then one retry: a lost
	// entry would make it a first attempt, greylisted again.
	for time.Since(first) < delay+200*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	out, err = swaks(t, m.smtp, "--to", "bo@example.net")
	if err != nil || !strings.Contains(out, "<-  250") {
		t.Fatalf("retry after the delay and a restart: %v\n%s", err, out)
	}
	if msgs := pf.WaitMessages(t, 1, 20*time.Second); len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	resp, err := http.Get("http://" + m.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `moat_greylist_decisions_total{decision="passed"} 1`) {
		t.Errorf("metrics after the pass:\n%s", grepLines(string(body), "moat_greylist"))
	}
	if !strings.Contains(m.log.String(), `"msg":"state store opened"`) {
		t.Errorf("no store in the log:\n%s", m.log.String())
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Greylisting by content: the rule needs the message, so the answer
// comes at the end of data, for the whole transaction of two
// recipients; the retry after the delay is delivered to both.
func TestGreylistDataStageEndToEnd(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	const rulesSrc = "rules:\n  - {name: GREYLIST_OFFER, stage: data, when: {subject: {contains: offer}}, action: greylist}\n"
	if err := os.WriteFile(rulesPath, []byte(rulesSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	const delay = time.Second
	cfg := configFor(t, pf.Addr, fmt.Sprintf("rules:\n  file: %q\nstate:\n  dir: %q\ngreylist:\n  delay: %s\n",
		rulesPath, filepath.Join(dir, "state"), delay))
	m := startMoat(t, "--config", cfg)
	send := func() (string, error) {
		return swaks(t, m.smtp, "--to", "bo@example.net,cy@example.net", "--header", "Subject: a special offer")
	}
	out, err := send()
	if err == nil || !strings.Contains(out, "<** 451 4.7.1 Greylisted") || !strings.Contains(out, "-> .") {
		t.Fatalf("first attempt: %v\n%s", err, out)
	}
	first := time.Now() // the entry is older than this: made before the 451

	// Other content is not greylisted.
	if out, err := swaks(t, m.smtp, "--to", "bo@example.net", "--header", "Subject: minutes"); err != nil {
		t.Fatalf("ordinary message: %v\n%s", err, out)
	}
	for time.Since(first) < delay+200*time.Millisecond { // waiting out the configured delay
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := send(); err != nil {
		t.Fatalf("retry after the delay: %v\n%s", err, out)
	}
	// One file per mailbox: the ordinary message, and the retry to both.
	if msgs := pf.WaitMessages(t, 3, 20*time.Second); len(msgs) != 3 {
		t.Fatalf("%d messages delivered, want 3", len(msgs))
	}
}
