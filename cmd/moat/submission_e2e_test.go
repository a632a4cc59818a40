package main

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/dovecottest"
	"moat/internal/postfixtest"
	"moat/internal/redistest"
)

// The test users of the submission tests. Their passwords are distinctive
// so that a grep over every log, metric and record finds any leak.
var subUsers = map[string]string{
	"alice": "Xq7-alice-Passw0rd-91",
	"bob":   "Zr4-bob-Passw0rd-26",
	"carol": "Kt2-carol-Passw0rd-58",
}

// subUpstream is real Postfix with real Dovecot SASL checking subUsers;
// XCLIENT carries the real client to it.
func subUpstream(t *testing.T) (*postfixtest.Postfix, *dovecottest.Dovecot) {
	t.Helper()
	dc := dovecottest.Start(t, subUsers)
	pf := postfixtest.Start(t, postfixtest.Options{SASLPath: dc.SocketPath, XClient: true})
	return pf, dc
}

// subConfig writes a moat config with a STARTTLS and an implicit-TLS
// submission listener in front of upstream; extra is appended.
func subConfig(t *testing.T, upstream, extra string) string {
	t.Helper()
	return configFor(t, upstream, "listen_submission: [\"127.0.0.1:0\"]\nlisten_submission_tls: [\"127.0.0.1:0\"]\n"+
		"upstream:\n  address: \""+upstream+"\"\n  xclient: true\n"+extra)
}

