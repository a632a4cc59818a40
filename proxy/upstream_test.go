package proxy

import (
	"bufio"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
	"moat/internal/postfixtest"
	"moat/rules"
)

// refusingPostfix is a Postfix whose smtpd_data_restrictions refuse DATA
// for two senders, deferdata@ with 450 and rejectdata@ with 554, and
// whose header_checks refuse a message with "Subject: refuse me" at the
// end of data; every other sender and message goes through.
func refusingPostfix(t *testing.T) *postfixtest.Postfix {
	t.Helper()
	return postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"smtpd_data_restrictions = check_sender_access inline:{" +
			"{deferdata@client.test = 450 4.7.1 DATA deferred by policy}, " +
			"{rejectdata@client.test = 554 5.7.1 DATA refused by policy}}",
		"header_checks = regexp:{{/^Subject: refuse me/ REJECT header refused by policy}}",
	}})
}

// An upstream that refuses DATA (RFC 5321 §4.1.1.4: a 4xx or 5xx instead
// of 354) still holds the transaction's MAIL and RCPTs; moat must RSET it
// (§4.1.1.5) so that the client's next transaction in the same session
// starts clean instead of meeting "503 nested MAIL command".
func TestUpstreamDataRefusalEndsUpstreamTransaction(t *testing.T) {
	pf := refusingPostfix(t)
	h := startProxy(t, pf.Addr, nil)
	for _, tt := range []struct {
		sender string
		bdat   bool // the client sends BDAT, which moat relays as DATA
		code   int
		enh    string
	}{
		{"deferdata@client.test", false, 450, "4.7.1"},
		{"rejectdata@client.test", false, 554, "5.7.1"},
		{"deferdata@client.test", true, 450, "4.7.1"},
	} {
		name := tt.sender
		if tt.bdat {
			name += "/BDAT"
		}
		t.Run(name, func(t *testing.T) {
			c := ehloed(t, h.addr)
			c.cmd(250, "MAIL FROM:<"+tt.sender+">")
			c.cmd(250, "RCPT TO:<bo@example.net>")
			body := "Subject: refused\r\n\r\nbody\r\n"
			if tt.bdat {
				c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
			} else {
				c.cmd(354, "DATA")
				c.send(body + ".\r\n")
			}
			if msg := c.expect(tt.code); !strings.HasPrefix(msg, tt.enh+" ") {
				t.Fatalf("refused DATA: %d %q", tt.code, msg)
			}
			c.cmd(250, "RSET")
			c.cmd(250, "MAIL FROM:<ana@client.test>")
			c.cmd(250, "RCPT TO:<bo@example.net>")
			c.cmd(354, "DATA")
			c.send("Subject: after " + tt.sender + "\r\n\r\nbody\r\n.\r\n")
			c.expect(250)
			c.cmd(221, "QUIT")
		})
	}
	pf.WaitMessages(t, 3, 20*time.Second)
}

// A refusal after the message (Postfix's header_checks REJECT) is the
// upstream's final reply: its transaction is over, and the next one in
// the session goes through.
func TestUpstreamEndOfDataRejectThenNextTransaction(t *testing.T) {
	pf := refusingPostfix(t)
	h := startProxy(t, pf.Addr, nil)
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<ana@client.test>")
	c.cmd(250, "RCPT TO:<bo@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: refuse me\r\n\r\nbody\r\n.\r\n")
	if msg := c.expect(550); !strings.Contains(msg, "header refused by policy") {
		t.Fatalf("end-of-data reject: %q", msg)
	}
	c.cmd(250, "MAIL FROM:<ana@client.test>")
	c.cmd(250, "RCPT TO:<bo@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: fine\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")
	if msgs := pf.WaitMessages(t, 1, 20*time.Second); !strings.Contains(string(msgs[0]), "Subject: fine") {
		t.Fatalf("delivered:\n%s", msgs[0])
	}
}

