package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"time"

	"moat/inspect"
	"moat/inspect/sequencer"
	"moat/inspect/smtp"
)

// do carries out a step of the session sequencer: the upstream's
// transaction reset and the transaction log first, then the replies, then
// the step's op, which may feed the sequencer again. It returns false when
// the session is over.
func (c *conn) do(s sequencer.Step) bool {
	for {
		if s.Judged != nil {
			c.judged(s.Judged)
		}
		if s.Began {
			c.txStart = time.Now()
		}
		if s.ResetUpstream {
			c.rsetUpstream()
		}
		if s.Authed != nil {
			c.authEnded(s.Authed)
		}
		if s.Ended != nil {
			c.finishTx(s.Ended)
			c.spool.reset()
			c.bdat = nil
		}
		if s.Op == sequencer.OpDrain && !c.drainChunk(s.Size) {
			return false
		}
		for _, r := range s.Replies {
			c.reply(r)
		}
		var next sequencer.Step
		switch s.Op {
		case sequencer.OpNone, sequencer.OpDrain:
			return true
		case sequencer.OpClose:
			return false
		case sequencer.OpMail:
			next = c.upstreamMail(s)
		case sequencer.OpRcpt:
			var ok bool
			if next, ok = c.upstreamRcpt(s); !ok {
				return true // queued: the reply comes with the batch
			}
		case sequencer.OpData:
			var ok bool
			if next, ok = c.readData(); !ok {
				return false
			}
		case sequencer.OpChunk:
			var ok bool
			if next, ok = c.readChunk(s.Size, s.Last); !ok {
				return false
			}
		case sequencer.OpRelay:
			next = c.relay()
		case sequencer.OpStartTLS:
			return c.startTLS()
		case sequencer.OpAuth:
			next = c.upstreamAuth(s.Line)
		default:
			return true
		}
		s = next
	}
}

// upstreamMail opens the upstream transaction: a connection (pooled or
// new), then MAIL FROM with the parameters the upstream advertised.
func (c *conn) upstreamMail(s sequencer.Step) sequencer.Step {
	if err := c.ensureUpstream(true); err != nil {
		return c.q.UpstreamReply(c.upstreamFailed(err), true)
	}
	mailLine := func() string { return "MAIL FROM:" + smtp.FormatPathArg(s.Path, c.upstreamParams(s.Params)) }
	rep, err := c.up.cmd(c.cfg.Upstream.CommandTimeout, mailLine())
	if err != nil && c.upPooled {
		// A pooled connection the upstream closed while it sat idle:
		// nothing was started there; start over on a fresh one.
		c.log.Debug("pooled upstream connection failed, reconnecting", "err", err)
		if err = c.ensureUpstream(false); err == nil {
			rep, err = c.up.cmd(c.cfg.Upstream.CommandTimeout, mailLine())
		}
	}
	c.upPooled = false
	if err != nil {
		return c.q.UpstreamReply(c.upstreamFailed(err), true)
	}
	c.srv.metrics.upstreamReply("mail", rep.Code)
	if rep.Class() == 2 {
		c.up.inTx = true
	}
	return c.q.UpstreamReply(rep, false)
}

// upstreamParams are the MAIL parameters replayed to the upstream: those
// it advertised. SIZE and BODY are dropped for an upstream without them
// (RFC 1870, RFC 6152 allow that); SMTPUTF8 and DSN ones only reach here
// when the upstream offered them.
func (c *conn) upstreamParams(params []smtp.Param) []smtp.Param {
	caps := c.up.caps
	out := params[:0:0]
	for _, p := range params {
		switch {
		case p.Key == "SIZE" && !caps.size, p.Key == "BODY" && !caps.eightBit, p.Key == "AUTH" && !caps.auth:
			continue
		}
		out = append(out, p)
	}
	return out
}

