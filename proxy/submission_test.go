package proxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/inspect/authguard"
	"moat/internal/dovecottest"
	"moat/internal/postfixtest"
)

// The test users of the submission tests; their passwords must never
// appear in moat's logs.
var submissionUsers = map[string]string{"alice": "Wonderland-7781", "bob": "Builder-4413"}

// submissionHarness is moat with a STARTTLS submission listener and an
// implicit-TLS one, in front of real Postfix checking passwords through
// real Dovecot SASL.
type submissionHarness struct {
	*harness
	starttls, implicit string // listener addresses
	pf                 *postfixtest.Postfix
	dc                 *dovecottest.Dovecot
}

func startSubmission(t *testing.T) *submissionHarness {
	t.Helper()
	dc := dovecottest.Start(t, submissionUsers)
	pf := postfixtest.Start(t, postfixtest.Options{SASLPath: dc.SocketPath, XClient: true})
	engine, err := inspect.New(inspect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(pf.Addr)
	cfg.Upstream.XClient = true
	on := true
	cfg.TLS.STARTTLS = &on
	logs := &syncBuffer{}
	srv, err := New(cfg, Deps{Engine: engine, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h := &submissionHarness{harness: &harness{srv: srv, logs: logs}, pf: pf, dc: dc}
	done := make(chan error, 2)
	for _, implicit := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if implicit {
			h.implicit = ln.Addr().String()
		} else {
			h.starttls = ln.Addr().String()
		}
		go func() { done <- srv.ServeListener(Listener{Listener: ln, ImplicitTLS: implicit, Submission: true}) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", logs.String())
		}
	})
	return h
}

// swaksAuth sends one message with swaks through addr, authenticating.
func swaksAuth(t *testing.T, addr, tlsFlag, mech, user, pass, subject string) (string, bool) {
	t.Helper()
	out, err := exec.Command("swaks", "--server", addr, "--helo", "laptop.client.test", tlsFlag,
		"--auth", mech, "--auth-user", user, "--auth-password", pass,
		"--from", user+"@example.net", "--to", "carol@example.net", "--header", "Subject: "+subject,
		"--body", "sent through moat's submission listener", "--timeout", "30").CombinedOutput()
	return string(out), err == nil
}

// AUTH through moat's submission listeners, with real Postfix and
// Dovecot deciding: PLAIN and LOGIN with swaks over STARTTLS and over
// implicit TLS; a right password delivers, with ESMTPSA in moat's
// Received header, and the upstream knows the user; a wrong one gets the
// upstream's 535 unchanged and delivers nothing.
func TestSubmissionSwaks(t *testing.T) {
	h := startSubmission(t)
	sent := 0
	for _, tt := range []struct{ listener, flag, mech string }{
		{h.starttls, "--tls", "PLAIN"},
		{h.starttls, "--tls", "LOGIN"},
		{h.implicit, "--tlsc", "PLAIN"},
		{h.implicit, "--tlsc", "LOGIN"},
	} {
		subject := "ok " + tt.flag + " " + tt.mech
		out, ok := swaksAuth(t, tt.listener, tt.flag, tt.mech, "alice", submissionUsers["alice"], subject)
		if !ok || !strings.Contains(out, "<~  235 ") {
			t.Fatalf("%s %s with the right password failed:\n%s", tt.flag, tt.mech, out)
		}
		sent++
		out, ok = swaksAuth(t, tt.listener, tt.flag, tt.mech, "alice", "not-the-password", "bad "+subject)
		if ok || !strings.Contains(out, "<~* 535 5.7.8 Error: authentication failed") {
			t.Fatalf("%s %s with a wrong password: want the upstream's 535 unchanged:\n%s", tt.flag, tt.mech, out)
		}
	}
	msgs := h.pf.WaitMessages(t, sent, 30*time.Second)
	received := regexp.MustCompile(`Received: from laptop\.client\.test \(\[127\.0\.0\.1\]\)\n\tby moat\.test \(moat\) with ESMTPSA \(TLS1\.3 `)
	for _, m := range msgs {
		if !received.Match(m) {
			t.Errorf("delivered message without moat's ESMTPSA Received header:\n%s", m)
		}
		if strings.Contains(string(m), "Subject: bad ") {
			t.Errorf("a message with a wrong password was delivered:\n%s", m)
		}
	}
	// The upstream saw the user itself: it checked the password.
	h.pf.WaitLog(t, "sasl_method=LOGIN, sasl_username=alice", 10*time.Second)
	h.pf.WaitLog(t, "sasl_method=PLAIN, sasl_username=alice", 10*time.Second)
	logs := h.logs.String()
	for _, want := range []string{`"msg":"auth"`, `"outcome":"success"`, `"outcome":"failure"`, `"auth_user":"alice"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("moat's log lacks %s", want)
		}
	}
	for _, p := range submissionUsers {
		if strings.Contains(logs, p) {
			t.Errorf("moat's log contains a password")
		}
	}
	if n := counterValue(t, h.srv.metrics.authAttempts.WithLabelValues("success")); n != 4 {
		t.Errorf("moat_smtp_auth_attempts_total{outcome=success} = %v, want 4", n)
	}
}

// What moat refuses itself, on a raw session: AUTH before STARTTLS
// (530, not advertised), a second AUTH (503). (Python's smtplib runs
// against the moat binary in cmd/moat's TestSubmissionEndToEnd.)
func TestSubmissionPolicy(t *testing.T) {
	h := startSubmission(t)
	// Before STARTTLS: no AUTH in EHLO, and 530 5.7.0.
	c := greeted(t, h.starttls)
	if ehlo := c.cmd(250, "EHLO raw.client.test"); strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH advertised before TLS:\n%s", ehlo)
	}
	if r := c.cmd(530, "AUTH PLAIN AGFsaWNlAFdvbmRlcmxhbmQtNzc4MQ=="); !strings.Contains(r, "5.7.0 Must issue a STARTTLS command first") {
		t.Errorf("AUTH before TLS: %q", r)
	}
	c.cmd(220, "STARTTLS")
	tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &client{t: t, nc: tc, tp: newTextproto(tc)}
	if ehlo := c.cmd(250, "EHLO raw.client.test"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("AUTH not advertised under TLS:\n%s", ehlo)
	}
	c.cmd(235, "AUTH PLAIN AGFsaWNlAFdvbmRlcmxhbmQtNzc4MQ==")
	c.cmd(503, "AUTH PLAIN AGFsaWNlAFdvbmRlcmxhbmQtNzc4MQ==")
	c.cmd(250, "MAIL FROM:<alice@example.net>")
	c.cmd(250, "RCPT TO:<carol@example.net>")
	c.cmd(250, "RSET")
	c.cmd(221, "QUIT")
}

// panicGuard panics when asked about a user: a bug inside the lockout,
// in the middle of an AUTH exchange, with the password in memory.
type panicGuard struct{}

func (panicGuard) Check(_ context.Context, _ netip.Addr, user string) (authguard.Decision, error) {
	if user != "" {
		panic("lockout bug while checking " + user)
	}
	return authguard.Decision{}, nil
}
func (panicGuard) Failed(context.Context, netip.Addr, string) (authguard.Decision, authguard.Spray, error) {
	return authguard.Decision{}, authguard.Spray{}, nil
}
func (panicGuard) Succeeded(context.Context, netip.Addr, string) error { return nil }

// A panic in the middle of an AUTH exchange ends that session with
// 421 4.3.0 and a logged stack — and neither the log line nor the stack
// carries the password the client just sent.
func TestSubmissionPanicKeepsSecret(t *testing.T) {
	engine, err := inspect.New(inspect.Config{Submission: inspect.SubmissionConfig{Guard: panicGuard{}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("127.0.0.1:9") // never reached
	logs := &syncBuffer{}
	srv, err := New(cfg, Deps{Engine: engine, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeListener(Listener{Listener: ln, ImplicitTLS: true, Submission: true})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	before := panicsRecovered.Load()
	const pass = "Sup3r-Secret-Panic-Pass"
	tc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, nc: tc, tp: newTextproto(tc)}
	c.expect(220)
	c.cmd(250, "EHLO raw.client.test")
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00" + pass))
	if msg := c.cmd(421, "AUTH PLAIN "+ir); !strings.HasPrefix(msg, "4.3.0 ") {
		t.Fatalf("reply to the AUTH that panicked: %q", msg)
	}
	if n := panicsRecovered.Load() - before; n != 1 {
		t.Fatalf("%d panics recovered, want 1", n)
	}
	panicsRecovered.Add(-1)
	out := logs.String()
	if !strings.Contains(out, `"msg":"session panic"`) || !strings.Contains(out, "goroutine") {
		t.Fatalf("no panic with its stack in the log:\n%s", out)
	}
	if strings.Contains(out, pass) || strings.Contains(out, ir) {
		t.Fatalf("the panic's log carries the password:\n%s", out)
	}
}
