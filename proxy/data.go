package proxy

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"moat/inspect"
	"moat/inspect/sequencer"
	"moat/inspect/smtp"
)

// readData reads a message after moat's 354 (RFC 5321 §4.1.1.4) with
// strict framing into the spool, and hands it to the sequencer, which
// judges it. ok is false when the client vanished or stalled mid-message:
// nothing was acknowledged, so nothing is lost.
func (c *conn) readData() (next sequencer.Step, ok bool) {
	if err := c.w.Flush(); err != nil {
		return next, false
	}
	c.rd.timeout = c.cfg.Timeouts.Data
	sink := c.newSink()
	buf := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(sink, smtp.NewDataReader(c.r), *buf)
	copyBufs.Put(buf)
	c.rd.timeout = c.cfg.Timeouts.Command
	if err != nil {
		c.log.Info("data read failed", "err", err)
		c.readFailed(err)
		return next, false
	}
	return c.q.Message(c.received(sink)), true
}

// copyBufs are the buffers messages are copied through, shared by all
// sessions: most sessions carry one message, so a buffer per session
// would be garbage per message.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bdatState is a BDAT transfer in progress (RFC 3030).
type bdatState struct {
	sink *sink
}

// readChunk reads one BDAT chunk (RFC 3030 §2) into the message: exactly
// size octets follow the command. The message goes to the upstream as
// DATA, re-serialised like any other.
func (c *conn) readChunk(size int64, last bool) (next sequencer.Step, ok bool) {
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
		return next, false
	}
	var m sequencer.Received
	if last {
		m = c.received(c.bdat.sink)
		c.bdat = nil
	}
	return c.q.Chunk(size, last, m), true
}

// drainChunk reads and drops a refused chunk.
func (c *conn) drainChunk(size int64) bool {
	c.rd.timeout = c.cfg.Timeouts.Data
	_, err := io.CopyN(io.Discard, c.r, size)
	c.rd.timeout = c.cfg.Timeouts.Command
	if err != nil {
		c.readFailed(err)
		return false
	}
	return true
}

// received describes a message read into sink for the sequencer.
func (c *conn) received(sink *sink) sequencer.Received {
	sink.ends.Close()
	if sink.err != nil {
		c.log.Error("spool failed", "err", sink.err)
	}
	c.srv.metrics.bareLineEndings(sink.ends.BareLF, sink.ends.BareCR,
		sink.ends.BareLF && c.cfg.Data.BareLF == "reject" || sink.ends.BareCR && c.cfg.Data.BareCR == "reject")
	if !sink.over && !sink.header.over && sink.err == nil {
		c.srv.metrics.messageReceived(c.spool.size)
	}
	return sequencer.Received{
		Message: &inspect.Message{Size: c.spool.size, Body: &c.spool, BareLF: sink.ends.BareLF, BareCR: sink.ends.BareCR},
		Over:    sink.over, HeaderOver: sink.header.over, SpoolErr: sink.err,
	}
}

// sink is where message bytes go while they are read: the spool, up to
// the size limit (the rest is drained, not kept), with the header section
// measured and line endings watched on the way.
type sink struct {
	spool  *spool
	auth   io.Writer // the engine's sender-authentication checks, nil when off
	room   int64     // bytes the size limit still allows
	over   bool      // the message exceeded the size limit
	err    error     // the spool failed
	header headerScan
	ends   smtp.LineEndings
}

func (c *conn) newSink() *sink {
	return &sink{spool: &c.spool, auth: c.q.MessageWriter(), room: int64(c.cfg.Limits.MaxMessageSize),
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
	if s.auth != nil {
		// DKIM and ARC hash the body as it arrives: no second pass.
		s.auth.Write(p)
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

// relay sends the spooled message to the upstream and hands its final
// reply, or moat's 4xx when the upstream failed in any way, to the
// sequencer.
func (c *conn) relay() sequencer.Step {
	if c.up == nil || c.up.broken {
		return c.q.Relayed(c.upstreamFailed(&upstreamError{"data", errors.New("connection lost earlier in the transaction")}), true)
	}
	v := c.q.Verdict()
	start := time.Now()
	rep, err := c.up.data(func(w io.Writer) error {
		if _, err := io.WriteString(w, c.receivedHeader()); err != nil {
			return err
		}
		return writeMessage(w, &c.spool, &v)
	})
	c.srv.metrics.upstreamData(err, time.Since(start))
	if err != nil {
		return c.q.Relayed(c.upstreamFailed(err), true)
	}
	c.srv.metrics.upstreamReply("data", rep.Code)
	return c.q.Relayed(rep, false)
}

// receivedHeader is moat's trace header (RFC 5321 §4.4): the client's
// HELO and IP, moat's name, the protocol (RFC 3848) and the session ID.
func (c *conn) receivedHeader() string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	b.WriteString(sequencer.SanitizeHelo(c.q.Session.Helo))
	b.WriteString(" (")
	b.WriteString(addressLiteral(c.q.Session.Client.Addr()))
	b.WriteString(")\r\n\tby ")
	b.WriteString(c.cfg.Hostname)
	b.WriteString(" (moat) with ")
	b.WriteString(c.protocol())
	if t := c.q.Session.TLS; t != nil {
		b.WriteString(" (")
		b.WriteString(t.Version)
		b.WriteString(" ")
		b.WriteString(t.Cipher)
		b.WriteString(")")
	}
	b.WriteString(" id ")
	b.WriteString(c.q.Session.ID)
	if len(c.q.Tx.Rcpts) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(c.q.Tx.Rcpts[0].Path.String())
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(time.Now().Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// protocol is the "with" keyword of RFC 3848: ESMTP, then S for TLS
// and A for an authenticated session (ESMTPSA). SMTP AUTH is an ESMTP
// extension, so plain SMTP never gets the A.
func (c *conn) protocol() string {
	p := "SMTP"
	if c.q.Session.ESMTP() {
		p = "ESMTP"
	}
	if c.q.Session.TLS != nil {
		p += "S"
	}
	if c.q.Session.AuthUser != "" && c.q.Session.ESMTP() {
		p += "A"
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
func (c *conn) finishTx(e *sequencer.Ended) {
	v := e.Judgement.Verdict
	var authAttr []any
	if v.Auth != nil {
		authAttr = []any{"auth", v.Auth.Summary()}
	}
	if v.Classifier != nil {
		authAttr = append(authAttr, "classifier", v.Classifier)
	}
	c.log.Info("transaction", append([]any{
		"client_ip", c.q.Session.Client.Addr().String(),
		"client_port", c.q.Session.Client.Port(),
		"helo", c.q.Session.Helo,
		"mail_from", e.From.String(),
		"rcpts", e.Rcpts,
		"size", e.Size,
		"verdict", e.Outcome,
		"upstream_reply", e.Final.Summary(),
		"duration_s", time.Since(c.txStart).Seconds(),
		"tls", c.tlsSummary(),
		"auth_user", c.q.Session.AuthUser,
		"stage", e.Judgement.Stage.String(),
		"action", v.Action.String(),
		"would_be", v.WouldBe.String(),
		"score", v.Score,
		"rules", v.Rules,
	}, authAttr...)...)
	c.srv.metrics.transaction(e.Outcome)
}

// tlsSummary is the session's TLS version and cipher for logs, "" without
// TLS.
func (c *conn) tlsSummary() string {
	if c.q.Session.TLS == nil {
		return ""
	}
	return c.q.Session.TLS.Version + " " + c.q.Session.TLS.Cipher
}
