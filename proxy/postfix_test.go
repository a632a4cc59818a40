package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"moat/inspect/sequencer"
	"net"
	"net/smtp"
	"regexp"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// A message relayed through moat to a real Postfix arrives byte for byte as
// sent — 8-bit bytes, 998-character lines, lines starting with dots — with
// moat's Received header in front.
func TestRelayPreservesMessage(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)

	long := strings.Repeat("x", 998)
	// Date and Message-ID are present so that Postfix adds none of its own.
	msg := "From: Ana <ana@client.test>\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <relay-test@client.test>\r\n" +
		"To: bo@example.net\r\n" +
		"Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\r\n" +
		"\r\n" +
		"Gr\xc3\xbc\xc3\x9fe, caf\xe9 in Latin-1, \x80\xff raw bytes\r\n" +
		long + "\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		".\r\n" +
		"...\r\n" +
		" .space then dot\r\n" +
		"last line\r\n"

	c, err := smtp.Dial(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("ana@client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bo@example.net"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of data: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	got := pf.WaitMessages(t, 1, 20*time.Second)[0]
	want := lf([]byte(msg))
	if !bytes.HasSuffix(got, want) {
		t.Fatalf("delivered message does not end with the original.\ngot:\n%q\nwant suffix:\n%q", got, want)
	}
	// Right before the original: moat's Received header naming the HELO,
	// the client IP and moat.
	head := got[:len(got)-len(want)]
	re := regexp.MustCompile(`Received: from client\.test \(\[127\.0\.0\.1\]\)\n\tby moat\.test \(moat\) with ESMTP id [0-9A-Z]+\n\tfor <bo@example\.net>;\n\t[^\n]+\n$`)
	if !re.Match(head) {
		t.Fatalf("no moat Received header right before the message; headers added:\n%s", head)
	}
}

// Several transactions in one session travel over one upstream connection.
func TestSeveralMessagesOneSession(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)

	c := ehloed(t, h.addr)
	for i := range 3 {
		c.cmd(250, "MAIL FROM:<ana@client.test>")
		c.cmd(250, "RCPT TO:<bo@example.net>")
		c.cmd(354, "DATA")
		c.send(fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n.\r\n", i, i))
		c.expect(250)
	}
	// An aborted transaction in between is fine too.
	c.cmd(250, "MAIL FROM:<ana@client.test>")
	c.cmd(250, "RSET")
	c.cmd(221, "QUIT")

	msgs := pf.WaitMessages(t, 3, 20*time.Second)
	for i, m := range msgs {
		if !bytes.Contains(m, []byte(fmt.Sprintf("Subject: message %d\n", i))) {
			t.Errorf("message %d: %q", i, m)
		}
	}
	// Postfix's summary line for moat's one connection counts all four
	// MAILs; any other connection would carry a mail= count of its own.
	log := pf.WaitLog(t, "mail=4", 10*time.Second)
	if n := strings.Count(log, " mail="); n != 1 {
		t.Errorf("upstream saw %d connections with transactions, want one:\n%s", n, log)
	}
	if n := len(transactionLogs(h)); n != 4 {
		t.Errorf("%d transaction log lines, want 4 (3 delivered, 1 aborted):\n%s", n, h.logs.String())
	}
}

// A pipelined batch (RFC 2920) is answered in order, with each RCPT's
// upstream answer in its place, and a second batch after the data.
func TestPipelinedBatch(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)

	c := ehloed(t, h.addr)
	c.send("MAIL FROM:<ana@client.test>\r\n" +
		"RCPT TO:<one@example.net>\r\n" +
		"RCPT TO:<x@elsewhere.test>\r\n" +
		"RCPT TO:<two@example.net>\r\n" +
		"DATA\r\n")
	for i, want := range []int{250, 250, 550, 250, 354} {
		if code, msg := c.reply(); code != want {
			t.Fatalf("reply %d: %d %q, want %d", i, code, msg, want)
		}
	}
	c.send("Subject: pipelined\r\n\r\nhello\r\n.\r\nMAIL FROM:<ana@client.test>\r\nRCPT TO:<three@example.net>\r\nDATA\r\n")
	for i, want := range []int{250, 250, 250, 354} {
		if code, msg := c.reply(); code != want {
			t.Fatalf("second batch reply %d: %d %q, want %d", i, code, msg, want)
		}
	}
	c.send("Subject: second\r\n\r\nagain\r\n.\r\nQUIT\r\n")
	c.expect(250)
	c.expect(221)
	// Two recipients of the first message, one of the second.
	pf.WaitMessages(t, 3, 20*time.Second)
}

// The upstream's RCPT rejection reaches the client unchanged: code,
// enhanced code and text.
func TestRcptRejectionRelayedVerbatim(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)

	rcptReply := func(addr string) string {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		c := &client{t: t, nc: nc, tp: newTextproto(nc)}
		c.expect(220)
		c.cmd(250, "EHLO client.test")
		c.cmd(250, "MAIL FROM:<ana@client.test>")
		c.send("RCPT TO:<nobody@elsewhere.test>\r\n")
		code, msg := c.reply()
		c.cmd(221, "QUIT")
		return fmt.Sprintf("%d %s", code, msg)
	}
	direct := rcptReply(pf.Addr)
	via := rcptReply(h.addr)
	if !strings.HasPrefix(direct, "550 5.1.1 ") {
		t.Fatalf("Postfix itself answered %q; the test expects a recipient rejection", direct)
	}
	if via != direct {
		t.Fatalf("through moat: %q\ndirect:       %q", via, direct)
	}
	// The transaction log records the recipient with the upstream's reply.
	var entry struct {
		Rcpts []sequencer.RcptResult `json:"rcpts"`
	}
	logs := transactionLogs(h)
	if len(logs) != 1 {
		t.Fatalf("transaction log lines: %q", logs)
	}
	if err := json.Unmarshal([]byte(logs[0]), &entry); err != nil {
		t.Fatal(err)
	}
	if len(entry.Rcpts) != 1 || entry.Rcpts[0].Reply != direct {
		t.Fatalf("logged recipients %+v, want the reply %q", entry.Rcpts, direct)
	}
}

