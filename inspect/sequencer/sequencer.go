// Package sequencer is moat's one SMTP session state machine. It is fed
// the events of a session — the greeting, each client command line, the
// upstream's replies, a received message, TLS started, the end — and
// answers each with a Step: the replies for the client, and what the
// front end must do next (ask the upstream, read a message, start TLS,
// close). It calls the inspect.Engine's stages on the way and holds every
// policy decision moat makes on its own: command order (RFC 5321 §4.1.4),
// syntax, limits, the error budget, early talkers, bare line endings.
//
// It does no I/O. The proxy drives it from sockets, the capture analyzer
// from the two reconstructed byte streams of a recorded session, with the
// recorded server's replies standing in for the upstream's. So a session
// is judged offline exactly as it is live, by construction.
//
// It lives under inspect because it is the engine's caller and must stay
// below both front ends (proxy and capture import it; it imports neither),
// and because it knows nothing of sockets or packets.
package sequencer

import (
	"context"
	"io"
	"strconv"
	"strings"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

// State is where a session stands in the RFC 5321 command sequence
// (§4.1.4: HELO/EHLO, then MAIL, RCPT..., DATA).
type State uint8

// The states of a session.
const (
	StateGreeted State = iota // greeting sent, waiting for HELO/EHLO
	StateHelo                 // greeted by the client, no transaction
	StateMail                 // MAIL accepted, no recipient yet
	StateRcpt                 // at least one recipient accepted
	StateRefused              // the connect stage refused the session: only QUIT
)

var stateNames = [...]string{"greeted", "helo", "mail", "rcpt", "refused"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Config is the policy of a session.
type Config struct {
	Hostname       string // moat's name in its greeting and replies
	MaxLineLength  int    // command line bytes without the CRLF (RFC 5321 §4.5.3.1.4)
	MaxCommands    int    // commands per session
	MaxErrors      int    // refused commands before the session ends with 421
	MaxRecipients  int    // accepted recipients per transaction (452 beyond); 0: no limit
	MaxMessageSize int64  // SIZE offered and enforced (RFC 1870); 0: no limit
	MaxHeaderSize  int64  // header section bytes front ends measure messages against
	// EarlyTalker is what a client that talks before the greeting gets:
	// "reject" (554 at connect), or anything else to leave it to the
	// rules (the early_talker fact).
	EarlyTalker string
	// BareLF and BareCR: "reject" refuses a message with those line
	// endings (550 5.5.2); anything else passes it on normalised.
	BareLF, BareCR string
	// STARTTLS: TLS can be offered to a session not yet under TLS.
	STARTTLS bool
	// Submission: the session came in on a submission listener (RFC 6409,
	// RFC 8314), where AUTH is offered — once the session runs over TLS
	// (RFC 8314 §3.3: no credentials in clear), unless AuthWithoutTLS.
	// The upstream checks the credentials; moat relays the exchange.
	Submission bool
	// FollowAuth follows every AUTH, on any listener, with or without
	// TLS, as the upstream answers it. moat analyze sets it: a recorded
	// AUTH is visible only because it went in clear (often on port 25),
	// and the recorded server's answer stands for the upstream's.
	FollowAuth bool
	// GreetingDelay is how long the greeting waits for an early talker
	// to show itself; 0: none is looked for. The proxy waits; the
	// capture analyzer sees it in the recorded timing.
	GreetingDelay time.Duration
}

// Upstream is what the upstream advertised that moat offers only when
// the upstream has it too: it cannot downgrade a UTF-8 envelope or
// generate DSNs itself.
type Upstream struct {
	SMTPUTF8, DSN bool
}

// Offer is what this session's EHLO reply offered the client.
type Offer struct {
	ESMTP    bool // EHLO (else HELO: nothing is offered)
	STARTTLS bool
	AUTH     bool // AUTH PLAIN LOGIN (RFC 4954)
	SMTPUTF8 bool
	DSN      bool
}

// Op is what the front end must do after a Step.
type Op uint8

// The ops.
const (
	OpNone     Op = iota // send the replies; read the next command
	OpMail               // send MAIL upstream (Step.Path, Step.Params), then UpstreamReply
	OpRcpt               // send RCPT upstream (Step.Path, Step.Params), then UpstreamReply, in order
	OpData               // send the 354 reply, read the message, then Message
	OpChunk              // read Step.Size octets of a BDAT chunk into the message, then Chunk
	OpDrain              // read and drop Step.Size octets, then send the replies
	OpRelay              // send the message upstream, then Relayed
	OpStartTLS           // send the 220, then run the TLS handshake; then TLSStarted
	OpClose              // send the replies, then close the session
	// OpAuth: send Step.Line to the upstream as one line of an AUTH
	// exchange (the AUTH command, or a response to its 334 challenge),
	// then AuthReply with the upstream's reply. The line carries
	// credentials: it must never be logged, recorded or kept.
	OpAuth
	// OpResolve: the replies of the pending RCPTs must be fed first
	// (UpstreamReply, in order); then the same line again. Replies go
	// out in command order (RFC 2920 §3.1).
	OpResolve
)

var opNames = [...]string{"none", "mail", "rcpt", "data", "chunk", "drain", "relay", "starttls", "close", "auth", "resolve"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Step is the outcome of one event.
type Step struct {
	// Replies go to the client, in order, before the Op is carried out
	// (for OpDrain, after it).
	Replies []smtp.Reply
	Op      Op
	// Path and Params: OpMail's sender, OpRcpt's recipient.
	Path   smtp.Path
	Params []smtp.Param
	// Line: OpAuth's line for the upstream (a secret: never log it).
	Line string
	// Size: OpChunk's and OpDrain's octet count; Last: OpChunk's chunk
	// is the last (RFC 3030 §2).
	Size int64
	Last bool
	// ResetUpstream: the upstream's transaction, if any, must be aborted
	// with RSET (RFC 5321 §4.1.1.5) before anything else.
	ResetUpstream bool
	// Judged is set when a stage ran: its verdict, for logs and metrics.
	Judged *Judgement
	// Ended is set when a transaction ended: what to log or record.
	Ended *Ended
	// Began: this command (a MAIL) began a transaction attempt.
	Began bool
	// Authed is set when an AUTH exchange ended: what to log.
	Authed *AuthEnded
}

// AuthEnded is an AUTH exchange that is over: the mechanism, the user
// name when the exchange showed it, and how it ended. Nothing else of it
// is kept.
type AuthEnded struct {
	Mech    string
	User    string
	Outcome inspect.AuthOutcome
	Reply   smtp.Reply
}

// Judgement is a stage's verdict, or moat's own protocol refusal (then
// Reason names it and the verdict is a plain reject).
type Judgement struct {
	Stage   inspect.Stage
	Verdict inspect.Verdict
	Reason  string // a protocol refusal's reason ("bad_sequence", ...); "" for a stage's verdict
}

// RcptResult is one RCPT and the reply it got.
type RcptResult struct {
	Rcpt  string `json:"rcpt"`
	Reply string `json:"reply"`
}

// Ended is a transaction that is over: one MAIL command and all that
// followed it, to the final reply of its message or its abort.
type Ended struct {
	// Outcome: delivered, upstream_refused, upstream_failed (the
	// upstream took the message or not); reject, tempfail (a stage's
	// verdict, or moat's refusal of a MAIL); rejected (a message refused
	// for its size, header size or line endings, or not kept); aborted
	// (RSET, HELO, QUIT or the client gone).
	Outcome string
	From    smtp.Path
	Rcpts   []RcptResult
	Size    int64
	Final   smtp.Reply // the reply to the message, or to MAIL if refused there
	// Judgement is the transaction's: the data stage's verdict when
	// the message was judged, else its first refusal, else the last
	// stage judged in it, else the session's (helo or connect).
	Judgement Judgement
}

// Sequencer is one session. Its methods are called from one goroutine.
type Sequencer struct {
	cfg    Config
	engine *inspect.Engine
	ctx    context.Context

	// Session: lives as long as the connection.
	Session  inspect.Session
	state    State
	offer    Offer
	upstream Upstream
	errors   int
	commands int
	connect  Judgement     // the connect stage's
	helo     Judgement     // the latest helo stage's
	ended    bool          // End was called
	auth     *authExchange // an AUTH exchange in progress

	// Transaction: cleared by reset.
	Tx        inspect.Transaction
	inTx      bool // a MAIL was received: an Ended is owed
	rcptTried int
	rcpts     []RcptResult
	pending   []inspect.Recipient // RCPTs sent upstream, replies not in yet
	bdat      bool                // a BDAT transfer is in progress
	size      int64
	first     *Judgement // the first refusal in the transaction
	last      *Judgement // the last stage judged in it
	data      *Judgement // the data stage's
}

// New starts a session judged by engine. sess holds what the front end
// knows of the connection: ID, Start, Client, Server, TLS for an
// implicit-TLS listener. ctx bounds the engine's lookups.
func New(ctx context.Context, cfg Config, engine *inspect.Engine, sess inspect.Session) *Sequencer {
	sess.Submission = cfg.Submission
	return &Sequencer{cfg: cfg, engine: engine, ctx: ctx, Session: sess}
}

// State is where the session stands.
func (q *Sequencer) State() State { return q.state }

// Offered is what the last EHLO reply offered.
func (q *Sequencer) Offered() Offer { return q.offer }

// SetUpstream records what the upstream advertises, for the next EHLO
// reply.
func (q *Sequencer) SetUpstream(u Upstream) { q.upstream = u }

// Pending is the number of RCPTs sent upstream whose replies are not in.
func (q *Sequencer) Pending() int { return len(q.pending) }

// needsReplies reports whether the replies of the pending RCPTs must be
// fed before the command line: any command but another RCPT ends a
// pipelined batch, the recipient limit counts what the upstream accepted,
// and a rcpt-stage rule that reads rcpt_count must see every earlier
// answer.
func (q *Sequencer) needsReplies(line []byte) bool {
	if len(q.pending) == 0 {
		return false
	}
	isRcpt := len(line) >= 5 && line[4] == ' ' && strings.EqualFold(string(line[:4]), smtp.VerbRCPT)
	return !isRcpt || q.cfg.MaxRecipients > 0 && len(q.Tx.Rcpts)+len(q.pending) >= q.cfg.MaxRecipients ||
		q.engine.RcptReadsRecipients()
}

// Begin starts the engine's lookups about the client as soon as its
// address is known, so that they overlap whatever comes before the
// greeting (the proxy's greeting delay). Greet calls it otherwise.
func (q *Sequencer) Begin() { q.engine.Begin(&q.Session) }

// Greet runs the connect stage and gives the greeting (RFC 5321 §4.3.1):
// 220 to proceed; 554 to refuse the session, after which only QUIT is
// honoured (§3.1); 421 to have the client come back later (§3.8).
// earlyTalker: the client sent before the greeting.
func (q *Sequencer) Greet(earlyTalker bool) Step {
	q.Session.EarlyTalker = earlyTalker
	v := q.engine.Connect(q.ctx, &q.Session)
	q.Session.Keep(inspect.StageConnect, v)
	j := Judgement{Stage: inspect.StageConnect, Verdict: v}
	if earlyTalker && q.cfg.EarlyTalker == "reject" && v.Action < inspect.Reject {
		j.Verdict = inspect.Verdict{Action: inspect.Reject, WouldBe: inspect.Reject, Reason: "early_talker",
			Reply: replyEarlyTalker, Score: v.Score, Rules: v.Rules}
	}
	q.connect = j
	s := Step{Judged: &j}
	switch j.Verdict.Action {
	case inspect.Tempfail:
		s.Replies = []smtp.Reply{j.Verdict.WireReply(inspect.StageConnect)}
		s.Op = OpClose
		q.state = StateRefused
	case inspect.Reject:
		s.Replies = []smtp.Reply{j.Verdict.WireReply(inspect.StageConnect)}
		q.state = StateRefused
	default:
		s.Replies = []smtp.Reply{q.replyGreeting()}
	}
	return s
}

// Command takes one command line as read (CRLF or LF stripped). bareLF:
// it ended in LF alone. tooLong: the line was longer than the front end
// reads, and line holds none of it.
func (q *Sequencer) Command(line []byte, bareLF, tooLong bool) Step {
	if q.auth != nil {
		// RFC 4954 §4: inside an exchange a line is the client's
		// response to a challenge, not a command.
		return q.authResponse(line, tooLong)
	}
	if q.needsReplies(line) {
		return Step{Op: OpResolve}
	}
	if tooLong || q.cfg.MaxLineLength > 0 && len(line) > q.cfg.MaxLineLength {
		// RFC 5321 §4.5.3.1.4 and §4.2.4's 500 for a line too long;
		// RFC 3463's X.5.2 is a syntax error (X.5.6 is AUTH's).
		return q.refuse(replyLineTooLong)
	}
	if bareLF {
		q.Session.Anomalies.BareLFCommand = true
	}
	if q.commands++; q.cfg.MaxCommands > 0 && q.commands > q.cfg.MaxCommands {
		return q.closeWith(q.replyTooManyCommands())
	}
	cmd, err := smtp.ParseCommand(line)
	if err != nil {
		q.Session.Anomalies.InvalidCommands++
		return q.refuse(replyUnrecognized)
	}
	if q.state == StateRefused && cmd.Verb != smtp.VerbQUIT {
		return q.refuse(replyBadSequence)
	}
	switch cmd.Verb {
	case smtp.VerbHELO, smtp.VerbEHLO:
		return q.cmdHelo(cmd)
	case smtp.VerbMAIL:
		return q.cmdMail(cmd)
	case smtp.VerbRCPT:
		return q.cmdRcpt(cmd)
	case smtp.VerbDATA:
		return q.cmdData(cmd)
	case smtp.VerbBDAT:
		return q.cmdBdat(cmd)
	case smtp.VerbRSET:
		s := q.abort()
		s.Replies = append(s.Replies, replyOK)
		return s
	case smtp.VerbNOOP:
		// RFC 5321 §4.1.1.9: any argument is ignored.
		return reply(replyOK)
	case smtp.VerbHELP:
		return reply(replyHelp)
	case smtp.VerbVRFY, smtp.VerbEXPN:
		// RFC 5321 §3.5.3: 252 when we will not verify but will accept
		// mail; recipient validation is the upstream's, and asking it
		// would let anyone harvest addresses through moat.
		return reply(replyCannotVerify)
	case smtp.VerbQUIT:
		s := q.abort()
		s.Replies = append(s.Replies, replyBye)
		s.Op = OpClose
		return s
	case smtp.VerbSTARTTLS:
		return q.cmdStartTLS(cmd)
	case smtp.VerbAUTH:
		return q.cmdAuth(cmd)
	case smtp.VerbETRN, "TURN", "ATRN", smtp.VerbXCLIENT, "XFORWARD", "SEND", "SOML", "SAML":
		// Known commands moat does not offer (not in the EHLO reply).
		return q.refuse(replyNotImplemented)
	}
	return q.refuse(replyUnrecognized)
}

func reply(r smtp.Reply) Step { return Step{Replies: []smtp.Reply{r}} }

// closing ends the session after a verdict's 421 (a rate limit with
// action close): RFC 5321 §3.8, the server closes the channel after 421.
func closing(s Step) Step {
	if n := len(s.Replies); n > 0 && s.Replies[n-1].Code == 421 {
		s.Op = OpClose
	}
	return s
}

// refuse answers a command with an error and counts it against the
// session's error budget; past the budget the session ends with 421
// (RFC 5321 §4.2.2's "closing transmission channel").
func (q *Sequencer) refuse(r smtp.Reply) Step {
	q.errors++
	s := reply(r)
	if q.cfg.MaxErrors > 0 && q.errors >= q.cfg.MaxErrors {
		s.Replies = append(s.Replies, q.replyTooManyErrors())
		s.Op = OpClose
	}
	return s
}

// refuseTx is refuse for a command of the transaction: the refusal is
// the transaction's first, with its reason, for the record.
func (q *Sequencer) refuseTx(stage inspect.Stage, reason string, r smtp.Reply) Step {
	q.noteRefusal(&Judgement{Stage: stage, Reason: reason,
		Verdict: inspect.Verdict{Action: actionOf(r), WouldBe: actionOf(r), Reason: reason, Reply: r}})
	return q.refuse(r)
}

func actionOf(r smtp.Reply) inspect.Action {
	if r.Class() == 4 {
		return inspect.Tempfail
	}
	return inspect.Reject
}

func (q *Sequencer) closeWith(r smtp.Reply) Step {
	s := q.abort()
	s.Replies = append(s.Replies, r)
	s.Op = OpClose
	return s
}

// judge records a stage's verdict in the transaction.
func (q *Sequencer) judge(j *Judgement) {
	if q.inTx {
		q.last = j
		if j.Verdict.Action >= inspect.Tempfail {
			q.noteRefusal(j)
		}
	}
}

func (q *Sequencer) noteRefusal(j *Judgement) {
	if q.inTx && q.first == nil {
		q.first = j
	}
}

// cmdHelo answers HELO and EHLO (RFC 5321 §4.1.1.1). Either may come
// again; it then ends any transaction (§4.1.4) and the helo stage runs
// again, its result replacing the earlier one.
func (q *Sequencer) cmdHelo(cmd smtp.Command) Step {
	if cmd.Arg == "" {
		return q.refuse(replyHeloSyntax(cmd.Verb))
	}
	s := q.abort()
	q.Session.HeloVerb, q.Session.Helo = cmd.Verb, cmd.Arg
	v := q.engine.Helo(q.ctx, &q.Session)
	q.Session.Keep(inspect.StageHelo, v)
	q.helo = Judgement{Stage: inspect.StageHelo, Verdict: v}
	s.Judged = &q.helo
	if v.Action >= inspect.Tempfail {
		q.Session.HeloVerb, q.Session.Helo = "", ""
		q.state = StateGreeted
		s.Replies = append(s.Replies, v.WireReply(inspect.StageHelo))
		return closing(s)
	}
	q.state = StateHelo
	if cmd.Verb == smtp.VerbHELO {
		q.offer = Offer{}
		s.Replies = append(s.Replies, smtp.Replyf(250, "", "%s", q.cfg.Hostname))
		return s
	}
	q.offer = Offer{ESMTP: true, STARTTLS: q.cfg.STARTTLS && q.Session.TLS == nil,
		AUTH:     q.authOffered(),
		SMTPUTF8: q.upstream.SMTPUTF8, DSN: q.upstream.DSN}
	lines := []string{q.cfg.Hostname + " greets " + SanitizeHelo(cmd.Arg), "PIPELINING",
		"SIZE " + strconv.FormatInt(q.cfg.MaxMessageSize, 10), "8BITMIME", "ENHANCEDSTATUSCODES"}
	if q.offer.STARTTLS {
		lines = append(lines, "STARTTLS")
	}
	if q.offer.AUTH {
		lines = append(lines, "AUTH "+authMechanisms)
	}
	lines = append(lines, "CHUNKING")
	if q.offer.SMTPUTF8 {
		lines = append(lines, "SMTPUTF8")
	}
	if q.offer.DSN {
		lines = append(lines, "DSN")
	}
	s.Replies = append(s.Replies, smtp.Reply{Code: 250, Lines: lines})
	return s
}

// cmdMail starts a transaction (RFC 5321 §4.1.1.2). The mail stage runs
// first; only then is the upstream asked.
func (q *Sequencer) cmdMail(cmd smtp.Command) Step {
	if q.state >= StateMail {
		// The open transaction goes on (§4.1.4).
		return q.refuse(replyNestedMail)
	}
	if q.state == StateGreeted {
		// No session yet, so no transaction either (§4.1.4).
		return q.refuse(replyHeloFirst)
	}
	q.begin()
	s := q.mailStage(cmd)
	s.Began = true
	return s
}

func (q *Sequencer) mailStage(cmd smtp.Command) Step {
	from, params, err := smtp.ParseMailArg(cmd.Arg)
	if err != nil {
		s := q.refuseTx(inspect.StageMail, "mail_syntax", replyMailSyntax(err))
		return q.endRefused(s, s.Replies[0])
	}
	q.Tx.From, q.Tx.FromParams = from, params
	if r, ok := q.checkMailParams(params); !ok {
		s := q.refuseTx(inspect.StageMail, "mail_param", r)
		return q.endRefused(s, s.Replies[0])
	}
	v := q.engine.Mail(q.ctx, &q.Session, &q.Tx)
	q.Tx.Keep(inspect.StageMail, v)
	j := &Judgement{Stage: inspect.StageMail, Verdict: v}
	q.judge(j)
	if v.Action >= inspect.Tempfail {
		r := v.WireReply(inspect.StageMail)
		s := q.endRefused(Step{Replies: []smtp.Reply{r}}, r)
		s.Judged = j
		return closing(s)
	}
	return Step{Op: OpMail, Path: from, Params: params, Judged: j}
}

// begin opens the record of a transaction attempt.
func (q *Sequencer) begin() {
	q.reset()
	q.inTx = true
}

// endRefused ends a transaction refused at MAIL: no transaction opened.
func (q *Sequencer) endRefused(s Step, r smtp.Reply) Step {
	s.Ended = q.end(outcomeOf(r), r)
	q.reset()
	return s
}

func outcomeOf(r smtp.Reply) string {
	if r.Class() == 4 {
		return "tempfail"
	}
	return "reject"
}

// checkMailParams accepts the MAIL parameters of the extensions offered
// in this session's EHLO reply and nothing else (RFC 5321 §4.1.1.11: 555
// for a parameter not recognised). Their values were checked by
// smtp.ParseMailArg; what is left is policy: the size limit, and no
// BINARYMIME (CHUNKING is offered, BINARYMIME is not).
func (q *Sequencer) checkMailParams(params []smtp.Param) (smtp.Reply, bool) {
	for _, p := range params {
		switch {
		case !q.offer.mailParam(p.Key):
			return replyUnsupportedOption(p.Key), false
		case p.Key == "SIZE":
			// RFC 1870 §6.2: 552 when the declared size is over the limit.
			if n, err := smtp.ParseSizeValue(p.Value); err != nil || q.cfg.MaxMessageSize > 0 && n > q.cfg.MaxMessageSize {
				return replyTooBig, false
			}
		case p.Key == "BODY" && strings.EqualFold(p.Value, "BINARYMIME"):
			return replyBadBody, false
		}
	}
	return smtp.Reply{}, true
}

// mailParam reports whether MAIL's parameter key belongs to an offered
// extension.
func (o Offer) mailParam(key string) bool {
	switch key {
	case "SIZE", "BODY":
		return o.ESMTP
	case "SMTPUTF8":
		return o.SMTPUTF8
	case "RET", "ENVID":
		return o.DSN
	case "AUTH":
		// RFC 4954 §5: the original submitter, when AUTH is offered.
		return o.AUTH
	}
	return false
}

// UpstreamReply takes the upstream's reply to the MAIL or the oldest
// pending RCPT; failed: the upstream could not be asked or did not answer
// (r is then moat's 4xx for it). It returns the reply for the client: the
// upstream's own answer goes back unchanged — recipient validation and
// sender policy stay the upstream's — but for a missing enhanced code.
func (q *Sequencer) UpstreamReply(r smtp.Reply, failed bool) Step {
	if len(q.pending) > 0 {
		rc := q.pending[0]
		q.pending = q.pending[1:]
		if !failed {
			r = q.relayed(r, smtp.VerbRCPT)
		}
		q.logRcpt(rc.Path, r)
		if !failed && r.Class() == 2 {
			q.Tx.Rcpts = append(q.Tx.Rcpts, rc)
			q.state = StateRcpt
		}
		return reply(r)
	}
	// The reply to MAIL.
	if !failed {
		r = q.relayed(r, smtp.VerbMAIL)
	}
	if failed || r.Class() != 2 {
		s := q.endRefused(reply(r), r)
		if failed {
			s.Ended.Outcome = "upstream_failed"
		} else {
			s.Ended.Outcome = "upstream_refused"
		}
		// A 421 (the authenticated upstream connection was lost) ends
		// the session.
		return closing(s)
	}
	q.state = StateMail
	q.Session.Transactions++
	return reply(r)
}

// relayed is an upstream's reply to verb as it goes to the client:
// unchanged, but with an enhanced status code added where the upstream
// gave none and this client was offered ENHANCEDSTATUSCODES, because
// RFC 2034 §3 then requires one on every 2xx, 4xx and 5xx reply.
func (q *Sequencer) relayed(r smtp.Reply, verb string) smtp.Reply {
	if !q.offer.ESMTP {
		return r
	}
	return r.WithDefaultEnhanced(verb)
}

// cmdRcpt adds a recipient (RFC 5321 §4.1.1.3): the rcpt stage runs, then
// the RCPT goes to the upstream.
func (q *Sequencer) cmdRcpt(cmd smtp.Command) Step {
	if q.state < StateMail || q.state == StateRefused {
		return q.refuseTx(inspect.StageRcpt, "bad_sequence", replyNeedMail)
	}
	to, params, err := smtp.ParseRcptArg(cmd.Arg)
	if err != nil {
		return q.refuseTx(inspect.StageRcpt, "rcpt_syntax", replyRcptSyntax(err))
	}
	for _, p := range params {
		// RFC 3461's NOTIFY and ORCPT when DSN is offered;
		// smtp.ParseRcptArg checked their values.
		if !q.offer.DSN || p.Key != "NOTIFY" && p.Key != "ORCPT" {
			return q.refuseTx(inspect.StageRcpt, "rcpt_param", replyUnsupportedOption(p.Key))
		}
	}
	q.rcptTried++
	if q.cfg.MaxRecipients > 0 && len(q.Tx.Rcpts)+len(q.pending) >= q.cfg.MaxRecipients {
		// RFC 5321 §4.5.3.1.10: 452 so the client sends the rest later.
		q.logRcpt(to, replyTooManyRcpts)
		return reply(replyTooManyRcpts)
	}
	rc := inspect.Recipient{Path: to, Params: params}
	v := q.engine.Rcpt(q.ctx, &q.Session, &q.Tx, rc)
	rc.Result = v.Result // kept with the recipient once the upstream accepts it
	j := &Judgement{Stage: inspect.StageRcpt, Verdict: v}
	q.judge(j)
	if v.Action >= inspect.Tempfail {
		r := v.WireReply(inspect.StageRcpt)
		q.logRcpt(to, r)
		if r.Code == 421 {
			s := q.closeWith(r)
			s.Judged = j
			return s
		}
		return Step{Replies: []smtp.Reply{r}, Judged: j}
	}
	q.pending = append(q.pending, rc)
	return Step{Op: OpRcpt, Path: to, Params: params, Judged: j}
}

func (q *Sequencer) logRcpt(to smtp.Path, r smtp.Reply) {
	q.rcpts = append(q.rcpts, RcptResult{Rcpt: to.String(), Reply: r.Summary()})
}

// readyForData checks that a transaction can take a message: a MAIL and
// at least one accepted recipient.
func (q *Sequencer) readyForData() (smtp.Reply, string, bool) {
	switch {
	case q.state < StateMail || q.state == StateRefused:
		return replyNeedMail, "bad_sequence", false
	case q.state == StateMail && q.rcptTried > 0:
		// RFC 5321 §3.3 and RFC 2920 §3.1: with every RCPT refused, a
		// pipelined DATA gets 554, not 354, and no data follows.
		return replyNoValidRcpts, "no_valid_recipients", false
	case q.state == StateMail:
		return replyNeedRcpt, "bad_sequence", false
	}
	return smtp.Reply{}, "", true
}

// cmdData starts a message (RFC 5321 §4.1.1.4): moat answers 354 itself,
// reads the message, judges it, and only then sends it upstream.
func (q *Sequencer) cmdData(cmd smtp.Command) Step {
	switch {
	case q.bdat:
		// RFC 3030 §2: DATA may not follow BDAT in one transaction.
		return q.refuseTx(inspect.StageData, "bad_sequence", replyDataAfterBDAT)
	case cmd.Arg != "":
		return q.refuse(replyDataSyntax)
	}
	if r, reason, ok := q.readyForData(); !ok {
		return q.refuseTx(inspect.StageData, reason, r)
	}
	return Step{Replies: []smtp.Reply{replyStartData}, Op: OpData}
}

// cmdBdat takes one BDAT chunk (RFC 3030 §2). Whatever moat answers, the
// chunk's octets follow the command on the wire and are read or drained,
// so the conversation stays in step.
func (q *Sequencer) cmdBdat(cmd smtp.Command) Step {
	size, last, err := smtp.ParseBDATArg(cmd.Arg)
	if err != nil {
		// Without a size there is no telling where the chunk ends and the
		// next command starts: the session cannot continue in step.
		r := replyBDATSyntax(err)
		q.noteRefusal(&Judgement{Stage: inspect.StageData, Reason: "bdat_syntax",
			Verdict: inspect.Verdict{Action: inspect.Reject, WouldBe: inspect.Reject, Reason: "bdat_syntax", Reply: r}})
		s := q.abort()
		s.Replies = append(s.Replies, r, q.replyLostSync())
		s.Op = OpClose
		return s
	}
	var refusal smtp.Reply
	var reason string
	if !q.offer.ESMTP {
		refusal, reason = replyBDATNotOffered, "bad_sequence"
	} else if r, why, ok := q.readyForData(); !ok {
		refusal, reason = r, why
	}
	if refusal.Code == 0 {
		q.bdat = true
		return Step{Op: OpChunk, Size: size, Last: last}
	}
	if q.cfg.MaxMessageSize > 0 && size > 2*q.cfg.MaxMessageSize {
		// Not worth reading: the session ends.
		s := q.abort()
		s.Replies = append(s.Replies, replyTooBig, q.replyClosing())
		s.Op = OpClose
		return s
	}
	s := q.refuseTx(inspect.StageData, reason, refusal)
	if q.bdat {
		// RFC 3030 §2: after a failed chunk the transaction is over.
		a := q.abortWith(reason, refusal)
		s.ResetUpstream, s.Ended = a.ResetUpstream, a.Ended
	}
	s.Op, s.Size = OpDrain, size
	if len(s.Replies) > 1 { // the error budget ran out
		s.Op = OpClose
	}
	return s
}

// Received describes a message as the front end read it.
type Received struct {
	Message *inspect.Message
	// Content is the message parsed at least as deep as the engine's
	// ContentDepth, when the front end parsed it already (capture); nil
	// lets the engine parse it.
	Content *inspect.Content
	// Over: the message exceeded MaxMessageSize (the rest was drained).
	// HeaderOver: its header section exceeded the front end's limit.
	// SpoolErr: it could not be kept (disk full).
	Over, HeaderOver bool
	SpoolErr         error
}

// Chunk takes a BDAT chunk that was read. Unless it was the last, the
// client gets a 250 for it; the last goes on as Message does.
func (q *Sequencer) Chunk(size int64, last bool, m Received) Step {
	if !last {
		return reply(replyChunkReceived(size))
	}
	return q.Message(m)
}

// Message takes a received message: the size, header and line-ending
// policies, then the data stage. Refused, it ends the transaction;
// accepted, it goes upstream (OpRelay, then Relayed).
func (q *Sequencer) Message(m Received) Step {
	q.size = m.Message.Size
	var refusal smtp.Reply
	reason := ""
	switch {
	case m.Over:
		// RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: 552 after the data was
		// drained, so the conversation stays in step.
		refusal, reason = replyTooBig, "message_size"
	case m.HeaderOver:
		refusal, reason = replyHeaderTooBig, "header_size"
	case m.SpoolErr != nil:
		refusal, reason = replyNoStorage, "spool_failed"
	case m.Message.BareLF && q.cfg.BareLF == "reject", m.Message.BareCR && q.cfg.BareCR == "reject":
		// The line endings of SMTP smuggling; Postfix's
		// smtpd_forbid_bare_newline answers the same way.
		refusal, reason = replyBareLineEndings, "bare_line_endings"
	}
	if refusal.Code != 0 {
		j := &Judgement{Stage: inspect.StageData, Reason: reason,
			Verdict: inspect.Verdict{Action: actionOf(refusal), WouldBe: actionOf(refusal), Reason: reason, Reply: refusal}}
		q.data = j
		s := q.abortWith("rejected", refusal)
		s.Replies = append(s.Replies, refusal)
		return s
	}
	var v inspect.Verdict
	if m.Content != nil {
		v = q.engine.DataWithContent(q.ctx, &q.Session, &q.Tx, m.Message, m.Content)
	} else {
		v = q.engine.Data(q.ctx, &q.Session, &q.Tx, m.Message)
	}
	q.Tx.Keep(inspect.StageData, v)
	j := &Judgement{Stage: inspect.StageData, Verdict: v}
	q.data = j
	q.judge(j)
	if v.Action >= inspect.Tempfail {
		r := v.WireReply(inspect.StageData)
		s := q.abortWith(v.Action.String(), r)
		s.Replies = append(s.Replies, r)
		s.Judged = j
		return closing(s)
	}
	return Step{Op: OpRelay, Judged: j}
}

// MessageWriter is where the front end writes the message of the
// transaction in progress as it reads it, after DATA or chunk by chunk,
// so that the checks that hash it (DKIM, ARC) finish with the data; nil
// when no check needs the bytes.
func (q *Sequencer) MessageWriter() io.Writer {
	return q.engine.MessageWriter(&q.Session, &q.Tx)
}

// Verdict is the data stage's verdict of the message in progress: its
// headers and subject prefix go upstream with it.
func (q *Sequencer) Verdict() inspect.Verdict {
	if q.data == nil {
		return inspect.Verdict{}
	}
	return q.data.Verdict
}

// Relayed takes the upstream's final reply to the message (or moat's 4xx
// for an upstream that failed) and ends the transaction. The client's 250
// is the upstream's 250: moat acknowledges nothing the upstream did not.
func (q *Sequencer) Relayed(r smtp.Reply, failed bool) Step {
	outcome := "delivered"
	switch {
	case failed:
		outcome = "upstream_failed"
	case r.Code == 354 || r.Class() == 1 || r.Class() == 3:
		// Never pass an intermediate reply as a final answer.
		outcome = "upstream_failed"
		r = replyUpstreamLost
	case r.Class() != 2:
		outcome = "upstream_refused"
	}
	if !failed {
		r = q.relayed(r, smtp.VerbDATA)
	}
	// An upstream that refused DATA itself still holds the transaction
	// (RFC 5321 §4.1.1.4); it is reset in any case.
	s := q.abortWith(outcome, r)
	s.Replies = append(s.Replies, r)
	return s
}

// cmdStartTLS upgrades the session (RFC 3207).
func (q *Sequencer) cmdStartTLS(cmd smtp.Command) Step {
	switch {
	case q.Session.TLS != nil:
		return q.refuse(replyTLSActive)
	case !q.offer.STARTTLS:
		return q.refuse(replyNotImplemented)
	case cmd.Arg != "":
		return q.refuse(replyStartTLSSyntax)
	case q.state >= StateMail && q.state != StateRefused:
		return q.refuse(replyTxInProgress)
	}
	return Step{Replies: []smtp.Reply{replyStartTLS}, Op: OpStartTLS}
}

// TLSStarted records the TLS layer. RFC 3207 §4.2: everything learnt
// before TLS is forgotten; the client starts over with EHLO. injected:
// commands were pipelined behind STARTTLS in plaintext and discarded
// (CVE-2011-0411).
func (q *Sequencer) TLSStarted(info *inspect.TLSInfo, injected bool) {
	q.Session.TLS = info
	if injected {
		q.Session.Anomalies.STARTTLSInjection = true
	}
	q.reset()
	q.Session.HeloVerb, q.Session.Helo = "", ""
	q.state = StateGreeted
	q.offer = Offer{}
}

// End ends the session (the client left, a timeout, a read error): a
// transaction in progress is aborted. Calling it again does nothing.
func (q *Sequencer) End() Step {
	if q.ended {
		return Step{}
	}
	q.ended = true
	s := q.abort()
	q.engine.End(&q.Session)
	return s
}

// abort ends the transaction, if any, as aborted.
func (q *Sequencer) abort() Step { return q.abortWith("aborted", smtp.Reply{}) }

func (q *Sequencer) abortWith(outcome string, final smtp.Reply) Step {
	var s Step
	if q.inTx {
		s.Ended = q.end(outcome, final)
		s.ResetUpstream = q.state >= StateMail && q.state != StateRefused
	}
	q.reset()
	return s
}

// end builds the Ended record of the transaction.
func (q *Sequencer) end(outcome string, final smtp.Reply) *Ended {
	e := &Ended{Outcome: outcome, From: q.Tx.From, Rcpts: append([]RcptResult(nil), q.rcpts...),
		Size: q.size, Final: final, Judgement: q.judgement()}
	return e
}

// Judgement is the judgement of the transaction in progress (see
// Ended.Judgement), or the session's when there is none.
func (q *Sequencer) Judgement() Judgement { return q.judgement() }

func (q *Sequencer) judgement() Judgement {
	switch {
	case q.data != nil:
		return *q.data
	case q.first != nil:
		return *q.first
	case q.last != nil:
		return *q.last
	case q.helo.Stage != 0:
		return q.helo
	}
	return q.connect
}

// reset clears the transaction (RFC 5321 §4.1.1.5), keeping the session.
func (q *Sequencer) reset() {
	q.Tx = inspect.Transaction{}
	q.inTx = false
	q.rcptTried = 0
	q.rcpts = q.rcpts[:0]
	q.pending = q.pending[:0]
	q.bdat = false
	q.size = 0
	q.first, q.last, q.data = nil, nil, nil
	if q.state > StateHelo && q.state != StateRefused {
		q.state = StateHelo
	}
}

// SanitizeHelo makes a client-chosen name safe to echo in replies and in
// the Received header: printable ASCII without spaces and without the
// comment characters of RFC 5322 §3.2.2, at most 255 bytes.
func SanitizeHelo(s string) string {
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
