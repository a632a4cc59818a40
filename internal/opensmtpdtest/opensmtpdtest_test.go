package opensmtpdtest

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

// The instance greets, applies the filters of its Options with their
// replies, refuses other domains, and delivers accepted mail into the
// Maildir, one file per recipient.
func TestStartDeliverAndRefuse(t *testing.T) {
	o := Start(t, Options{
		DenySenders:     []string{"spam@client.test"},
		DeferSenders:    []string{"slow@client.test"},
		DenyRecipients:  []string{"denied@example.net"},
		DeferRecipients: []string{"later@example.net"},
	})

	s, greeting := dial(t, o.Addr)
	if greeting != Hostname+" ESMTP OpenSMTPD" {
		t.Errorf("greeting %q", greeting)
	}
	ehlo := s.cmd(250, "EHLO client.test")
	for _, want := range []string{"ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 36700160", "DSN"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks %s: %q", want, ehlo)
		}
	}
	if strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO reply offers TLS or AUTH: %q", ehlo)
	}
	if got := s.cmd(550, "MAIL FROM:<spam@client.test>"); got != "5.7.1 Sender refused" {
		t.Errorf("denied sender: %q", got)
	}
	if got := s.cmd(451, "MAIL FROM:<slow@client.test>"); got != "4.7.1 Sender deferred" {
		t.Errorf("deferred sender: %q", got)
	}
	if got := s.cmd(250, "MAIL FROM:<ana@client.test>"); got != "2.0.0 Ok" {
		t.Errorf("MAIL reply text %q", got)
	}
	if got := s.cmd(250, "RCPT TO:<bo@example.net>"); got != "2.1.5 Destination address valid: Recipient ok" {
		t.Errorf("RCPT reply text %q", got)
	}
	s.cmd(250, "RCPT TO:<cy@example.net>")
	if got := s.cmd(550, "RCPT TO:<denied@example.net>"); got != "5.7.1 Recipient refused" {
		t.Errorf("denied recipient: %q", got)
	}
	if got := s.cmd(451, "RCPT TO:<later@example.net>"); got != "4.7.1 Recipient deferred" {
		t.Errorf("deferred recipient: %q", got)
	}
	if got := s.cmd(550, "RCPT TO:<someone@elsewhere.test>"); got != "Invalid recipient: <someone@elsewhere.test>" {
		t.Errorf("other domain: %q", got)
	}
	s.cmd(354, "DATA")
	if got := s.cmd(250, "Subject: first\r\n\r\nbody line\r\n."); !strings.HasSuffix(got, "Message accepted for delivery") {
		t.Errorf("end of data: %q", got)
	}

	s.cmd(250, "MAIL FROM:<ana@client.test>")
	s.cmd(250, "RCPT TO:<dee@example.net>")
	s.cmd(354, "DATA")
	s.cmd(250, "Subject: second\r\n\r\nother body\r\n.")
	s.cmd(221, "QUIT")

	msgs := o.WaitMessages(t, 3, 20*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("%d messages delivered, want 3", len(msgs))
	}
	byRcpt := map[string]string{}
	for _, m := range msgs {
		ms := string(m)
		if !strings.HasPrefix(ms, "Return-Path: <ana@client.test>\nDelivered-To: ") {
			t.Errorf("delivered message starts unexpectedly:\n%s", ms)
			continue
		}
		rcpt, _, _ := strings.Cut(strings.TrimPrefix(ms, "Return-Path: <ana@client.test>\nDelivered-To: "), "\n")
		byRcpt[rcpt] = ms
	}
	for rcpt, want := range map[string][]string{
		"bo@example.net":  {"Subject: first\n", "\nbody line\n", "by " + Hostname + " (OpenSMTPD)"},
		"cy@example.net":  {"Subject: first\n", "\nbody line\n"},
		"dee@example.net": {"Subject: second\n", "\nother body\n"},
	} {
		m, ok := byRcpt[rcpt]
		if !ok {
			t.Errorf("no message for %s; got %v", rcpt, msgs)
			continue
		}
		for _, w := range want {
			if !strings.Contains(m, w) {
				t.Errorf("message to %s lacks %q:\n%s", rcpt, w, m)
			}
		}
	}
	// The Maildir file is there before smtpd logs the delivery (after the
	// delivery agent exits); "rcpt=" is only in delivery lines.
	for _, rcpt := range []string{"bo", "cy", "dee"} {
		o.WaitLog(t, "rcpt=<"+rcpt+"@example.net>", 10*time.Second)
	}
	log := o.WaitLog(t, `result="550 Invalid recipient: <someone@elsewhere.test>"`, 10*time.Second)
	if n := strings.Count(log, "result=Ok stat=Delivered"); n != 3 {
		t.Errorf("log has %d deliveries, want 3:\n%s", n, log)
	}
}

