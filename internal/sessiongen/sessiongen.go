// Package sessiongen generates SMTP client sessions and plays them against
// a server, for differential tests: the same seeded session is run against
// two servers (an MTA directly, and the same MTA behind moat) and the
// transcripts and delivered mailboxes are compared.
//
// Generate builds a Session, a script of steps, from a *rand.Rand; the same
// source state and Options give the same Session, byte for byte. A session
// covers, as chance and Options decide: EHLO or HELO; an early talker that
// sends EHLO before the greeting; STARTTLS; one to a few transactions,
// plain or pipelined (RFC 2920: MAIL, every RCPT and DATA in one write),
// with DATA or with BDAT (RFC 3030: one LAST chunk, or two chunks); RSET
// between and inside transactions; NOOP, VRFY and HELP; bad commands (an
// unknown verb, MAIL FROM:bad, a MAIL parameter nobody offered, RCPT
// before MAIL, DATA before RCPT); messages over Options.SizeLimit, with
// and without a SIZE declaration; transactions with more recipients than
// Options.RecipientLimit; and senders, recipients and subjects from
// Options.Refuse, which the test configures its servers to refuse at MAIL,
// RCPT, DATA or the end of data. Messages carry unique Message-IDs made of
// the seed, the session and the transaction number, lines that need
// dot-stuffing, and, with Options.BareLF, bare LFs (never before a dot).
// Sessions are bounded: at most 8 transactions and 3 bad commands; per
// transaction at most 21 recipients (Options.MaxRecipients, at most 20,
// and a refused one) or RecipientLimit+3; bodies of at most
// Options.MaxBodyBytes (at most 64 KiB), oversize messages of at most
// three times SizeLimit (at most 1 MiB).
//
// The script is a client's: a transaction refused at or after DATA is
// followed by RSET, so is a malformed MAIL, and a repeated HELO/EHLO comes
// after one; a session whose EHLO name is
// in Refuse.Helo uses no extensions (no pipelining, BDAT or SIZE=).
//
// Run plays a Session against an address like a real client would:
// commands a step pipelines go in one write only when the server offered
// PIPELINING, else one at a time; a message body follows DATA only after a
// 354, and always follows a 354; BDAT is sent only when CHUNKING was
// offered, else the same message goes as DATA; a MAIL's SIZE parameter is
// added only when SIZE was offered; STARTTLS is tried only when offered,
// and the TLS handshake only after its 220; a transaction whose MAIL was
// refused is given up, and one with no accepted recipient sends no message
// (unless DATA was pipelined). Every read and write has a deadline, and a
// server that closes the connection at any point ends the transcript
// cleanly.
package sessiongen

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Options shape the sessions Generate makes. The zero value is usable: it
// generates sessions without early talkers, STARTTLS, bare LFs, oversize
// messages, recipient overflows or refusals.
type Options struct {
	// Seed and Session identify the session: they go into every
	// Message-ID ("<sg.SEED.SESSION.TX@client.test>") and into
	// Session.Seed and Session.N for reports. Generate does not use them
	// to draw anything; New derives the random source from them.
	Seed    uint64
	Session int

	// RcptDomain is the domain of the recipients; default "example.net".
	RcptDomain string
	// SenderDomain is the domain of the senders; default "client.test".
	SenderDomain string
	// MaxTransactions bounds the transactions of a session (default 3).
	MaxTransactions int
	// MaxRecipients bounds the accepted-looking recipients of a normal
	// transaction (default 3); refused ones and overflows come on top.
	MaxRecipients int
	// MaxBodyBytes bounds the body of a normal message (default 3000). With
	// SizeLimit set it is at most SizeLimit/4, so that a normal message stays
	// far below the limit even with the trace headers servers add.
	MaxBodyBytes int

	// SizeLimit, when > 0, is the servers' message size limit: some
	// messages are made 2 to 3 times larger than it (never close to it:
	// servers count different things), some declared with SIZE=.
	// It must be at most 1 MiB.
	SizeLimit int64
	// RecipientLimit, when > 0, is the servers' recipients-per-message
	// limit: some transactions name RecipientLimit+1 to +3 recipients.
	RecipientLimit int

	// EarlyTalker lets some sessions send their EHLO before the greeting
	// (RFC 5321 §4.3.1 forbids it; some servers refuse such clients).
	EarlyTalker bool
	// BareLF puts a bare LF inside some message lines (never right before
	// a dot: that is SMTP smuggling, which servers answer differently on
	// purpose).
	BareLF bool
	// STARTTLS lets some sessions try STARTTLS (when the server offers it)
	// and EHLO again.
	STARTTLS bool
	// OversizeBDAT lets oversize messages go in BDAT chunks too, not
	// only after DATA. (Exim 4.96 answers an oversize chunk before
	// reading it, and takes the rest of the chunk for commands.)
	OversizeBDAT bool

	// Refuse names what the servers under test are configured to refuse.
	Refuse Refusals
}

