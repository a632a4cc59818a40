package proxy

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

// cmdData receives a message (RFC 5321 §4.1.1.4), runs the data stage,
// and relays the message to the upstream. The client's 250 is the
// upstream's 250: moat acknowledges nothing the upstream has not accepted.
func (c *conn) cmdData(cmd smtp.Command) bool {
	switch {
	case c.state < stateMail || c.state == stateRefused:
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: need MAIL command"))
	case c.state == stateMail && c.rcptTried > 0:
		// RFC 5321 §3.3 and RFC 2920 §3.1: with every RCPT refused, a
		// pipelined DATA gets 554, not 354, and no data follows.
		return c.refuse(smtp.Replyf(554, "5.5.1", "Error: no valid recipients"))
	case c.state == stateMail:
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: need RCPT command"))
	case cmd.Arg != "":
		return c.refuse(smtp.Replyf(501, "5.5.4", "Syntax: DATA"))
	}
	c.reply(smtp.Replyf(354, "", "End data with <CR><LF>.<CR><LF>"))
	if err := c.w.Flush(); err != nil {
		return false
	}

	msg, tooBig, err := c.readData()
	if err != nil {
		// The client vanished or stalled mid-message: nothing was
		// acknowledged, so nothing is lost; the upstream transaction is
		// aborted with the session.
		c.log.Info("data read failed", "err", err)
		c.readFailed(err)
		return false
	}
	if tooBig {
		// RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: 552 after the data was
		// drained, so the conversation stays in step.
		r := smtp.Replyf(552, "5.3.4", "Message size exceeds fixed maximum message size")
		c.finishTx("rejected", r)
		c.rsetUpstream()
		c.reset()
		c.reply(r)
		return true
	}

	v := c.srv.engine.Data(c.ctx, &c.sess, &c.tx, msg)
	if v.Action >= inspect.Tempfail {
		c.logDecision(inspect.StageData, v)
		r := v.WireReply(inspect.StageData)
		c.finishTx(v.Action.String(), r)
		c.rsetUpstream()
		c.reset()
		c.reply(r)
		return true
	}

	rep := c.relay()
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
	return true
}

// readData reads the message into the spool. Past the size limit the rest
// is drained, not stored, and tooBig reported. err is set only when the
// client could not finish sending.
func (c *conn) readData() (msg *inspect.Message, tooBig bool, err error) {
	c.rd.timeout = c.srv.cfg.Timeouts.Data
	defer func() { c.rd.timeout = c.srv.cfg.Timeouts.Command }()

	dr := smtp.NewDataReader(c.r)
	lw := limitWriter{w: &c.spool, n: int64(c.srv.cfg.Limits.MaxMessageSize)}
	_, err = io.Copy(&lw, dr)
	if err != nil {
		return nil, false, err
	}
	if lw.err != nil {
		// The spool failed (disk full): the message cannot be judged.
		return nil, false, lw.err
	}
	return &inspect.Message{Size: c.spool.size, Body: &c.spool, BareLF: dr.BareLF(), BareCR: dr.BareCR()}, lw.over, nil
}

// relay sends the spooled message to the upstream and returns the reply
// for the client: the upstream's final reply, or a 4xx when the upstream
// failed in any way.
func (c *conn) relay() smtp.Reply {
	if c.up == nil || c.up.broken {
		return (&upstreamError{"data", errors.New("connection lost earlier in the transaction")}).reply()
	}
	start := time.Now()
	rep, err := c.up.data(func(w io.Writer) error {
		if _, err := io.WriteString(w, c.receivedHeader()); err != nil {
			return err
		}
		_, err := c.spool.WriteTo(w)
		return err
	})
	c.up.inTx = false
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
	return rep
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
	b.WriteString(c.srv.cfg.Hostname)
	b.WriteString(" (moat) with ")
	b.WriteString(c.protocol())
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
	)
	c.srv.metrics.transaction(outcome)
}

// limitWriter stores up to n bytes and swallows the rest, so that an
// oversized message is drained from the client without being kept.
type limitWriter struct {
	w    io.Writer
	n    int64
	over bool
	err  error
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.over || l.err != nil {
		return len(p), nil
	}
	if int64(len(p)) > l.n {
		l.over = true
		return len(p), nil
	}
	l.n -= int64(len(p))
	if _, err := l.w.Write(p); err != nil {
		l.err = err
	}
	return len(p), nil
}
