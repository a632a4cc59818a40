package eximtest

import (
	"fmt"
	"moat/internal/mtatest"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

// session is a raw SMTP client that records every reply line.
type session struct {
	t  *testing.T
	tp *textproto.Conn
}

func dial(t *testing.T, addr string) *session {
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
	s.expect(220)
	return s
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

// The instance greets, applies the ACLs of its Options with Exim's own
// legacy replies (no enhanced status codes), and delivers accepted mail into
// the Maildir.
func TestStartDeliverAndRefuse(t *testing.T) {
	e := Start(t, Options{
		DenySenders:     []string{"spam@client.test"},
		DenyRecipients:  []string{"denied@example.net"},
		DeferRecipients: []string{"later@example.net"},
		DenySubject:     "reject me",
	})

	s := dial(t, e.Addr)
	ehlo := s.cmd(250, "EHLO client.test")
	if !strings.Contains(ehlo, "PIPELINING") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO reply: %q", ehlo)
	}
	s.cmd(550, "MAIL FROM:<spam@client.test>")
	if got := s.cmd(250, "MAIL FROM:<ana@client.test>"); got != "OK" {
		t.Errorf("MAIL reply text %q, want Exim's legacy \"OK\"", got)
	}
	if got := s.cmd(250, "RCPT TO:<bo@example.net>"); got != "Accepted" {
		t.Errorf("RCPT reply text %q, want \"Accepted\"", got)
	}
	s.cmd(550, "RCPT TO:<denied@example.net>")
	s.cmd(451, "RCPT TO:<later@example.net>")
	s.cmd(550, "RCPT TO:<someone@elsewhere.test>")
	s.cmd(354, "DATA")
	s.cmd(250, "Subject: hello\r\n\r\nbody line\r\n.")

	s.cmd(250, "MAIL FROM:<ana@client.test>")
	s.cmd(250, "RCPT TO:<bo@example.net>")
	s.cmd(354, "DATA")
	s.cmd(550, "Subject: please reject me now\r\n\r\nbody\r\n.")
	s.cmd(221, "QUIT")

	msgs := e.WaitMessages(t, 1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	m := string(msgs[0])
	for _, want := range []string{"Envelope-to: bo@example.net\n", "Subject: hello\n", "\nbody line\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, m)
		}
	}
	e.WaitLog(t, "=> bo <bo@example.net>", 10*time.Second)
}

// Stop ends the daemon and every process it started; the port is then
// closed, and Stop may be called again.
func TestStop(t *testing.T) {
	e := Start(t, Options{})
	pgid := e.cmd.Process.Pid
	e.Stop(t)
	if mtatest.GroupAlive(pgid) {
		t.Fatal("exim processes alive after Stop")
	}
	if c, err := net.DialTimeout("tcp", e.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", e.Addr)
	}
	e.Stop(t)
}

// Every message of a connection carrying many transactions is delivered
// at once, not only the first ten (smtp_accept_queue_per_connection), so
// tests that send many messages through one pooled upstream connection
// need no queue run.
func TestManyMessagesOneConnection(t *testing.T) {
	e := Start(t, Options{})
	nc, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tp := textproto.NewConn(nc)
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	if err := tp.PrintfLine("EHLO client.test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tp.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	const n = 12
	for i := range n {
		for _, step := range []struct {
			line string
			code int
		}{
			{"MAIL FROM:<ana@client.test>", 250},
			{"RCPT TO:<bo@example.net>", 250},
			{"DATA", 354},
			{fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n.", i), 250},
		} {
			if err := tp.PrintfLine("%s", step.line); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := tp.ReadResponse(step.code); err != nil {
				t.Fatalf("message %d, %q: %v %s", i, step.line, err, msg)
			}
		}
	}
	e.WaitMessages(t, n, 20*time.Second)
}

// Start fails with a message that names the fix when the unpacked binary is
// missing; this checks the check itself, with a root that holds nothing.
func TestCheckBinaryMissing(t *testing.T) {
	t.Setenv("MOAT_EXIM_ROOT", t.TempDir())
	_, err := checkBinary()
	if err == nil || !strings.Contains(err.Error(), "install-test-deps.sh") {
		t.Fatalf("checkBinary with an empty root: %v", err)
	}
	if _, err := os.Stat(DefaultRoot); err != nil {
		t.Logf("note: %s is missing too: %v", DefaultRoot, err)
	}
}

// A sending instance queues what Sendmail submits, and RunQueue delivers
// it to its RelayTo, here a receiving instance; a recipient the receiver
// defers stays queued and is tried again by the next forced run.
func TestRelayTo(t *testing.T) {
	rcv := Start(t, Options{DeferRecipients: []string{"later@example.net"}})
	snd := Start(t, Options{RelayTo: rcv.Addr})
	for i := range 3 {
		to := []string{fmt.Sprintf("u%d@example.net", i)}
		if i == 0 {
			to = append(to, "later@example.net")
		}
		snd.Sendmail(t, "ana@client.test", to, []byte(fmt.Sprintf("Subject: relayed %d\n\nline\n.\nlast line\n", i)))
	}
	if n := snd.Queued(t); n != 3 {
		t.Fatalf("%d messages queued, want 3 (nothing delivered before RunQueue)", n)
	}
	snd.RunQueue(t, "")
	msgs := rcv.WaitMessages(t, 3, 10*time.Second)
	for _, m := range msgs {
		if !strings.Contains(string(m), "\nline\n.\nlast line\n") || !strings.Contains(string(m), "(helo="+SenderHostname+")") {
			t.Errorf("relayed message:\n%s", m)
		}
	}
	if n := snd.Queued(t); n != 1 {
		t.Fatalf("%d messages queued after the run, want the one for later@", n)
	}
	// A forced run may try a deferred message more than once: each
	// delivery over a continued connection looks for more mail waiting
	// for that host, and the deferred one is still waiting.
	deferrals := func() int { return strings.Count(snd.Log(t), "== later@example.net") }
	first := deferrals()
	out := snd.RunQueue(t, "+transport")
	if !strings.Contains(out, "SMTP|> RCPT TO:<later@example.net>") {
		t.Errorf("debug output of the second run lacks the dialogue:\n%s", mtatest.LastLines(out, 40))
	}
	if first == 0 || deferrals() == first || snd.Queued(t) != 1 {
		t.Errorf("later@ deferred %d times in the first run, %d in the second, %d queued:\n%s", first, deferrals()-first, snd.Queued(t), snd.Log(t))
	}
}