// Refusals are the envelope values a test configures its servers to
// refuse, stage by stage. Every list may be empty.
type Refusals struct {
	// Helo are HELO/EHLO names refused (a session uses one as its name).
	Helo []string
	// MailReject and MailDefer are senders refused at MAIL with 5xx / 4xx.
	MailReject, MailDefer []string
	// RcptReject and RcptDefer are recipients refused at RCPT.
	RcptReject, RcptDefer []string
	// DataReject and DataDefer are senders refused at the DATA command
	// (Postfix's smtpd_data_restrictions).
	//
	// A transaction with one of them, or one refused at the end of data
	// (EODDefer, EODRejectSubject, an oversize message), is followed by
	// RSET, as a real client resets after a failed transaction: the
	// transaction is still open after a refused DATA (RFC 5321
	// §4.1.1.4), and Postfix keeps it open after refusing at the end of
	// data too.
	DataReject, DataDefer []string
	// EODDefer are senders refused with 4xx at the end of data.
	EODDefer []string
	// EODRejectSubject, when not empty, is a Subject refused with 5xx at
	// the end of data (a header check).
	EODRejectSubject string
}

// Tag says what the generator meant a command to be, so that a test can
// tell, say, a VRFY from a MAIL without parsing lines.
type Tag string

// The tags of commands.
const (
	TagEHLO     Tag = "EHLO"
	TagHELO     Tag = "HELO"
	TagMail     Tag = "MAIL"
	TagRcpt     Tag = "RCPT"
	TagData     Tag = "DATA"
	TagRset     Tag = "RSET"
	TagNoop     Tag = "NOOP"
	TagVrfy     Tag = "VRFY"
	TagHelp     Tag = "HELP"
	TagQuit     Tag = "QUIT"
	TagStartTLS Tag = "STARTTLS"

	// Bad commands.
	TagUnknown    Tag = "unknown-verb"    // a verb nobody implements
	TagMailSyntax Tag = "MAIL-syntax"     // MAIL FROM:bad
	TagMailParam  Tag = "MAIL-param"      // a parameter nobody offered (555)
	TagRcptNoMail Tag = "RCPT-no-mail"    // RCPT outside a transaction
	TagDataNoRcpt Tag = "DATA-no-rcpt"    // DATA after MAIL, before any RCPT
	TagRcptOver   Tag = "RCPT-over-limit" // a RCPT past Options.RecipientLimit
)

// Kind is the kind of a step.
type Kind uint8

const (
	// KindCmd is one command, or several when Pipelined.
	KindCmd Kind = iota
	// KindData is a message after DATA: sent only when the DATA (the last
	// command of the step before) got 354.
	KindData
	// KindBDAT is a message in BDAT chunks (RFC 3030), sent as DATA when
	// the server did not offer CHUNKING.
	KindBDAT
	// KindStartTLS is STARTTLS and, after 220, the TLS handshake; skipped
	// when the server did not offer STARTTLS.
	KindStartTLS
)

