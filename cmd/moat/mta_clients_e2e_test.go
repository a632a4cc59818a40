package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"moat/internal/eximtest"
	"moat/internal/mtatest"
	"moat/internal/postfixtest"
)

// Real MTAs as moat's clients (issue 13 item 4). A sending Postfix and a
// sending Exim deliver a batch through the moat binary to a real Postfix
// upstream, with their own SMTP client code: STARTTLS against moat's
// self-signed certificate, PIPELINING, connection reuse, and BDAT where the
// client has it. moat tempfails part of the batch the first time — a data
// rule on a header and a rcpt rule on some recipients — and the test then
// turns those rules into shadow rules by rewriting the rules file and
// sending SIGHUP, and forces the client's queue run: the deferred mail
// must come out of the client's queue and arrive, and every message must
// arrive exactly once per recipient.
//
// The tests run the moat binary rather than the proxy in-process because
// the retry scenario is an operator's: a rules file, a SIGHUP reload, and
// moat's JSON log, which is what the test reads to count sessions and
// transactions.

// retryRules tempfail the flagged messages and the "later-" recipients;
// with shadow set they only log what they would have done.
func retryRules(shadow bool) string {
	return fmt.Sprintf(`rules:
  - name: TEMPFAIL_FLAGGED
    stage: data
    when: {header: {name: X-Moat-Test, contains: tempfail}}
    action: tempfail
    reply: "451 4.7.1 Flagged for the retry test"
    shadow: %[1]t
  - name: TEMPFAIL_LATER_RCPT
    stage: rcpt
    when: {rcpt: {starts_with: "later-"}}
    action: tempfail
    reply: "451 4.7.1 Recipient deferred for the retry test"
    shadow: %[1]t
`, shadow)
}

// batchMsg is one message of a client's batch.
type batchMsg struct {
	id   string // Message-ID without <>
	to   []string
	flag bool // carries the X-Moat-Test: tempfail header
	body []byte
}

// batch builds n messages for client: every fifth one (from the second)
// is flagged for a data-stage tempfail, every fifth one (from the fifth)
// also goes to a "later-" recipient that moat defers at RCPT. Bodies hold
// lines that need dot-stuffing, and one message is large enough to take
// several TCP segments and, with BDAT, possibly several chunks.
func batch(client string, n int) []batchMsg {
	msgs := make([]batchMsg, n)
	for i := range msgs {
		m := &msgs[i]
		m.id = fmt.Sprintf("%s-%02d@client.test", client, i)
		m.to = []string{fmt.Sprintf("u%02d@example.net", i)}
		m.flag = i%5 == 1
		if i%5 == 4 {
			m.to = append(m.to, fmt.Sprintf("later-u%02d@example.net", i))
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: ana@client.test\nTo: %s\nSubject: %s batch %d\nMessage-ID: <%s>\nDate: Mon, 1 Jan 2024 12:00:00 +0000\n",
			strings.Join(m.to, ", "), client, i, m.id)
		if m.flag {
			b.WriteString("X-Moat-Test: tempfail once\n")
		}
		fmt.Fprintf(&b, "\nmessage %d of the %s batch\n.leading dot\n..two dots\n.\nafter a lone dot\n", i, client)
		if i == 7 {
			for j := range 3000 {
				fmt.Fprintf(&b, "line %04d of a large message, long enough to fill a few segments\n", j)
			}
		}
		m.body = b.Bytes()
	}
	return msgs
}

// deliveries counts the recipients of a batch: what the upstream's
// Maildir must hold in the end, one file per recipient.
func deliveries(msgs []batchMsg) int {
	n := 0
	for _, m := range msgs {
		n += len(m.to)
	}
	return n
}

