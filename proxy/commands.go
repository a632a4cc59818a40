package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

// cmdHelo answers HELO and EHLO (RFC 5321 §4.1.1.1). Either may come again
// later in the session; it then resets any transaction (§4.1.4).
func (c *conn) cmdHelo(cmd smtp.Command) bool {
	if cmd.Arg == "" {
		return c.refuse(smtp.Replyf(501, "5.5.4", "Syntax: %s hostname", cmd.Verb))
	}
	if c.state >= stateMail && c.state != stateRefused {
		c.finishTx("aborted", smtp.Reply{})
		c.rsetUpstream()
	}
	c.reset()
	c.sess.HeloVerb, c.sess.Helo = cmd.Verb, cmd.Arg
	v := c.engine.Helo(c.ctx, &c.sess)
	c.sess.Keep(inspect.StageHelo, v) // replaces an earlier HELO's
	if c.judged(inspect.StageHelo, v) {
		c.sess.HeloVerb, c.sess.Helo = "", ""
		c.state = stateGreeted
		c.reply(v.WireReply(inspect.StageHelo))
		return true
	}
	c.state = stateHelo
	host := c.cfg.Hostname
	if cmd.Verb == "HELO" {
		c.offer = upstreamCaps{}
		c.reply(smtp.Replyf(250, "", "%s", host))
		return true
	}
	c.offer = c.offerCaps()
	lines := []string{host + " greets " + sanitizeHelo(cmd.Arg), "PIPELINING",
		"SIZE " + strconv.FormatInt(int64(c.cfg.Limits.MaxMessageSize), 10),
		"8BITMIME", "ENHANCEDSTATUSCODES"}
	if c.offer.starttls {
		lines = append(lines, "STARTTLS")
	}
	lines = append(lines, "CHUNKING")
	if c.offer.smtputf8 {
		lines = append(lines, "SMTPUTF8")
	}
	if c.offer.dsn {
		lines = append(lines, "DSN")
	}
	c.reply(smtp.Reply{Code: 250, Lines: lines})
	return true
}

// offerCaps decides what this session may use: what moat honours itself,
// plus SMTPUTF8 and DSN only when the upstream advertised them, because
// moat cannot downgrade a UTF-8 envelope or generate DSNs itself.
func (c *conn) offerCaps() upstreamCaps {
	o := upstreamCaps{esmtp: true, pipelining: true, size: true, eightBit: true, chunking: true,
		starttls: *c.cfg.TLS.STARTTLS && c.sess.TLS == nil}
	if up := c.srv.caps.Load(); up != nil {
		o.smtputf8 = up.smtputf8
		o.dsn = up.dsn
	}
	return o
}

// cmdMail starts a transaction (RFC 5321 §4.1.1.2). The mail stage runs
// first; only then does the upstream connection open, so junk refused at
// connect, helo or mail never costs the upstream anything.
func (c *conn) cmdMail(cmd smtp.Command) bool {
	switch {
	case c.state == stateGreeted:
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: send HELO/EHLO first"))
	case c.state >= stateMail:
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: nested MAIL command"))
	}
	from, params, err := smtp.ParseMailArg(cmd.Arg)
	if err != nil {
		return c.refuse(smtp.Reply{Code: 501, Enhanced: "5.5.4", Lines: []string{"Syntax: MAIL FROM:<address>"}, Err: err})
	}
	if r, ok := c.checkMailParams(params); !ok {
		return c.refuse(r)
	}
	c.tx = inspect.Transaction{From: from, FromParams: params}
	c.txStart = time.Now()
	v := c.engine.Mail(c.ctx, &c.sess, &c.tx)
	c.tx.Keep(inspect.StageMail, v)
	if c.judged(inspect.StageMail, v) {
		c.tx = inspect.Transaction{}
		c.reply(v.WireReply(inspect.StageMail))
		return true
	}
	if err := c.ensureUpstream(true); err != nil {
		c.tx = inspect.Transaction{}
		c.upstreamFailed(err)
		return true
	}
	mailLine := "MAIL FROM:" + smtp.FormatPathArg(from, c.upstreamParams(params))
	rep, err := c.up.cmd(c.cfg.Upstream.CommandTimeout, mailLine)
	if err != nil && c.upPooled {
		// A pooled connection the upstream closed while it sat idle:
		// nothing was started there; start over on a fresh one.
		c.log.Debug("pooled upstream connection failed, reconnecting", "err", err)
		if err = c.ensureUpstream(false); err == nil {
			rep, err = c.up.cmd(c.cfg.Upstream.CommandTimeout, mailLine)
		}
	}
	c.upPooled = false
	if err != nil {
		c.tx = inspect.Transaction{}
		c.upstreamFailed(err)
		return true
	}
	c.srv.metrics.upstreamReply("mail", rep.Code)
	if rep.Class() == 2 {
		c.up.inTx = true
		c.state = stateMail
		c.sess.Transactions++
	} else {
		c.tx = inspect.Transaction{}
	}
	// The upstream's own answer, code, enhanced code and text, goes back
	// unchanged: the sender policy of the shielded server still applies.
	// Only a missing enhanced code is added (see relayed).
	c.reply(c.relayed(rep, "MAIL"))
	return true
}

