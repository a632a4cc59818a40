package capture

import (
	"bufio"
	"bytes"
	"context"
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

// An SMTP session is rebuilt from its two directions after the
// connection is over. The client's bytes are read as the proxy reads
// them — smtp.ReadLine and smtp.ParseCommand for commands, smtp.DataReader
// for DATA, exact octet counts for BDAT — and after each command the next
// reply is read from the server's bytes with smtp.ReadReply. Replies come
// in command order even when the client pipelines (RFC 2920 §3.1), so
// walking both directions in step pairs every command with its reply;
// DATA gets two (354, then the final one) and an AUTH exchange one per
// client line. A capture of only the client's half pairs nothing and is
// read as if every reply had been positive.
//
// Alongside, every command line is fed to the session sequencer the proxy
// itself runs on (inspect/sequencer), with the recorded server's replies
// standing in for the upstream's: a session is judged offline by the very
// state machine that judges it live.

// Session is one reconstructed SMTP session.
type Session struct {
	UID            string
	Start, End     time.Time
	Client, Server netip.AddrPort
	// Greeting is the server's 220 line, "" when not captured.
	Greeting string
	HeloVerb string
	Helo     string
	// Capabilities are the extension lines of the last EHLO reply.
	Capabilities []string
	// TLS: the session switched to TLS (STARTTLS) or began with it
	// (ImplicitTLS); what follows is opaque.
	TLS, ImplicitTLS bool
	// AuthMech and AuthUser come from AUTH (RFC 4954); the password is
	// never looked at. Authenticated is set by a 235 reply.
	AuthMech, AuthUser string
	Authenticated      bool
	Commands           int
	// Problems lists what kept the reconstruction from being complete or
	// what the session did wrong, as short stable names: gap_client,
	// gap_server, client_only, server_only, mid_stream, bad_reply,
	// invalid_command, line_too_long, prelude, unterminated_data,
	// bdat_invalid, bdat_lost, message_truncated, reply_mismatch,
	// internal_error (moat itself failed on this session: a bug).
	Problems []string
	Records  []Record
	// Smuggling: some DATA body ended earlier for a lenient parser.
	Smuggling bool

	order uint64 // ordinal of the connection's first packet
}

func (s *Session) problem(p string) {
	for _, q := range s.Problems {
		if q == p {
			return
		}
	}
	s.Problems = append(s.Problems, p)
}

// Limits of the reconstruction.
const (
	maxCommandLine = 4096     // bytes in a command line (RFC 5321 §4.5.3.1.4 asks for 512)
	maxCommands    = 100000   // commands per session
	maxRecords     = 10000    // records per session
	detectWindow   = 4 << 10  // bytes searched for a greeting or HELO on an unknown port
	maxAuthLines   = 16       // client lines in one AUTH exchange
	bodyMemory     = 1 << 20  // message bytes kept in memory before the spool file
	maxRcptRecord  = 1000     // recipients kept in a record (Zeek's max_rcptto_addresses)
	maxAddrRecord  = 1000     // To/Cc addresses kept in a record
	maxPathRecord  = 1000     // path entries kept in a record
	readerBufSize  = 16 << 10 // bufio size for each direction
	maxTLSPreview  = 8        // bytes looked at to tell a TLS ClientHello
)

// conversation rebuilds one session.
type conversation struct {
	an  *Analyzer
	ctx context.Context
	out *Session

	cs, ss   *streamReader
	cr, sr   *bufio.Reader
	ch, sh   *halfStream
	scratch  []byte
	serverOK bool // replies can still be paired with commands

	// The proxy's view: the sequencer the proxy runs on, fed the
	// client's command lines and the recorded replies; nil without an
	// engine. qClosed: it closed the session, as the proxy would have
	// (the recorded client, talking to another server, went on).
	q       *sequencer.Sequencer
	greeted bool // the sequencer ran the connect stage
	qClosed bool
	// afterClose: this record has commands moat would never have seen.
	afterClose      bool
	closedAtConnect bool // the connect stage tempfailed and closed
	// The command line being handled, for feed: a copy, since a BDAT
	// chunk is read before the line is fed; bareLF: it ended in LF
	// alone; lineErr: it was too long to keep.
	line            []byte
	bareLF, lineErr bool
	ended           *sequencer.Ended // the first transaction the sequencer ended in this record
	qStep           sequencer.Step   // the step of the current command (OpData, OpChunk)
	msgTotal        int64            // bytes of the message being read, kept or not

	// The record being built (Zeek's transaction model).
	rec      *Record
	active   bool // the record has client activity
	depth    int  // messages transferred so far
	rcptSeen map[string]bool

	held354 *smtp.Reply // a 354 that came early, for the next DATA
	envFrom string      // the sender of the server's open transaction

	// A BDAT transfer in progress (RFC 3030).
	bdat     *halfStream
	bdatEnds smtp.LineEndings
	bdatGap  bool
}

// errTLS ends the walk: the rest of the connection is encrypted.
var errTLS = errors.New("tls")

// run walks the conversation to its end.
func (c *conversation) run() {
	defer func() {
		if c.q != nil {
			c.q.End()
		}
	}()
	c.cr, c.sr = newStreamBuf(c.cs), newStreamBuf(c.ss)
	defer func() {
		for _, br := range []*bufio.Reader{c.cr, c.sr} {
			br.Reset(nil) // not to keep the stream alive
			readerBufs.Put(br)
		}
		c.cr, c.sr = nil, nil
	}()
	c.serverOK = c.sh.size > 0 || len(c.sh.gaps) > 0
	if c.sh.size == 0 {
		c.out.problem("client_only")
	}
	if c.ch.size == 0 {
		c.out.problem("server_only")
	}
	c.newRecord()
	if c.startTLS() {
		c.finish()
		return
	}
	c.skipPrelude()
	c.greeting()
	c.connectStage()
	err := c.commands()
	if err == errTLS {
		c.out.TLS = true
		c.rec.TLS = true
		c.active = true
	}
	c.finish()
}

// readerBufs are the bufio.Readers conversations read their two
// directions through, reused from session to session.
var readerBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerBufSize) }}

