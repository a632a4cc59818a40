package proxy

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

// cmdData receives a message (RFC 5321 §4.1.1.4), runs the data stage,
// and relays the message to the upstream. The client's 250 is the
// upstream's 250: moat acknowledges nothing the upstream has not accepted.
func (c *conn) cmdData(cmd smtp.Command) bool {
	switch {
	case c.bdat != nil:
		// RFC 3030 §2: DATA may not follow BDAT in one transaction.
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: DATA after BDAT"))
	case cmd.Arg != "":
		return c.refuse(smtp.Replyf(501, "5.5.4", "Syntax: DATA"))
	}
	if r, ok := c.readyForData(); !ok {
		return c.refuse(r)
	}
	c.reply(smtp.Replyf(354, "", "End data with <CR><LF>.<CR><LF>"))
	if err := c.w.Flush(); err != nil {
		return false
	}

	c.rd.timeout = c.cfg.Timeouts.Data
	sink := c.newSink()
	buf := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(sink, smtp.NewDataReader(c.r), *buf)
	copyBufs.Put(buf)
	c.rd.timeout = c.cfg.Timeouts.Command
	if err != nil {
		// The client vanished or stalled mid-message: nothing was
		// acknowledged, so nothing is lost; the upstream transaction is
		// aborted with the session.
		c.log.Info("data read failed", "err", err)
		c.readFailed(err)
		return false
	}
	c.deliver(sink)
	return true
}

// copyBufs are the buffers messages are copied through, shared by all
// sessions: most sessions carry one message, so a buffer per session
// would be garbage per message.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// readyForData checks that a transaction can take a message: a MAIL and
// at least one accepted recipient.
func (c *conn) readyForData() (smtp.Reply, bool) {
	switch {
	case c.state < stateMail || c.state == stateRefused:
		return smtp.Replyf(503, "5.5.1", "Error: need MAIL command"), false
	case c.state == stateMail && c.rcptTried > 0:
		// RFC 5321 §3.3 and RFC 2920 §3.1: with every RCPT refused, a
		// pipelined DATA gets 554, not 354, and no data follows.
		return smtp.Replyf(554, "5.5.1", "Error: no valid recipients"), false
	case c.state == stateMail:
		return smtp.Replyf(503, "5.5.1", "Error: need RCPT command"), false
	}
	return smtp.Reply{}, true
}

// bdatState is a BDAT transfer in progress (RFC 3030).
type bdatState struct {
	sink *sink
}

// cmdBdat receives one chunk of a message (RFC 3030 §2). Whatever moat
// answers, the chunk's octets follow the command on the wire and are read
// (or drained), so the conversation stays in step. The message goes to the
// upstream as DATA, re-serialised like any other.
func (c *conn) cmdBdat(cmd smtp.Command) bool {
	size, last, err := smtp.ParseBDATArg(cmd.Arg)
	if err != nil {
		// Without a size there is no telling where the chunk ends and the
		// next command starts: the session cannot continue in step.
		c.reply(smtp.Reply{Code: 501, Enhanced: "5.5.4", Lines: []string{"Syntax: BDAT size [LAST]"}, Err: err})
		c.reply(smtp.Replyf(421, "4.5.0", "%s Lost synchronisation, closing connection", c.cfg.Hostname))
		return false
	}
	var refusal smtp.Reply
	if !c.offer.chunking {
		refusal = smtp.Replyf(503, "5.5.1", "Error: BDAT without CHUNKING in EHLO")
	} else if r, ok := c.readyForData(); !ok {
		refusal = r
	}
	if refusal.Code != 0 {
		if !c.drainChunk(size) {
			return false
		}
		if c.bdat != nil {
			// RFC 3030 §2: after a failed chunk the transaction is over.
			c.finishTx("aborted", refusal)
			c.rsetUpstream()
			c.reset()
		}
		return c.refuse(refusal)
	}
	if c.bdat == nil {
		c.bdat = &bdatState{sink: c.newSink()}
	}
	c.rd.timeout = c.cfg.Timeouts.Data
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(c.bdat.sink, io.LimitReader(c.r, size), *buf)
	copyBufs.Put(buf)
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF // the client closed inside the chunk
	}
	c.rd.timeout = c.cfg.Timeouts.Command
	if err != nil {
		c.log.Info("BDAT chunk read failed", "err", err)
		c.readFailed(err)
		return false
	}
	if !last {
		c.reply(smtp.Replyf(250, "2.0.0", "%d octets received", size))
		return true
	}
	c.deliver(c.bdat.sink)
	return true
}