// relayed returns an upstream's reply to verb as it goes to the client:
// unchanged, but with an enhanced status code added where the upstream gave
// none and this client was offered ENHANCEDSTATUSCODES in moat's EHLO
// reply, because RFC 2034 §3 then requires one on every 2xx, 4xx and 5xx
// reply. A legacy upstream such as Exim answers "250 OK" without one.
func (c *conn) relayed(rep smtp.Reply, verb string) smtp.Reply {
	if !c.offer.esmtp {
		return rep // HELO: nothing was offered
	}
	return rep.WithDefaultEnhanced(verb)
}

// checkMailParams accepts the MAIL parameters of the extensions offered
// in this session's EHLO reply and nothing else (RFC 5321 §4.1.1.11: 555
// for a parameter not recognised). Their values were checked by
// smtp.ParseMailArg; what is left is policy: the size limit, and no
// BINARYMIME (CHUNKING is offered, BINARYMIME is not).
func (c *conn) checkMailParams(params []smtp.Param) (smtp.Reply, bool) {
	for _, p := range params {
		switch {
		case !c.offer.mailParam(p.Key):
			return smtp.Replyf(555, "5.5.4", "Unsupported option: %s", p.Key), false
		case p.Key == "SIZE":
			// RFC 1870 §6.2: 552 when the declared size is over the limit.
			if n, err := smtp.ParseSizeValue(p.Value); err != nil || n > int64(c.cfg.Limits.MaxMessageSize) {
				return smtp.Replyf(552, "5.3.4", "Message size exceeds fixed maximum message size"), false
			}
		case p.Key == "BODY" && strings.EqualFold(p.Value, "BINARYMIME"):
			return smtp.Replyf(501, "5.5.4", "Unsupported BODY type"), false
		}
	}
	return smtp.Reply{}, true
}

// mailParam reports whether MAIL's parameter key belongs to an offered
// extension.
func (o upstreamCaps) mailParam(key string) bool {
	switch key {
	case "SIZE":
		return o.size
	case "BODY":
		return o.eightBit
	case "SMTPUTF8":
		return o.smtputf8
	case "RET", "ENVID":
		return o.dsn
	}
	return false
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
		case p.Key == "SIZE" && !caps.size, p.Key == "BODY" && !caps.eightBit:
			continue
		}
		out = append(out, p)
	}
	return out
}

