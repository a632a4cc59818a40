package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/inspect"
	"moat/internal/postfixtest"
)

// An oversized message is drained and refused with 552 5.3.4, the session
// stays in step, and nothing reaches the upstream.
func TestMessageSizeLimit(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, func(c *Config) { c.Limits.MaxMessageSize = 2000 })
	c := ehloed(t, h.addr)
	for _, chunked := range []bool{false, true} {
		c.cmd(250, "MAIL FROM:<a@client.test>")
		c.cmd(250, "RCPT TO:<b@example.net>")
		body := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 70)+"\r\n", 100)
		if chunked {
			c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
		} else {
			c.cmd(354, "DATA")
			c.send(body + ".\r\n")
		}
		if msg := c.expect(552); !strings.HasPrefix(msg, "5.3.4 ") {
			t.Fatalf("oversize reply %q", msg)
		}
	}
	// Still in step: a small message goes through.
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.cmd(250, "RCPT TO:<b@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: small\r\n\r\nok\r\n.\r\n")
	c.expect(250)
	msgs := pf.WaitMessages(t, 1, 20*time.Second)
	time.Sleep(300 * time.Millisecond)
	if msgs = pf.Messages(t); len(msgs) != 1 || !strings.Contains(string(msgs[0]), "Subject: small") {
		t.Fatalf("delivered %d messages", len(msgs))
	}
}

// A header section over limits.max_header_size is refused.
func TestHeaderSizeLimit(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	h := startProxy(t, up.addr, func(c *Config) { c.Limits.MaxHeaderSize = 200 })
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.cmd(250, "RCPT TO:<b@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: x\r\nX-Junk: " + strings.Repeat("j", 300) + "\r\n\r\nbody\r\n.\r\n")
	if msg := c.expect(552); !strings.HasPrefix(msg, "5.3.4 ") {
		t.Fatalf("reply %q", msg)
	}
	// A long body under a short header is fine.
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.cmd(250, "RCPT TO:<b@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: x\r\n\r\n" + strings.Repeat("b", 1000) + "\r\n.\r\n")
	c.expect(250)
}