func (k Kind) String() string {
	switch k {
	case KindCmd:
		return "cmd"
	case KindData:
		return "data"
	case KindBDAT:
		return "bdat"
	case KindStartTLS:
		return "starttls"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Command is one command line of a step.
type Command struct {
	// Line is the command without CRLF.
	Line string
	// Tag says what the command is meant to be.
	Tag Tag
	// Size, when > 0, is added as " SIZE=n" to a MAIL when the server
	// offered SIZE (RFC 1870).
	Size int64
}

// Step is one step of a session's script.
type Step struct {
	Kind Kind
	// Cmds are the command(s) of a KindCmd step.
	Cmds []Command
	// Pipelined sends Cmds in one write when the server offered
	// PIPELINING; the replies are read after the write, in order.
	Pipelined bool
	// Tx numbers the transaction the step belongs to (MAIL, its RCPTs,
	// DATA or BDAT, the message), from 1; 0 for steps outside one.
	Tx int
	// Msg is the message of a KindData or KindBDAT step.
	Msg *Message
	// Chunks splits Msg.Content for BDAT: the sizes of the chunks, the
	// last one sent with LAST. They add up to len(Msg.Content).
	Chunks []int
}

// String summarises the step for reports.
func (s Step) String() string {
	switch s.Kind {
	case KindCmd:
		lines := make([]string, len(s.Cmds))
		for i, c := range s.Cmds {
			lines[i] = c.Line
			if len(lines[i]) > 60 {
				lines[i] = lines[i][:60] + "…"
			}
		}
		if len(lines) > 6 {
			lines = append(lines[:3], fmt.Sprintf("… %d more …", len(lines)-5), lines[len(lines)-2], lines[len(lines)-1])
		}
		sep := " / "
		if s.Pipelined {
			sep = " | "
		}
		return strings.Join(lines, sep)
	case KindData:
		return "message " + s.Msg.String()
	case KindBDAT:
		return fmt.Sprintf("BDAT %v of message %s", s.Chunks, s.Msg.String())
	case KindStartTLS:
		return "STARTTLS + handshake"
	}
	return s.Kind.String()
}

// Message is a message a session sends.
type Message struct {
	// ID is the Message-ID, without the angle brackets.
	ID string
	// Subject is the Subject header's value.
	Subject string
	// Content is the message as the server should receive it: header,
	// empty line, body, CRLF line endings (except the bare LFs when
	// BareLF), not dot-stuffed and without the end-of-data marker.
	Content []byte
	// Oversize marks a message larger than Options.SizeLimit.
	Oversize bool
	// BareLF marks a message with a bare LF in it.
	BareLF bool
}

func (m *Message) String() string {
	var flags string
	if m.Oversize {
		flags += " oversize"
	}
	if m.BareLF {
		flags += " bare-LF"
	}
	return fmt.Sprintf("<%s> (%d bytes%s)", m.ID, len(m.Content), flags)
}

// Wire returns the message as it goes after DATA: dot-stuffed (RFC 5321
// §4.5.2: a '.' at the start of a line is doubled; a bare LF starts a line
// for this purpose too) and ended with CRLF.CRLF.
func (m *Message) Wire() []byte {
	var b bytes.Buffer
	b.Grow(len(m.Content) + len(m.Content)/50 + 5)
	lineStart := true
	for _, c := range m.Content {
		if lineStart && c == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(c)
		lineStart = c == '\n'
	}
	if !lineStart {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// Session is a generated client session.
type Session struct {
	// Seed and N are Options.Seed and Options.Session.
	Seed uint64
	N    int
	// EarlyTalk sends the first step before reading the greeting.
	EarlyTalk bool
	// Helo is the name the session gives in HELO/EHLO.
	Helo  string
	Steps []Step
}

// Messages returns the messages of the session in order.
func (s *Session) Messages() []*Message {
	var out []*Message
	for _, st := range s.Steps {
		if st.Msg != nil {
			out = append(out, st.Msg)
		}
	}
	return out
}

// String is the script, one step per line.
func (s *Session) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "session %d (seed %d)", s.N, s.Seed)
	if s.EarlyTalk {
		b.WriteString(", early talker")
	}
	b.WriteString(":\n")
	for i, st := range s.Steps {
		fmt.Fprintf(&b, "  %2d %s\n", i, st)
	}
	return b.String()
}

// New generates session n of seed: Generate with a PCG source seeded
// (seed, n) and o.Seed, o.Session set.
func New(seed uint64, n int, o Options) Session {
	o.Seed, o.Session = seed, n
	return Generate(rand.New(rand.NewPCG(seed, uint64(n))), o)
}

// Hard bounds, whatever the Options say.
const (
	maxTransactions = 8
	maxRecipients   = 20
	maxBodyBytes    = 64 << 10
	maxSizeLimit    = 1 << 20
	maxOverflow     = 3    // recipients past RecipientLimit
	maxRcptLimit    = 1000 // RecipientLimit beyond this is not exercised
	errorBudget     = 3    // bad commands per session
)

// Generate makes one session from r. The same r state and o give the same
// session.
func Generate(r *rand.Rand, o Options) Session {
	o = o.withDefaults()
	g := &gen{r: r, o: o, s: Session{Seed: o.Seed, N: o.Session}, errors: errorBudget}
	g.session()
	return g.s
}

func (o Options) withDefaults() Options {
	if o.RcptDomain == "" {
		o.RcptDomain = "example.net"
	}
	if o.SenderDomain == "" {
		o.SenderDomain = "client.test"
	}
	if o.MaxTransactions <= 0 {
		o.MaxTransactions = 3
	}
	o.MaxTransactions = min(o.MaxTransactions, maxTransactions)
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = 3
	}
	o.MaxRecipients = min(o.MaxRecipients, maxRecipients)
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 3000
	}
	o.MaxBodyBytes = min(o.MaxBodyBytes, maxBodyBytes)
	o.SizeLimit = min(max(o.SizeLimit, 0), maxSizeLimit)
	if o.SizeLimit > 0 {
		o.MaxBodyBytes = min(o.MaxBodyBytes, int(o.SizeLimit/4))
	}
	if o.RecipientLimit > maxRcptLimit {
		o.RecipientLimit = 0
	}
	return o
}

