package proxy

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"moat/internal/eximtest"
	"moat/internal/postfixtest"
)

// rawReply reads one reply and returns its lines as they came over the
// wire, without CRLF.
func (c *client) rawReply() []string {
	c.t.Helper()
	var lines []string
	for {
		line, err := c.tp.ReadLine()
		if err != nil {
			c.t.Fatalf("reading reply: %v (so far %q)", err, lines)
		}
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

// rawCmd sends a line and returns the reply's wire lines, failing unless
// its code is code.
func (c *client) rawCmd(code int, line string) []string {
	c.t.Helper()
	c.send(line + "\r\n")
	lines := c.rawReply()
	if !strings.HasPrefix(lines[0], strconv.Itoa(code)) {
		c.t.Fatalf("%q: got %q, want %d", line, lines, code)
	}
	return lines
}

// enhancedLine matches a reply line that carries an enhanced status code
// (RFC 2034 §3, RFC 3463 §2) of the reply's own class.
var enhancedLine = regexp.MustCompile(`^([245])\d\d[- ]([245])\.\d{1,3}\.\d{1,3}( |$)`)

// checkEnhanced fails the test for every line of reply that does not start
// with want, or, when want is "", with some enhanced code of its class.
func checkEnhanced(t *testing.T, what string, reply []string, want string) {
	t.Helper()
	for _, l := range reply {
		m := enhancedLine.FindStringSubmatch(l)
		switch {
		case m == nil || m[1] != m[2]:
			t.Errorf("%s: reply line %q carries no enhanced status code of its class", what, l)
		case want != "" && !strings.HasPrefix(l[4:], want+" ") && l[4:] != want:
			t.Errorf("%s: reply line %q, want enhanced code %s", what, l, want)
		}
	}
}

// Exim answers without enhanced status codes ("250 OK", "250 Accepted",
// "550 Administrative prohibition"). moat offered its client
// ENHANCEDSTATUSCODES, so every relayed 2xx/4xx/5xx reply must carry one
// (RFC 2034 §3): moat adds a fitting code and keeps Exim's text.
func TestEximRepliesGetEnhancedCodes(t *testing.T) {
	ex := eximtest.Start(t, eximtest.Options{
		DenySenders:     []string{"spam@client.test"},
		DenyRecipients:  []string{"denied@example.net"},
		DeferRecipients: []string{"later@example.net"},
		DenySubject:     "refuse this",
	})
	h := startProxy(t, ex.Addr, nil)
	c := ehloed(t, h.addr)

	checkEnhanced(t, "MAIL refused", c.rawCmd(550, "MAIL FROM:<spam@client.test>"), "5.0.0")

	mail := c.rawCmd(250, "MAIL FROM:<ana@client.test>")
	checkEnhanced(t, "MAIL", mail, "2.1.0")
	if mail[0] != "250 2.1.0 OK" {
		t.Errorf("MAIL reply %q, want Exim's text after the code", mail)
	}
	rcpt := c.rawCmd(250, "RCPT TO:<bo@example.net>")
	checkEnhanced(t, "RCPT accepted", rcpt, "2.1.5")
	if rcpt[0] != "250 2.1.5 Accepted" {
		t.Errorf("RCPT reply %q, want Exim's text after the code", rcpt)
	}
	denied := c.rawCmd(550, "RCPT TO:<denied@example.net>")
	checkEnhanced(t, "RCPT denied", denied, "5.0.0")
	checkEnhanced(t, "RCPT relaying", c.rawCmd(550, "RCPT TO:<someone@elsewhere.test>"), "5.0.0")
	checkEnhanced(t, "RCPT deferred", c.rawCmd(451, "RCPT TO:<later@example.net>"), "4.0.0")
	c.rawCmd(354, "DATA")
	c.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
	end := c.rawReply()
	if !strings.HasPrefix(end[0], "250 ") {
		t.Fatalf("end of data: %q", end)
	}
	checkEnhanced(t, "end of data", end, "2.0.0")
	if !strings.HasPrefix(end[0], "250 2.0.0 OK id=") {
		t.Errorf("end of data %q, want Exim's text after the code", end)
	}

	// A message refused at the end of data.
	c.rawCmd(250, "MAIL FROM:<ana@client.test>")
	c.rawCmd(250, "RCPT TO:<bo@example.net>")
	c.rawCmd(354, "DATA")
	c.send("Subject: please refuse this\r\n\r\nbody\r\n.\r\n")
	refused := c.rawReply()
	if !strings.HasPrefix(refused[0], "550") {
		t.Fatalf("end of data of a refused message: %q", refused)
	}
	checkEnhanced(t, "end of data refused", refused, "5.0.0")
	c.rawCmd(221, "QUIT")

	ex.WaitMessages(t, 1, 20*time.Second)
}

// A client that said HELO was offered no ENHANCEDSTATUSCODES, so Exim's
// replies reach it as Exim wrote them.
func TestEximRepliesAfterHeloUnchanged(t *testing.T) {
	ex := eximtest.Start(t, eximtest.Options{})
	h := startProxy(t, ex.Addr, nil)
	c := greeted(t, h.addr)
	c.cmd(250, "HELO client.test")
	if got := c.rawCmd(250, "MAIL FROM:<ana@client.test>"); got[0] != "250 OK" {
		t.Errorf("MAIL reply after HELO %q, want Exim's own \"250 OK\"", got)
	}
	if got := c.rawCmd(250, "RCPT TO:<bo@example.net>"); got[0] != "250 Accepted" {
		t.Errorf("RCPT reply after HELO %q, want Exim's own \"250 Accepted\"", got)
	}
}

// Postfix writes enhanced codes of its own; moat passes them on as they
// are, including ones moat would not have chosen (5.7.1 for a relay
// refusal, where moat's default would be 5.0.0).
func TestPostfixEnhancedCodesKept(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		// No permit_mynetworks: moat at 127.0.0.1 may not relay.
		"smtpd_relay_restrictions = reject_unauth_destination",
	}})
	h := startProxy(t, pf.Addr, nil)
	c := ehloed(t, h.addr)
	checkEnhanced(t, "MAIL", c.rawCmd(250, "MAIL FROM:<ana@client.test>"), "2.1.0")
	checkEnhanced(t, "RCPT", c.rawCmd(250, "RCPT TO:<bo@example.net>"), "2.1.5")
	relay := c.rawCmd(554, "RCPT TO:<someone@elsewhere.test>")
	checkEnhanced(t, "RCPT relaying", relay, "5.7.1")
	if !strings.Contains(relay[0], "Relay access denied") {
		t.Errorf("relay refusal %q, want Postfix's text", relay)
	}
	c.rawCmd(354, "DATA")
	c.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
	end := c.rawReply()
	if !strings.HasPrefix(end[0], "250 2.0.0 Ok: queued as ") {
		t.Errorf("end of data %q, want Postfix's own reply", end)
	}
	c.rawCmd(221, "QUIT")
	pf.WaitMessages(t, 1, 20*time.Second)
}