// drainChunk reads and drops a refused chunk, up to a bound: a client
// announcing more than twice the size limit is not worth reading and the
// session ends.
func (c *conn) drainChunk(size int64) bool {
	if size > 2*int64(c.cfg.Limits.MaxMessageSize) {
		c.reply(smtp.Replyf(552, "5.3.4", "Message size exceeds fixed maximum message size"))
		c.reply(smtp.Replyf(421, "4.5.0", "%s Closing connection", c.cfg.Hostname))
		return false
	}
	c.rd.timeout = c.cfg.Timeouts.Data
	_, err := io.CopyN(io.Discard, c.r, size)
	c.rd.timeout = c.cfg.Timeouts.Command
	if err != nil {
		c.readFailed(err)
		return false
	}
	return true
}

// deliver finishes a received message: the size, header and line-ending
// policies, the data stage, then the relay. It always ends the
// transaction and queues exactly one reply.
func (c *conn) deliver(sink *sink) {
	sink.ends.Close()
	var refusal smtp.Reply
	switch {
	case sink.over:
		// RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: 552 after the data was
		// drained, so the conversation stays in step.
		refusal = smtp.Replyf(552, "5.3.4", "Message size exceeds fixed maximum message size")
	case sink.header.over:
		refusal = smtp.Replyf(552, "5.3.4", "Message header size exceeds limit")
	case sink.err != nil:
		// The spool failed (disk full): the message cannot be judged.
		c.log.Error("spool failed", "err", sink.err)
		refusal = smtp.Replyf(451, "4.3.1", "Insufficient system storage, try again later")
	case sink.ends.BareLF && c.cfg.Data.BareLF == "reject",
		sink.ends.BareCR && c.cfg.Data.BareCR == "reject":
		// The line endings of SMTP smuggling; Postfix's
		// smtpd_forbid_bare_newline answers the same way.
		refusal = smtp.Replyf(550, "5.5.2", "Message contains bare CR or LF line endings, use CRLF")
	}
	c.srv.metrics.bareLineEndings(sink.ends.BareLF, sink.ends.BareCR, refusal.Code == 550)
	if refusal.Code != 0 {
		c.finishTx("rejected", refusal)
		c.rsetUpstream()
		c.reset()
		c.reply(refusal)
		return
	}

	c.srv.metrics.messageReceived(c.spool.size)
	msg := &inspect.Message{Size: c.spool.size, Body: &c.spool, BareLF: sink.ends.BareLF, BareCR: sink.ends.BareCR}
	v := c.engine.Data(c.ctx, &c.sess, &c.tx, msg)
	c.tx.Keep(inspect.StageData, v)
	c.verdict = v
	if c.judged(inspect.StageData, v) {
		r := v.WireReply(inspect.StageData)
		c.finishTx(v.Action.String(), r)
		c.rsetUpstream()
		c.reset()
		c.reply(r)
		return
	}

	rep := c.relay(&v)
	// An upstream that refused DATA itself still holds the transaction
	// (RFC 5321 §4.1.1.4); end it there too, or the client's next MAIL
	// would meet "503 nested MAIL command" — on this session or, through
	// the pool, on another client's.
	c.rsetUpstream()
	outcome := "delivered"
	if rep.Class() != 2 {
		outcome = "upstream_refused"
		if rep.Err != nil {
			outcome = "upstream_failed"
		}
	}
	c.finishTx(outcome, rep)
	c.reset()
	c.reply(rep)
}

// sink is where message bytes go while they are read: the spool, up to
// the size limit (the rest is drained, not kept), with the header section
// measured and line endings watched on the way.
type sink struct {
	spool  *spool
	room   int64 // bytes the size limit still allows
	over   bool  // the message exceeded the size limit
	err    error // the spool failed
	header headerScan
	ends   smtp.LineEndings
}

func (c *conn) newSink() *sink {
	return &sink{spool: &c.spool, room: int64(c.cfg.Limits.MaxMessageSize),
		header: headerScan{limit: int64(c.cfg.Limits.MaxHeaderSize), lineStart: true}}
}

func (s *sink) Write(p []byte) (int, error) {
	if s.over || s.err != nil {
		return len(p), nil
	}
	if int64(len(p)) > s.room {
		s.over = true
		return len(p), nil
	}
	s.room -= int64(len(p))
	s.header.scan(p)
	s.ends.Write(p)
	if _, err := s.spool.Write(p); err != nil {
		s.err = err
	}
	return len(p), nil
}

