package sendmailtest

import (
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

// session is a raw SMTP client.
type session struct {
	t  *testing.T
	tp *textproto.Conn
}

func dial(t *testing.T, addr string) (*session, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, tp: textproto.NewConn(nc)}
	return s, s.expect(220)
}

// expect reads one reply and fails unless its code is want; it returns the
// reply's text lines.
func (s *session) expect(want int) string {
	s.t.Helper()
	code, msg, err := s.tp.ReadResponse(want)
	if err != nil {
		s.t.Fatalf("want %d, got %d %q: %v", want, code, msg, err)
	}
	return msg
}

func (s *session) cmd(want int, line string) string {
	s.t.Helper()
	if err := s.tp.PrintfLine("%s", line); err != nil {
		s.t.Fatal(err)
	}
	return s.expect(want)
}

// The instance greets, applies the check rulesets of its Options with
// their replies, refuses other domains, and delivers accepted mail into the
// Maildir, one file per recipient.
func TestStartDeliverAndRefuse(t *testing.T) {
	m := Start(t, Options{
		DenySenders:     []string{"spam@client.test"},
		DeferSenders:    []string{"slow@client.test"},
		DenyRecipients:  []string{"denied@example.net"},
		DeferRecipients: []string{"later@example.net"},
	})

	s, greeting := dial(t, m.Addr)
	if !strings.HasPrefix(greeting, Hostname+" ESMTP Sendmail 8.") {
		t.Errorf("greeting %q", greeting)
	}
	ehlo := s.cmd(250, "EHLO client.test")
	for _, want := range []string{"\nENHANCEDSTATUSCODES\n", "\nPIPELINING\n", "\n8BITMIME\n", "\nSIZE\n", "\nDSN\n"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks %q: %q", want, ehlo)
		}
	}
	if strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO reply offers TLS or AUTH: %q", ehlo)
	}
	if got := s.cmd(550, "MAIL FROM:<spam@client.test>"); got != "5.7.1 <spam@client.test>... Sender refused" {
		t.Errorf("denied sender: %q", got)
	}
	if got := s.cmd(451, "MAIL FROM:<slow@client.test>"); got != "4.7.1 Sender deferred" {
		t.Errorf("deferred sender: %q", got)
	}
	if got := s.cmd(250, "MAIL FROM:<ana@client.test>"); got != "2.1.0 <ana@client.test>... Sender ok" {
		t.Errorf("MAIL reply text %q", got)
	}
	if got := s.cmd(250, "RCPT TO:<bo@example.net>"); got != "2.1.5 <bo@example.net>... Recipient ok" {
		t.Errorf("RCPT reply text %q", got)
	}
	s.cmd(250, "RCPT TO:<Cy@Example.NET>")
	if got := s.cmd(550, "RCPT TO:<denied@example.net>"); got != "5.7.1 <denied@example.net>... Recipient refused" {
		t.Errorf("denied recipient: %q", got)
	}
	if got := s.cmd(451, "RCPT TO:<later@example.net>"); got != "4.7.1 Recipient deferred" {
		t.Errorf("deferred recipient: %q", got)
	}
	if got := s.cmd(550, "RCPT TO:<someone@elsewhere.test>"); got != "5.7.1 <someone@elsewhere.test>... Relaying denied" {
		t.Errorf("other domain: %q", got)
	}
	s.cmd(550, "RCPT TO:<postmaster>")
	s.cmd(354, "DATA")
	if got := s.cmd(250, "Subject: first\r\n\r\nbody line\r\n..dot\r\n."); !strings.HasSuffix(got, " Message accepted for delivery") {
		t.Errorf("end of data: %q", got)
	}

	s.cmd(250, "MAIL FROM:<ana@client.test>")
	s.cmd(250, "RCPT TO:<dee@example.net>")
	s.cmd(354, "DATA")
	s.cmd(250, "Subject: second\r\n\r\nother body\r\n.")
	s.cmd(221, "QUIT")

	msgs := m.WaitMessages(t, 3, 20*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("%d messages delivered, want 3", len(msgs))
	}
	byRcpt := map[string]string{}
	for _, msg := range msgs {
		ms := string(msg)
		rcpt, rest, ok := strings.Cut(strings.TrimPrefix(ms, "Delivered-To: "), "\n")
		if !ok || !strings.HasPrefix(ms, "Delivered-To: ") || !strings.HasPrefix(rest, "Return-Path: <ana@client.test>\n") {
			t.Errorf("delivered message starts unexpectedly:\n%s", ms)
			continue
		}
		byRcpt[rcpt] = ms
	}
	for rcpt, want := range map[string][]string{
		"bo@example.net":  {"Subject: first\n", "\nbody line\n.dot\n", "by " + Hostname + " (8."},
		"Cy@example.net":  {"Subject: first\n", "\nbody line\n"},
		"dee@example.net": {"Subject: second\n", "\nother body\n"},
	} {
		msg, ok := byRcpt[rcpt]
		if !ok {
			t.Errorf("no message for %s; got %q", rcpt, msgs)
			continue
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("message to %s lacks %q:\n%s", rcpt, w, msg)
			}
		}
	}
	// The Maildir file is there before Sendmail logs the delivery (after
	// the mailer exits).
	waitFor(10*time.Second, func() bool { return strings.Count(m.readLog(), "stat=Sent") >= 3 })
	log := m.WaitLog(t, "reject=550 5.7.1 <someone@elsewhere.test>... Relaying denied", 10*time.Second)
	if n := strings.Count(log, "mailer=moat"); n != 3 || strings.Count(log, "stat=Sent") != 3 {
		t.Errorf("log has %d deliveries, want 3:\n%s", n, log)
	}
}