type gen struct {
	r      *rand.Rand
	o      Options
	s      Session
	errors int // bad commands still allowed
	esmtp  bool
	plain  bool // use no extensions (the EHLO will be refused)
	tx     int  // transactions so far
}

func (g *gen) p(prob float64) bool { return g.r.Float64() < prob }

func (g *gen) cmd(tag Tag, line string) {
	g.s.Steps = append(g.s.Steps, Step{Kind: KindCmd, Cmds: []Command{{Line: line, Tag: tag}}})
}

func (g *gen) session() {
	g.s.Helo = fmt.Sprintf("client%d.%s", g.s.N, g.o.SenderDomain)
	if len(g.o.Refuse.Helo) > 0 && g.p(0.1) {
		// A client whose EHLO is refused goes on without extensions,
		// so its script uses none: no pipelining, BDAT or SIZE=.
		g.s.Helo = g.pick(g.o.Refuse.Helo)
		g.plain = true
	}
	g.s.EarlyTalk = g.o.EarlyTalker && g.p(0.15)
	g.esmtp = g.s.EarlyTalk || g.p(0.9)
	g.hello()
	if g.o.STARTTLS && g.esmtp && g.p(0.25) {
		g.s.Steps = append(g.s.Steps, Step{Kind: KindStartTLS})
		g.hello() // RFC 3207 §4.2: the client starts over
	}
	n := 1 + g.r.IntN(g.o.MaxTransactions)
	for i := 0; i < n; i++ {
		g.between(i > 0)
		g.transaction()
	}
	if g.p(0.2) {
		g.between(true)
	}
	if g.p(0.9) {
		g.cmd(TagQuit, "QUIT")
	} // else the client just hangs up
}

func (g *gen) hello() {
	if g.esmtp {
		g.cmd(TagEHLO, "EHLO "+g.s.Helo)
	} else {
		g.cmd(TagHELO, "HELO "+g.s.Helo)
	}
}