// upstreamRcpt queues a RCPT for the upstream. Pipelined RCPTs (RFC 2920)
// go to an upstream that offers PIPELINING as one batch, with one flush;
// the batch ends, and its replies are read and answered in order, when
// the client stops pipelining or sends anything else. ok is false while
// the RCPT waits in the batch.
func (c *conn) upstreamRcpt(s sequencer.Step) (sequencer.Step, bool) {
	if c.up == nil || c.up.broken {
		// The upstream transaction is gone; no recipient can be added
		// to it. The client retries the whole message later.
		r := c.upstreamFailed(&upstreamError{"rcpt", errors.New("connection lost earlier in the transaction")})
		return c.q.UpstreamReply(r, true), true
	}
	c.up.queue(c.cfg.Upstream.CommandTimeout, "RCPT TO:"+smtp.FormatPathArg(s.Path, s.Params))
	// Whether the next command may join the batch (another RCPT, within
	// the recipient limit, no rule reading rcpt_count) is the sequencer's
	// to say: it asks for the replies first (OpResolve) when not.
	if c.up.caps.pipelining && c.q.Pending() < maxPipelinedRcpts && c.lineBuffered() {
		return sequencer.Step{}, false
	}
	c.resolvePending()
	return sequencer.Step{}, true
}

// maxPipelinedRcpts bounds a batch of RCPTs sent before their replies
// are read, so that the upstream's replies cannot fill its socket
// buffer while moat is still writing.
const maxPipelinedRcpts = 100

