package postfixtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"moat/internal/mtatest"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

const wait = 10 * time.Second

// sendMail sends one message with net/smtp, which dot-stuffs and uses
// BODY=8BITMIME when the server offers it.
func sendMail(t *testing.T, addr, rcpt, subject, body string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: sender@example.org\r\nTo: %s\r\nSubject: %s\r\n\r\n%s", rcpt, subject, body)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestSendMail(t *testing.T) {
	start := time.Now()
	p := Start(t, Options{})
	t.Logf("Start took %v", time.Since(start))

	body := "Grüße aus Köln\r\n.leading dot\r\nlast line\r\n"
	sendMail(t, p.Addr, "rcpt@example.net", "first", body)
	msgs := p.WaitMessages(t, 1, wait)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := string(msgs[0])
	for _, want := range []string{
		"Delivered-To: rcpt@example.net\n",
		"Subject: first\n",
		"\n\nGrüße aus Köln\n.leading dot\nlast line\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("message lacks %q:\n%s", want, m)
		}
	}
	if strings.Contains(m, "..leading") {
		t.Errorf("dot not unstuffed:\n%s", m)
	}
	// The delivery's own line: postlogd writes it a moment after the
	// message is in the maildir, so wait for it rather than for an
	// earlier line.
	log := p.WaitLog(t, "to=<rcpt@example.net>, relay=virtual", wait)
	if !strings.Contains(log, "client=unknown[127.0.0.1]") {
		t.Errorf("maillog lacks the client:\n%s", log)
	}

	// A second message sorts after the first.
	sendMail(t, p.Addr, "other@example.net", "second", "two\r\n")
	msgs = p.WaitMessages(t, 2, wait)
	if len(msgs) != 2 || !bytes.Contains(msgs[0], []byte("Subject: first")) || !bytes.Contains(msgs[1], []byte("Subject: second")) {
		t.Errorf("messages out of delivery order: %q", msgs)
	}
	if got := len(p.Messages(t)); got != 2 {
		t.Errorf("Messages returned %d, want 2", got)
	}
}

func TestXClient(t *testing.T) {
	p := Start(t, Options{XClient: true})
	c, greeting := mtatest.Dial(t, p.Addr)
	if greeting != Hostname+" ESMTP" {
		t.Errorf("greeting = %q", greeting)
	}
	if ehlo := c.Do(250, "EHLO client.test"); !strings.Contains(ehlo, "XCLIENT") {
		t.Fatalf("XCLIENT not offered:\n%s", ehlo)
	}
	// Postfix answers XCLIENT with a new greeting (and forgets EHLO).
	greeting = c.Do(220, "XCLIENT ADDR=192.0.2.7")
	if greeting != Hostname+" ESMTP" {
		t.Errorf("greeting after XCLIENT = %q", greeting)
	}
	c.Do(250, "EHLO client.test")
	c.Send("sender@example.org", []string{"rcpt@example.net"}, "Subject: via xclient\r\n\r\nhello\r\n")
	c.Do(221, "QUIT")

	p.WaitMessages(t, 1, wait)
	p.WaitLog(t, "client=unknown[192.0.2.7]", wait)
}

func TestProxyProtocolAndSize(t *testing.T) {
	p := Start(t, Options{ProxyProtocol: true, MessageSizeLimit: 4096})
	nc, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(nc, "PROXY TCP4 198.51.100.9 127.0.0.1 40000 25\r\n"); err != nil {
		t.Fatal(err)
	}
	c, _ := mtatest.NewSession(t, nc)
	if ehlo := c.Do(250, "EHLO client.test"); !strings.Contains(ehlo, "SIZE 4096") {
		t.Errorf("EHLO does not advertise SIZE 4096:\n%s", ehlo)
	}
	c.Do(552, "MAIL FROM:<sender@example.org> SIZE=5000")
	// Postfix remembers the refused SIZE: without RSET the next MAIL, even
	// without SIZE, gets the same 552.
	c.Do(250, "RSET")
	c.Send("sender@example.org", []string{"rcpt@example.net"}, "Subject: via proxy\r\n\r\nhello\r\n")
	p.WaitMessages(t, 1, wait)
	p.WaitLog(t, "client=unknown[198.51.100.9]", wait)
}

func TestExtraMainCF(t *testing.T) {
	p := Start(t, Options{ExtraMainCF: []string{
		"smtpd_banner = $myhostname ESMTP extra",
		"smtpd_recipient_restrictions =",
		"    check_recipient_access inline:{refused@example.net=REJECT}",
	}})
	c, greeting := mtatest.Dial(t, p.Addr)
	if greeting != Hostname+" ESMTP extra" {
		t.Errorf("greeting = %q", greeting)
	}
	c.Do(250, "EHLO client.test")
	c.Do(250, "MAIL FROM:<sender@example.org>")
	c.Do(554, "RCPT TO:<refused@example.net>")
	c.Do(250, "RCPT TO:<rcpt@example.net>")
	c.Do(221, "QUIT")
	if log := p.Log(t); strings.Contains(log, "overriding earlier entry") {
		t.Errorf("main.cf has a duplicate key:\n%s", log)
	}
	if cf := mainCF("/tmp/x", Options{ExtraMainCF: []string{"smtpd_banner = x"}}); strings.Count(cf, "smtpd_banner") != 1 {
		t.Errorf("smtpd_banner set twice:\n%s", cf)
	}
}