// between adds what a session may do outside a transaction.
func (g *gen) between(rsetLikely bool) {
	if g.p(0.12) {
		g.cmd(TagNoop, "NOOP")
	}
	if g.p(0.08) {
		g.cmd(TagVrfy, "VRFY <"+g.rcpt(g.r.IntN(8))+">")
	}
	if g.p(0.05) {
		g.cmd(TagHelp, "HELP")
	}
	if rsetLikely && g.p(0.4) || g.p(0.05) {
		g.cmd(TagRset, "RSET")
	}
	if g.p(0.04) {
		// A second HELO/EHLO. RSET first: it would reset an open
		// transaction, but OpenSMTPD refuses a repeated EHLO and keeps
		// the transaction.
		g.cmd(TagRset, "RSET")
		g.hello()
	}
	if g.errors > 0 && g.p(0.2) {
		g.errors--
		switch g.r.IntN(4) {
		case 0:
			verbs := []string{"FOOB", "XYZZY bar", "MAILX FROM:<a@b>", "HELLO there"}
			g.cmd(TagUnknown, verbs[g.r.IntN(len(verbs))])
		case 1:
			bad := []string{"MAIL FROM:bad", "MAIL FROM:<no-at-sign", "MAIL TO:<a@" + g.o.SenderDomain + ">", "MAIL FROM:"}
			g.cmd(TagMailSyntax, bad[g.r.IntN(len(bad))])
			// A lenient server takes some of these (Postfix qualifies
			// "bad" unless strict_rfc821_envelopes): end what it started.
			g.cmd(TagRset, "RSET")
		case 2:
			if g.esmtp {
				g.cmd(TagMailParam, "MAIL FROM:<"+g.sender()+"> FROBNICATE=yes")
				if g.p(0.5) {
					g.cmd(TagRset, "RSET") // in case a server took it
				}
			} else {
				g.cmd(TagUnknown, "FOOB")
			}
		case 3:
			// RSET first, so that no transaction is open.
			g.cmd(TagRset, "RSET")
			g.cmd(TagRcptNoMail, "RCPT TO:<"+g.rcpt(0)+">")
		}
	}
}

// sender returns a sender the servers accept.
func (g *gen) sender() string {
	return fmt.Sprintf("s%d@%s", g.r.IntN(4), g.o.SenderDomain)
}

func (g *gen) rcpt(i int) string {
	return fmt.Sprintf("u%d@%s", i, g.o.RcptDomain)
}

func (g *gen) pick(list []string) string { return list[g.r.IntN(len(list))] }