// cmdRcpt adds a recipient (RFC 5321 §4.1.1.3). The rcpt stage runs; then
// the RCPT is relayed and the upstream's reply, code, enhanced code and
// text, goes back unchanged — recipient validation stays the upstream's.
func (c *conn) cmdRcpt(cmd smtp.Command) bool {
	if c.state < stateMail || c.state == stateRefused {
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: need MAIL command"))
	}
	to, params, err := smtp.ParseRcptArg(cmd.Arg)
	if err != nil {
		return c.refuse(smtp.Reply{Code: 501, Enhanced: "5.5.4", Lines: []string{"Syntax: RCPT TO:<address>"}, Err: err})
	}
	for _, p := range params {
		if r, ok := c.checkRcptParam(p); !ok {
			return c.refuse(r)
		}
	}
	c.rcptTried++
	if len(c.pending) > 0 && len(c.tx.Rcpts)+len(c.pending) >= c.cfg.Limits.MaxRecipients {
		c.resolvePending() // the limit counts what the upstream accepted
	}
	if len(c.tx.Rcpts) >= c.cfg.Limits.MaxRecipients {
		// RFC 5321 §4.5.3.1.10: 452 so the client sends the rest later.
		r := smtp.Replyf(452, "4.5.3", "Too many recipients")
		c.logRcpt(to, r)
		c.reply(r)
		return true
	}
	rc := inspect.Recipient{Path: to, Params: params}
	v := c.engine.Rcpt(c.ctx, &c.sess, &c.tx, rc)
	rc.Result = v.Result // kept with the recipient once the upstream accepts it
	if c.judged(inspect.StageRcpt, v) {
		r := v.WireReply(inspect.StageRcpt)
		c.logRcpt(to, r)
		c.reply(r)
		return true
	}
	if c.up == nil || c.up.broken {
		// The upstream transaction is gone; no recipient can be added
		// to it. The client retries the whole message later.
		r := (&upstreamError{"rcpt", errors.New("connection lost earlier in the transaction")}).reply()
		c.logRcpt(to, r)
		c.reply(r)
		return true
	}
	// The RCPT goes to the upstream's buffer; it is sent, with any
	// others of the client's pipelined batch, when the batch ends.
	c.up.queue(c.cfg.Upstream.CommandTimeout, "RCPT TO:"+smtp.FormatPathArg(to, params))
	c.pending = append(c.pending, pendingRcpt{to: to, rc: rc})
	if !c.up.caps.pipelining || len(c.pending) >= maxPipelinedRcpts || !c.lineBuffered() ||
		c.engine.RcptReadsRecipients() {
		c.resolvePending()
	}
	return true
}