// The per-transaction log line carries what an operator greps for.
func TestTransactionLogLine(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<ana@client.test> SIZE=40")
	c.cmd(250, "RCPT TO:<bo@example.net>")
	c.cmd(550, "RCPT TO:<cy@elsewhere.test>")
	c.cmd(354, "DATA")
	c.send("Subject: log\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")

	logs := transactionLogs(h)
	if len(logs) != 1 {
		t.Fatalf("transaction log lines: %q", logs)
	}
	var e struct {
		ClientIP      string                 `json:"client_ip"`
		ClientPort    int                    `json:"client_port"`
		Helo          string                 `json:"helo"`
		MailFrom      string                 `json:"mail_from"`
		Rcpts         []sequencer.RcptResult `json:"rcpts"`
		Size          int                    `json:"size"`
		Verdict       string                 `json:"verdict"`
		UpstreamReply string                 `json:"upstream_reply"`
		Duration      *float64               `json:"duration_s"`
		Session       string                 `json:"session"`
	}
	if err := json.Unmarshal([]byte(logs[0]), &e); err != nil {
		t.Fatal(err)
	}
	if e.ClientIP != "127.0.0.1" || e.ClientPort == 0 || e.Helo != "client.test" ||
		e.MailFrom != "ana@client.test" || len(e.Rcpts) != 2 || e.Size != len("Subject: log\r\n\r\nbody\r\n") ||
		e.Verdict != "delivered" || !strings.HasPrefix(e.UpstreamReply, "250 2.0.0 Ok: queued as ") ||
		e.Duration == nil || e.Session == "" {
		t.Fatalf("log line %s\nparsed %+v", logs[0], e)
	}
	if !strings.HasPrefix(e.Rcpts[0].Reply, "250 ") || !strings.HasPrefix(e.Rcpts[1].Reply, "550 5.1.1") {
		t.Fatalf("recipient replies %+v", e.Rcpts)
	}
}

// With the upstream down, MAIL gets a 4xx and never a 250.
func TestUpstreamDownGives4xx(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now

	h := startProxy(t, dead, nil)
	c := ehloed(t, h.addr)
	msg := c.cmd(451, "MAIL FROM:<ana@client.test>")
	if !strings.HasPrefix(msg, "4.4.1 ") {
		t.Fatalf("MAIL with upstream down: %q", msg)
	}
	// The session goes on; the client may try again or leave.
	c.cmd(503, "RCPT TO:<bo@example.net>")
	c.cmd(221, "QUIT")
}

// Postfix dies while the client is sending the message: the client gets a
// 4xx, not a 250, and nothing is delivered. The next transaction finds the
// upstream gone and gets a 4xx at MAIL.
func TestUpstreamKilledMidData(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)

	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<ana@client.test>")
	c.cmd(250, "RCPT TO:<bo@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: doomed\r\n\r\nfirst half\r\n")
	pf.Stop(t)
	c.send("second half\r\n.\r\n")
	code, msg := c.reply()
	if code/100 != 4 {
		t.Fatalf("after the upstream died mid-DATA: %d %q, want 4xx", code, msg)
	}
	c.cmd(451, "MAIL FROM:<ana@client.test>")
	if n := len(pf.Messages(t)); n != 0 {
		t.Fatalf("%d messages delivered, want none", n)
	}
}

// SMTPUTF8 and DSN are offered only when the upstream has them: the real
// Postfix does, so after the probe they are offered and their parameters
// reach it; the scripted upstream does not, so they are neither offered
// nor accepted.
func TestUpstreamExtensionsPassThrough(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)
	if err := h.srv.ProbeUpstream(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := greeted(t, h.addr)
	ehlo := c.cmd(250, "EHLO client.test")
	if !strings.Contains(ehlo, "\nSMTPUTF8") || !strings.Contains(ehlo, "\nDSN") {
		t.Fatalf("EHLO reply with Postfix upstream lacks SMTPUTF8/DSN:\n%s", ehlo)
	}
	c.cmd(250, "MAIL FROM:<ana@client.test> SMTPUTF8 RET=HDRS ENVID=abc123 BODY=8BITMIME")
	c.cmd(250, "RCPT TO:<bö@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.net")
	c.cmd(354, "DATA")
	c.send("Subject: utf8\r\n\r\nGrüße\r\n.\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")
	if msg := pf.WaitMessages(t, 1, 20*time.Second)[0]; !bytes.Contains(msg, []byte("Delivered-To: bö@example.net")) {
		t.Fatalf("UTF-8 recipient not delivered as such:\n%s", msg)
	}

	up := startFakeUpstream(t, failNone)
	h2 := startProxy(t, up.addr, nil)
	if err := h2.srv.ProbeUpstream(t.Context()); err != nil {
		t.Fatal(err)
	}
	c2 := greeted(t, h2.addr)
	if ehlo := c2.cmd(250, "EHLO client.test"); strings.Contains(ehlo, "SMTPUTF8") || strings.Contains(ehlo, "\nDSN") {
		t.Fatalf("offered extensions the upstream lacks:\n%s", ehlo)
	}
	c2.cmd(555, "MAIL FROM:<ana@client.test> SMTPUTF8")
	c2.cmd(555, "MAIL FROM:<ana@client.test> RET=HDRS")
}
