package proxy

import (
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/rules"
)

// A client's pipelined RCPTs (RFC 2920) reach the upstream as one batch:
// an upstream that answers nothing until it has three RCPTs still gets
// the transaction through, and each recipient gets its own reply, in
// order.
func TestPipelinedRcptsReachUpstreamAsOneBatch(t *testing.T) {
	up := startFakeUpstream(t, rcptBatch)
	h := startProxy(t, up.addr, func(c *Config) {
		// Without batching the first RCPT would wait for a reply the
		// upstream never sends; fail fast rather than hang.
		c.Upstream.CommandTimeout = 3 * time.Second
	})
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.send("RCPT TO:<one@example.net>\r\nRCPT TO:<two@example.net>\r\nRCPT TO:<three@example.net>\r\nDATA\r\n")
	for _, want := range []int{250, 550, 250, 354} {
		c.expect(want)
	}
	c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")

	logs := transactionLogs(h)
	if len(logs) != 1 || !strings.Contains(logs[0], `"verdict":"delivered"`) || !strings.Contains(logs[0], "no such user") {
		t.Errorf("transaction log %q, want one delivered transaction that records the refused recipient", logs)
	}
	if n := up.count("RCPT"); n != 3 {
		t.Errorf("upstream got %d RCPTs, want 3", n)
	}
}

// When a rcpt-stage rule counts the recipients accepted so far, each RCPT
// is answered before the next is judged, pipelined or not: the rule sees
// what it would see from a client that waits for every reply.
func TestRcptCountRuleSeesEveryEarlierRecipient(t *testing.T) {
	set, err := rules.Parse("t.yaml", []byte(`rules:
  - {name: ONE_RCPT_ONLY, stage: rcpt, when: {rcpt_count: {ge: 1}}, action: reject, reply: "550 5.5.3 one recipient per message"}
`), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := inspect.New(inspect.Config{Judge: set})
	if err != nil {
		t.Fatal(err)
	}
	up := startFakeUpstream(t, failNone)
	h := startProxyEngine(t, up.addr, engine, nil)
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.send("RCPT TO:<one@example.net>\r\nRCPT TO:<two@example.net>\r\nRCPT TO:<three@example.net>\r\n")
	for i, want := range []int{250, 550, 550} {
		if got, msg := c.reply(); got != want {
			t.Errorf("recipient %d: %d %q, want %d", i+1, got, msg, want)
		}
	}
	if n := up.count("RCPT"); n != 1 {
		t.Errorf("upstream got %d RCPTs, want 1", n)
	}
}
