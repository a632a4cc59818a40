package dovecottest

import (
	"encoding/base64"
	"moat/internal/mtatest"
	"moat/internal/postfixtest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

const wait = 10 * time.Second

var users = map[string]string{"alice": "secret", "bob": "hunter2"}

// TestAuth asks the auth service directly, without Postfix.
func TestAuth(t *testing.T) {
	start := time.Now()
	d := Start(t, users)
	t.Logf("Start took %v", time.Since(start))

	if !d.Auth(t, "alice", "secret") || !d.Auth(t, "bob", "hunter2") {
		t.Fatalf("right passwords refused:\n%s", d.Log(t))
	}
	start = time.Now()
	if d.Auth(t, "alice", "wrong") {
		t.Fatal("wrong password accepted")
	}
	t.Logf("a failed Auth took %v", time.Since(start))
	if d.Auth(t, "carol", "secret") {
		t.Fatal("unknown user accepted")
	}
	if n := d.Failures(t); n != 2 {
		t.Errorf("Failures = %d, want 2:\n%s", n, d.Log(t))
	}
	// A success after failures is not held back by the (disabled)
	// authentication penalty.
	start = time.Now()
	if !d.Auth(t, "alice", "secret") {
		t.Fatal("right password refused after failures")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("a success after failures took %v: is the auth penalty on?", el)
	}
	log := d.Log(t)
	for _, want := range []string{
		"passwd-file(alice,127.0.0.1): Password mismatch",
		"passwd-file(carol,127.0.0.1): unknown user",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("dovecot.log lacks %q:\n%s", want, log)
		}
	}
	// A second count adds only what happened since: not the first
	// sentinel, nor the success.
	if n := d.Failures(t); n != 2 {
		t.Errorf("second Failures = %d, want 2:\n%s", n, log)
	}
	if strings.Contains(log, "Error:") || strings.Contains(log, "Warning:") {
		t.Errorf("dovecot.log has errors or warnings:\n%s", log)
	}
}

func TestStartRefusesBadUser(t *testing.T) {
	for _, u := range [][2]string{{"a:b", "x"}, {"a", "x:y"}, {"", "x"}, {"a b", "x"}, {"a", "x\ny"}} {
		if err := checkUser(u[0], u[1]); err == nil {
			t.Errorf("checkUser(%q, %q) accepted", u[0], u[1])
		}
	}
	if err := checkUser("alice@example.net", "p@ss w0rd!"); err != nil {
		t.Error(err)
	}
}

// startPair starts Dovecot and a Postfix that authenticates through it.
func startPair(t *testing.T) (*Dovecot, *postfixtest.Postfix) {
	t.Helper()
	d := Start(t, users)
	p := postfixtest.Start(t, postfixtest.Options{SASLPath: d.SocketPath})
	return d, p
}

// swaks sends one message to rcpt@example.net after AUTH mech as user;
// it returns swaks's transcript and whether swaks succeeded.
func swaks(t *testing.T, addr, mech, user, pass, subject string) (string, bool) {
	t.Helper()
	cmd := exec.Command("swaks", "--server", addr, "--helo", "client.test",
		"--from", "sender@example.org", "--to", "rcpt@example.net",
		"--auth", mech, "--auth-user", user, "--auth-password", pass,
		"--header", "Subject: "+subject, "--timeout", "10")
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("swaks: %v", err)
	}
	return string(out), err == nil
}

// maillogFailures counts the maillog's warnings of failed AUTHs, one per
// attempt: "warning: unknown[127.0.0.1]: SASL PLAIN authentication
// failed: (reason unavailable), sasl_username=alice".
var maillogFailure = regexp.MustCompile(`(?m)warning: [^ ]+: SASL [A-Z0-9-]+ authentication failed: `)

// waitMaillogFailures waits until the maillog holds n failure warnings
// and fails the test if it does not, or holds more.
func waitMaillogFailures(t *testing.T, p *postfixtest.Postfix, n int) {
	t.Helper()
	got := 0
	mtatest.WaitFor(wait, func() bool {
		got = len(maillogFailure.FindAllString(p.Log(t), -1))
		return got >= n
	})
	if got != n {
		t.Errorf("maillog has %d SASL failure warnings, want %d:\n%s", got, n, p.Log(t))
	}
}