// submissionAddrs reads the submission listeners' addresses from moat's
// startup line.
func submissionAddrs(t *testing.T, m *moatProc) (starttls, implicit string) {
	t.Helper()
	for _, line := range strings.Split(m.log.String(), "\n") {
		var e struct {
			Msg string   `json:"msg"`
			Sub []string `json:"listen_submission"`
			TLS []string `json:"listen_submission_tls"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "moat started" && len(e.Sub) == 1 && len(e.TLS) == 1 {
			return e.Sub[0], e.TLS[0]
		}
	}
	t.Fatalf("no submission listeners in the startup line:\n%s", m.log.String())
	return "", ""
}

// swaksSub sends one message with swaks, authenticating as user.
func swaksSub(t *testing.T, addr, tlsFlag, mech, user, pass, from, subject string) (string, error) {
	t.Helper()
	out, err := exec.Command("swaks", "--server", addr, "--helo", "laptop.client.test", tlsFlag,
		"--auth", mech, "--auth-user", user, "--auth-password", pass,
		"--from", from, "--to", "dave@example.net", "--header", "Subject: "+subject,
		"--body", "through moat's submission listener", "--timeout", "30").CombinedOutput()
	return string(out), err
}

// authOnce connects from src over implicit TLS, says EHLO and tries one
// AUTH PLAIN; it returns the reply line.
func authOnce(t *testing.T, src, addr, user, pass string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := tls.DialWithDialer(&d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(nc)
	read := func() string {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply: %v", err)
			}
			last = strings.TrimRight(line, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	read()
	fmt.Fprintf(nc, "EHLO sprayer.test\r\n")
	read()
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	fmt.Fprintf(nc, "AUTH PLAIN %s\r\n", ir)
	reply := read()
	fmt.Fprintf(nc, "QUIT\r\n")
	return reply
}

func scrape(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// noPasswords fails the test when any test password appears in what.
func noPasswords(t *testing.T, name, what string) {
	t.Helper()
	for user, p := range subUsers {
		for _, form := range []string{p, base64.StdEncoding.EncodeToString([]byte(p)),
			base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + p))} {
			if strings.Contains(what, form) {
				t.Errorf("%s contains %s's password (as %q)", name, user, form)
			}
		}
	}
}

// Through the moat binary, real Postfix and real Dovecot: swaks and
// Python's smtplib log in with PLAIN and LOGIN over STARTTLS and over
// implicit TLS; a right password delivers, a wrong one gets the
// upstream's 535; AUTH before TLS gets 530; a user sending as someone
// else gets 553. dumpcap records moat's plaintext leg to the upstream,
// where the AUTH exchanges cross in clear, and moat analyze reads them
// back: the records keep the mechanism and the user, nothing else. No
// password is in moat's log, its metrics or the analyze records.
func TestSubmissionEndToEnd(t *testing.T) {
	pf, dc := subUpstream(t)
	dir := t.TempDir()
	_, upPort := hostPort(t, pf.Addr)
	cap := startDumpcap(t, dir, upPort)
	// The wrong passwords below stay under a raised lockout limit; the
	// lockout has its own test.
	cfg := subConfig(t, pf.Addr, fmt.Sprintf("state:\n  dir: %q\nsubmission:\n  lockout:\n    limits: [{scope: ip, window: 1m, max: 100}]\n  senders:\n    alice: [\"alice@example.net\"]\n    bob: [\"@example.net\"]\n    carol: [\"carol@example.net\"]\n",
		filepath.Join(dir, "state")))
	m := startMoat(t, "--config", cfg)
	starttls, implicit := submissionAddrs(t, m)

	delivered := 0
	for _, tt := range []struct{ addr, flag, mech, user string }{
		{starttls, "--tls", "PLAIN", "alice"},
		{starttls, "--tls", "LOGIN", "bob"},
		{implicit, "--tlsc", "PLAIN", "bob"},
		{implicit, "--tlsc", "LOGIN", "alice"},
	} {
		out, err := swaksSub(t, tt.addr, tt.flag, tt.mech, tt.user, subUsers[tt.user], tt.user+"@example.net", "ok "+tt.flag+" "+tt.mech)
		if err != nil || !strings.Contains(out, "<~  235 ") || !strings.Contains(out, "<~  250 2.0.0 Ok: queued") {
			t.Fatalf("swaks %s %s as %s: %v\n%s", tt.flag, tt.mech, tt.user, err, out)
		}
		delivered++
		out, err = swaksSub(t, tt.addr, tt.flag, tt.mech, tt.user, "wrong-"+tt.user, tt.user+"@example.net", "bad")
		if err == nil || !strings.Contains(out, "<~* 535 5.7.8 Error: authentication failed") {
			t.Fatalf("swaks %s %s with a wrong password: want 535:\n%s", tt.flag, tt.mech, out)
		}
	}

	// Python's smtplib, both ways in.
	script := `
import smtplib, ssl, sys
mode, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
if mode == "implicit":
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30)
else:
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("py.client.test")
    try:
        s.login(user, pw)
        print("logged in before TLS"); sys.exit(3)
    except smtplib.SMTPNotSupportedError:
        pass
    code, msg = s.docmd("AUTH", "PLAIN")
    print("before TLS", code, msg.decode())
    s.starttls(context=ctx)
s.ehlo("py.client.test")
try:
    s.login(user, pw)
except smtplib.SMTPAuthenticationError as e:
    print("refused", e.smtp_code); sys.exit(2)
s.sendmail(user + "@example.net", ["dave@example.net"], "From: " + user + "@example.net\r\nSubject: smtplib " + mode + "\r\n\r\nhi\r\n")
s.quit()
print("sent")
`
	for _, tt := range []struct{ mode, addr string }{{"starttls", starttls}, {"implicit", implicit}} {
		_, port := hostPort(t, tt.addr)
		out, err := exec.Command("python3", "-c", script, tt.mode, port, "carol", subUsers["carol"]).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "sent") {
			t.Fatalf("smtplib %s: %v\n%s", tt.mode, err, out)
		}
		if tt.mode == "starttls" && !strings.Contains(string(out), "before TLS 530 5.7.0 Must issue a STARTTLS command first") {
			t.Errorf("AUTH before STARTTLS: want 530 5.7.0:\n%s", out)
		}
		delivered++
		out, err = exec.Command("python3", "-c", script, tt.mode, port, "carol", "wrong").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "refused 535") {
			t.Fatalf("smtplib %s with a wrong password: %v\n%s", tt.mode, err, out)
		}
	}

	// alice may send only as alice@example.net.
	out, err := swaksSub(t, starttls, "--tls", "PLAIN", "alice", subUsers["alice"], "ceo@example.net", "spoof")
	if err == nil || !strings.Contains(out, "<~* 553 5.7.1") {
		t.Errorf("alice sending as ceo@example.net: want 553 5.7.1\n%s", out)
	}

	msgs := pf.WaitMessages(t, delivered, 30*time.Second)
	for _, msg := range msgs {
		if !strings.Contains(string(msg), ") with ESMTPSA (TLS1.3 ") {
			t.Errorf("delivered without moat's ESMTPSA Received header:\n%.600s", msg)
		}
	}
	pf.WaitLog(t, "sasl_username=carol", 10*time.Second)
	if n := dc.Failures(t); n < 6 {
		t.Errorf("Dovecot saw %d failed logins, want at least the 6 wrong passwords", n)
	}
	metrics := scrape(t, m.http)
	for _, want := range []string{`moat_smtp_auth_attempts_total{outcome="success"} 7`, `moat_smtp_auth_attempts_total{outcome="failure"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s\n%s", want, grepLines(metrics, "moat_smtp_auth"))
		}
	}

	// Offline: moat's leg to the upstream carries the AUTH exchanges in
	// clear; the analyzer follows them and keeps mechanism and user.
	cap.sync(t)
	cap.stop(t)
	code, stdout, stderr := runMoat(t, "analyze", "--config", cfg, "--dns", "off", "--quiet", cap.file)
	if code != 0 {
		t.Fatalf("moat analyze: exit %d\n%s", code, stderr)
	}
	users := map[string]bool{}
	for _, line := range strings.Split(stdout, "\n") {
		var r struct {
			AuthMech      string `json:"auth_mech"`
			AuthUser      string `json:"auth_user"`
			Authenticated bool   `json:"authenticated"`
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.Authenticated {
			users[r.AuthUser+"/"+r.AuthMech] = true
		}
	}
	for _, want := range []string{"alice/PLAIN", "bob/LOGIN", "carol/PLAIN"} {
		if !users[want] {
			t.Errorf("analyze records: no authenticated %s; got %v\n%s", want, users, stdout)
		}
	}
	raw, err := os.ReadFile(cap.file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+subUsers["alice"]))) {
		t.Error("the capture does not hold the plaintext AUTH: the offline check proves nothing")
	}
	noPasswords(t, "moat's log", m.log.String())
	noPasswords(t, "moat's metrics", metrics)
	noPasswords(t, "moat analyze's records", stdout+stderr)
}