// A message bigger than MessageSizeLimit is refused at the final dot, and
// the limit is advertised.
func TestMessageSizeLimit(t *testing.T) {
	o := Start(t, Options{MessageSizeLimit: 1000})
	s, _ := dial(t, o.Addr)
	if ehlo := s.cmd(250, "EHLO client.test"); !strings.Contains(ehlo, "SIZE 1000\n") {
		t.Errorf("EHLO reply: %q", ehlo)
	}
	s.cmd(250, "MAIL FROM:<ana@client.test>")
	s.cmd(250, "RCPT TO:<bo@example.net>")
	s.cmd(354, "DATA")
	got := s.cmd(554, "Subject: big\r\n\r\n"+strings.Repeat(strings.Repeat("x", 70)+"\r\n", 30)+".")
	if !strings.HasPrefix(got, "5.3.4 Message too big") {
		t.Errorf("oversized message: %q", got)
	}
	s.cmd(221, "QUIT")
	if msgs := o.Messages(t); len(msgs) != 0 {
		t.Errorf("%d messages delivered", len(msgs))
	}
}

// Every message of a connection carrying many transactions is delivered,
// up to MaxMessagesPerSession; the next MAIL is refused with 452.
func TestManyMessagesOneConnection(t *testing.T) {
	const n = 12
	o := Start(t, Options{MaxMessagesPerSession: n})
	s, _ := dial(t, o.Addr)
	s.cmd(250, "EHLO client.test")
	for i := range n {
		s.cmd(250, "MAIL FROM:<ana@client.test>")
		s.cmd(250, "RCPT TO:<bo@example.net>")
		s.cmd(354, "DATA")
		s.cmd(250, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n.", i))
	}
	if got := s.cmd(452, "MAIL FROM:<ana@client.test>"); got != "4.5.3 Too many recipients: Too many messages sent" {
		t.Errorf("MAIL after %d messages: %q", n, got)
	}
	s.cmd(221, "QUIT")
	o.WaitMessages(t, n, 20*time.Second)
}

// Two instances run side by side, each with its own queue: the compiled-in
// /var/spool/smtpd and /var/run/smtpd.sock are private to each.
func TestParallelInstances(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	for i, o := range []*OpenSMTPD{a, b} {
		s, _ := dial(t, o.Addr)
		s.cmd(250, "EHLO client.test")
		s.cmd(250, "MAIL FROM:<ana@client.test>")
		s.cmd(250, fmt.Sprintf("RCPT TO:<n%d@example.net>", i))
		s.cmd(354, "DATA")
		s.cmd(250, fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n.", i))
		s.cmd(221, "QUIT")
	}
	for i, o := range []*OpenSMTPD{a, b} {
		msgs := o.WaitMessages(t, 1, 20*time.Second)
		if len(msgs) != 1 || !strings.Contains(string(msgs[0]), fmt.Sprintf("Delivered-To: n%d@example.net\n", i)) {
			t.Errorf("instance %d got %q", i, msgs)
		}
	}
	if _, err := os.Stat("/var/spool/smtpd"); err == nil {
		t.Error("/var/spool/smtpd exists outside the namespaces")
	}
}

// Stop ends the daemon and every process it started; the port is then
// closed, and Stop may be called again.
func TestStop(t *testing.T) {
	o := Start(t, Options{})
	unsharePid := o.cmd.Process.Pid
	init := childOf(unsharePid)
	if init == 0 {
		t.Fatal("no smtpd process under unshare")
	}
	nsLink, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		t.Fatal(err)
	}
	if n := nsMembers(nsLink); n < 2 {
		t.Errorf("%d processes in smtpd's namespace, want its privilege-separated processes too", n)
	}
	o.Stop(t)
	if n := nsMembers(nsLink); n != 0 {
		t.Fatalf("%d processes of %s alive after Stop", n, nsLink)
	}
	if c, err := net.DialTimeout("tcp", o.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", o.Addr)
	}
	o.Stop(t)
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
	t.Setenv("MOAT_OPENSMTPD_ROOT", t.TempDir())
	_, err := checkRoot()
	if err == nil || !strings.Contains(err.Error(), "install-test-deps.sh") {
		t.Fatalf("checkRoot with an empty root: %v", err)
	}
}

// Option addresses that smtpd.conf could not quote safely are refused.
func TestOptionAddressChecked(t *testing.T) {
	if _, err := filters(Options{DenySenders: []string{`a"b@x.test`}}); err == nil {
		t.Error("a quote in an address was accepted")
	}
	conf, err := filters(Options{DenyRecipients: []string{"a@x.test", "b@x.test"}})
	if err != nil || !strings.Contains(conf, `table denyrcpts { "a@x.test", "b@x.test" }`) || !strings.Contains(conf, `filter "moat" chain { "denyrcpts" }`) {
		t.Errorf("filters: %v\n%s", err, conf)
	}
}