// headerScan measures the header section (RFC 5322 §2.1: up to the first
// empty line) as the message streams past.
type headerScan struct {
	limit, n  int64
	lineStart bool // the next byte starts a line
	done      bool // the empty line was seen, or the limit passed
	over      bool // the header section exceeded the limit
}

func (h *headerScan) scan(p []byte) {
	for _, b := range p {
		if h.done {
			return
		}
		if h.n++; h.n > h.limit {
			h.over, h.done = true, true
			return
		}
		switch b {
		case '\r':
			// A CR keeps the line start: CR LF at a line start is the
			// empty line.
		case '\n':
			if h.lineStart {
				h.done = true
			}
			h.lineStart = true
		default:
			h.lineStart = false
		}
	}
}

// relay sends the spooled message to the upstream and returns the reply
// for the client: the upstream's final reply, or a 4xx when the upstream
// failed in any way.
func (c *conn) relay(v *inspect.Verdict) smtp.Reply {
	if c.up == nil || c.up.broken {
		return (&upstreamError{"data", errors.New("connection lost earlier in the transaction")}).reply()
	}
	start := time.Now()
	rep, err := c.up.data(func(w io.Writer) error {
		if _, err := io.WriteString(w, c.receivedHeader()); err != nil {
			return err
		}
		return writeMessage(w, &c.spool, v)
	})
	c.srv.metrics.upstreamData(err, time.Since(start))
	if err != nil {
		var ue *upstreamError
		errors.As(err, &ue)
		c.log.Warn("upstream failed", "stage", "data", "err", err)
		return ue.reply()
	}
	c.srv.metrics.upstreamReply("data", rep.Code)
	if rep.Code == 354 {
		// Cannot happen: data() only returns 354 as the DATA reply when
		// it sent nothing. Never pass a 3xx as a final answer.
		return (&upstreamError{"data", errors.New("unexpected 354")}).reply()
	}
	return c.relayed(rep, "DATA")
}

// receivedHeader is moat's trace header (RFC 5321 §4.4): the client's
// HELO and IP, moat's name, the protocol (RFC 3848) and the session ID.
func (c *conn) receivedHeader() string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	b.WriteString(sanitizeHelo(c.sess.Helo))
	b.WriteString(" (")
	b.WriteString(addressLiteral(c.sess.Client.Addr()))
	b.WriteString(")\r\n\tby ")
	b.WriteString(c.cfg.Hostname)
	b.WriteString(" (moat) with ")
	b.WriteString(c.protocol())
	if t := c.sess.TLS; t != nil {
		b.WriteString(" (")
		b.WriteString(t.Version)
		b.WriteString(" ")
		b.WriteString(t.Cipher)
		b.WriteString(")")
	}
	b.WriteString(" id ")
	b.WriteString(c.sess.ID)
	if len(c.tx.Rcpts) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(c.tx.Rcpts[0].Path.String())
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(time.Now().Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// protocol is the "with" keyword of RFC 3848.
func (c *conn) protocol() string {
	p := "SMTP"
	if c.sess.ESMTP() {
		p = "ESMTP"
	}
	if c.sess.TLS != nil {
		p += "S"
	}
	return p
}

// addressLiteral formats an IP as RFC 5321 §4.1.3 writes it.
func addressLiteral(a netip.Addr) string {
	if a.Is6() {
		return "[IPv6:" + a.String() + "]"
	}
	return "[" + a.String() + "]"
}

// finishTx writes the one log line per transaction and counts it.
func (c *conn) finishTx(outcome string, final smtp.Reply) {
	rcpts := make([]rcptResult, len(c.rcptLog))
	copy(rcpts, c.rcptLog)
	c.log.Info("transaction",
		"client_ip", c.sess.Client.Addr().String(),
		"client_port", c.sess.Client.Port(),
		"helo", c.sess.Helo,
		"mail_from", c.tx.From.String(),
		"rcpts", rcpts,
		"size", c.spool.size,
		"verdict", outcome,
		"upstream_reply", replySummary(final),
		"duration_s", time.Since(c.txStart).Seconds(),
		"tls", c.tlsSummary(),
		"action", c.verdict.Action.String(),
		"would_be", c.verdict.WouldBe.String(),
		"score", c.verdict.Score,
		"rules", c.verdict.Rules,
	)
	c.srv.metrics.transaction(outcome)
}

// tlsSummary is the session's TLS version and cipher for logs, "" without
// TLS.
func (c *conn) tlsSummary() string {
	if c.sess.TLS == nil {
		return ""
	}
	return c.sess.TLS.Version + " " + c.sess.TLS.Cipher
}