func newStreamBuf(r io.Reader) *bufio.Reader {
	br := readerBufs.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// startTLS recognises a connection that begins with a TLS ClientHello:
// implicit TLS (RFC 8314 §3.3, port 465), nothing to read.
func (c *conversation) startTLS() bool {
	b, _ := c.cr.Peek(3)
	if len(b) == 3 && b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04 {
		c.out.TLS, c.out.ImplicitTLS = true, true
		c.rec.TLS = true
		c.active = true
		return true
	}
	return false
}

// skipPrelude skips what comes before SMTP when the server does not open
// with a reply: an HTTP CONNECT proxy's exchange, typically. The server's
// bytes are skipped to the first line that starts with 220, the client's
// to its first HELO or EHLO.
func (c *conversation) skipPrelude() {
	b, _ := c.sr.Peek(1)
	if len(b) == 0 || isDigit(b[0]) {
		return
	}
	win, _ := c.sr.Peek(detectWindow)
	i := findLineStart(win, func(l []byte) bool { return bytes.HasPrefix(l, []byte("220")) })
	if i < 0 {
		return
	}
	cwin, _ := c.cr.Peek(detectWindow)
	j := findLineStart(cwin, isHeloLine)
	if j < 0 {
		return
	}
	c.sr.Discard(i)
	c.cr.Discard(j)
	c.out.problem("prelude")
}

// findLineStart returns the offset of the first line in b (at its start
// or after a LF) for which match is true, -1 if none.
func findLineStart(b []byte, match func([]byte) bool) int {
	for i := 0; i < len(b); {
		if match(b[i:]) {
			return i
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
	}
	return -1
}

func isHeloLine(l []byte) bool {
	return len(l) >= 5 && (equalFoldPrefix(l, "HELO") || equalFoldPrefix(l, "EHLO")) && (l[4] == ' ' || l[4] == '\r' || l[4] == '\n')
}

func equalFoldPrefix(b []byte, p string) bool {
	if len(b) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		x := b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if x != p[i] {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// greeting reads the server's greeting (RFC 5321 §4.3.1) when the capture
// has it: the server spoke first, or its first reply is a 220 while the
// client opens with HELO or EHLO. A capture that starts mid-session has
// none, and its first reply answers the first command.
func (c *conversation) greeting() {
	if !c.serverOK {
		return
	}
	b, _ := c.sr.Peek(4)
	if len(b) < 3 || string(b[:3]) != "220" {
		if len(b) >= 3 && (string(b[:3]) == "421" || string(b[:3]) == "554") && c.firstServer() {
			// A refusal at connect (RFC 5321 §3.1).
			if r := c.reply(); r != nil {
				c.out.Greeting = r.LastLine()
				c.setReply(r)
			}
		}
		return
	}
	cb, _ := c.cr.Peek(5)
	if !c.firstServer() && len(cb) > 0 && !isHeloLine(cb) {
		return
	}
	if r := c.reply(); r != nil {
		c.out.Greeting = r.LastLine()
		c.setReply(r)
	}
}

// firstServer reports whether the server's first byte came before the
// client's.
func (c *conversation) firstServer() bool {
	if c.ch.size == 0 {
		return true
	}
	if c.sh.size == 0 {
		return false
	}
	return !c.sh.timeAt(0).After(c.ch.timeAt(0))
}

// connectStage greets as the proxy does: the connect stage runs. A
// client whose first bytes came before the server's greeting talked
// early, which the proxy sees when it delays its greeting.
func (c *conversation) connectStage() {
	if c.q == nil {
		return
	}
	early := c.an.session.GreetingDelay > 0 && c.ch.size > 0 && c.sh.size > 0 && !c.firstServer()
	c.greeted = true
	s := c.q.Greet(early)
	c.note(s)
	if s.Op == sequencer.OpClose {
		// A tempfail at connect: moat says 421 and hangs up (RFC 5321
		// §3.8). Whatever the recorded client sent afterwards carries
		// that verdict, the session's only one.
		c.qClosed, c.closedAtConnect = true, true
	}
}

// sessionClosed is the judgement of what a recorded client sent after
// moat would have closed the session at the judgement j.
func sessionClosed(j sequencer.Judgement) sequencer.Judgement {
	return sequencer.Judgement{Stage: j.Stage, Reason: "session_closed",
		Verdict: inspect.Verdict{Action: inspect.Reject, WouldBe: inspect.Reject, Reason: "session_closed"}}
}

// feed gives the sequencer the command line being handled, with r, the
// recorded server's reply to it, standing in for the upstream's where the
// proxy would have asked the upstream (nil: not captured, taken as
// positive). It returns the step for the caller to carry on with a
// message (OpData, OpChunk).
func (c *conversation) feed(r *smtp.Reply) sequencer.Step {
	if c.q == nil {
		return sequencer.Step{}
	}
	if c.qClosed {
		c.afterClose = true
		return sequencer.Step{}
	}
	s := c.q.Command(c.line, c.bareLF, c.lineErr)
	for {
		c.note(s)
		switch s.Op {
		case sequencer.OpMail, sequencer.OpRcpt:
			s = c.q.UpstreamReply(upstreamStandIn(r, 250), false)
			continue
		case sequencer.OpAuth:
			// A reply not captured: a challenge when the client goes on
			// with the exchange, else the success it went on as.
			code := 235
			if r == nil && c.authLineNext() {
				code = 334
			}
			s = c.q.AuthReply(upstreamStandIn(r, code), false)
			continue
		case sequencer.OpResolve:
			s = c.q.Command(c.line, c.bareLF, c.lineErr)
			continue
		case sequencer.OpClose:
			// The proxy ends the session here (its serve loop returns
			// and ends the sequencer): a transaction still open ends now,
			// as aborted, with its own judgement, not later as
			// session_closed when the recorded client goes on.
			c.qClosed = true
			c.note(c.q.End())
		}
		c.qStep = s
		return s
	}
}

// upstreamStandIn is the recorded reply as the upstream's: a reply not
// captured is taken as the positive one (code).
func upstreamStandIn(r *smtp.Reply, code int) smtp.Reply {
	if r == nil {
		return smtp.Reply{Code: code}
	}
	return *r
}

// note keeps the first transaction a step ended in the current record.
// A record without client activity yet holds no transaction: one that
// ends then (RSET after a refused BDAT chunk closed its record) belongs
// to a record already written, with the same judgement, and must not be
// taken for the next transaction's.
func (c *conversation) note(s sequencer.Step) {
	if s.Ended != nil && c.ended == nil && c.active {
		c.ended = s.Ended
	}
}

// deliver runs a received message through the sequencer when it expects
// one (after OpData, or the last OpChunk), with final, the recorded reply
// to the message, as the upstream's.
func (c *conversation) deliver(m sequencer.Received, final *smtp.Reply) {
	if c.q == nil || c.qClosed {
		return
	}
	s := c.q.Message(m)
	c.note(s)
	if s.Op == sequencer.OpRelay {
		c.note(c.q.Relayed(upstreamStandIn(final, 250), false))
	}
}

// reply reads the next server reply, nil when there is none to pair.
//
// A 354 answers only DATA (RFC 5321 §4.1.1.4). When one comes for another
// command, the server is a reply ahead of the pairing (a broken or
// truncated multi-line reply earlier); it is kept for the DATA it
// belongs to, which puts the pairing back in step from there on.
func (c *conversation) reply() *smtp.Reply { return c.replyFor(false) }

func (c *conversation) replyFor(data bool) *smtp.Reply {
	if c.held354 != nil {
		if !data {
			return nil
		}
		r := c.held354
		c.held354 = nil
		return r
	}
	if !c.serverOK {
		return nil
	}
	r, err := smtp.ReadReply(c.sr)
	switch {
	case err == nil && r.Code == 354 && !data:
		c.out.problem("reply_mismatch")
		c.held354 = &r
		return nil
	case err == nil:
		return &r
	case err == io.EOF, err == io.ErrUnexpectedEOF:
		c.serverOK = false
	case errors.Is(err, smtp.ErrLineTooLong), errors.Is(err, smtp.ErrSyntax):
		c.out.problem("bad_reply")
	default:
		if _, ok := isGap(err); ok {
			// Replies lost in a gap cannot be paired any more.
			c.out.problem("gap_server")
		}
		c.serverOK = false
	}
	return nil
}

// setReply makes r the record's last reply.
func (c *conversation) setReply(r *smtp.Reply) {
	if r != nil {
		c.rec.LastReply = r.LastLine()
	}
}

// positive reports whether a reply (nil: not captured) let the command
// through.
func positive(r *smtp.Reply) bool { return r == nil || r.Class() == 2 || r.Class() == 3 }

// commands reads the client's commands to the end of its stream.
func (c *conversation) commands() error {
	for n := 0; ; n++ {
		if n >= maxCommands {
			c.out.problem("too_many_commands")
			return nil
		}
		line, bareLF, err := smtp.ReadLine(c.cr, &c.scratch, maxCommandLine)
		if err != nil {
			switch {
			case err == io.EOF:
				return nil
			case err == io.ErrUnexpectedEOF:
				c.out.problem("unterminated_command")
				return nil
			case errors.Is(err, smtp.ErrLineTooLong):
				c.out.problem("line_too_long")
				c.line, c.bareLF, c.lineErr = c.line[:0], false, true
				r := c.reply()
				c.setReply(r)
				c.feed(r)
				continue
			}
			if _, ok := isGap(err); ok {
				// Resynchronise at the next line; the rest of the broken
				// one is not a command.
				c.out.problem("gap_client")
				c.discardLine()
				continue
			}
			return nil
		}
		if c.q != nil {
			// The sequencer records the bare LF, as it does live.
			c.line, c.bareLF, c.lineErr = append(c.line[:0], line...), bareLF, false
		}
		c.out.Commands++
		cmd, err := smtp.ParseCommand(line)
		if err != nil {
			c.out.problem("invalid_command")
			r := c.reply()
			c.setReply(r)
			c.feed(r)
			continue
		}
		if err := c.dispatch(cmd); err != nil {
			return err
		}
	}
}

// discardLine drops client bytes up to and including the next LF.
func (c *conversation) discardLine() {
	for {
		_, err := c.cr.ReadSlice('\n')
		if err != bufio.ErrBufferFull {
			return
		}
	}
}

func (c *conversation) dispatch(cmd smtp.Command) error {
	switch cmd.Verb {
	case smtp.VerbHELO, smtp.VerbEHLO:
		c.cmdHelo(cmd)
	case smtp.VerbMAIL:
		c.cmdMail(cmd)
	case smtp.VerbRCPT:
		c.cmdRcpt(cmd)
	case smtp.VerbDATA:
		c.cmdData(cmd)
	case smtp.VerbBDAT:
		return c.cmdBdat(cmd)
	case smtp.VerbRSET:
		r := c.reply()
		c.setReply(r)
		c.feed(r)
		c.endRecord()
		c.envFrom = ""
	case smtp.VerbSTARTTLS:
		r := c.reply()
		c.setReply(r)
		c.feed(r)
		if r != nil && r.Code == 220 || r == nil && c.tlsNext() {
			return errTLS
		}
	case smtp.VerbAUTH:
		c.cmdAuth(cmd)
	default:
		r := c.reply()
		c.setReply(r)
		c.feed(r)
	}
	return nil
}

// headerNext reports whether the client's next line is a header field
// (RFC 5322 §2.2: field name, colon) rather than a command.
func (c *conversation) headerNext() bool {
	b, _ := c.cr.Peek(80)
	for i, ch := range b {
		switch {
		case ch == ':':
			return i > 0
		case ch <= ' ' || ch >= 0x7f:
			return false
		}
	}
	return false
}

// tlsNext reports whether the client's next bytes are a TLS record.
func (c *conversation) tlsNext() bool {
	b, _ := c.cr.Peek(2)
	return len(b) == 2 && b[0] == 0x16 && b[1] == 0x03
}

// cmdHelo: RFC 5321 §4.1.1.1; a new HELO resets the transaction (§4.1.4).
func (c *conversation) cmdHelo(cmd smtp.Command) {
	r := c.reply()
	c.setReply(r)
	if positive(r) && cmd.Arg != "" {
		// A refused HELO changes nothing (Suricata's
		// smtp-rejected-ehlo-preserves-envelope); an accepted one names
		// the client and resets the transaction (RFC 5321 §4.1.4).
		c.rec.Helo = cmd.Arg
		c.out.HeloVerb, c.out.Helo = cmd.Verb, cmd.Arg
		c.envFrom = ""
	}
	if cmd.Verb == smtp.VerbEHLO && r != nil && r.Class() == 2 && len(r.Lines) > 1 {
		c.out.Capabilities = append([]string(nil), r.Lines[1:]...)
		if c.q != nil {
			// The recorded server's offer stands for the upstream's, as
			// its replies do: what moat relays only when the upstream
			// has it (SMTPUTF8, DSN) is offered offline when the
			// recorded server offered it, so a client's SMTPUTF8 or
			// RET= is judged as live, not refused as unoffered.
			e := smtp.ParseEHLO(*r)
			c.q.SetUpstream(sequencer.Upstream{SMTPUTF8: e.Has("SMTPUTF8"), DSN: e.Has("DSN")})
		}
	}
	c.feed(r)
}

// cmdMail starts a record (Zeek flushes the previous one here) and runs
// the mail stage where the proxy would.
func (c *conversation) cmdMail(cmd smtp.Command) {
	if c.active {
		c.endRecord()
	}
	r := c.reply()
	c.setReply(r)
	c.active = true
	c.rec.MailFrom = envelopeAddr(cmd.Arg, "FROM:")
	switch {
	case r != nil && r.Class() == 2:
		c.envFrom = c.rec.MailFrom
	case r != nil && c.envFrom != "":
		// A MAIL the server refused inside an open transaction (a
		// nested MAIL, RFC 5321 §4.1.4): the sender in force is still
		// the one it accepted.
		c.rec.MailFrom = c.envFrom
	}

	c.feed(r)
}

func (c *conversation) cmdRcpt(cmd smtp.Command) {
	r := c.reply()
	c.setReply(r)
	c.active = true
	if a := envelopeAddr(cmd.Arg, "TO:"); a != "" && len(c.rec.RcptTo) < maxRcptRecord && !c.rcptSeen[a] {
		if c.rcptSeen == nil {
			c.rcptSeen = make(map[string]bool)
		}
		c.rcptSeen[a] = true
		c.rec.RcptTo = append(c.rec.RcptTo, a)
	}
	c.feed(r)
}

// cmdData reads a DATA body (RFC 5321 §4.1.1.4) when the server asked for
// it with 354, or when there is no server side to ask.
func (c *conversation) cmdData(cmd smtp.Command) {
	r := c.replyFor(true)
	c.setReply(r)
	c.feed(r)
	if r != nil && r.Code != 354 {
		if !c.headerNext() {
			return
		}
		// The client sends a message although the reply paired with
		// DATA refused it: the pairing is off, and the client, which
		// saw the real reply, is right.
		c.out.problem("reply_mismatch")
	}
	c.active = true
	body := c.newBody()
	defer body.release()
	c.msgTotal = 0
	start := c.cs.off - int64(c.cr.Buffered())
	ends := smtp.LineEndings{}
	complete, gapped := c.copyData(body, &ends)
	end := c.cs.off - int64(c.cr.Buffered())
	if !complete {
		c.out.problem("unterminated_data")
	}
	if !gapped && complete {
		c.checkSmuggling(start, end)
	}
	final := c.reply()
	if final == nil && c.held354 != nil {
		// The server was a reply behind: this DATA's 354 came only now.
		c.held354 = nil
		final = c.reply()
	}
	c.setReply(final)
	c.message(body, ends.BareLF, ends.BareCR, complete && !gapped, c.qStep.Op == sequencer.OpData, final)
	if final != nil || !c.serverOK {
		c.depth++
	}
	c.envFrom = ""
	c.endRecord()
}

// copyData copies the message after DATA into body with the proxy's
// DataReader. A gap inside the message breaks the DataReader; reading
// resumes after it with a new one, which finds the real end if the
// terminator itself was captured.
func (c *conversation) copyData(body *halfStream, ends *smtp.LineEndings) (complete, gapped bool) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		dr := smtp.NewDataReader(c.cr)
		for {
			n, err := dr.Read(buf)
			if n > 0 {
				ends.Write(buf[:n])
				c.appendBody(body, buf[:n])
			}
			if err == nil {
				continue
			}
			if err == io.EOF {
				ends.Close()
				return true, gapped
			}
			if g, ok := isGap(err); ok {
				gapped = true
				c.out.problem("gap_client")
				body.add(nil, time.Time{}, int(g.Size))
				break // a new DataReader after the gap
			}
			ends.Close()
			return false, gapped
		}
	}
}

// appendBody adds message bytes up to the configured maximum.
func (c *conversation) appendBody(body *halfStream, p []byte) {
	c.msgTotal += int64(len(p))
	if room := c.an.cfg.MaxMessageSize - body.size; int64(len(p)) > room {
		if room > 0 {
			body.add(p[:room], time.Time{}, 0)
		}
		c.out.problem("message_truncated")
		return
	}
	body.add(p, time.Time{}, 0)
}

func (c *conversation) newBody() *halfStream {
	return &halfStream{budget: &c.an.budget, memMax: bodyMemory, dir: c.an.cfg.SpoolDir}
}

// cmdBdat reads one BDAT chunk (RFC 3030 §2): exactly the announced
// number of octets follows the command line, whatever the server says.
func (c *conversation) cmdBdat(cmd smtp.Command) error {
	size, last, err := smtp.ParseBDATArg(cmd.Arg)
	if err != nil {
		// Without a size there is no telling where the chunk ends; the
		// proxy closes the session (proxy/data.go), and so do servers.
		c.out.problem("bdat_invalid")
		r := c.reply()
		c.setReply(r)
		c.feed(r)
		return nil
	}
	c.active = true
	if c.bdat == nil {
		c.bdat = c.newBody()
		c.bdatEnds = smtp.LineEndings{}
		c.msgTotal = 0
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	left := size
	for left > 0 {
		n := int64(len(buf))
		if n > left {
			n = left
		}
		k, err := io.ReadFull(c.cr, buf[:n])
		if k > 0 {
			c.bdatEnds.Write(buf[:k])
			c.appendBody(c.bdat, buf[:k])
			left -= int64(k)
		}
		if err == nil {
			continue
		}
		if g, ok := isGap(err); ok && g.Size >= 0 {
			c.out.problem("gap_client")
			c.bdatGap = true
			c.bdat.add(nil, time.Time{}, int(g.Size))
			left -= g.Size
			if left < 0 {
				// The gap swallowed the chunk's end and whatever came
				// after it. The message is lost; commands are read again
				// from the gap's end, where the stream usually goes on
				// at a command (Zeek resumes the same way).
				c.out.problem("bdat_lost")
				r := c.reply()
				c.setReply(r)
				c.feed(r)
				c.bdat.release()
				c.bdat = nil
				c.bdatGap = false
				return nil
			}
			continue
		}
		c.out.problem("unterminated_data")
		c.setReply(c.reply())
		c.finishBdat(false, false, nil)
		return io.ErrUnexpectedEOF
	}
	r := c.reply()
	c.setReply(r)
	s := c.feed(r)
	judge := s.Op == sequencer.OpChunk && s.Last
	if s.Op == sequencer.OpChunk && !s.Last {
		c.note(c.q.Chunk(size, false, sequencer.Received{}))
	}
	if last || r != nil && r.Class() != 2 {
		c.finishBdat(last && (r != nil || !c.serverOK), judge, r)
	}
	return nil
}

// finishBdat judges the message BDAT chunks built and ends the record.
func (c *conversation) finishBdat(transferred, judge bool, final *smtp.Reply) {
	body := c.bdat
	c.bdat = nil
	if body == nil {
		return
	}
	defer body.release()
	c.bdatEnds.Close()
	c.message(body, c.bdatEnds.BareLF, c.bdatEnds.BareCR, !c.bdatGap, judge, final)
	c.bdatGap = false
	if transferred {
		c.depth++
	}
	c.envFrom = ""
	c.endRecord()
}

// cmdAuth follows an AUTH exchange (RFC 4954 §4): the mechanism, and the
// user name where the mechanism shows it; never the password. Every line
// of the exchange goes to the sequencer too, with the recorded replies as
// the upstream's, as the proxy relays it live: the session is judged as
// authenticated when the recorded server said 235.
func (c *conversation) cmdAuth(cmd smtp.Command) {
	mech, initial, err := smtp.ParseAuthArg(cmd.Arg)
	if err != nil {
		mech, _, _ = strings.Cut(strings.ToUpper(cmd.Arg), " ")
	}
	c.out.AuthMech = mech
	c.rec.AuthMech = mech
	step := 0
	if initial != "" {
		c.authUser(mech, step, initial)
		step++
	}
	r := c.reply()
	c.feed(r)
	for i := 0; i < maxAuthLines; i++ {
		if r != nil && r.Code != 334 {
			break
		}
		if r == nil && !c.authLineNext() {
			break
		}
		line, _, err := smtp.ReadLine(c.cr, &c.scratch, maxCommandLine)
		if err != nil {
			break
		}
		if string(line) != "*" {
			c.authUser(mech, step, string(line))
			step++
		}
		r = c.reply()
		if c.q != nil && c.q.InAuth() {
			c.line, c.bareLF, c.lineErr = append(c.line[:0], line...), false, false
			c.feed(r)
		}
		if string(line) == "*" {
			break
		}
	}
	c.setReply(r)
	if r != nil && r.Code == 235 {
		c.out.Authenticated = true
		c.rec.Authenticated = true
	}
}

// authLineNext guesses, without server replies, whether the client's next
// line answers a challenge rather than being a command: base64 never
// parses as a known verb followed by a space or the line end.
func (c *conversation) authLineNext() bool {
	b, _ := c.cr.Peek(16)
	if len(b) == 0 {
		return false
	}
	end := bytes.IndexAny(b, " \r\n")
	if end < 0 {
		end = len(b)
	}
	cmd, err := smtp.ParseCommand(b[:end])
	if err != nil {
		return true
	}
	switch cmd.Verb {
	case smtp.VerbMAIL, smtp.VerbRCPT, smtp.VerbDATA, smtp.VerbQUIT, smtp.VerbRSET, smtp.VerbHELO,
		smtp.VerbEHLO, smtp.VerbNOOP, smtp.VerbBDAT, smtp.VerbSTARTTLS, smtp.VerbAUTH:
		return false
	}
	return true
}

// authUser keeps the user name of the exchange's first response that
// shows one (smtp.SASLUser: the one place that reads SASL responses).
func (c *conversation) authUser(mech string, step int, resp string) {
	if c.out.AuthUser != "" {
		return
	}
	if user, ok := smtp.SASLUser(mech, step, resp); ok {
		c.out.AuthUser = user
		c.rec.AuthUser = user
	}
}

// message fills the record from a received message and runs the data
// stage the way the proxy's deliver does.
func (c *conversation) message(body *halfStream, bareLF, bareCR, complete, judge bool, final *smtp.Reply) {
	c.rec.Size = body.size
	c.rec.BareLF, c.rec.BareCR = bareLF, bareCR
	if !complete {
		c.out.problem("incomplete_message")
	}
	// One parse serves the record's header fields and the data stage's
	// rules, as deep as either needs.
	depth := inspect.DepthHeaders
	if c.an.engine != nil {
		depth = max(depth, c.an.engine.ContentDepth())
	}
	content := inspect.ParseContent(body, body.size, depth, inspect.ContentLimits{})
	fillHeaders(c.rec, content)
	if c.an.extract != nil {
		c.rec.File = c.an.extract(c.out, c.rec, body, body.size)
	}
	if !judge {
		return
	}
	lim := c.an.session
	c.deliver(sequencer.Received{
		Message:    &inspect.Message{Size: body.size, Body: body, BareLF: bareLF, BareCR: bareCR},
		Content:    content,
		Over:       lim.MaxMessageSize > 0 && c.msgTotal > lim.MaxMessageSize,
		HeaderOver: lim.MaxHeaderSize > 0 && content.HeaderBytes > lim.MaxHeaderSize,
	}, final)
}

// newRecord starts the record of the next transaction.
func (c *conversation) newRecord() {
	s := c.out
	c.rec = &Record{
		UID: s.UID, OrigH: s.Client.Addr().String(), OrigP: s.Client.Port(),
		RespH: s.Server.Addr().String(), RespP: s.Server.Port(),
		TransDepth: c.depth + 1, Helo: s.Helo, TLS: s.TLS,
		TS:   Epoch(c.now()),
		Path: []string{s.Server.Addr().String(), s.Client.Addr().String()},
	}
	c.active = false
	c.ended = nil
	c.afterClose = false
	c.rcptSeen = nil
}

// now is the capture time at the client's current position.
func (c *conversation) now() time.Time {
	off := c.cs.off
	if c.cr != nil {
		off -= int64(c.cr.Buffered())
	}
	if t := c.ch.timeAt(off); !t.IsZero() {
		return t
	}
	return c.out.Start
}

// endRecord closes the current record if it saw client activity.
func (c *conversation) endRecord() {
	if !c.active {
		return
	}
	c.closeRecord()
	c.newRecord()
}

func (c *conversation) closeRecord() {
	rec := c.rec
	rec.Problems = append([]string(nil), c.out.Problems...)
	if c.q != nil && c.greeted {
		// The transaction the sequencer ended in this record, else the
		// one in progress (or the session's, with none). After moat
		// closed the session, the recorded client went on with a server
		// moat had hung up on: refused, as session_closed.
		j := c.q.Judgement()
		switch {
		case c.ended != nil:
			j = c.ended.Judgement
		case c.afterClose && !c.closedAtConnect:
			j = sessionClosed(j)
		}
		v := j.Verdict
		rec.Verdict = v.Action.String()
		if v.WouldBe != v.Action {
			rec.WouldBe = v.WouldBe.String()
		}
		rec.Score, rec.Rules = v.Score, v.Rules
		rec.Greylist = v.GreylistDecision
		rec.Summary = v.Auth.Summary()
		rec.Classifier = v.Classifier
		rec.Stage = j.Stage.String()
		switch {
		case j.Reason != "":
			rec.Reason = j.Reason
		case v.Action >= inspect.Tempfail || v.Action == inspect.Tag:
			rec.Reason = v.Reason
		}
	}
	if len(c.out.Records) < maxRecords {
		c.out.Records = append(c.out.Records, *rec)
	}
}

// finish closes the last record: one with activity, or the session's
// only record when it never had a transaction.
func (c *conversation) finish() {
	if c.bdat != nil {
		c.finishBdat(false, false, nil)
	}
	if c.active || len(c.out.Records) == 0 {
		c.closeRecord()
	}
	c.out.End = c.lastTime()
}

func (c *conversation) lastTime() time.Time {
	t := c.out.Start
	for _, h := range []*halfStream{c.ch, c.sh} {
		if n := len(h.marks); n > 0 && h.marks[n-1].ts.After(t) {
			t = h.marks[n-1].ts
		}
	}
	return t
}

// envelopeAddr extracts the address of a MAIL or RCPT argument the way
// Zeek does (extract_first_email_addr): the text between angle brackets,
// else the first word after the keyword; "" for the null path.
func envelopeAddr(arg, keyword string) string {
	rest := arg
	if len(rest) >= len(keyword) && strings.EqualFold(rest[:len(keyword)], keyword) {
		rest = rest[len(keyword):]
	}
	rest = strings.TrimLeft(rest, " \t")
	if strings.HasPrefix(rest, "<") {
		if i := strings.IndexByte(rest, '>'); i > 0 {
			a := rest[1:i]
			if j := strings.LastIndexByte(a, ':'); j >= 0 && strings.HasPrefix(a, "@") {
				a = a[j+1:] // a source route
			}
			return a
		}
		return strings.TrimPrefix(rest, "<")
	}
	if i := strings.IndexAny(rest, " \t"); i >= 0 {
		rest = rest[:i]
	}
	if !strings.Contains(rest, "@") {
		return ""
	}
	return rest
}
