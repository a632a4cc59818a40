package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

const e2eRules = `
thresholds: {tag: 5, reject: 20}
tag: {subject_prefix: "[SPAM] "}
rules:
  - name: NO_ABUSE_RCPT
    stage: rcpt
    when: {rcpt: {starts_with: "honeypot@"}}
    action: reject
    reply: "550 5.1.1 No such user here"
  - name: EXE_ATTACHMENT
    stage: data
    when: {attachment_name: {matches: '(?i)\.exe$'}}
    action: reject
    reply: "550 5.7.1 Executable attachments are not accepted"
  - name: CHEAP_WATCHES
    stage: data
    when: {subject: {contains: "cheap watches"}}
    score: 6
`

// writeRules writes a rules file and a config pointing at it.
func writeRules(t *testing.T, upstream, rulesSrc, mode string) (cfgPath, rulesPath string) {
	t.Helper()
	dir := t.TempDir()
	rulesPath = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rulesSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath = configFor(t, upstream, fmt.Sprintf("rules:\n  file: %q\n  mode: %s\n", rulesPath, mode))
	return cfgPath, rulesPath
}

// smtpSession drives one session with a real client: swaks.
func swaks(t *testing.T, server string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("swaks", append([]string{"--server", server, "--helo", "client.test",
		"--from", "ana@client.test"}, args...)...).CombinedOutput()
	return string(out), err
}

// Through moat to the real Postfix: a reject at rcpt, a reject at data
// with nothing delivered, a tag whose headers arrive, and monitor mode
// delivering untouched but logging what it would have done.
func TestRulesEndToEnd(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	cfg, _ := writeRules(t, pf.Addr, e2eRules, "enforce")
	m := startMoat(t, "--config", cfg)

	// rcpt: refused by the rule, with its own reply and a reference.
	out, err := swaks(t, m.smtp, "--to", "honeypot@example.net")
	if err == nil || !strings.Contains(out, "<** 550 5.1.1 No such user here (ref ") {
		t.Fatalf("rcpt reject: %v\n%s", err, out)
	}

	// data: an executable attachment is refused, nothing is delivered.
	exe := filepath.Join(t.TempDir(), "setup.exe")
	os.WriteFile(exe, []byte("MZ\x90\x00 not really a program"), 0o644)
	out, err = swaks(t, m.smtp, "--to", "bo@example.net", "--attach", "@"+exe)
	if err == nil || !strings.Contains(out, "<** 550 5.7.1 Executable attachments are not accepted (ref ") {
		t.Fatalf("data reject: %v\n%s", err, out)
	}
	ref := refOf(out)
	if !strings.Contains(m.log.String(), `"session":"`+ref+`"`) || !strings.Contains(m.log.String(), "EXE_ATTACHMENT") {
		t.Fatalf("the reference %s does not lead to a log line with the rule trace:\n%s", ref, m.log.String())
	}

	// tag: delivered with the X-Spam headers and the subject prefix.
	out, err = swaks(t, m.smtp, "--to", "bo@example.net", "--header", "Subject: cheap watches here")
	if err != nil {
		t.Fatalf("tagged message: %v\n%s", err, out)
	}
	msgs := pf.WaitMessages(t, 1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want only the tagged one", len(msgs))
	}
	for _, want := range []string{"X-Spam-Flag: YES\n", "X-Spam-Score: 6.0\n",
		"X-Spam-Status: Yes, score=6.0 required=5.0 tests=CHEAP_WATCHES\n", "Subject: [SPAM] cheap watches here\n"} {
		if !bytes.Contains(msgs[0], []byte(want)) {
			t.Errorf("tagged message lacks %q:\n%s", want, msgs[0])
		}
	}
}

func refOf(s string) string {
	i := strings.Index(s, "(ref ")
	if i < 0 {
		return ""
	}
	rest := s[i+5:]
	return rest[:strings.IndexByte(rest, ')')]
}

// Monitor mode: everything is judged and logged, nothing refused or
// changed.
func TestRulesMonitorMode(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	cfg, _ := writeRules(t, pf.Addr, e2eRules, "monitor")
	m := startMoat(t, "--config", cfg)
	exe := filepath.Join(t.TempDir(), "setup.exe")
	os.WriteFile(exe, []byte("MZ"), 0o644)
	if out, err := swaks(t, m.smtp, "--to", "bo@example.net", "--attach", "@"+exe, "--header", "Subject: cheap watches"); err != nil {
		t.Fatalf("monitor mode refused: %v\n%s", err, out)
	}
	msg := pf.WaitMessages(t, 1, 20*time.Second)[0]
	if bytes.Contains(msg, []byte("X-Spam")) || bytes.Contains(msg, []byte("[SPAM]")) {
		t.Fatalf("monitor mode changed the message:\n%s", msg)
	}
	log := m.log.String()
	if !strings.Contains(log, `"action":"accept","would_be":"reject"`) || !strings.Contains(log, "EXE_ATTACHMENT") {
		t.Fatalf("monitor mode did not log what it would have done:\n%s", log)
	}
}

