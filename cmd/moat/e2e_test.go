package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"moat/internal/postfixtest"
	"moat/internal/syncbuf"
)

// moatBin is the moat binary built once for the end-to-end tests.
var moatBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "moat-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	moatBin = filepath.Join(dir, "moat")
	build := exec.Command("go", "build", "-o", moatBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building moat: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// moatProc is a running moat binary.
type moatProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited and its log is complete
	log    *lockedBuffer
	smtp   string // the SMTP listener's address
	http   string // the HTTP listener's address
}

// startMoat runs "moat serve" with args and waits for its startup line,
// which names the addresses it really listens on (the config uses port 0).
func startMoat(t *testing.T, args ...string) *moatProc {
	t.Helper()
	return startMoatCmd(t, exec.Command(moatBin, append([]string{"serve"}, args...)...))
}

// startMoatCmd is startMoat for a command of the caller's making (a moat
// serve run through a wrapper, in another directory).
func startMoatCmd(t *testing.T, cmd *exec.Cmd) *moatProc {
	t.Helper()
	log := &lockedBuffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p := &moatProc{cmd: cmd, log: log, exited: exited}
	started := make(chan map[string]any, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			log.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "moat started" {
				select {
				case started <- m:
				default: // only the first counts; the log must keep flowing
				}
			}
		}
		io.Copy(io.Discard, pr) // a line too long to scan must not block moat
	}()
	// exited is closed only once the log holds everything moat wrote.
	go func() { cmd.Wait(); pw.Close(); <-logDone; close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("moat did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("moat log:\n%s", log.String())
		}
	})
	select {
	case m := <-started:
		if l, ok := m["listen"].([]any); ok && len(l) > 0 {
			p.smtp, _ = l[0].(string)
		}
		p.http, _ = m["http"].(string)
	case <-exited:
		t.Fatalf("moat exited at startup: %v\n%s", cmd.ProcessState, log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("moat did not start:\n%s", log.String())
	}
	return p
}

// configFor writes a config with moat in front of upstream on free ports.
func configFor(t *testing.T, upstream string, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "moat.yaml")
	// The resolver is a closed local port: the built-in rules' rDNS
	// lookups fail fast and never reach the system resolver.
	if !strings.Contains(extra, "dnsbl:") {
		extra += "dnsbl:\n  resolver: \"127.0.0.1:9\"\n"
	}
	cfg := fmt.Sprintf("listen: [\"127.0.0.1:0\"]\nhostname: moat.test\nhttp:\n  listen: \"127.0.0.1:0\"\nupstream:\n  address: %q\n%s", upstream, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return addr[:i], addr[i+1:]
}

// swaks, the real SMTP test client, sends through moat to a real Postfix,
// plain and with PIPELINING.
func TestSwaksThroughMoat(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	m := startMoat(t, "--config", configFor(t, pf.Addr, ""))

	for i, extra := range [][]string{nil, {"--pipeline"}} {
		args := append([]string{"--server", m.smtp, "--helo", "swaks.test",
			"--from", "ana@client.test", "--to", "bo@example.net",
			"--header", fmt.Sprintf("Subject: swaks %d", i),
			"--body", "Hello from swaks.\n..dotted line\n"}, extra...)
		out, err := exec.Command("swaks", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", extra, err, out)
		}
		if !strings.Contains(string(out), "<-  250 2.0.0 Ok: queued as") {
			t.Fatalf("swaks %v did not see Postfix's queue id through moat:\n%s", extra, out)
		}
	}
	msgs := pf.WaitMessages(t, 2, 20*time.Second)
	for i, msg := range msgs {
		if !bytes.Contains(msg, []byte(fmt.Sprintf("Subject: swaks %d\n", i))) ||
			!bytes.Contains(msg, []byte("\n..dotted line\n")) ||
			!bytes.Contains(msg, []byte("Received: from swaks.test ([127.0.0.1])\n\tby moat.test (moat) with ESMTP")) {
			t.Errorf("message %d:\n%s", i, msg)
		}
	}
}