// Recipients past limits.max_recipients get 452 4.5.3 (RFC 5321
// §4.5.3.1.10); the accepted ones still get the message.
func TestRecipientLimit(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	h := startProxy(t, up.addr, func(c *Config) { c.Limits.MaxRecipients = 100 })
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<a@client.test>")
	var batch strings.Builder
	for i := range 102 {
		fmt.Fprintf(&batch, "RCPT TO:<r%d@example.net>\r\n", i)
	}
	c.send(batch.String())
	for i := range 102 {
		code, msg := c.reply()
		switch {
		case i < 100 && code != 250:
			t.Fatalf("rcpt %d: %d %s", i, code, msg)
		case i >= 100 && (code != 452 || !strings.HasPrefix(msg, "4.5.3")):
			t.Fatalf("rcpt %d past the limit: %d %s", i, code, msg)
		}
	}
	c.cmd(354, "DATA")
	c.send("Subject: many\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
}

// Slow clients: stalled in DATA, trickling commands past the session
// deadline, and sending too many commands.
func TestSlowAndChattyClients(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	t.Run("data timeout", func(t *testing.T) {
		h := startProxy(t, up.addr, func(c *Config) { c.Timeouts.Data = 300 * time.Millisecond })
		c := ehloed(t, h.addr)
		c.cmd(250, "MAIL FROM:<a@client.test>")
		c.cmd(250, "RCPT TO:<b@example.net>")
		c.cmd(354, "DATA")
		c.send("Subject: slow\r\n\r\nand then nothing")
		if msg := c.expect(421); !strings.HasPrefix(msg, "4.4.2 ") {
			t.Fatalf("reply %q", msg)
		}
	})
	t.Run("session deadline", func(t *testing.T) {
		h := startProxy(t, up.addr, func(c *Config) { c.Timeouts.Session = 600 * time.Millisecond })
		c := ehloed(t, h.addr)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			c.send("NOOP\r\n")
			code, msg := c.reply()
			if code == 421 {
				if !strings.Contains(msg, "Session time limit") {
					t.Fatalf("reply %q", msg)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("a client kept its session past the session deadline")
	})
	t.Run("slowloris", func(t *testing.T) {
		// One byte every 100 ms never trips the per-read timeout, only
		// the session deadline.
		h := startProxy(t, up.addr, func(c *Config) { c.Timeouts.Session = 500 * time.Millisecond })
		c := greeted(t, h.addr)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 50; i++ {
				if _, err := c.nc.Write([]byte("N")); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		if msg := c.expect(421); !strings.Contains(msg, "Session time limit") {
			t.Fatalf("reply %q", msg)
		}
		c.nc.Close()
		<-done
	})
	t.Run("too many commands", func(t *testing.T) {
		h := startProxy(t, up.addr, func(c *Config) { c.Limits.MaxCommands = 5 })
		c := greeted(t, h.addr)
		for range 5 {
			c.cmd(250, "NOOP")
		}
		if msg := c.cmd(421, "NOOP"); !strings.HasPrefix(msg, "4.7.0 ") {
			t.Fatalf("reply %q", msg)
		}
	})
}

// Past max_connections, and past max_connections_per_ip from one address,
// a new client gets 421 4.7.0; other addresses are still served.
func TestConnectionLimits(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	h := startProxy(t, up.addr, func(c *Config) {
		c.Limits.MaxConnectionsPerIP = 2
		c.Limits.PerIPExempt = []Prefix{} // loopback is exempt by default
	})
	a := dialFrom(t, "127.0.0.3", h.addr)
	a.expect(220)
	b := dialFrom(t, "127.0.0.3", h.addr)
	b.expect(220)
	c := dialFrom(t, "127.0.0.3", h.addr)
	if msg := c.expect(421); !strings.HasPrefix(msg, "4.7.0 ") {
		t.Fatalf("third connection from one address: %q", msg)
	}
	dialFrom(t, "127.0.0.4", h.addr).expect(220)
	// A slot frees up when a session ends.
	a.cmd(221, "QUIT")
	waitFor(t, func() bool {
		d := dialFrom(t, "127.0.0.3", h.addr)
		code, _ := d.reply()
		d.nc.Close()
		return code == 220
	})

	h2 := startProxy(t, up.addr, func(c *Config) { c.Limits.MaxConnections = 2 })
	greeted(t, h2.addr)
	greeted(t, h2.addr)
	if msg := dial(t, h2.addr).expect(421); !strings.HasPrefix(msg, "4.7.0 ") {
		t.Fatalf("connection past max_connections: %q", msg)
	}
}

// A client that talks before the greeting is an early talker: logged and
// recorded, or refused with 554 under early_talker: reject.
func TestEarlyTalker(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	for _, policy := range []string{"log", "reject"} {
		t.Run(policy, func(t *testing.T) {
			h := startProxy(t, up.addr, func(c *Config) {
				c.Greeting.Delay = 300 * time.Millisecond
				c.Greeting.EarlyTalker = policy
			})
			c := dial(t, h.addr)
			c.send("EHLO bot.test\r\n")
			code, msg := c.reply()
			if policy == "reject" {
				if code != 554 || !strings.HasPrefix(msg, "5.5.1 ") {
					t.Fatalf("early talker: %d %q", code, msg)
				}
				c.expect(503) // the EHLO, in the refused session
			} else {
				if code != 220 {
					t.Fatalf("early talker under log: %d %q", code, msg)
				}
				c.expect(250)
			}
			if !strings.Contains(h.logs.String(), `"msg":"early talker"`) {
				t.Fatalf("not logged:\n%s", h.logs.String())
			}
			// A patient client is not flagged.
			p := dial(t, h.addr)
			p.expect(220)
			p.cmd(250, "EHLO polite.test")
			if n := strings.Count(h.logs.String(), `"msg":"early talker"`); n != 1 {
				t.Fatalf("%d early talkers logged, want 1", n)
			}
		})
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5 s")
}

// The per-IP limit does not apply to limits.per_ip_exempt, loopback by
// default, as Postfix exempts $mynetworks: smtp-source's 50+ concurrent
// sessions from 127.0.0.1 are all served with the default configuration.
// With no exempt networks the default limit of 50 holds again.
func TestPerIPLimitExemptNetworks(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)
	const n = 60 // more than the default max_connections_per_ip of 50
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, h.addr)
	}
	for i, c := range clients {
		if code, msg := c.reply(); code != 220 {
			t.Fatalf("session %d of %d from 127.0.0.1: %d %s", i+1, n, code, msg)
		}
	}
	clients[n-1].sendMessage("exempt")
	pf.WaitMessages(t, 1, 20*time.Second)

	strict := startProxy(t, pf.Addr, func(c *Config) { c.Limits.PerIPExempt = []Prefix{} })
	for i := range 50 {
		if code, msg := dial(t, strict.addr).reply(); code != 220 {
			t.Fatalf("session %d from 127.0.0.1 without exemptions: %d %s", i+1, code, msg)
		}
	}
	if msg := dial(t, strict.addr).expect(421); !strings.HasPrefix(msg, "4.7.0 ") {
		t.Fatalf("session 51 from 127.0.0.1 without exemptions: %q", msg)
	}
}

// The default exempts loopback only.
func TestPerIPExemptDefault(t *testing.T) {
	var cfg Config
	cfg.Defaults()
	for _, tt := range []struct {
		addr string
		want bool
	}{{"127.0.0.1", true}, {"127.9.9.9", true}, {"::1", true}, {"192.0.2.1", false}, {"2001:db8::1", false}} {
		if got := containsAddr(cfg.Limits.PerIPExempt, netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("%s exempt: %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// startSignal is a resolver that reports when the client's reverse DNS
// lookup starts; the name is never found.
type startSignal struct {
	once    sync.Once
	started chan struct{}
}

func (r *startSignal) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	r.once.Do(func() { close(r.started) })
	return nil, &net.DNSError{Err: "no such host", Name: ip.String(), IsNotFound: true}
}

func (r *startSignal) LookupAddr(ctx context.Context, host string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// rdnsJudge is a judge whose connect stage reads the reverse DNS.
type rdnsJudge struct{}

func (rdnsJudge) Needs(stage inspect.Stage) inspect.Needs {
	return inspect.Needs{RDNS: stage == inspect.StageConnect}
}

func (rdnsJudge) Evaluate(inspect.Stage, *inspect.Facts) inspect.Verdict {
	return inspect.Verdict{Action: inspect.Accept}
}

// With greeting.delay, the lookups about the client start when it
// connects, so that they overlap the delay (DESIGN: lookups start the
// moment a connection is accepted), not when the delay is over.
func TestGreetingDelayOverlapsLookups(t *testing.T) {
	res := &startSignal{started: make(chan struct{})}
	engine, err := inspect.New(inspect.Config{Judge: rdnsJudge{}, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	h := startProxyEngine(t, deadUpstream(t), engine, func(c *Config) { c.Greeting.Delay = 10 * time.Second })
	c := dial(t, h.addr)
	select {
	case <-res.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the reverse DNS lookup had not started 5s into a 10s greeting delay")
	}
	c.nc.Close()
}