func TestPostfixSwaks(t *testing.T) {
	d, p := startPair(t)
	delivered := 0
	for _, c := range []struct {
		mech, user, pass string
		ok               bool
	}{
		{"PLAIN", "alice", "secret", true},
		{"LOGIN", "bob", "hunter2", true},
		{"PLAIN", "alice", "wrong", false},
		{"LOGIN", "alice", "wrong", false},
		{"PLAIN", "carol", "secret", false},
	} {
		subject := c.mech + " " + c.user + " " + c.pass
		out, ok := swaks(t, p.Addr, c.mech, c.user, c.pass, subject)
		if ok != c.ok {
			t.Fatalf("%s: swaks succeeded=%v, want %v:\n%s", subject, ok, c.ok, out)
		}
		if c.ok {
			if !strings.Contains(out, "<-  235 2.7.0 Authentication successful") {
				t.Errorf("%s: no 235:\n%s", subject, out)
			}
			delivered++
			msgs := p.WaitMessages(t, delivered, wait)
			if m := string(msgs[delivered-1]); !strings.Contains(m, "Subject: "+subject+"\n") {
				t.Errorf("%s: delivered message is another:\n%s", subject, m)
			}
			p.WaitLog(t, "sasl_method="+c.mech+", sasl_username="+c.user, wait)
		} else {
			if !strings.Contains(out, "<** 535 5.7.8 Error: authentication failed") {
				t.Errorf("%s: no 535:\n%s", subject, out)
			}
			p.WaitLog(t, "SASL "+c.mech+" authentication failed: (reason unavailable), sasl_username="+c.user, wait)
		}
	}
	if n := d.Failures(t); n != 3 {
		t.Errorf("dovecot Failures = %d, want 3:\n%s", n, d.Log(t))
	}
	waitMaillogFailures(t, p, 3)
	if msgs := p.Messages(t); len(msgs) != 2 {
		t.Errorf("%d messages delivered, want 2", len(msgs))
	}
}

// smtplibScript logs in with Python's smtplib and, when that works, sends
// one message; it prints "OK" or the SMTPAuthenticationError's code.
const smtplibScript = `
import smtplib, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with smtplib.SMTP(host, port, local_hostname="client.test", timeout=10) as s:
    try:
        s.login(user, password)
    except smtplib.SMTPAuthenticationError as e:
        print(e.smtp_code)
        sys.exit(0)
    s.sendmail("sender@example.org", ["rcpt@example.net"],
               "Subject: smtplib " + user + "\r\n\r\nhello\r\n")
    print("OK")
`

func TestPostfixSmtplib(t *testing.T) {
	d, p := startPair(t)
	host, port, _ := strings.Cut(p.Addr, ":")
	login := func(user, pass string) string {
		t.Helper()
		out, err := exec.Command("python3", "-c", smtplibScript, host, port, user, pass).CombinedOutput()
		if err != nil {
			t.Fatalf("python3: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	if got := login("alice", "secret"); got != "OK" {
		t.Fatalf("right password: %s", got)
	}
	p.WaitMessages(t, 1, wait)
	// smtplib prefers PLAIN of the mechanisms offered.
	p.WaitLog(t, "sasl_method=PLAIN, sasl_username=alice", wait)

	if got := login("alice", "wrong"); got != "535" {
		t.Fatalf("wrong password: %s", got)
	}
	// One login() is two attempts upstream: when PLAIN is refused,
	// smtplib tries the next mechanism offered, LOGIN, before giving up.
	if n := d.Failures(t); n != 2 {
		t.Errorf("dovecot Failures = %d, want 2:\n%s", n, d.Log(t))
	}
	p.WaitLog(t, "SASL LOGIN authentication failed", wait)
	waitMaillogFailures(t, p, 2)
}

// TestPostfixFailuresInOneSession makes more failed AUTHs in one session
// than smtpd_soft_error_limit (10): with smtpd_error_sleep_time = 0 none
// of the replies is held back the extra second, each failure reaches
// Dovecot, and the right password still works at the end.
func TestPostfixFailuresInOneSession(t *testing.T) {
	d, p := startPair(t)
	s, _ := mtatest.Dial(t, p.Addr)
	s.Do(250, "EHLO client.test")
	const attempts = 11
	bad := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong"))
	for i := 1; i <= attempts; i++ {
		start := time.Now()
		s.Do(535, "AUTH PLAIN %s", bad)
		if el := time.Since(start); el > 900*time.Millisecond {
			t.Errorf("failed AUTH %d took %v", i, el)
		}
	}
	good := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	s.Do(235, "AUTH PLAIN %s", good)
	s.Do(221, "QUIT")
	if n := d.Failures(t); n != attempts {
		t.Errorf("dovecot Failures = %d, want %d", n, attempts)
	}
	waitMaillogFailures(t, p, attempts)
	p.WaitLog(t, "auth=1/12", wait)
}
