package proxy

import (
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/internal/postfixtest"
	"moat/rules"
)

// A client that uses STARTTLS must EHLO again (RFC 3207 §4.2), and one may
// EHLO again after RSET or simply twice: each time the helo stage runs
// again, and its result replaces the earlier one. The helo rules used to
// be counted once per EHLO: X-Spam-Score 6.0 and
// tests=HELO_NOT_FQDN,HELO_NOT_FQDN for a 3-point rule after STARTTLS.
func TestHeloRulesCountOnceAcrossEHLOs(t *testing.T) {
	set, err := rules.Parse("t.yaml", []byte(`
thresholds: {tag: 2, reject: 100}
rules:
  - {name: HELO_NOT_FQDN, stage: helo, when: {helo_fqdn: false}, score: 3}
`), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := inspect.New(inspect.Config{Judge: set})
	if err != nil {
		t.Fatal(err)
	}
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxyEngine(t, pf.Addr, engine, nil)

	send := func(c *client, subject string) {
		c.cmd(250, "MAIL FROM:<a@client.test>")
		c.cmd(250, "RCPT TO:<b@example.net>")
		c.cmd(354, "DATA")
		c.send("Subject: " + subject + "\r\n\r\nbody\r\n.\r\n")
		c.expect(250)
	}
	// STARTTLS, then the EHLO that TLS requires.
	c := dial(t, h.addr)
	c.expect(220)
	c.cmd(250, "EHLO client")
	tc := c.startTLS(insecure)
	tc.cmd(250, "EHLO client")
	send(tc, "after-starttls")
	// RSET and EHLO again, then EHLO twice in a row, on the same session.
	tc.cmd(250, "RSET")
	tc.cmd(250, "EHLO client")
	tc.cmd(250, "EHLO client")
	send(tc, "after-rset-ehlo")
	tc.cmd(221, "QUIT")

	msgs := pf.WaitMessages(t, 2, 20*time.Second)
	for _, m := range msgs {
		s := string(m)
		if !strings.Contains(s, "\nX-Spam-Score: 3.0\n") {
			t.Errorf("want X-Spam-Score: 3.0 (one helo rule, once):\n%s", s)
		}
		if !strings.Contains(s, " tests=HELO_NOT_FQDN\n") {
			t.Errorf("want tests=HELO_NOT_FQDN once:\n%s", s)
		}
	}
}