// pendingRcpt is a recipient sent to the upstream whose reply is not
// read yet.
type pendingRcpt struct {
	to smtp.Path
	rc inspect.Recipient
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
// replies in order and answers each to the client: the upstream's reply,
// or a 4xx when the upstream failed (then for the rest of the batch too).
func (c *conn) resolvePending() {
	batch := c.pending
	c.pending = batch[len(batch):] // empty while the replies are queued
	err := c.up.flush(c.cfg.Upstream.CommandTimeout)
	for _, p := range batch {
		var rep smtp.Reply
		if err == nil {
			rep, err = c.up.read(c.cfg.Upstream.CommandTimeout)
		}
		if err != nil {
			var ue *upstreamError
			errors.As(err, &ue)
			rep = ue.reply()
			c.log.Warn("upstream failed", "stage", "rcpt", "err", err)
		} else {
			c.srv.metrics.upstreamReply("rcpt", rep.Code)
			rep = c.relayed(rep, "RCPT")
		}
		c.logRcpt(p.to, rep)
		if err == nil && rep.Class() == 2 {
			c.tx.Rcpts = append(c.tx.Rcpts, p.rc)
			c.state = stateRcpt
		}
		c.reply(rep)
	}
	clear(batch)
	c.pending = batch[:0]
}

// checkRcptParam accepts RFC 3461's NOTIFY and ORCPT when DSN is offered;
// smtp.ParseRcptArg checked their values.
func (c *conn) checkRcptParam(p smtp.Param) (smtp.Reply, bool) {
	if c.offer.dsn && (p.Key == "NOTIFY" || p.Key == "ORCPT") {
		return smtp.Reply{}, true
	}
	return smtp.Replyf(555, "5.5.4", "Unsupported option: %s", p.Key), false
}

// cmdStartTLS upgrades the session to TLS (RFC 3207).
func (c *conn) cmdStartTLS(cmd smtp.Command) bool {
	switch {
	case c.sess.TLS != nil:
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: TLS already active"))
	case !c.offer.starttls:
		return c.refuse(smtp.Replyf(502, "5.5.1", "Command not implemented"))
	case cmd.Arg != "":
		return c.refuse(smtp.Replyf(501, "5.5.4", "Syntax: STARTTLS"))
	case c.state >= stateMail:
		return c.refuse(smtp.Replyf(503, "5.5.1", "Error: MAIL transaction in progress"))
	}
	c.reply(smtp.Replyf(220, "2.0.0", "Ready to start TLS"))
	if err := c.w.Flush(); err != nil {
		return false
	}
	if n := c.r.Buffered(); n > 0 {
		// Commands pipelined behind STARTTLS arrived in plaintext and
		// must not be executed inside the TLS session (CVE-2011-0411).
		c.sess.Anomalies.STARTTLSInjection = true
		c.log.Warn("discarded commands pipelined after STARTTLS", "bytes", n, "client_ip", c.sess.Client.Addr().String())
		c.r.Discard(n)
	}
	if !c.handshake() {
		return false
	}
	// RFC 3207 §4.2: forget everything learnt before TLS; the client
	// starts over with EHLO.
	c.reset()
	c.sess.HeloVerb, c.sess.Helo = "", ""
	c.state = stateGreeted
	c.offer = upstreamCaps{}
	return true
}

// cmdRset aborts the transaction here and upstream (RFC 5321 §4.1.1.5).
func (c *conn) cmdRset(cmd smtp.Command) bool {
	if c.state >= stateMail && c.state != stateRefused {
		c.finishTx("aborted", smtp.Reply{})
		c.rsetUpstream()
	}
	c.reset()
	c.reply(smtp.Replyf(250, "2.0.0", "Ok"))
	return true
}

// ensureUpstream makes sure a usable upstream connection is open,
// replacing one that broke in an earlier transaction: an idle one from the
// pool when fromPool allows, else a new one.
func (c *conn) ensureUpstream(fromPool bool) error {
	if c.up != nil && !c.up.broken {
		return nil
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
	u, err := dialUpstream(c.ctx, c.cfg, &c.sess)
	c.srv.metrics.upstreamConnect(err, time.Since(start))
	c.srv.ready.Store(err == nil)
	if err != nil {
		return err
	}
	c.srv.caps.Store(&u.caps)
	c.up = u
	return nil
}

// rsetUpstream aborts the upstream's side of the transaction.
func (c *conn) rsetUpstream() {
	if c.up != nil {
		c.up.rset()
	}
}

// upstreamFailed answers a failed upstream round trip with a 4xx and
// never anything else (end-to-end acknowledgement).
func (c *conn) upstreamFailed(err error) {
	var ue *upstreamError
	if !errors.As(err, &ue) {
		ue = &upstreamError{"command", err}
	}
	c.log.Warn("upstream failed", "err", err)
	c.reply(ue.reply())
}

func (c *conn) logRcpt(to smtp.Path, r smtp.Reply) {
	c.rcptLog = append(c.rcptLog, rcptResult{Rcpt: to.String(), Reply: replySummary(r)})
}

// logDecision writes the one line per decision that is not a plain
// accept — a refusal, a tag, or what monitor mode or shadow rules would
// have done — with its stable reason constant and the full rule trace.
// Refusal texts carry the session ID, which is on this line too.
func (c *conn) logDecision(stage inspect.Stage, v inspect.Verdict) {
	c.log.Info("decision", "stage", stage.String(), "action", v.Action.String(),
		"would_be", v.WouldBe.String(), "reason", v.Reason, "score", v.Score, "rules", v.Rules,
		"trace", v.Trace, "client_ip", c.sess.Client.Addr().String())
}

// judged logs a verdict worth logging and reports whether it refuses.
func (c *conn) judged(stage inspect.Stage, v inspect.Verdict) bool {
	c.noteVerdict(stage, v)
	switch {
	case v.Action != inspect.Accept || v.WouldBe != inspect.Accept:
		c.logDecision(stage, v)
	case len(v.Trace) > 0 && c.log.Enabled(c.ctx, slog.LevelDebug):
		c.log.Debug("rules matched", "stage", stage.String(), "score", v.Score, "trace", v.Trace)
	}
	return v.Action >= inspect.Tempfail
}

// replySummary is a reply on one line, for logs.
func replySummary(r smtp.Reply) string {
	if r.Code == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != "" {
		b.WriteByte(' ')
		b.WriteString(r.Enhanced)
	}
	for _, l := range r.Lines {
		b.WriteByte(' ')
		b.WriteString(l)
	}
	return b.String()
}

// sanitizeHelo makes a client-chosen name safe to echo in replies and
// headers: printable ASCII only, bounded length.
func sanitizeHelo(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	b := []byte(s)
	for i, ch := range b {
		if ch <= ' ' || ch >= 0x7f || ch == '(' || ch == ')' || ch == ';' {
			b[i] = '?'
		}
	}
	return string(b)
}
