package proxy

// SMTP smuggling (SEC Consult, CVE-2023-51764 for Postfix): a client hides
// a second transaction inside a message behind an end-of-data sequence the
// receiving server accepts but the sending one does not, such as
// <LF>.<LF>. The Postfix these tests start keeps smtpd_forbid_bare_newline =
// no (its 3.7 default), so sent directly it ends DATA at several such
// sequences and delivers the smuggled message. Through moat it must not:
// moat frames DATA strictly (only CRLF.CRLF ends it) and re-serialises the
// message with DataWriter, so the upstream sees one canonical framing.
//
// Each top-level test uses one Postfix and one moat, and one client session
// per vector. Messages are told apart by markers: the legitimate message
// has "Subject: vector NAME" and goes to a recipient derived from NAME; the
// smuggled one is the fixed "Subject: SMUGGLED" message to
// victim@example.net, whose body says "smuggled by NAME" so that a
// smuggled message that slips through can be attributed to its vector.
// Besides the Maildir, each vector checks Postfix's own count of DATA
// commands in its session ("disconnect from ... data=N"), which is exact
// and arrives before any late delivery could.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

const (
	// smugEOD is the only RFC 5321 end of data (§4.1.1.4).
	smugEOD = "\r\n.\r\n"
	// smugQuiet is how long a test keeps watching the Maildir after its
	// last expected delivery, for a smuggled message arriving late.
	smugQuiet = 1500 * time.Millisecond
	// smugTimeout bounds every wait for a delivery, a log line or a reply.
	smugTimeout = 20 * time.Second
)

// smugVector is one end-of-data sequence variant.
type smugVector struct {
	name string // source/id, e.g. "the-login/IN1"
	seq  string
}

// smugIssueVectors are the variants named in the issue, in addition to
// the rows of eod-sequences.tsv (some repeat rows; that is harmless).
var smugIssueVectors = []smugVector{
	{"issue/LF.LF", "\n.\n"},
	{"issue/LF.CRLF", "\n.\r\n"},
	{"issue/CRLF.LF", "\r\n.\n"},
	{"issue/CR.CR", "\r.\r"},
	{"issue/CRLF.CR", "\r\n.\r"},
	{"issue/CRLF-NUL.CRLF", "\r\n\x00.\r\n"},
	{"issue/CRLF.CRCRLF", "\r\n.\r\r\n"},
}

// smugVectors returns every row of eod-sequences.tsv (columns: source,
// set, id, escaped, hex[, lab result]) followed by smugIssueVectors.
func smugVectors(t *testing.T) []smugVector {
	t.Helper()
	data, err := os.ReadFile("../inspect/smtp/testdata/smuggling/eod-sequences.tsv")
	if err != nil {
		t.Fatalf("smuggling test data: %v", err)
	}
	var out []smugVector
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) < 5 {
			t.Fatalf("eod-sequences.tsv: short row %q", line)
		}
		seq, err := hex.DecodeString(f[4])
		if err != nil || len(seq) == 0 {
			t.Fatalf("eod-sequences.tsv: row %q: bad hex column: %v", line, err)
		}
		out = append(out, smugVector{f[0] + "/" + f[2], string(seq)})
	}
	if len(out) < 29 {
		t.Fatalf("only %d rows in eod-sequences.tsv, want 29", len(out))
	}
	return append(out, smugIssueVectors...)
}

// rcpt is the vector's own recipient: every example.net address lands in
// the one Maildir, and X-Original-To tells them apart.
func (v smugVector) rcpt() string {
	return strings.NewReplacer("/", ".").Replace(v.name) + "@" + postfixtest.Domain
}

// subject is the legitimate message's Subject header line.
func (v smugVector) subject(kind string) string {
	return "Subject: " + kind + " " + v.name
}

// smuggledTx is the hidden second transaction, up to (not including) its
// own end of data.
func smuggledTx(v smugVector) string {
	return "MAIL FROM:<evil@attacker.test>\r\n" +
		"RCPT TO:<victim@example.net>\r\n" +
		"DATA\r\n" +
		"Subject: SMUGGLED\r\n" +
		"\r\n" +
		"smuggled by " + v.name + "\r\n"
}