// A message refused by moat's own data stage ends the upstream's
// transaction too: the next transaction on the same session and upstream
// connection goes through.
func TestDataStageRejectThenNextTransaction(t *testing.T) {
	set, err := rules.Parse("t.yaml", []byte(`rules:
  - {name: NO_SPAM, stage: data, when: {header: {name: subject, matches: '^spam'}}, action: reject, reply: "550 5.7.1 no spam"}
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
	c := ehloed(t, h.addr)
	for _, subject := range []string{"spam spam", "ham"} {
		c.cmd(250, "MAIL FROM:<ana@client.test>")
		c.cmd(250, "RCPT TO:<bo@example.net>")
		c.cmd(354, "DATA")
		c.send("Subject: " + subject + "\r\n\r\nbody\r\n.\r\n")
		if subject == "ham" {
			c.expect(250)
		} else {
			c.expect(550)
		}
	}
	c.cmd(221, "QUIT")
	pf.WaitMessages(t, 1, 20*time.Second)
}

// With upstream.pool_size, a connection whose DATA the upstream refused
// goes back to the pool only with its transaction ended: the next
// client's session on it gets its mail through.
func TestUpstreamPoolAfterDataRefusal(t *testing.T) {
	pf := refusingPostfix(t)
	pool := 2
	h := startProxy(t, pf.Addr, func(c *Config) { c.Upstream.PoolSize = &pool })
	for _, sender := range []string{"deferdata@client.test", "rejectdata@client.test"} {
		c := ehloed(t, h.addr)
		c.cmd(250, "MAIL FROM:<"+sender+">")
		c.cmd(250, "RCPT TO:<bo@example.net>")
		c.cmd(354, "DATA")
		c.send("Subject: refused\r\n\r\nbody\r\n.\r\n")
		if code, msg := c.reply(); code/100 != 4 && code/100 != 5 {
			t.Fatalf("refused DATA: %d %q", code, msg)
		}
		c.cmd(221, "QUIT")
		waitClosed(t, c)

		next := ehloed(t, h.addr)
		next.cmd(250, "MAIL FROM:<ana@client.test>")
		next.cmd(250, "RCPT TO:<bo@example.net>")
		next.cmd(354, "DATA")
		next.send("Subject: next client\r\n\r\nbody\r\n.\r\n")
		next.expect(250)
		next.cmd(221, "QUIT")
		waitClosed(t, next)
	}
	// A client that vanishes inside a transaction: its upstream
	// connection, with MAIL and RCPT open, is not pooled, and the next
	// client gets a fresh one.
	gone := ehloed(t, h.addr)
	gone.cmd(250, "MAIL FROM:<ana@client.test>")
	gone.cmd(250, "RCPT TO:<bo@example.net>")
	gone.nc.Close()
	waitFor(t, func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return len(h.srv.conns) == 0
	})
	last := ehloed(t, h.addr)
	last.sendMessage("after a vanished client")
	pf.WaitMessages(t, 3, 20*time.Second)
	// The first connection served the four sessions around the refusals
	// (the refused ones were RSET and pooled, not dropped); the vanished
	// client's was dropped, so the last session needed a second one. The
	// remaining connect is postfixtest's readiness probe.
	if n := strings.Count(pf.Log(t), ": connect from"); n != 3 {
		t.Errorf("upstream saw %d connections, want 3 (probe, pooled, after the vanished client)", n)
	}
}

// waitClosed reads until moat closes the session, so that its upstream
// connection is back in the pool (or closed) before the test goes on.
func waitClosed(t *testing.T, c *client) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			if strings.Contains(err.Error(), "timeout") {
				t.Fatal("moat did not close the session after QUIT")
			}
			return
		}
	}
}

// A reload (SIGHUP) to another upstream address stops the pool's
// connections to the old one from being used: the next session's mail
// reaches the new upstream, and the old pooled connection is closed.
func TestUpstreamPoolReload(t *testing.T) {
	oldPF := postfixtest.Start(t, postfixtest.Options{})
	newPF := postfixtest.Start(t, postfixtest.Options{})
	pool := 4
	h := startProxy(t, oldPF.Addr, func(c *Config) { c.Upstream.PoolSize = &pool })
	sendThrough := func(subject string) {
		t.Helper()
		c := ehloed(t, h.addr)
		c.cmd(250, "MAIL FROM:<ana@client.test>")
		c.cmd(250, "RCPT TO:<bo@example.net>")
		c.cmd(354, "DATA")
		c.send("Subject: " + subject + "\r\n\r\nbody\r\n.\r\n")
		c.expect(250)
		c.cmd(221, "QUIT")
		waitClosed(t, c)
	}
	sendThrough("before reload")
	oldPF.WaitMessages(t, 1, 20*time.Second)

	cfg := h.srv.Config()
	cfg.Upstream.Address = HostPort(newPF.Addr)
	if err := h.srv.Reload(cfg, nil); err != nil {
		t.Fatal(err)
	}
	sendThrough("after reload")
	if msg := newPF.WaitMessages(t, 1, 20*time.Second)[0]; !strings.Contains(string(msg), "Subject: after reload") {
		t.Fatalf("new upstream got:\n%s", msg)
	}
	// The pooled connection to the old upstream says QUIT and goes.
	oldPF.WaitLog(t, "mail=1 rcpt=1 data=1 quit=1", 10*time.Second)
	if n := len(oldPF.Messages(t)); n != 1 {
		t.Fatalf("old upstream has %d messages, want 1", n)
	}
}

// A pooled connection is reused only for upstream.pool_max_age from its
// connect: being put back does not make it younger. And one made under
// an older configuration is not reused at all.
func TestUpstreamPoolAge(t *testing.T) {
	size := 4
	cfg := testConfig("127.0.0.1:25")
	cfg.Upstream.PoolSize = &size
	cfg.Defaults()
	newUp := func(dialed time.Time, cfg *Config) *upstream {
		a, b := net.Pipe()
		b.Close() // quit's QUIT fails at once; the pipe closes
		return &upstream{cfg: &cfg.Upstream, nc: a, r: bufio.NewReader(a), w: bufio.NewWriter(a), dialed: dialed}
	}
	var p upstreamPool
	old := newUp(time.Now().Add(-cfg.Upstream.PoolMaxAge-time.Second), &cfg)
	if p.put(old, &cfg) {
		t.Fatal("a connection older than pool_max_age was pooled")
	}
	fresh := newUp(time.Now(), &cfg)
	if !p.put(fresh, &cfg) {
		t.Fatal("a fresh connection was not pooled")
	}
	// Make it look older than its age allows while it sits in the pool.
	fresh.dialed = time.Now().Add(-cfg.Upstream.PoolMaxAge - time.Second)
	if u := p.get(&cfg); u != nil {
		t.Fatal("got a connection older than pool_max_age from the pool")
	}

	reloaded := cfg // the same settings, but another configuration
	u := newUp(time.Now(), &cfg)
	if !p.put(u, &cfg) {
		t.Fatal("not pooled")
	}
	if got := p.get(&reloaded); got != nil {
		t.Fatal("a connection made under the previous configuration was reused")
	}
}

// parseCaps reads the upstream's EHLO reply through smtp.ParseEHLO:
// keywords in any case (RFC 5321 §2.4), XCLIENT's attributes as given.
func TestParseCaps(t *testing.T) {
	r, err := smtp.ParseReply("250-mx.example.net\r\n250-pipelining\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n" +
		"250-STARTTLS\r\n250-XCLIENT NAME ADDR port HELO\r\n250 dsn\r\n")
	if err != nil {
		t.Fatal(err)
	}
	got := parseCaps(r)
	want := upstreamCaps{esmtp: true, pipelining: true, size: true, eightBit: true, dsn: true, starttls: true,
		xclient: true, xclientAttrs: map[string]bool{"NAME": true, "ADDR": true, "PORT": true, "HELO": true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseCaps = %+v, want %+v", got, want)
	}
	if c := parseCaps(smtp.Reply{Code: 250, Lines: []string{"mx.example.net"}}); !reflect.DeepEqual(c, upstreamCaps{esmtp: true}) {
		t.Errorf("no extensions: %+v", c)
	}
}
