package proxy

import (
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// eodRefusingPostfix refuses mail from eod-defer@client.test at the end of
// data (smtpd_end_of_data_restrictions). Postfix then keeps the envelope:
// the transaction stays open until RSET, and a MAIL gets
// "503 5.5.1 Error: nested MAIL command".
func eodRefusingPostfix(t *testing.T) *postfixtest.Postfix {
	return postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"smtpd_end_of_data_restrictions = check_sender_access inline:{eod-defer@client.test=DEFER}, permit",
	}})
}

// sendRefusedAtEOD sends one message that the upstream refuses at the end
// of data, through c.
func sendRefusedAtEOD(c *client) {
	c.t.Helper()
	c.cmd(250, "MAIL FROM:<eod-defer@client.test>")
	c.cmd(250, "RCPT TO:<bo@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: refused at the end\r\n\r\nbody\r\n.\r\n")
	c.expect(450)
}

// A message the upstream refuses at the end of data ends the transaction
// for the client (RFC 5321 §4.1.1.4), so its next MAIL — after RSET, as
// clients do, or not — must start a new one upstream too. Found by
// TestTransparency: moat took the upstream's transaction for over once it
// had sent the message, so neither moat nor the client's RSET reset it,
// and the next MAIL got the upstream's 503.
func TestUpstreamRefusalAtEndOfDataEndsTransaction(t *testing.T) {
	pf := eodRefusingPostfix(t)
	h := startProxy(t, pf.Addr, nil)
	c := ehloed(t, h.addr)

	sendRefusedAtEOD(c)
	c.cmd(250, "RSET")
	c.cmd(250, "MAIL FROM:<ana@client.test>")
	c.cmd(250, "RCPT TO:<bo@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: after RSET\r\n\r\nbody\r\n.\r\n")
	c.expect(250)

	sendRefusedAtEOD(c)
	c.cmd(250, "MAIL FROM:<ana@client.test>") // no RSET this time
	c.cmd(221, "QUIT")
	pf.WaitMessages(t, 1, 20*time.Second)
}

// Nor may the open transaction reach the next client through the pool.
func TestUpstreamRefusalAtEndOfDataNotPooledOpen(t *testing.T) {
	pf := eodRefusingPostfix(t)
	h := startProxy(t, pf.Addr, func(c *Config) {
		one := 1
		c.Upstream.PoolSize = &one
	})
	c := ehloed(t, h.addr)
	sendRefusedAtEOD(c)
	c.cmd(221, "QUIT")
	c.tp.ReadLine() // the close: moat has finished with the session and pooled its connection

	d := ehloed(t, h.addr)
	d.cmd(250, "MAIL FROM:<ana@client.test>")
	d.cmd(221, "QUIT")
}