// smugHeader is the legitimate message's header section with the empty
// line that ends it.
func smugHeader(v smugVector, kind string) string {
	return "From: <ana@client.test>\r\n" +
		"To: <" + v.rcpt() + ">\r\n" +
		v.subject(kind) + "\r\n" +
		"\r\n"
}

// smugBody is the content after the header: legitimate text, the sequence,
// and the smuggled transaction.
func smugBody(v smugVector) string {
	return "legit body of " + v.name + v.seq + smuggledTx(v)
}

// smugPayload is what a client sends after DATA's 354: the message with the
// sequence and the smuggled transaction inside, then the real end of data.
func smugPayload(v smugVector, kind string) string {
	return smugHeader(v, kind) + smugBody(v) + smugEOD
}

// smugBare reports a line ending other than CRLF in message content: a LF
// not after a CR, or a CR not before a LF.
func smugBare(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n':
			if i == 0 || s[i-1] != '\r' {
				return true
			}
		case '\r':
			if i+1 == len(s) || s[i+1] != '\n' {
				return true
			}
		}
	}
	return false
}

// smugSession is a client session driven for one vector, with a deadline
// of its own so that a hang fails fast.
func smugSession(t *testing.T, addr string) (*client, string) {
	t.Helper()
	c := greeted(t, addr)
	c.nc.SetDeadline(time.Now().Add(smugTimeout))
	return c, c.cmd(250, "EHLO client.test")
}

// replies reads up to n replies as "code text"; it stops at a read error,
// which it reports as the last element.
func (c *client) replies(n int) []string {
	var out []string
	for range n {
		code, msg, err := c.tp.ReadResponse(0)
		if err != nil && code == 0 {
			return append(out, "read error: "+err.Error())
		}
		out = append(out, fmt.Sprintf("%d %s", code, msg))
	}
	return out
}

// quit sends QUIT and reads replies until its 221. Any reply before the
// 221 is one the client never asked for — the trace of a message split in
// two — and is returned.
func (c *client) quit() (extra []string, ok bool) {
	c.send("QUIT\r\n")
	for range 16 {
		code, msg, err := c.tp.ReadResponse(0)
		if err != nil && code == 0 {
			return append(extra, "read error: "+err.Error()), false
		}
		if code == 221 {
			return extra, true
		}
		extra = append(extra, fmt.Sprintf("%d %s", code, msg))
	}
	return extra, false
}

// smugCodes returns the reply codes of replies from c.replies.
func smugCodes(replies []string) []int {
	var out []int
	for _, r := range replies {
		var code int
		fmt.Sscanf(r, "%d", &code)
		out = append(out, code)
	}
	return out
}

// smugMailbox follows a Postfix instance's Maildir and maillog across the
// subtests of one test: what was delivered, and how many upstream sessions
// have ended, since the last look.
type smugMailbox struct {
	pf       *postfixtest.Postfix
	seen     map[string]bool
	sessions int // upstream session summaries already consumed
}

func newSmugMailbox(pf *postfixtest.Postfix) *smugMailbox {
	return &smugMailbox{pf: pf, seen: map[string]bool{}}
}

// next waits for n messages not seen before and returns every unseen
// message (more than n if more arrived).
func (m *smugMailbox) next(t *testing.T, n int) [][]byte {
	t.Helper()
	if n > 0 {
		m.pf.WaitMessages(t, len(m.seen)+n, smugTimeout)
	}
	return m.fresh(t)
}

// fresh returns the messages delivered since the last look.
func (m *smugMailbox) fresh(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, msg := range m.pf.Messages(t) {
		if !m.seen[string(msg)] {
			m.seen[string(msg)] = true
			out = append(out, msg)
		}
	}
	return out
}