// SIGHUP swaps the rules atomically while sessions run: every message is
// judged entirely by the old rules or entirely by the new ones, never a
// mix, and none fails.
func TestRulesReloadUnderLoad(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{"default_process_limit = 50"}})
	ruleSet := func(tag string) string {
		// Two rules that only ever match together: a half-loaded set
		// would show one without the other.
		return fmt.Sprintf("rules:\n  - {name: %s_A, stage: mail, when: {mail_from_domain: client.test}, score: 1}\n"+
			"  - {name: %s_B, stage: data, when: {size: {gt: 0}}, score: 1}\n"+
			"tag: {clean_status_header: true}\nthresholds: {tag: 100}\n", tag, tag)
	}
	cfg, rulesPath := writeRules(t, pf.Addr, ruleSet("OLD"), "enforce")
	m := startMoat(t, "--config", cfg)

	const senders, perSender = 8, 10
	var wg sync.WaitGroup
	var failures atomic.Int32
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSender {
				if err := sendRaw(m.smtp, fmt.Sprintf("s%d-%d", i, j)); err != nil {
					failures.Add(1)
					t.Errorf("sender %d message %d: %v", i, j, err)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	os.WriteFile(rulesPath, []byte(ruleSet("NEW")), 0o644)
	m.cmd.Process.Signal(syscall.SIGHUP)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d sessions failed during the reload", failures.Load())
	}
	if !strings.Contains(m.log.String(), `"msg":"config reloaded"`) {
		t.Fatalf("no reload logged:\n%s", m.log.String())
	}
	msgs := pf.WaitMessages(t, senders*perSender, 60*time.Second)
	old, nu := 0, 0
	for _, msg := range msgs {
		switch {
		case bytes.Contains(msg, []byte("tests=OLD_A,OLD_B\n")):
			old++
		case bytes.Contains(msg, []byte("tests=NEW_A,NEW_B\n")):
			nu++
		default:
			i := bytes.Index(msg, []byte("X-Spam-Status"))
			t.Fatalf("a message judged by a mixed or partial rule set: %q", msg[max(i, 0):min(len(msg), max(i, 0)+120)])
		}
	}
	t.Logf("%d messages judged by the old rules, %d by the new", old, nu)
	if nu == 0 {
		t.Fatal("no message was judged by the new rules")
	}
}

// sendRaw sends one message over a raw connection.
func sendRaw(addr, id string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	expect := func(code string) error {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(line, code) {
				return fmt.Errorf("got %q, want %s", line, code)
			}
			if line[3] != '-' {
				return nil
			}
		}
	}
	steps := []struct{ send, want string }{
		{"", "220"}, {"EHLO client.test\r\n", "250"}, {"MAIL FROM:<a@client.test>\r\n", "250"},
		{"RCPT TO:<b@example.net>\r\n", "250"}, {"DATA\r\n", "354"},
		{"Subject: " + id + "\r\n\r\nbody\r\n.\r\n", "250"}, {"QUIT\r\n", "221"},
	}
	for _, s := range steps {
		if s.send != "" {
			if _, err := c.Write([]byte(s.send)); err != nil {
				return err
			}
		}
		if err := expect(s.want); err != nil {
			return fmt.Errorf("after %q: %w", s.send, err)
		}
	}
	return nil
}

// A broken rules file stops moat from starting, and config check names the
// place: file, line, column, rule.
func TestBrokenRulesFileRefused(t *testing.T) {
	cfg, rulesPath := writeRules(t, "127.0.0.1:25", "rules:\n  - name: BAD\n    stage: rcpt\n    when: {body: {contains: x}}\n    score: 1\n", "enforce")
	for _, args := range [][]string{{"config", "check", cfg}, {"serve", "--config", cfg}} {
		code, _, stderr := runMoat(t, args...)
		want := rulesPath + ":4:12: rule BAD: fact \"body\" is known only from the data stage on"
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("moat %v: exit %d, stderr %q; want 2 and %q", args, code, stderr, want)
		}
	}
}