// lineBuffered reports whether a whole command line from the client is
// waiting in the read buffer: the client pipelined (RFC 2920), and the
// command will be read without blocking.
func (c *conn) lineBuffered() bool {
	n := c.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := c.r.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// resolvePending sends the pending RCPTs with one flush, reads their
// replies in order and feeds each to the sequencer, which answers the
// client: the upstream's reply, or a 4xx when the upstream failed (then
// for the rest of the batch too).
func (c *conn) resolvePending() {
	n := c.q.Pending()
	if n == 0 {
		return
	}
	err := c.up.flush(c.cfg.Upstream.CommandTimeout)
	for range n {
		var rep smtp.Reply
		if err == nil {
			rep, err = c.up.read(c.cfg.Upstream.CommandTimeout)
		}
		var s sequencer.Step
		if err != nil {
			s = c.q.UpstreamReply(c.upstreamFailed(err), true)
		} else {
			c.srv.metrics.upstreamReply("rcpt", rep.Code)
			s = c.q.UpstreamReply(rep, false)
		}
		for _, r := range s.Replies {
			c.writeReply(r)
		}
	}
}

// startTLS upgrades the session to TLS (RFC 3207) after the 220.
func (c *conn) startTLS() bool {
	if err := c.w.Flush(); err != nil {
		return false
	}
	injected := false
	if n := c.r.Buffered(); n > 0 {
		// Commands pipelined behind STARTTLS arrived in plaintext and
		// must not be executed inside the TLS session (CVE-2011-0411).
		injected = true
		c.log.Warn("discarded commands pipelined after STARTTLS", "bytes", n, "client_ip", c.q.Session.Client.Addr().String())
		c.r.Discard(n)
	}
	if !c.handshake() {
		return false
	}
	c.q.TLSStarted(c.q.Session.TLS, injected)
	return true
}

// upstreamAuth relays one line of an AUTH exchange (RFC 4954 §4) to the
// upstream, which holds the passwords, and hands its reply to the
// sequencer. The exchange runs on a connection of this session's own,
// never a pooled one: once it succeeds the connection is bound to the
// session (the upstream knows the user on it alone). line carries
// credentials and is never logged.
func (c *conn) upstreamAuth(line string) sequencer.Step {
	if err := c.ensureUpstream(false); err != nil {
		return c.q.AuthReply(c.upstreamFailed(err), true)
	}
	c.upPooled = false
	if !c.up.caps.auth {
		c.log.Warn("upstream does not offer AUTH: submission clients cannot authenticate (Postfix: smtpd_sasl_auth_enable)")
		return c.q.AuthReply(smtp.Reply{}, true)
	}
	rep, err := c.up.cmd(c.cfg.Upstream.CommandTimeout, line)
	if err != nil {
		return c.q.AuthReply(c.upstreamFailed(err), true)
	}
	c.srv.metrics.upstreamReply("auth", rep.Code)
	if rep.Code == 235 {
		c.up.authenticated = true
	}
	return c.q.AuthReply(rep, false)
}

// authEnded logs and counts an AUTH exchange that is over: mechanism,
// user name and outcome, never the credentials.
func (c *conn) authEnded(a *sequencer.AuthEnded) {
	c.srv.metrics.authAttempt(string(a.Outcome))
	c.log.Info("auth", "client_ip", c.q.Session.Client.Addr().String(), "mech", a.Mech,
		"user", a.User, "outcome", string(a.Outcome), "reply", a.Reply.Summary())
}

// errAuthUpstreamLost: the connection the session authenticated on
// broke. Another one would not be authenticated (RFC 4954 §4 allows one
// AUTH per session), so the session ends.
var errAuthUpstreamLost = &upstreamError{"auth", errors.New("the authenticated upstream connection was lost")}

// ensureUpstream makes sure a usable upstream connection is open,
// replacing one that broke in an earlier transaction: an idle one from the
// pool when fromPool allows, else a new one.
func (c *conn) ensureUpstream(fromPool bool) error {
	if c.up != nil && !c.up.broken {
		return nil
	}
	if c.q.Session.AuthUser != "" {
		return errAuthUpstreamLost
	}
	if c.up != nil {
		c.up.quit()
		c.up = nil
	}
	if fromPool && poolable(c.cfg) {
		if u := c.srv.pool.get(c.cfg); u != nil {
			c.up, c.upPooled = u, true
			c.srv.metrics.upstreamReused()
			return nil
		}
	}
	start := time.Now()
	u, err := dialUpstream(c.ctx, c.cfg, &c.q.Session)
	c.srv.metrics.upstreamConnect(err, time.Since(start))
	c.srv.ready.Store(err == nil)
	if err != nil {
		return err
	}
	c.srv.caps.Store(&u.caps)
	c.q.SetUpstream(sequencer.Upstream{SMTPUTF8: u.caps.smtputf8, DSN: u.caps.dsn})
	c.up = u
	return nil
}

// rsetUpstream aborts the upstream's side of the transaction.
func (c *conn) rsetUpstream() {
	if c.up != nil {
		c.up.rset()
	}
}

// upstreamFailed is the reply to a failed upstream round trip: a 4xx and
// never anything else (end-to-end acknowledgement).
func (c *conn) upstreamFailed(err error) smtp.Reply {
	var ue *upstreamError
	if !errors.As(err, &ue) {
		ue = &upstreamError{"command", err}
	}
	c.log.Warn("upstream failed", "stage", ue.op, "err", err)
	return ue.reply()
}

// logDecision writes the one line per decision that is not a plain
// accept — a refusal, a tag, or what monitor mode or shadow rules would
// have done — with its stable reason constant and the full rule trace.
// Refusal texts carry the session ID, which is on this line too.
func (c *conn) logDecision(stage inspect.Stage, v inspect.Verdict) {
	c.log.Info("decision", "stage", stage.String(), "action", v.Action.String(),
		"would_be", v.WouldBe.String(), "reason", v.Reason, "score", v.Score, "rules", v.Rules,
		"trace", v.Trace, "client_ip", c.q.Session.Client.Addr().String())
}

// judged counts a stage's verdict and logs it when it is worth logging.
func (c *conn) judged(j *sequencer.Judgement) {
	stage, v := j.Stage, j.Verdict
	c.noteVerdict(stage, v)
	switch {
	case v.Action != inspect.Accept || v.WouldBe != inspect.Accept:
		c.logDecision(stage, v)
	case len(v.Trace) > 0 && c.log.Enabled(c.ctx, slog.LevelDebug):
		c.log.Debug("rules matched", "stage", stage.String(), "score", v.Score, "trace", v.Trace)
	}
}