// session waits for Postfix's summary of the next client session that
// sent MAIL ("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1
// data=1 quit=1 commands=5") and returns its counters. Sessions are run
// one after the other, so the next summary is the one just ended.
func (m *smugMailbox) session(t *testing.T) map[string]string {
	t.Helper()
	deadline := time.Now().Add(smugTimeout)
	for {
		var lines []string
		for l := range strings.Lines(m.pf.Log(t)) {
			if strings.Contains(l, " disconnect from ") && strings.Contains(l, " mail=") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		if len(lines) > m.sessions {
			l := lines[m.sessions]
			m.sessions++
			counts := map[string]string{"line": l}
			_, stats, _ := strings.Cut(l, "] ")
			for _, f := range strings.Fields(stats) {
				if k, v, ok := strings.Cut(f, "="); ok {
					counts[k] = v
				}
			}
			return counts
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Postfix session summary after %v; maillog:\n%s", smugTimeout, m.pf.Log(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle watches the Maildir for smugQuiet and fails on any message that
// arrives late: every expected message has been accounted for already.
func (m *smugMailbox) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(smugQuiet)
	for time.Now().Before(deadline) {
		if late := m.fresh(t); len(late) > 0 {
			t.Errorf("%d unexpected late message(s):\n%s", len(late), smugDescribe(late))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// smugHeaderLines returns the header lines of a delivered message (Maildir
// files have LF line endings): everything before the first empty line.
func smugHeaderLines(msg []byte) []string {
	head, _, _ := bytes.Cut(msg, []byte("\n\n"))
	return strings.Split(string(head), "\n")
}

// smugHasHeader reports whether a header line of msg starts with prefix.
func smugHasHeader(msg []byte, prefix string) bool {
	return slices.ContainsFunc(smugHeaderLines(msg), func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// smugBodyOf returns the body of a delivered message.
func smugBodyOf(msg []byte) string {
	_, body, _ := bytes.Cut(msg, []byte("\n\n"))
	return string(body)
}

// smugDescribe lists messages for a failure report: their envelope and
// subject, and the body quoted.
func smugDescribe(msgs [][]byte) string {
	var b strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&b, "  message %d:", i+1)
		for _, l := range smugHeaderLines(m) {
			for _, h := range []string{"Return-Path:", "X-Original-To:", "Subject:"} {
				if strings.HasPrefix(l, h) {
					fmt.Fprintf(&b, " %s", l)
				}
			}
		}
		body := smugBodyOf(m)
		if len(body) > 400 {
			body = body[:400] + "..."
		}
		fmt.Fprintf(&b, "\n    body %q\n", body)
	}
	return b.String()
}

// smugCheckContained checks that msg is the vector's legitimate message
// and that the smuggling attempt reached the upstream as mere content: no
// Subject: SMUGGLED in the header section, the smuggled commands and text
// in the body.
func smugCheckContained(t *testing.T, v smugVector, kind string, msg []byte) {
	t.Helper()
	if !smugHasHeader(msg, v.subject(kind)) {
		t.Errorf("delivered message is not the one sent (%q):\n%s", v.subject(kind), smugDescribe([][]byte{msg}))
		return
	}
	if smugHasHeader(msg, "Subject: SMUGGLED") || smugHasHeader(msg, "Return-Path: <evil@") {
		t.Errorf("smuggled header in the delivered message's header section:\n%s", smugDescribe([][]byte{msg}))
	}
	body := smugBodyOf(msg)
	for _, want := range []string{"legit body of " + v.name, "MAIL FROM:<evil@attacker.test>\n", "smuggled by " + v.name + "\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q — was part of the message cut off?\n%s", want, smugDescribe([][]byte{msg}))
		}
	}
}

// smugTxLogs returns the verdicts of the proxy's transaction log lines
// after the first skip.
func smugTxLogs(t *testing.T, h *harness, skip int) []string {
	t.Helper()
	var out []string
	for _, l := range transactionLogs(h)[skip:] {
		var e struct {
			Verdict       string `json:"verdict"`
			UpstreamReply string `json:"upstream_reply"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("transaction log line %s: %v", l, err)
		}
		out = append(out, e.Verdict+": "+e.UpstreamReply)
	}
	return out
}

// The control: sent straight to this Postfix, the three classic sequences
// end DATA early and the smuggled transaction is delivered as a message of
// its own. Without this, the moat tests below would prove nothing. A
// direct probe of every eod-sequences.tsv row showed that Postfix 3.7.11
// (smtpd_forbid_bare_newline = no) also falls for <CR><LF>.<CR><CR><LF>
// (it strips every CR before the LF), so that one is a control too, and
// likewise for <CR><CR><LF>.<CR><CR><LF> and for <CR>NUL<LF>.<CR><LF>
// (which holds <LF>.<CR><LF>); it does not fall for the variants whose dot
// line ends in a bare CR or carries a NUL (<LF>.<CR>, <CR>.<LF>, <CR>.<CR>,
// <CR>.<CR><LF>, <CR><LF>NUL.<CR><LF>, <CR><LF>.<CR>, <CR><LF>.NUL<CR><LF>,
// <CR><LF>.<CR>NUL<LF>), which moat must contain all the same.
func TestSmugglingVectorsDirectToPostfix(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	box := newSmugMailbox(pf)
	for _, v := range []smugVector{
		{"direct/LF.CRLF", "\n.\r\n"},
		{"direct/LF.LF", "\n.\n"},
		{"direct/CRLF.LF", "\r\n.\n"},
		{"direct/CRLF.CRCRLF", "\r\n.\r\r\n"},
	} {
		t.Run(v.name, func(t *testing.T) {
			c, _ := smugSession(t, pf.Addr)
			c.cmd(250, "MAIL FROM:<ana@client.test>")
			c.cmd(250, "RCPT TO:<"+v.rcpt()+">")
			c.cmd(354, "DATA")
			c.send(smugPayload(v, "direct"))
			// The first message ends at the sequence; the smuggled
			// MAIL, RCPT, DATA and message follow as commands.
			got := c.replies(5)
			if !slices.Equal(smugCodes(got), []int{250, 250, 250, 354, 250}) {
				t.Errorf("payload %q: replies %q, want 250 250 250 354 250 (Postfix not vulnerable?)", v.seq, got)
			}
			if extra, ok := c.quit(); !ok {
				t.Errorf("QUIT: %q", extra)
			}
			if s := box.session(t); s["data"] != "2" {
				t.Errorf("Postfix counted data=%s, want 2: %s", s["data"], s["line"])
			}
			msgs := box.next(t, 2)
			var legit, smuggled int
			for _, m := range msgs {
				switch {
				case smugHasHeader(m, v.subject("direct")):
					legit++
				case smugHasHeader(m, "Subject: SMUGGLED") && smugHasHeader(m, "Return-Path: <evil@attacker.test>") &&
					strings.Contains(smugBodyOf(m), "smuggled by "+v.name+"\n"):
					smuggled++
				}
			}
			if len(msgs) != 2 || legit != 1 || smuggled != 1 {
				t.Errorf("payload %q: want the legitimate and the smuggled message, got:\n%s", v.seq, smugDescribe(msgs))
			}
		})
	}
	box.settle(t)
}

// smugMoatExpect is what one vector sent through moat in DATA must give.
type smugMoatExpect struct {
	replies  []int // after the payload, up to (not including) QUIT's 221
	messages int   // delivered
	second   bool  // the second message is the client's own second transaction
	cut      bool  // the message ends at the sequence; the rest was not mail
}

// smugExpectData works out what moat must answer to a vector's payload.
// Only CRLF.CRLF ends DATA (the DATA command's CRLF counts as the first
// CRLF). Without it inside, the whole payload is one message. A few TSV
// rows contain CRLF.CRLF themselves (lvy-h-lab A7/A10 "\x00\r\n.\r\n", A13
// "\r\n.\r\n\x00"): the client really ended the message there, so what
// follows is commands — legitimate SMTP, not smuggling, and the same for
// moat and the upstream.
func smugExpectData(t *testing.T, v smugVector) smugMoatExpect {
	t.Helper()
	stream := "\r\n" + smugPayload(v, "vector")
	end := strings.Index(stream, smugEOD) + len(smugEOD)
	switch rest := stream[end:]; rest {
	case "":
		return smugMoatExpect{replies: []int{250}, messages: 1}
	case smuggledTx(v) + smugEOD:
		// A7/A10: the "smuggled" transaction is a real, pipelined second
		// transaction (RFC 2920) and is delivered with its own 250.
		return smugMoatExpect{replies: []int{250, 250, 250, 354, 250}, messages: 2, second: true}
	case "\x00" + smuggledTx(v) + smugEOD:
		// A13: "\x00MAIL FROM:..." is not a command (500 5.5.2), so RCPT
		// and DATA find no transaction (503 5.5.1 each); the smuggled
		// header, the empty lines, the text and the lone dot are five
		// more unrecognised commands (500). Eight errors stay below the
		// default error budget of 20, and nothing more is delivered.
		return smugMoatExpect{replies: []int{250, 500, 503, 503, 500, 500, 500, 500, 500}, messages: 1, cut: true}
	default:
		t.Fatalf("no expectation for a vector whose CRLF.CRLF is followed by %q", rest)
		return smugMoatExpect{}
	}
}

// Every known end-of-data variant, sent through moat (bare_lf and bare_cr
// normalize, the default) to the vulnerable Postfix: one message, one 250,
// and the smuggled transaction reaches Postfix only as message content.
func TestSmugglingThroughMoat(t *testing.T) {
	vectors := smugVectors(t)
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)
	box := newSmugMailbox(pf)
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			want := smugExpectData(t, v)
			logsBefore := len(transactionLogs(h))
			c, _ := smugSession(t, h.addr)
			c.cmd(250, "MAIL FROM:<ana@client.test>")
			c.cmd(250, "RCPT TO:<"+v.rcpt()+">")
			c.cmd(354, "DATA")
			c.send(smugPayload(v, "vector"))
			got := c.replies(len(want.replies))
			if !slices.Equal(smugCodes(got), want.replies) {
				t.Errorf("payload %q: replies %q, want codes %v", v.seq, got, want.replies)
			}
			if extra, ok := c.quit(); !ok || len(extra) > 0 {
				t.Errorf("payload %q: replies after the expected ones, before QUIT's 221: %q", v.seq, extra)
			}

			// Postfix's own count of DATA commands in moat's session.
			if s := box.session(t); s["data"] != fmt.Sprint(want.messages) {
				t.Errorf("payload %q: Postfix counted data=%s, want %d: %s", v.seq, s["data"], want.messages, s["line"])
			}
			msgs := box.next(t, want.messages)
			if len(msgs) != want.messages {
				t.Fatalf("payload %q: %d messages delivered, want %d:\n%s", v.seq, len(msgs), want.messages, smugDescribe(msgs))
			}
			if want.second {
				var legit, second int
				for _, m := range msgs {
					switch {
					case smugHasHeader(m, v.subject("vector")):
						legit++
					case smugHasHeader(m, "Subject: SMUGGLED") && smugHasHeader(m, "Return-Path: <evil@attacker.test>"):
						second++
					}
				}
				if legit != 1 || second != 1 {
					t.Errorf("payload %q: want the first and the second transaction's messages:\n%s", v.seq, smugDescribe(msgs))
				}
			} else if want.cut {
				m := msgs[0]
				if !smugHasHeader(m, v.subject("vector")) || smugHasHeader(m, "Subject: SMUGGLED") ||
					strings.Contains(string(m), "smuggled by") {
					t.Errorf("payload %q: want the message up to its CRLF.CRLF only:\n%s", v.seq, smugDescribe(msgs))
				}
			} else {
				smugCheckContained(t, v, "vector", msgs[0])
			}

			// The proxy logged each message as delivered — bare LF or CR
			// in normalize mode included.
			verdicts := smugTxLogs(t, h, logsBefore)
			if len(verdicts) != want.messages {
				t.Errorf("transaction log: %q, want %d delivered", verdicts, want.messages)
			}
			for _, vd := range verdicts {
				if !strings.HasPrefix(vd, "delivered: 250 ") {
					t.Errorf("transaction log verdict %q, want delivered with the upstream's 250 (bare=%v)", vd, smugBare(smugBody(v)))
				}
			}
		})
	}
	box.settle(t)
}

// With bare_lf and bare_cr set to reject, a message with a bare LF or CR
// anywhere gets 550 5.5.2 once it has been read to its real end, Postfix
// never sees its DATA, and the session stays in step: a clean message
// right after it is delivered. Vectors without a bare line ending (the NUL
// variants) are not the policy's business and are delivered, contained as
// in normalize mode. Vectors holding CRLF.CRLF are left to
// TestSmugglingThroughMoat.
func TestSmugglingRejectPolicy(t *testing.T) {
	vectors := smugVectors(t)
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, func(c *Config) {
		c.Data.BareLF = "reject"
		c.Data.BareCR = "reject"
	})
	box := newSmugMailbox(pf)
	for _, v := range vectors {
		if strings.Contains("\r\n"+smugHeader(v, "reject")+smugBody(v), smugEOD) {
			continue
		}
		bare := smugBare(smugBody(v))
		t.Run(v.name, func(t *testing.T) {
			logsBefore := len(transactionLogs(h))
			c, _ := smugSession(t, h.addr)
			c.cmd(250, "MAIL FROM:<ana@client.test>")
			c.cmd(250, "RCPT TO:<"+v.rcpt()+">")
			c.cmd(354, "DATA")
			c.send(smugPayload(v, "reject"))
			got := c.replies(1)
			switch {
			case bare && !strings.HasPrefix(got[0], "550 5.5.2 "):
				t.Errorf("payload %q (bare line ending): reply %q, want 550 5.5.2", v.seq, got)
			case !bare && !strings.HasPrefix(got[0], "250 "):
				t.Errorf("payload %q (no bare line ending): reply %q, want 250", v.seq, got)
			}
			// The same session goes on with a clean message.
			c.cmd(250, "MAIL FROM:<ana@client.test>")
			c.cmd(250, "RCPT TO:<"+v.rcpt()+">")
			c.cmd(354, "DATA")
			c.send("Subject: clean after " + v.name + "\r\n\r\nclean body\r\n.\r\n")
			if got := c.replies(1); !strings.HasPrefix(got[0], "250 ") {
				t.Errorf("clean message after payload %q: %q, want 250", v.seq, got)
			}
			if extra, ok := c.quit(); !ok || len(extra) > 0 {
				t.Errorf("payload %q: unexpected replies before QUIT's 221: %q", v.seq, extra)
			}

			wantData := 2
			if bare {
				wantData = 1 // only the clean message reached Postfix
			}
			if s := box.session(t); s["data"] != fmt.Sprint(wantData) {
				t.Errorf("payload %q: Postfix counted data=%s, want %d: %s", v.seq, s["data"], wantData, s["line"])
			}
			msgs := box.next(t, wantData)
			if len(msgs) != wantData {
				t.Fatalf("payload %q: %d messages delivered, want %d:\n%s", v.seq, len(msgs), wantData, smugDescribe(msgs))
			}
			clean := 0
			for _, m := range msgs {
				switch {
				case smugHasHeader(m, "Subject: clean after "+v.name):
					clean++
				case bare:
					t.Errorf("payload %q was rejected but delivered:\n%s", v.seq, smugDescribe([][]byte{m}))
				default:
					smugCheckContained(t, v, "reject", m)
				}
			}
			if clean != 1 {
				t.Errorf("the clean message after payload %q was not delivered once:\n%s", v.seq, smugDescribe(msgs))
			}

			verdicts := smugTxLogs(t, h, logsBefore)
			first := "delivered: 250 "
			if bare {
				first = "rejected: 550 5.5.2 "
			}
			if len(verdicts) != 2 || !strings.HasPrefix(verdicts[0], first) || !strings.HasPrefix(verdicts[1], "delivered: 250 ") {
				t.Errorf("transaction log %q, want %q... then delivered", verdicts, first)
			}
		})
	}
	box.settle(t)
}

// smugChunk is one BDAT chunk and whether it is the LAST.
type smugChunk struct {
	data string
	last bool
}

// sendBDAT runs one BDAT transaction and returns the reply to each chunk.
func (c *client) sendBDAT(rcpt string, chunks []smugChunk) []string {
	c.t.Helper()
	c.cmd(250, "MAIL FROM:<ana@client.test>")
	c.cmd(250, "RCPT TO:<"+rcpt+">")
	var out []string
	for _, ch := range chunks {
		cmd := fmt.Sprintf("BDAT %d", len(ch.data))
		if ch.last {
			cmd += " LAST"
		}
		c.send(cmd + "\r\n" + ch.data)
		out = append(out, c.replies(1)...)
	}
	return out
}

// smugBDATTx is one BDAT transaction of a vector.
type smugBDATTx struct {
	kind   string // "within" or "across", also the Subject marker
	chunks []smugChunk
}

// smugBDATTxs builds the two BDAT transactions of a vector. In BDAT the
// chunk sizes frame the message and nothing inside it ends anything, so
// the message carries the canonical CRLF.CRLF too, after the smuggled
// transaction, where moat must dot-stuff it on the way to DATA.
//
//   - within: the header in one chunk; the body with the whole sequence and
//     the smuggled transaction in the LAST chunk;
//   - across: the sequence split between two chunks (in the middle, or
//     where the vector's name says), then an empty LAST chunk
//     ("BDAT 0 LAST").
func smugBDATTxs(v smugVector) []smugBDATTx {
	k := len(v.seq) / 2
	if n, ok := strings.CutPrefix(v.name, smugSplitName); ok {
		fmt.Sscan(n, &k)
	}
	return []smugBDATTx{
		{"within", []smugChunk{{smugHeader(v, "within"), false}, {smugBody(v) + smugEOD, true}}},
		{"across", []smugChunk{
			{smugHeader(v, "across") + "legit body of " + v.name + v.seq[:k], false},
			{v.seq[k:] + smuggledTx(v) + smugEOD, false},
			{"", true},
		}},
	}
}

// smugSplitName names the BDAT-only vectors that split the canonical
// terminator between chunks at the position that follows the name.
const smugSplitName = "bdat/CRLF.CRLF-split"

// The same vectors inside BDAT chunks (RFC 3030), which moat relays to the
// upstream as DATA. In normalize mode every transaction is one message,
// with the smuggled transaction as content; in reject mode a message with
// a bare line ending gets 550 5.5.2 for its LAST chunk and nothing reaches
// Postfix, and the session goes on in step.
func TestSmugglingBDAT(t *testing.T) {
	vectors := smugVectors(t)
	// The canonical terminator alone, split between chunks at every
	// position: CRLF | .CRLF is the interesting one.
	for i := 1; i < len(smugEOD); i++ {
		vectors = append(vectors, smugVector{fmt.Sprintf("%s%d", smugSplitName, i), smugEOD})
	}
	pf := postfixtest.Start(t, postfixtest.Options{})

	t.Run("normalize", func(t *testing.T) {
		h := startProxy(t, pf.Addr, nil)
		box := newSmugMailbox(pf)
		for _, v := range vectors {
			t.Run(v.name, func(t *testing.T) {
				c, ehlo := smugSession(t, h.addr)
				if !strings.Contains(ehlo, "\nCHUNKING") {
					t.Fatalf("EHLO reply does not offer CHUNKING:\n%s", ehlo)
				}
				txs := smugBDATTxs(v)
				for _, tx := range txs {
					got := c.sendBDAT(v.rcpt(), tx.chunks)
					for i, r := range got {
						if !strings.HasPrefix(r, "250 ") {
							t.Errorf("%s, chunk %d of %d (%q): %q, want 250", tx.kind, i+1, len(got), tx.chunks[i].data, r)
						}
					}
				}
				if extra, ok := c.quit(); !ok || len(extra) > 0 {
					t.Errorf("unexpected replies before QUIT's 221: %q", extra)
				}
				// moat speaks DATA to the upstream, never BDAT.
				s := box.session(t)
				if s["data"] != "2" || s["bdat"] != "" {
					t.Errorf("Postfix counted data=%s bdat=%s, want data=2 and no BDAT: %s", s["data"], s["bdat"], s["line"])
				}
				msgs := box.next(t, 2)
				if len(msgs) != 2 {
					t.Fatalf("%d messages delivered, want 2 (within, across):\n%s", len(msgs), smugDescribe(msgs))
				}
				for _, tx := range txs {
					i := slices.IndexFunc(msgs, func(m []byte) bool { return smugHasHeader(m, v.subject(tx.kind)) })
					if i < 0 {
						t.Errorf("%s: message not delivered:\n%s", tx.kind, smugDescribe(msgs))
						continue
					}
					smugCheckContained(t, v, tx.kind, msgs[i])
					// The canonical terminator sent as content comes back
					// as a lone "." line, unstuffed by Postfix.
					if !strings.HasSuffix(smugBodyOf(msgs[i]), "smuggled by "+v.name+"\n\n.\n") {
						t.Errorf("%s: body does not end with the CRLF.CRLF sent as content:\n%s", tx.kind, smugDescribe(msgs[i:i+1]))
					}
				}
			})
		}
		box.settle(t)
	})

	t.Run("reject", func(t *testing.T) {
		h := startProxy(t, pf.Addr, func(c *Config) {
			c.Data.BareLF = "reject"
			c.Data.BareCR = "reject"
		})
		// The Maildir already holds normalize's messages; a new mailbox
		// view starts from them and the upstream sessions they ended.
		box := newSmugMailbox(pf)
		box.fresh(t)
		for l := range strings.Lines(pf.Log(t)) {
			if strings.Contains(l, " disconnect from ") && strings.Contains(l, " mail=") {
				box.sessions++
			}
		}
		for _, v := range vectors {
			if !smugBare(smugBody(v)) {
				continue
			}
			t.Run(v.name, func(t *testing.T) {
				c, _ := smugSession(t, h.addr)
				for _, tx := range smugBDATTxs(v) {
					got := c.sendBDAT(v.rcpt(), tx.chunks)
					for i, r := range got {
						want := "250 "
						if tx.chunks[i].last {
							want = "550 5.5.2 "
						}
						if !strings.HasPrefix(r, want) {
							t.Errorf("%s, chunk %d of %d (%q): %q, want %q...", tx.kind, i+1, len(got), tx.chunks[i].data, r, want)
						}
					}
				}
				clean := smugChunk{"Subject: clean after " + v.name + "\r\n\r\nclean body\r\n", true}
				if got := c.sendBDAT(v.rcpt(), []smugChunk{clean}); !strings.HasPrefix(got[0], "250 ") {
					t.Errorf("clean BDAT message after the rejected ones: %q, want 250", got)
				}
				if extra, ok := c.quit(); !ok || len(extra) > 0 {
					t.Errorf("unexpected replies before QUIT's 221: %q", extra)
				}
				if s := box.session(t); s["data"] != "1" {
					t.Errorf("Postfix counted data=%s, want 1 (the clean message only): %s", s["data"], s["line"])
				}
				msgs := box.next(t, 1)
				if len(msgs) != 1 || !smugHasHeader(msgs[0], "Subject: clean after "+v.name) {
					t.Errorf("want only the clean message delivered:\n%s", smugDescribe(msgs))
				}
			})
		}
		box.settle(t)
	})
}