// Password spraying against two moats that share Redis: wrong passwords
// for many user names from one client, spread over both instances. The
// lockout (10 failures a minute per IP) holds across both: past the
// limit both answer 454 4.7.0 without asking the upstream, whose Dovecot
// counts exactly 10 failed logins; the right password from that client
// is refused too, while another client of the network logs in.
func TestSubmissionSprayingTwoMoats(t *testing.T) {
	pf, dc := subUpstream(t)
	rd := redistest.Start(t)
	var moats []*moatProc
	var addrs []string
	for range 2 {
		cfg := subConfig(t, pf.Addr, fmt.Sprintf("state:\n  backend: redis\n  redis:\n    address: %q\n", rd.Addr))
		m := startMoat(t, "--config", cfg)
		_, implicit := submissionAddrs(t, m)
		moats, addrs = append(moats, m), append(addrs, implicit)
	}
	before := dc.Failures(t)
	const attempts = 16
	locked, refused := 0, 0
	for i := range attempts {
		user := fmt.Sprintf("user%02d", i)
		reply := authOnce(t, "127.0.0.1", addrs[i%2], user, "guess-"+user)
		switch {
		case strings.HasPrefix(reply, "535 "):
			refused++
		case strings.HasPrefix(reply, "454 4.7.0 "):
			locked++
		default:
			t.Fatalf("attempt %d: %q", i+1, reply)
		}
		if locked > 0 && strings.HasPrefix(reply, "535 ") {
			t.Fatalf("attempt %d reached the upstream after the lockout", i+1)
		}
	}
	if refused != 10 || locked != attempts-10 {
		t.Errorf("%d refused by the upstream, %d locked out; want 10 and %d", refused, locked, attempts-10)
	}
	if n := dc.Failures(t) - before; n != 10 {
		t.Errorf("the upstream saw %d failed logins, want 10: it must stop receiving attempts at the limit", n)
	}
	// Both instances refused locked attempts: the lock is shared.
	var lockedPer [2]string
	for i, m := range moats {
		lockedPer[i] = grepLines(scrape(t, m.http), `moat_smtp_auth_attempts_total{outcome="locked"}`)
		if strings.HasSuffix(lockedPer[i], " 0") {
			t.Errorf("moat %d refused no locked attempt: %s", i, lockedPer[i])
		}
	}
	// The locked client cannot log in even with the right password;
	// another client of the same network can, through either moat.
	if reply := authOnce(t, "127.0.0.1", addrs[0], "alice", subUsers["alice"]); !strings.HasPrefix(reply, "454 4.7.0") {
		t.Errorf("locked client with the right password: %q, want 454 4.7.0", reply)
	}
	for i, a := range addrs {
		if reply := authOnce(t, "127.0.0.2", a, "alice", subUsers["alice"]); !strings.HasPrefix(reply, "235 ") {
			t.Errorf("another client via moat %d: %q, want 235", i, reply)
		}
	}
	logged, counted := false, 0.0
	for _, m := range moats {
		logged = logged || strings.Contains(m.log.String(), `"msg":"password spraying"`)
		counted += scrapeSum(t, m.http, `moat_smtp_auth_spraying_total{kind="users_per_network"}`)
		noPasswords(t, "moat's log", m.log.String())
		noPasswords(t, "moat's metrics", scrape(t, m.http))
	}
	if !logged || counted != 1 {
		t.Errorf("16 user names failing from one network: spraying logged %v, counted %v times; want logged, once", logged, counted)
	}
}