// transaction adds one mail transaction.
func (g *gen) transaction() {
	g.tx++
	first := len(g.s.Steps)
	defer func() {
		for i := first; i < len(g.s.Steps); i++ {
			if st := &g.s.Steps[i]; !(st.Kind == KindCmd && st.Cmds[0].Tag == TagRset) {
				st.Tx = g.tx
			}
		}
	}()
	o := &g.o
	rf := &o.Refuse

	// The sender: usually one the servers accept.
	from := g.sender()
	var needRset bool
	over := o.RecipientLimit > 0 && g.p(0.06)
	type senderList struct {
		list  []string
		reset bool
	}
	lists := []senderList{{rf.MailReject, false}, {rf.MailDefer, false}, {rf.DataReject, true}, {rf.DataDefer, true}, {rf.EODDefer, false}}
	eodRefused := false
	if g.p(0.3) {
		l := lists[g.r.IntN(len(lists))]
		// Not with a recipient overflow: a hundred RCPTs after a
		// refused MAIL are a hundred errors, past every server's error
		// limit, and servers count errors differently.
		if len(l.list) > 0 && !over {
			from, needRset = g.pick(l.list), l.reset
			eodRefused = slices.Contains(rf.EODDefer, from)
		}
	} else if g.p(0.05) {
		from = "" // the null sender, as in a bounce
	}

	// The recipients: distinct, usually accepted ones; sometimes one
	// refused at RCPT among them, rarely only refused ones; rarely more
	// than the servers' limit.
	var rcpts []string
	if over {
		n := o.RecipientLimit + 1 + g.r.IntN(maxOverflow)
		for i := 1; i <= n; i++ {
			rcpts = append(rcpts, fmt.Sprintf("bulk%d@%s", i, o.RcptDomain))
		}
	} else {
		k := 1 + g.r.IntN(o.MaxRecipients)
		for _, i := range g.r.Perm(max(8, k))[:k] {
			rcpts = append(rcpts, g.rcpt(i))
		}
		refused := append(slices.Clip(rf.RcptReject), rf.RcptDefer...)
		if len(refused) > 0 && g.p(0.25) {
			bad := g.pick(refused)
			if g.p(0.15) {
				rcpts = []string{bad}
			} else {
				i := g.r.IntN(len(rcpts) + 1)
				rcpts = slices.Insert(rcpts, i, bad)
			}
		}
	}

	subject := fmt.Sprintf("transaction %d of session %d", g.tx, g.s.N)
	if rf.EODRejectSubject != "" && g.p(0.1) {
		subject = rf.EODRejectSubject + " " + subject
		eodRefused = true
	}
	msg := g.message(from, rcpts[0], subject, o.SizeLimit > 0 && g.p(0.08))
	var size int64
	if o.SizeLimit > 0 && g.p(0.3) && !g.plain {
		size = int64(len(msg.Content))
	}

	mail := Command{Line: "MAIL FROM:<" + from + ">", Tag: TagMail, Size: size}
	env := []Command{mail}
	for i, rc := range rcpts {
		tag := TagRcpt
		if over && i >= o.RecipientLimit {
			tag = TagRcptOver
		}
		env = append(env, Command{Line: "RCPT TO:<" + rc + ">", Tag: tag})
	}

	// How the envelope and the message go: pipelined or not; DATA or
	// BDAT; sometimes a DATA before the first RCPT, or an abort.
	pipelined := g.esmtp && g.p(0.5) && !g.plain
	bdat := g.esmtp && g.p(0.2) && !g.plain && (!msg.Oversize || o.OversizeBDAT)
	switch {
	case g.errors > 0 && g.p(0.06):
		// DATA before RCPT: refused, then the transaction goes on.
		g.errors--
		g.s.Steps = append(g.s.Steps, Step{Kind: KindCmd, Cmds: []Command{mail}})
		g.data(TagDataNoRcpt, g.smallMessage(from, rcpts[0]))
		g.envelope(env[1:], false)
		g.data(TagData, msg)
	case g.p(0.07) || over && g.p(0.7):
		// An abort: MAIL, RCPT, then RSET instead of data. Most
		// transactions over the recipient limit end so, since a message
		// to a hundred recipients costs the servers a hundred deliveries.
		g.envelope(env, pipelined)
		g.cmd(TagRset, "RSET")
		return
	case bdat:
		g.envelope(env, pipelined)
		chunks := []int{len(msg.Content)}
		if len(msg.Content) > 1 && g.p(0.5) {
			cut := 1 + g.r.IntN(len(msg.Content)-1)
			chunks = []int{cut, len(msg.Content) - cut}
		}
		g.s.Steps = append(g.s.Steps, Step{Kind: KindBDAT, Msg: msg, Chunks: chunks})
	case pipelined:
		// RFC 2920: MAIL, RCPTs and DATA in one batch.
		g.envelope(append(env, Command{Line: "DATA", Tag: TagData}), true)
		g.s.Steps = append(g.s.Steps, Step{Kind: KindData, Msg: msg})
	default:
		g.envelope(env, false)
		g.data(TagData, msg)
	}
	if needRset || eodRefused || msg.Oversize {
		g.cmd(TagRset, "RSET")
	}
}

