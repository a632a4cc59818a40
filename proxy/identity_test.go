package proxy

import (
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// dialFrom connects to addr from a chosen loopback source address, so a
// test can prove which address the upstream records.
func dialFrom(t *testing.T, src, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{t: t, nc: nc, tp: textproto.NewConn(nc)}
	t.Cleanup(func() { nc.Close() })
	return c
}

// send one message on a greeted client.
func (c *client) sendMessage(subject string) {
	c.t.Helper()
	c.cmd(250, "EHLO client.test")
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.cmd(250, "RCPT TO:<b@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: " + subject + "\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")
}

// With XCLIENT, and with a PROXY header of either version, the real
// Postfix records the original client's address — 127.0.0.2, not the
// 127.0.0.1 moat itself connects from.
func TestUpstreamSeesRealClient(t *testing.T) {
	tests := []struct {
		name string
		opts postfixtest.Options
		mod  func(*Config)
	}{
		{"xclient", postfixtest.Options{XClient: true}, func(c *Config) { c.Upstream.XClient = true }},
		{"proxy v1", postfixtest.Options{ProxyProtocol: true}, func(c *Config) { c.Upstream.ProxyProtocol = "v1" }},
		{"proxy v2", postfixtest.Options{ProxyProtocol: true}, func(c *Config) { c.Upstream.ProxyProtocol = "v2" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pf := postfixtest.Start(t, tt.opts)
			h := startProxy(t, pf.Addr, tt.mod)
			if err := h.srv.ProbeUpstream(t.Context()); err != nil {
				t.Fatalf("probe: %v", err)
			}
			c := dialFrom(t, "127.0.0.2", h.addr)
			c.expect(220)
			c.sendMessage(tt.name)
			msg := pf.WaitMessages(t, 1, 20*time.Second)[0]
			log := pf.WaitLog(t, "client=unknown[127.0.0.2]", 10*time.Second)
			if strings.Contains(log, ": client=unknown[127.0.0.1]") {
				t.Fatalf("a transaction was attributed to moat's own address:\n%s", log)
			}
			// XCLIENT also carries the client's HELO into Postfix's own
			// Received header.
			if tt.name == "xclient" && !strings.Contains(string(msg), "Received: from client.test (unknown [127.0.0.2])") {
				t.Fatalf("XCLIENT did not carry the client's HELO:\n%s", msg)
			}
		})
	}
}

// XCLIENT configured but not authorised by the upstream: mail is deferred
// with 451, never sent under moat's own identity.
func TestXClientRefused(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, func(c *Config) { c.Upstream.XClient = true })
	code, msg := sendOne(t, h.addr)
	if code != 451 || !strings.HasPrefix(msg, "4.3.5") {
		t.Fatalf("got %d %s", code, msg)
	}
}

// A trusted load balancer's PROXY header names the client, and that
// client is what the upstream sees; a trusted peer without a header is
// dropped; an untrusted peer is served as itself.
func TestListenProxyProtocol(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{XClient: true})
	h := startProxy(t, pf.Addr, func(c *Config) {
		c.Upstream.XClient = true
		c.ListenProxyProtocol = []Prefix{{netip.MustParsePrefix("127.0.0.1/32")}}
	})
	for _, version := range []int{1, 2} {
		hdr := ProxyHeader{
			Version: version,
			Source:  netip.MustParseAddrPort("192.0.2.77:40000"),
			Dest:    netip.MustParseAddrPort("198.51.100.1:25"),
		}
		var b []byte
		if version == 1 {
			b = hdr.AppendV1(nil)
		} else {
			b = hdr.AppendV2(nil)
		}
		c := dial(t, h.addr)
		c.send(string(b))
		c.expect(220)
		c.sendMessage("via balancer")
	}
	pf.WaitMessages(t, 2, 20*time.Second)
	log := pf.Log(t)
	if n := strings.Count(log, ": client=unknown[192.0.2.77]"); n != 2 {
		t.Fatalf("Postfix saw the balanced client %d times, want 2:\n%s", n, log)
	}

	// Trusted peer, no header: dropped without a greeting.
	c := dial(t, h.addr)
	c.send("EHLO sneaky.test\r\n")
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := c.tp.R.ReadString('\n'); err == nil {
		t.Fatalf("trusted peer without PROXY header got %q", b)
	}

	// Untrusted peer (127.0.0.2): served as itself, no header expected.
	u := dialFrom(t, "127.0.0.2", h.addr)
	u.expect(220)
	u.sendMessage("direct")
	pf.WaitLog(t, ": client=unknown[127.0.0.2]", 10*time.Second)
}

// A trusted balancer that sends no PROXY header is dropped after
// timeouts.proxy_header, not after some unrelated timeout (the upstream's
// connect timeout, here a minute).
func TestProxyHeaderTimeout(t *testing.T) {
	h := startProxy(t, deadUpstream(t), func(c *Config) {
		c.ListenProxyProtocol = []Prefix{{netip.MustParsePrefix("127.0.0.1/32")}}
		c.Timeouts.ProxyHeader = 200 * time.Millisecond
		c.Upstream.ConnectTimeout = time.Minute
	})
	c := dial(t, h.addr)
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a silent trusted peer was still connected after 5s")
	}
	if err == nil {
		t.Fatal("a trusted peer without a PROXY header got a reply")
	}
}