// A compromised account: alice's password sends a burst. The per-user
// limit (3 messages an hour here) lets 3 through and answers the rest
// 451 4.7.0; bob, on the same moat at the same time, is not affected.
func TestSubmissionCompromisedAccount(t *testing.T) {
	pf, _ := subUpstream(t)
	dir := t.TempDir()
	cfg := subConfig(t, pf.Addr, fmt.Sprintf("state:\n  dir: %q\nsubmission:\n  user_limits: {messages: 3/1h, recipients: 100/1h}\n",
		filepath.Join(dir, "state")))
	m := startMoat(t, "--config", cfg)
	_, implicit := submissionAddrs(t, m)
	const burst = 8
	sent, limited := 0, 0
	for i := range burst {
		out, err := swaksSub(t, implicit, "--tlsc", "PLAIN", "alice", subUsers["alice"], "alice@example.net", fmt.Sprintf("burst %d", i))
		switch {
		case err == nil && strings.Contains(out, "<~  250 2.0.0 Ok: queued"):
			sent++
		case strings.Contains(out, "<~* 451 4.7.0 Rate limit exceeded"):
			limited++
		default:
			t.Fatalf("burst message %d: %v\n%s", i+1, err, out)
		}
		if i%3 == 0 {
			if out, err := swaksSub(t, implicit, "--tlsc", "LOGIN", "bob", subUsers["bob"], "bob@example.net", "bob"); err != nil {
				t.Errorf("bob during alice's burst: %v\n%s", err, out)
			}
		}
	}
	if sent != 3 || limited != burst-3 {
		t.Errorf("alice: %d sent, %d limited; want 3 and %d", sent, limited, burst-3)
	}
	pf.WaitMessages(t, 3+3, 30*time.Second)
	if !strings.Contains(scrape(t, m.http), `moat_ratelimit_decisions_total{decision="limited",limit="submission_user_messages"} 5`) {
		t.Error("the per-user limit's refusals are not counted")
	}
	noPasswords(t, "moat's log", m.log.String())
}
