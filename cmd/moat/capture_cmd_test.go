package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// moat capture --iface lo watches a real swaks session with a real
// Postfix live (AF_PACKET, as root) and writes its record when stopped.
func TestCaptureLiveInterface(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	_, port, _ := net.SplitHostPort(pf.Addr)
	var out, errb bytes.Buffer
	cmd := exec.Command(moatBin, "capture", "--iface", "lo", "--filter", "tcp port "+port, "--quiet")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})
	time.Sleep(time.Second) // the socket is open and bound
	if o, err := exec.Command("swaks", "--server", pf.Addr, "--helo", "live.test", "--from", "a@client.test",
		"--to", "b@example.net", "--header", "Subject: seen live").CombinedOutput(); err != nil {
		t.Fatalf("swaks: %v\n%s", err, o)
	}
	pf.WaitMessages(t, 1, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("moat capture: %v\n%s", err, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("moat capture did not stop on SIGINT\n%s", errb.String())
	}
	var rec struct {
		Helo      string   `json:"helo"`
		MailFrom  string   `json:"mailfrom"`
		RcptTo    []string `json:"rcptto"`
		Subject   string   `json:"subject"`
		LastReply string   `json:"last_reply"`
		Verdict   string   `json:"verdict"`
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &rec) != nil {
		t.Fatalf("records:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	if rec.Helo != "live.test" || rec.MailFrom != "a@client.test" || strings.Join(rec.RcptTo, ",") != "b@example.net" ||
		rec.Subject != "seen live" || !strings.HasPrefix(rec.LastReply, "250 2.0.0 Ok: queued as") || rec.Verdict == "" {
		t.Fatalf("record %+v", rec)
	}
}