// A message bigger than MessageSizeLimit is refused at the final dot, and
// the limit is advertised.
func TestMessageSizeLimit(t *testing.T) {
	m := Start(t, Options{MessageSizeLimit: 1000})
	s, _ := dial(t, m.Addr)
	if ehlo := s.cmd(250, "EHLO client.test"); !strings.Contains(ehlo, "\nSIZE 1000\n") {
		t.Errorf("EHLO reply: %q", ehlo)
	}
	if got := s.cmd(552, "MAIL FROM:<ana@client.test> SIZE=5000"); got != "5.2.3 Message size exceeds fixed maximum message size (1000)" {
		t.Errorf("MAIL with SIZE=5000: %q", got)
	}
	s.cmd(250, "MAIL FROM:<ana@client.test>")
	s.cmd(250, "RCPT TO:<bo@example.net>")
	s.cmd(354, "DATA")
	got := s.cmd(552, "Subject: big\r\n\r\n"+strings.Repeat(strings.Repeat("x", 70)+"\r\n", 30)+".")
	if got != "5.2.3 Message exceeds maximum fixed size (1000)" {
		t.Errorf("oversized message: %q", got)
	}
	s.cmd(221, "QUIT")
	if msgs := m.Messages(t); len(msgs) != 0 {
		t.Errorf("%d messages delivered", len(msgs))
	}
}

// Every message of a connection carrying many transactions is delivered.
func TestManyMessagesOneConnection(t *testing.T) {
	m := Start(t, Options{})
	s, _ := dial(t, m.Addr)
	s.cmd(250, "EHLO client.test")
	const n = 12
	for i := range n {
		s.cmd(250, "MAIL FROM:<ana@client.test>")
		s.cmd(250, "RCPT TO:<bo@example.net>")
		s.cmd(354, "DATA")
		s.cmd(250, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n.", i))
	}
	s.cmd(221, "QUIT")
	m.WaitMessages(t, n, 20*time.Second)
}

// Two instances run side by side, each with its own queue and log.
func TestParallelInstances(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	for i, m := range []*Sendmail{a, b} {
		s, _ := dial(t, m.Addr)
		s.cmd(250, "EHLO client.test")
		s.cmd(250, "MAIL FROM:<ana@client.test>")
		s.cmd(250, fmt.Sprintf("RCPT TO:<n%d@example.net>", i))
		s.cmd(354, "DATA")
		s.cmd(250, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n.", i))
		s.cmd(221, "QUIT")
	}
	for i, m := range []*Sendmail{a, b} {
		msgs := m.WaitMessages(t, 1, 20*time.Second)
		if len(msgs) != 1 || !strings.Contains(string(msgs[0]), fmt.Sprintf("Delivered-To: n%d@example.net\n", i)) {
			t.Errorf("instance %d got %q", i, msgs)
		}
		log := m.WaitLog(t, "stat=Sent", 10*time.Second)
		if strings.Contains(log, fmt.Sprintf("n%d@", 1-i)) {
			t.Errorf("instance %d logged the other's message:\n%s", i, log)
		}
	}
}

// Stop ends the daemon and every process it started, including a
// connection's process; the port is then closed, and Stop may be called
// again.
func TestStop(t *testing.T) {
	m := Start(t, Options{})
	// An open session: its process is a child of the daemon.
	s, _ := dial(t, m.Addr)
	s.cmd(250, "EHLO client.test")
	init := childOf(m.cmd.Process.Pid)
	if init == 0 {
		t.Fatal("no sendmail process under unshare")
	}
	nsLink, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		t.Fatal(err)
	}
	if n := nsMembers(nsLink); n < 2 {
		t.Errorf("%d processes in sendmail's namespace, want the session's too", n)
	}
	m.Stop(t)
	if n := nsMembers(nsLink); n != 0 {
		t.Fatalf("%d processes of %s alive after Stop", n, nsLink)
	}
	if c, err := net.DialTimeout("tcp", m.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", m.Addr)
	}
	m.Stop(t)
	if !strings.Contains(m.Log(t), "starting daemon") {
		t.Errorf("log after Stop: %q", m.Log(t))
	}
}

// nsMembers counts the processes whose PID namespace is link.
func nsMembers(link string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, ent := range entries {
		if l, err := os.Readlink("/proc/" + ent.Name() + "/ns/pid"); err == nil && l == link {
			n++
		}
	}
	return n
}

// Start fails with a message that names the fix when the unpacked tree is
// missing; this checks the check itself, with a root that holds nothing.
func TestCheckRootMissing(t *testing.T) {
	t.Setenv("MOAT_SENDMAIL_ROOT", t.TempDir())
	_, err := checkRoot()
	if err == nil || !strings.Contains(err.Error(), "install-test-deps.sh") {
		t.Fatalf("checkRoot with an empty root: %v", err)
	}
}

// Option addresses that could not be written into a rule safely are
// refused.
func TestOptionAddressChecked(t *testing.T) {
	for _, a := range []string{`a$b@x.test`, "a b@x.test", "nodomain", ""} {
		if checkAddr(a) == nil {
			t.Errorf("%q accepted", a)
		}
	}
	if err := checkAddr("a.b+c_d-e@x.test"); err != nil {
		t.Error(err)
	}
}