// Python's smtplib, another real client: one good and one refused
// recipient; smtplib reports the refusal with Postfix's own reply.
func TestPythonSmtplibThroughMoat(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	m := startMoat(t, "--config", configFor(t, pf.Addr, ""))
	host, port := hostPort(t, m.smtp)

	script := `
import smtplib, sys
from email.message import EmailMessage
msg = EmailMessage()
msg["From"] = "ana@client.test"
msg["To"] = "bo@example.net"
msg["Subject"] = "smtplib"
msg.set_content("Grüße aus Python\n.leading dot\n", cte="8bit")
with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="py.test", timeout=30) as s:
    refused = s.send_message(msg, to_addrs=["bo@example.net", "nobody@elsewhere.test"])
    for rcpt, (code, text) in refused.items():
        print("refused", rcpt, code, text.decode())
    print("ok")
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python smtplib: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "refused nobody@elsewhere.test 550 5.1.1") || !strings.HasSuffix(string(out), "ok\n") {
		t.Fatalf("smtplib output:\n%s", out)
	}
	msg := pf.WaitMessages(t, 1, 20*time.Second)[0]
	if !bytes.Contains(msg, []byte("Grüße aus Python\n.leading dot\n")) {
		t.Fatalf("delivered:\n%s", msg)
	}
}

// The HTTP listener serves metrics and health.
func TestMetricsAndHealth(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	m := startMoat(t, "--config", configFor(t, pf.Addr, ""))
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": "moat_proxy_connections_total",
	} {
		resp, err := http.Get("http://" + m.http + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
}

// Without a config file moat runs on the documented defaults and says
// where it listens and where it forwards.
func TestServeDefaultConfig(t *testing.T) {
	m := startMoat(t)
	if m.smtp != "127.0.0.1:2525" || m.http != "127.0.0.1:9325" {
		t.Fatalf("default listeners %q, %q", m.smtp, m.http)
	}
	if !strings.Contains(m.log.String(), `"upstream":"127.0.0.1:25"`) {
		t.Fatalf("startup log does not name the upstream:\n%s", m.log.String())
	}
}

// A bad configuration is refused with exit status 2 and one error naming
// the file, the line, the column and the key.
func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "listen: [\"127.0.0.1:0\"]\nupstream:\n  adress: \"127.0.0.1:25\"\n", ":3:3: upstream.adress: unknown key"},
		{"unknown top-level key", "lisen: [\"127.0.0.1:0\"]\n", ":1:1: lisen: unknown key"},
		{"wrong type", "limits:\n  max_recipients: lots\n", ":2:19: limits.max_recipients: cannot unmarshal string `lots` into int"},
		{"wrong type duration", "timeouts:\n  command: soon\n", ":2:12: timeouts.command:"},
		{"unparsable address", "upstream:\n  address: \"mail.example.org\"\n", ":2:12: upstream.address: \"mail.example.org\" is not host:port"},
		{"bad port", "listen:\n  - \"127.0.0.1:99999\"\n", ":2:5: listen[0]: \"127.0.0.1:99999\": port \"99999\" is not a number from 0 to 65535"},
		{"bad size", "limits:\n  max_message_size: huge\n", ":2:21: limits.max_message_size: \"huge\" is not a size"},
		{"yaml syntax", "listen: [\n", ":1:1: YAML syntax: did not find expected node content"},
		{"out of range", "limits:\n  max_recipients: 5\n", ": limits.max_recipients: RFC 5321 §4.5.3.1.8 requires at least 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"config", "check", path}, {"serve", "--config", path}} {
				code, _, stderr := runMoat(t, args...)
				if code != 2 {
					t.Errorf("moat %v: exit %d, want 2; stderr %q", args, code, stderr)
				}
				if want := "moat: " + path + tt.want; !strings.HasPrefix(stderr, want) {
					t.Errorf("moat %v:\n got %q\nwant prefix %q", args, stderr, want)
				}
				if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
					t.Errorf("want one error line, got:\n%s", stderr)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "nope.yaml")
		code, _, stderr := runMoat(t, "serve", "--config", path)
		if code != 2 || stderr != "moat: config file "+path+": does not exist\n" {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
}

// The example config documents every key and is itself valid.
func TestExampleConfigIsValid(t *testing.T) {
	code, stdout, stderr := runMoat(t, "config", "check", "../../moat.example.yaml")
	if code != 0 || !strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runMoat(t, "version")
	if code != 0 || !strings.HasPrefix(out, "moat ") {
		t.Errorf("version: %d %q", code, out)
	}
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"config", "--help"}, {"config", "check", "--help"}, {"version", "--help"}} {
		code, out, stderr := runMoat(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("moat %v: exit %d, stdout %q stderr %q", args, code, out, stderr)
		}
	}
	if code, _, stderr := runMoat(t, "frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, stderr)
	}
}

func runMoat(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(moatBin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

// Python's smtplib upgrades to TLS with STARTTLS against moat's
// self-signed certificate and sends a message.
func TestPythonSTARTTLS(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	m := startMoat(t, "--config", configFor(t, pf.Addr, ""))
	host, port := hostPort(t, m.smtp)
	script := `
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="py.test", timeout=30) as s:
    s.ehlo()
    assert s.has_extn("starttls"), s.esmtp_features
    s.starttls(context=ctx)
    s.ehlo()
    assert not s.has_extn("starttls")
    print("tls", s.sock.version())
    s.sendmail("ana@client.test", ["bo@example.net"], b"Subject: py tls\r\n\r\nsecret\r\n")