// envelope adds commands, as one pipelined step or one step each.
func (g *gen) envelope(cmds []Command, pipelined bool) {
	if pipelined {
		g.s.Steps = append(g.s.Steps, Step{Kind: KindCmd, Cmds: cmds, Pipelined: true})
		return
	}
	for _, c := range cmds {
		g.s.Steps = append(g.s.Steps, Step{Kind: KindCmd, Cmds: []Command{c}})
	}
}

// data adds DATA and the message step after it.
func (g *gen) data(tag Tag, m *Message) {
	g.cmd(tag, "DATA")
	g.s.Steps = append(g.s.Steps, Step{Kind: KindData, Msg: m})
}

// words are the body's vocabulary; some are 8-bit (UTF-8).
var words = []string{
	"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "moat",
	"relay", "upstream", "message", "line", "dot", "grüße", "café", "naïve",
	"SMTP", "transparent", "proxy", "seed", "a", "of", "to", "and", "with",
}

// message makes a message; oversize ones are 2 to 3 times SizeLimit.
func (g *gen) message(from, to, subject string, oversize bool) *Message {
	if from == "" {
		from = "mailer-daemon@" + g.o.SenderDomain
	}
	m := &Message{ID: fmt.Sprintf("sg.%d.%d.%d@%s", g.s.Seed, g.s.N, g.tx, g.o.SenderDomain), Subject: subject, Oversize: oversize}
	var b bytes.Buffer
	// Date and Message-ID are always given, so that no server adds its
	// own (they would differ between runs).
	date := fmt.Sprintf("Mon, %d Nov 2026 %02d:%02d:%02d +0000", 1+g.r.IntN(28), g.r.IntN(24), g.r.IntN(60), g.r.IntN(60))
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nDate: %s\r\nMessage-ID: <%s>\r\nSubject: %s\r\n", from, to, date, m.ID, subject)
	if g.p(0.3) {
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
	}
	b.WriteString("\r\n")
	budget := g.r.IntN(g.o.MaxBodyBytes + 1)
	if oversize {
		budget = int(2*g.o.SizeLimit) + g.r.IntN(int(g.o.SizeLimit)+1)
	}
	bare := g.o.BareLF && g.p(0.2)
	start := b.Len()
	for b.Len()-start < budget {
		g.line(&b, m, oversize, bare)
	}
	m.Content = b.Bytes()
	return m
}

// smallMessage is the message of a DATA expected to be refused.
func (g *gen) smallMessage(from, to string) *Message {
	m := &Message{ID: fmt.Sprintf("sg.%d.%d.%d.early@%s", g.s.Seed, g.s.N, g.tx, g.o.SenderDomain), Subject: "early DATA"}
	m.Content = fmt.Appendf(nil, "From: <%s>\r\nTo: <%s>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s>\r\nSubject: early DATA\r\n\r\nno recipients yet\r\n", from, to, m.ID)
	return m
}

// line appends one body line, CRLF included.
func (g *gen) line(b *bytes.Buffer, m *Message, filler, bare bool) {
	if filler && g.p(0.95) {
		b.WriteString(strings.Repeat("filler ", 10) + "\r\n")
		return
	}
	switch g.r.IntN(14) {
	case 0:
		b.WriteString(".\r\n") // would end the message unstuffed
	case 1:
		b.WriteString("..\r\n")
	case 2:
		b.WriteString(".leading dot " + g.words(3) + "\r\n")
	case 3:
		b.WriteString("\r\n")
	case 4:
		b.WriteString(strings.Repeat("x", 900+g.r.IntN(99)) + "\r\n") // up to 998 octets
	case 5:
		b.WriteString(" .space then dot\t" + g.words(2) + "  \r\n")
	case 6:
		if bare {
			// A bare LF inside a line, followed by a letter: never
			// "<LF>." (smuggling), which servers treat differently on
			// purpose.
			b.WriteString(g.words(3) + "\nbare " + g.words(2) + "\r\n")
			m.BareLF = true
			return
		}
		fallthrough
	default:
		b.WriteString(g.words(1+g.r.IntN(12)) + "\r\n")
	}
}

func (g *gen) words(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = words[g.r.IntN(len(words))]
	}
	return strings.Join(w, " ")
}