func TestTwoInstances(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	if a.Addr == b.Addr || a.Dir == b.Dir || a.pid == b.pid {
		t.Fatalf("instances share an address, directory or master: %+v %+v", a, b)
	}
	sendMail(t, a.Addr, "rcpt@example.net", "to a", "a\r\n")
	sendMail(t, b.Addr, "rcpt@example.net", "to b", "b\r\n")
	ma := a.WaitMessages(t, 1, wait)
	mb := b.WaitMessages(t, 1, wait)
	if len(ma) != 1 || !bytes.Contains(ma[0], []byte("Subject: to a")) {
		t.Errorf("instance a got %q", ma)
	}
	if len(mb) != 1 || !bytes.Contains(mb[0], []byte("Subject: to b")) {
		t.Errorf("instance b got %q", mb)
	}
	if la := a.Log(t); !strings.Contains(la, a.Dir) || strings.Contains(la, b.Dir) {
		t.Errorf("instance a's log is not its own:\n%s", la)
	}
}

func TestStop(t *testing.T) {
	p := Start(t, Options{})
	c, _ := mtatest.Dial(t, p.Addr)
	c.Do(250, "EHLO client.test")
	if !mtatest.GroupAlive(p.pid) {
		t.Fatalf("no process in the group of master %d", p.pid)
	}

	start := time.Now()
	p.Stop(t)
	t.Logf("Stop took %v", time.Since(start))
	if mtatest.GroupAlive(p.pid) {
		t.Errorf("master %d or its children survive Stop", p.pid)
	}
	// The open session is cut, and nobody listens any more.
	c.W.WriteString("NOOP\r\n")
	c.W.Flush()
	if _, _, err := c.ReadResponse(250); err == nil || !isClosed(err) {
		t.Errorf("session survives Stop: %v", err)
	}
	if nc, err := net.Dial("tcp", p.Addr); err == nil {
		nc.Close()
		t.Errorf("%s still accepts connections", p.Addr)
	}
	p.Stop(t) // idempotent
	if len(p.Messages(t)) != 0 {
		t.Error("messages appeared")
	}
	// No log assertion: postlogd dies in the same breath as master, so
	// whether "aborting the Postfix mail system" reaches the maillog is a
	// race (seen both ways on this machine).
}

// isClosed reports whether err means the server closed the connection (or
// said 421 on its way out).
func isClosed(err error) bool {
	var perr *textproto.Error
	if errors.As(err, &perr) {
		return perr.Code == 421
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "reset by peer")
}

// A sending instance relays whatever it is given to its RelayTo, here a
// receiving instance, with its own SMTP client; a lone dot in a message
// submitted by Sendmail is text.
func TestRelayTo(t *testing.T) {
	rcv := Start(t, Options{})
	snd := Start(t, Options{RelayTo: rcv.Addr})
	if cf := mainCF("/tmp/x", Options{RelayTo: "127.0.0.1:2525"}); !strings.Contains(cf, "relayhost = [127.0.0.1]:2525\n") ||
		strings.Count(cf, "\nmyhostname = ") != 1 || !strings.Contains(cf, "virtual_mailbox_domains = \n") {
		t.Errorf("main.cf of a sender:\n%s", cf)
	}
	for i := range 3 {
		snd.Sendmail(t, "ana@client.test", []string{fmt.Sprintf("u%d@example.net", i)},
			[]byte(fmt.Sprintf("Subject: relayed %d\n\nline\n.\nlast line\n", i)))
	}
	msgs := rcv.WaitMessages(t, 3, wait)
	for _, m := range msgs {
		if !bytes.Contains(m, []byte("\nline\n.\nlast line\n")) || !bytes.Contains(m, []byte("Received: from "+SenderHostname)) {
			t.Errorf("relayed message:\n%s", m)
		}
	}
	snd.WaitLog(t, "relay=127.0.0.1[127.0.0.1]:"+rcv.Addr[strings.LastIndexByte(rcv.Addr, ':')+1:], wait)
	if !mtatest.WaitFor(wait, func() bool { return snd.Queued(t) == 0 }) {
		t.Errorf("sender queue holds %d messages", snd.Queued(t))
	}
	snd.Flush(t) // an empty queue flushes fine
}

// TestSASLMainCF checks the main.cf of Options.SASLPath; the SASL exchange
// itself is tested against a real Dovecot in internal/dovecottest.
func TestSASLMainCF(t *testing.T) {
	cf := mainCF("/tmp/x", Options{SASLPath: "/tmp/dc1/run/auth-postfix"})
	for _, want := range []string{
		"\nsmtpd_sasl_auth_enable = yes\n",
		"\nsmtpd_sasl_type = dovecot\n",
		"\nsmtpd_sasl_path = /tmp/dc1/run/auth-postfix\n",
		"\nsmtpd_sasl_security_options = noanonymous\n",
		"\nsmtpd_tls_auth_only = no\n",
		"\nsmtpd_error_sleep_time = 0\n",
	} {
		if !strings.Contains(cf, want) {
			t.Errorf("main.cf lacks %q:\n%s", want, cf)
		}
	}
	if cf := mainCF("/tmp/x", Options{}); strings.Contains(cf, "sasl") || strings.Contains(cf, "smtpd_error_sleep_time") {
		t.Errorf("main.cf without SASLPath:\n%s", cf)
	}
}