print("ok")
`
	out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "ok\n") {
		t.Fatalf("python starttls: %v\n%s", err, out)
	}
	msg := pf.WaitMessages(t, 1, 20*time.Second)[0]
	if !bytes.Contains(msg, []byte("with ESMTPS (TLS1.")) {
		t.Fatalf("delivered:\n%s", msg)
	}
}

// SIGHUP reloads the config file; a broken one is refused, logged, and the
// running configuration kept.
func TestSIGHUPReload(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	path := configFor(t, pf.Addr, "")
	m := startMoat(t, "--config", path)
	greeting := func() string {
		c, err := net.DialTimeout("tcp", m.smtp, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	hup := func(wantLog string) {
		t.Helper()
		before := strings.Count(m.log.String(), wantLog)
		m.cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if strings.Count(m.log.String(), wantLog) > before {
				return
			}
		}
		t.Fatalf("no %q in the log after SIGHUP:\n%s", wantLog, m.log.String())
	}
	if g := greeting(); !strings.HasPrefix(g, "220 moat.test ") {
		t.Fatalf("greeting %q", g)
	}
	if err := os.WriteFile(path, []byte("upstream:\n  adress: oops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup("config reload failed, keeping the running configuration")
	if !strings.Contains(m.log.String(), "upstream.adress: unknown key") {
		t.Fatalf("reload error not explained:\n%s", m.log.String())
	}
	if g := greeting(); !strings.HasPrefix(g, "220 moat.test ") {
		t.Fatalf("after a bad reload: greeting %q", g)
	}
	good := fmt.Sprintf("listen: [\"127.0.0.1:0\"]\nhostname: reloaded.test\nupstream:\n  address: %q\nhttp:\n  listen: \"127.0.0.1:0\"\n", pf.Addr)
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	hup(`"msg":"config reloaded"`)
	if g := greeting(); !strings.HasPrefix(g, "220 reloaded.test ") {
		t.Fatalf("after a good reload: greeting %q", g)
	}
}

// SIGTERM lets a message being sent finish: the client completes its DATA
// and gets the upstream's 250, the message is delivered, then moat exits.
func TestSIGTERMDrainsInFlightData(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	m := startMoat(t, "--config", configFor(t, pf.Addr, ""))
	c, err := net.DialTimeout("tcp", m.smtp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading %s: %v", code, err)
			}
			if !strings.HasPrefix(line, code) {
				t.Fatalf("got %q, want %s", line, code)
			}
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	send := func(s string) {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	expect("220")
	send("EHLO client.test\r\n")
	expect("250")
	send("MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	expect("250")
	expect("250")
	expect("354")
	send("Subject: in flight\r\n\r\nfirst half\r\n")

	m.cmd.Process.Signal(syscall.SIGTERM)
	// Give moat time to act on the signal: it must not cut this session.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(m.log.String(), "moat shutting down"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no shutdown logged")
		}
	}
	// New connections are refused now.
	if nc, err := net.DialTimeout("tcp", m.smtp, time.Second); err == nil {
		nc.Close()
		t.Error("moat still accepts connections while shutting down")
	}
	send("second half\r\n.\r\n")
	expect("250")
	send("QUIT\r\n")
	// Having finished the command, the session is told about the shutdown
	// or closed; either way the message was acknowledged and delivered.
	msg := pf.WaitMessages(t, 1, 20*time.Second)[0]
	if !bytes.Contains(msg, []byte("first half\nsecond half\n")) {
		t.Fatalf("delivered:\n%s", msg)
	}
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("moat did not exit after draining")
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// /readyz reports whether the upstream answers.
func TestReadyz(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	m := startMoat(t, "--config", configFor(t, pf.Addr, "  probe_interval: 200ms\n"))
	status := func() int {
		resp, err := http.Get("http://" + m.http + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status(); s != 200 {
		t.Fatalf("with the upstream up: %d", s)
	}
	pf.Stop(t)
	for deadline := time.Now().Add(10 * time.Second); status() != 503; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready with the upstream down")
		}
	}
}

// lockedBuffer collects a child process's output.
type lockedBuffer = syncbuf.Buffer