// checkExactlyOnce checks that the upstream's Maildir holds exactly one
// copy of every message for every recipient, and nothing else, with the
// body intact.
func checkExactlyOnce(t *testing.T, msgs []batchMsg, delivered [][]byte) {
	t.Helper()
	want := map[string]*batchMsg{}
	for i := range msgs {
		for _, to := range msgs[i].to {
			want["<"+msgs[i].id+"> "+to] = &msgs[i]
		}
	}
	seen := map[string]int{}
	for _, d := range delivered {
		key := header(d, "Message-ID") + " " + header(d, "X-Original-To")
		seen[key]++
		m := want[key]
		if m == nil {
			t.Errorf("unexpected delivery %q:\n%s", key, d)
			continue
		}
		_, body, _ := bytes.Cut(m.body, []byte("\n\n"))
		if !bytes.HasSuffix(d, body) {
			t.Errorf("%s: body changed on the way:\n%s", key, d)
		}
	}
	for key := range want {
		if seen[key] != 1 {
			t.Errorf("%s delivered %d times, want exactly once", key, seen[key])
		}
	}
}

// header returns the value of the first header field name of msg ("" when
// it has none).
func header(msg []byte, name string) string {
	for line := range strings.Lines(string(msg)) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// waitCount waits until count() reaches n, failing the test with what()
// when it has not within timeout.
func waitCount(t *testing.T, timeout time.Duration, n int, count func() int, what func() string) {
	t.Helper()
	var got int
	if mtatest.WaitFor(timeout, func() bool { got = count(); return got >= n }) {
		return
	}
	t.Fatalf("waited %v for %d, got %d:\n%s", timeout, n, got, what())
}

// moatTx is moat's log line of one transaction.
type moatTx struct {
	Session string `json:"session"`
	Rcpts   []struct {
		Rcpt, Reply string
	} `json:"rcpts"`
	Verdict  string `json:"verdict"`
	Upstream string `json:"upstream_reply"`
	TLS      string `json:"tls"`
	Action   string `json:"action"`
}

// transactions returns moat's transaction log lines so far.
func (p *moatProc) transactions(t *testing.T) []moatTx {
	t.Helper()
	var txs []moatTx
	for line := range strings.Lines(p.log.String()) {
		if !strings.Contains(line, `"msg":"transaction"`) {
			continue
		}
		var tx moatTx
		if err := json.Unmarshal([]byte(line), &tx); err != nil {
			t.Fatalf("transaction line %q: %v", line, err)
		}
		txs = append(txs, tx)
	}
	return txs
}

// sessions returns the distinct session IDs of txs, in order.
func sessions(txs []moatTx) []string {
	var ids []string
	for _, tx := range txs {
		if !slices.Contains(ids, tx.Session) {
			ids = append(ids, tx.Session)
		}
	}
	return ids
}

// reloadRules rewrites the rules file and sends moat SIGHUP, waiting for
// the reload to be logged.
func (p *moatProc) reloadRules(t *testing.T, path, rules string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	const done = `"msg":"config reloaded"`
	before := strings.Count(p.log.String(), done)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitCount(t, 10*time.Second, before+1, func() int { return strings.Count(p.log.String(), done) }, p.log.String)
}

// waitIdle waits until moat has no client connection open: every session
// that began before a reload has ended, so what comes next is judged by
// the new rules (a session keeps the rules it started with).
func (p *moatProc) waitIdle(t *testing.T) {
	t.Helper()
	if !mtatest.WaitFor(20*time.Second, func() bool { return metricSum(t, p.http, "moat_proxy_connections_current") == 0 }) {
		t.Fatalf("moat still has %v client connections open", metricSum(t, p.http, "moat_proxy_connections_current"))
	}
}

// checkMoatSide checks moat's view of a client's batch: every transaction
// was over TLS, some sessions carried several transactions, and none was
// refused or failed upstream. It returns the number of client connections
// and of the sessions and transactions in the transaction log lines, and
// how many transactions ended in each way.
func checkMoatSide(t *testing.T, m *moatProc) (conns, sess, txs int, verdicts map[string]int) {
	t.Helper()
	all := m.transactions(t)
	perSession := map[string]int{}
	verdicts = map[string]int{}
	for _, tx := range all {
		perSession[tx.Session]++
		verdicts[tx.Verdict]++
		if !strings.HasPrefix(tx.TLS, "TLS1.") {
			t.Errorf("session %s: a transaction without TLS (%q)", tx.Session, tx.TLS)
		}
		switch tx.Verdict {
		case "delivered", "tempfail", "aborted":
		default:
			t.Errorf("session %s: verdict %q, reply %q", tx.Session, tx.Verdict, tx.Upstream)
		}
	}
	if len(perSession) >= len(all) {
		t.Errorf("%d transactions in %d sessions: no connection carried two", len(all), len(perSession))
	}
	return int(metricSum(t, m.http, "moat_proxy_connections_total")), len(perSession), len(all), verdicts
}

// postfixWire is what a sending Postfix did on the wire, read from its
// verbose log (debug_peer_list = 127.0.0.1: every command written and
// reply read, as "> host: CMD" and "< host: REPLY").
type postfixWire struct {
	established, reused int // TLS connections made; taken from the connection cache
	starttls, rset      int // commands sent
	data, bdat          int
	pipelined           int // DATA written before the reply to MAIL was read
	connUse             int // deliveries logged with conn_use=N (over a reused connection)
}

var postfixChat = regexp.MustCompile(`postfix/smtp\[(\d+)\]: ([<>]) \S+: (.*)$`)

func readPostfixWire(log string) postfixWire {
	var w postfixWire
	mailOut := map[string]bool{} // per smtp(8) process: MAIL written, no reply read since
	for line := range strings.Lines(log) {
		line = strings.TrimRight(line, "\n")
		if !strings.Contains(line, " postfix/smtp[") {
			continue // tlsproxy(8) logs the TLS connections too
		}
		switch {
		case strings.Contains(line, "TLS connection established to"):
			w.established++
		case strings.Contains(line, "TLS connection reused to"):
			w.reused++
		case strings.Contains(line, " conn_use="):
			w.connUse++
		}
		m := postfixChat.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pid, dir, text := m[1], m[2], m[3]
		if dir == "<" {
			mailOut[pid] = false
			continue
		}
		verb, _, _ := strings.Cut(text, " ")
		switch strings.ToUpper(verb) {
		case "MAIL":
			mailOut[pid] = true
		case "DATA":
			w.data++
			if mailOut[pid] {
				w.pipelined++
			}
		case "BDAT":
			w.bdat++
		case "STARTTLS":
			w.starttls++
		case "RSET":
			w.rset++
		}
	}
	return w
}

// Postfix's smtp(8) client delivers a batch through moat: over STARTTLS,
// pipelined, reusing connections (TLS ones through tlsproxy); what moat
// tempfails stays in Postfix's deferred queue and arrives after a flush.
// Postfix's client has no BDAT: it sends DATA although moat offers
// CHUNKING.
func TestPostfixClientThroughMoat(t *testing.T) {
	up := postfixtest.Start(t, postfixtest.Options{})
	cfg, rulesPath := writeRules(t, up.Addr, retryRules(false), "enforce")
	m := startMoat(t, "--config", cfg)
	snd := postfixtest.Start(t, postfixtest.Options{
		RelayTo: m.smtp,
		ExtraMainCF: []string{
			// Log the SMTP dialogue with moat.
			"debug_peer_list = 127.0.0.1", "debug_peer_level = 1",
			// At most two parallel connections, so that a batch of 24
			// makes Postfix reuse them.
			"smtp_destination_concurrency_limit = 2",
		},
	})

	msgs := batch("postfix", 24)
	var deferred int // recipients moat tempfails the first time
	for _, msg := range msgs {
		for _, to := range msg.to {
			if msg.flag || strings.HasPrefix(to, "later-") {
				deferred++
			}
		}
	}
	for _, msg := range msgs {
		snd.Sendmail(t, "ana@client.test", msg.to, msg.body)
	}

	// First round: everything but the flagged messages and the "later-"
	// recipients arrives; those wait in the sender's deferred queue (for
	// minimal_backoff_time, 300s: nothing is retried on its own).
	sndLog := func() string { return snd.Log(t) }
	count := func(s string) func() int { return func() int { return strings.Count(snd.Log(t), s) } }
	waitCount(t, 60*time.Second, deferred, count("status=deferred"), sndLog)
	waitCount(t, 60*time.Second, deliveries(msgs)-deferred, count("status=sent"), sndLog)
	up.WaitMessages(t, deliveries(msgs)-deferred, 30*time.Second)

	// The rules stop tempfailing. Postfix keeps a connection in its cache
	// for smtp_connection_cache_time_limit (2s) after its last delivery,
	// and such a session would still judge by the old rules: the retry
	// waits until every one has ended.
	m.reloadRules(t, rulesPath, retryRules(true))
	m.waitIdle(t)
	snd.Flush(t)
	waitCount(t, 60*time.Second, deliveries(msgs), count("status=sent"), sndLog)
	if !mtatest.WaitFor(30*time.Second, func() bool { return snd.Queued(t) == 0 && up.Queued(t) == 0 }) {
		t.Fatalf("queues not empty: sender %d, upstream %d", snd.Queued(t), up.Queued(t))
	}
	checkExactlyOnce(t, msgs, up.WaitMessages(t, deliveries(msgs), 30*time.Second))
	log := snd.Log(t)
	if n := strings.Count(log, "status=deferred"); n != deferred {
		t.Errorf("%d deferrals, want %d: the retry after the reload was refused again", n, deferred)
	}
	if n := strings.Count(log, "status=bounced"); n != 0 {
		t.Errorf("%d bounces", n)
	}

	w := readPostfixWire(log)
	conns, sess, txs, verdicts := checkMoatSide(t, m)
	t.Logf("postfix: %d messages, %d recipients (%d deferred once); %d TLS connections made, %d taken from the cache, %d deliveries with conn_use; STARTTLS %d, RSET %d, DATA %d (pipelined %d), BDAT %d",
		len(msgs), deliveries(msgs), deferred, w.established, w.reused, w.connUse, w.starttls, w.rset, w.data, w.pipelined, w.bdat)
	t.Logf("moat: %d client connections, %d transactions in %d sessions, %v", conns, txs, sess, verdicts)
	if w.starttls == 0 || w.established != w.starttls || w.established != conns {
		t.Errorf("STARTTLS %d times, %d TLS connections established, %d connections to moat", w.starttls, w.established, conns)
	}
	if w.pipelined == 0 {
		t.Error("Postfix never pipelined MAIL, RCPT and DATA")
	}
	if w.reused == 0 || w.connUse == 0 {
		t.Error("Postfix never reused a connection")
	}
	if w.bdat != 0 || w.data != txs {
		t.Errorf("Postfix sent %d DATA and %d BDAT for %d transactions; its client has no BDAT", w.data, w.bdat, txs)
	}
}

// eximChat matches a command in Exim's debug output (-d+transport):
// "SMTP>>" for one written and flushed, "SMTP|>" for one buffered to go
// with the next (PIPELINING), "SMTP+>" for one the message data follows
// in the same write (BDAT).
var eximChat = regexp.MustCompile(`(?m)^\s*SMTP(>>|\|>|\+>) ([A-Z]+)`)

// eximWire is what a sending Exim did on the wire in its queue runs.
type eximWire struct {
	connections, continued int // connections made; deliveries over one handed on by an earlier delivery process
	starttls, bdat, data   int // commands sent
	mail, mailPipelined    int // MAIL commands sent; those buffered with what follows
	tlsChunked             int // delivery lines with X= (TLS) and K (CHUNKING)
	continuedDeliveries    int // delivery lines with the "*" of a continued connection
	deliveries             int // delivery lines
}

var eximContinued = regexp.MustCompile(`\]:\d+\* `)

func readEximWire(debug, mainlog string) eximWire {
	var w eximWire
	w.connections = strings.Count(debug, "Connecting to ")
	w.continued = strings.Count(debug, "continued connection")
	for _, m := range eximChat.FindAllStringSubmatch(debug, -1) {
		switch m[2] {
		case "STARTTLS":
			w.starttls++
		case "BDAT":
			w.bdat++
		case "DATA":
			w.data++
		case "MAIL":
			w.mail++
			if m[1] == "|>" {
				w.mailPipelined++
			}
		}
	}
	for line := range strings.Lines(mainlog) {
		if !strings.Contains(line, " => ") {
			continue
		}
		w.deliveries++
		if strings.Contains(line, " X=TLS1.") && strings.Contains(line, " K ") {
			w.tlsChunked++
		}
		if eximContinued.MatchString(line) {
			w.continuedDeliveries++
		}
	}
	return w
}

// Exim's smtp transport delivers a batch through moat in queue runs:
// over STARTTLS, pipelined, by BDAT (MAIL, RCPT and "BDAT n LAST" with the
// message in one write), several messages per connection (continued
// deliveries share the TLS session through Exim's TLS proxy process);
// what moat tempfails stays queued and arrives in the next forced run.
func TestEximClientThroughMoat(t *testing.T) {
	up := postfixtest.Start(t, postfixtest.Options{})
	cfg, rulesPath := writeRules(t, up.Addr, retryRules(false), "enforce")
	m := startMoat(t, "--config", cfg)
	snd := eximtest.Start(t, eximtest.Options{RelayTo: m.smtp})

	msgs := batch("exim", 24)
	var deferredMsgs, deferred int // messages and recipients moat tempfails the first time
	for _, msg := range msgs {
		d := 0
		for _, to := range msg.to {
			if msg.flag || strings.HasPrefix(to, "later-") {
				d++
			}
		}
		deferred += d
		deferredMsgs += min(d, 1)
	}
	for _, msg := range msgs {
		snd.Sendmail(t, "ana@client.test", msg.to, msg.body)
	}
	if n := snd.Queued(t); n != len(msgs) {
		t.Fatalf("%d messages queued, want %d", n, len(msgs))
	}

	// First run: forced (-qqff), so a message moat tempfailed may be
	// tried again on another connection of the same run, and refused
	// again.
	debug := snd.RunQueue(t, "+transport")
	if n := snd.Queued(t); n != deferredMsgs {
		t.Fatalf("after the first run %d messages queued, want the %d with a tempfailed recipient:\n%s", n, deferredMsgs, snd.Log(t))
	}
	up.WaitMessages(t, deliveries(msgs)-deferred, 30*time.Second)

	// The rules stop tempfailing; the queue run closed its connections
	// (QUIT), which moat may not have finished logging yet.
	m.reloadRules(t, rulesPath, retryRules(true))
	m.waitIdle(t)
	debug += snd.RunQueue(t, "+transport")
	if n := snd.Queued(t); n != 0 {
		t.Fatalf("after the retry %d messages still queued:\n%s", n, snd.Log(t))
	}
	if !mtatest.WaitFor(30*time.Second, func() bool { return up.Queued(t) == 0 }) {
		t.Fatalf("upstream queue not empty: %d", up.Queued(t))
	}
	checkExactlyOnce(t, msgs, up.WaitMessages(t, deliveries(msgs), 30*time.Second))

	log := snd.Log(t)
	w := readEximWire(debug, log)
	conns, sess, txs, verdicts := checkMoatSide(t, m)
	t.Logf("exim: %d messages, %d recipients (%d deferred at first); %d connections, %d transactions over continued ones; STARTTLS %d, MAIL %d (pipelined %d), BDAT %d, DATA %d; mainlog: %d deliveries, %d with X=TLS and K, %d over a continued connection",
		len(msgs), deliveries(msgs), deferred, w.connections, w.continued, w.starttls, w.mail, w.mailPipelined, w.bdat, w.data, w.deliveries, w.tlsChunked, w.continuedDeliveries)
	t.Logf("moat: %d client connections, %d transactions in %d sessions, %v", conns, txs, sess, verdicts)
	if w.connections != conns || w.starttls != conns {
		t.Errorf("%d connections in Exim's debug output, %d in moat's metrics, STARTTLS %d times", w.connections, conns, w.starttls)
	}
	if w.continued == 0 || w.continuedDeliveries == 0 {
		t.Error("Exim never sent two messages over one connection")
	}
	if w.mail != txs || w.mailPipelined != txs {
		t.Errorf("Exim sent MAIL %d times, %d pipelined, for %d transactions", w.mail, w.mailPipelined, txs)
	}
	if w.data != 0 || w.bdat < txs {
		t.Errorf("Exim sent %d DATA and %d BDAT for %d transactions", w.data, w.bdat, txs)
	}
	if w.tlsChunked != w.deliveries {
		t.Errorf("%d of %d deliveries with TLS and CHUNKING", w.tlsChunked, w.deliveries)
	}
}
