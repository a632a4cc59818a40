package inspect

import (
	"net/netip"
	"time"

	"moat/inspect/smtp"
)

// Session is everything known about one SMTP session, gathered stage by
// stage by a front end. Fields are filled in as the session progresses; a
// stage method of Engine may rely on every field of earlier stages.
type Session struct {
	// ID identifies the session in logs and reports.
	ID string
	// Start is when the connection was accepted (live) or first seen
	// (offline).
	Start time.Time
	// Clock, when set, gives the time rules see as "now" (date skew):
	// offline analysis judges recorded mail at its capture time, not at
	// the wall clock's. Nil means the wall clock.
	Clock func() time.Time
	// Client and Server are the two ends of the connection as the client
	// sees them. Client is the real client, after any PROXY or XCLIENT
	// translation.
	Client netip.AddrPort
	Server netip.AddrPort

	// HeloVerb is "HELO" or "EHLO"; Helo is its argument as sent.
	HeloVerb string
	Helo     string

	// TLS is set once the session runs over TLS.
	TLS *TLSInfo
	// Submission: the session came in on a submission listener (RFC
	// 6409, RFC 8314), where AUTH is offered.
	Submission bool
	// AuthUser is the client's SMTP AUTH identity (RFC 4954), "" when it
	// has not authenticated (rate limits keyed by auth_user skip it).
	// Nothing else of the exchange is kept: never the password.
	AuthUser string

	// EarlyTalker records a client that sent before the greeting
	// (RFC 5321 §4.3.1 says it must wait), the mark of many spam bots.
	EarlyTalker bool
	// Anomalies are the protocol violations seen so far.
	Anomalies Anomalies

	// Transactions counts the transactions started in this session
	// (MAIL commands that passed the mail stage).
	Transactions int

	// ConnectResult and HeloResult are the judgements of the connect and
	// helo stages, one each: a HELO/EHLO sent again (after STARTTLS,
	// RSET or simply twice) replaces HeloResult, so its rules are never
	// counted twice (RFC 5321 §4.1.4 makes a repeated EHLO a fresh
	// start). The front end stores them with Keep.
	ConnectResult StageResult
	HeloResult    StageResult

	engine *sessionState // the engine's lookups for this session
}

// ESMTP reports whether the client greeted with EHLO.
func (s *Session) ESMTP() bool { return s.HeloVerb == "EHLO" }

// Anomalies are protocol violations a client committed. None of them is a
// reason to refuse by itself; rules may score them.
type Anomalies struct {
	// BareLFCommand: a command line ended in LF without CR.
	BareLFCommand bool
	// InvalidCommands counts command lines that did not parse.
	InvalidCommands int
	// STARTTLSInjection: commands were pipelined after STARTTLS, before
	// the TLS handshake (CVE-2011-0411); they were discarded.
	STARTTLSInjection bool
}

// TLSInfo describes the TLS layer of a session.
type TLSInfo struct {
	Version string // "TLS1.2", "TLS1.3"
	Cipher  string // IANA cipher suite name
}

// Transaction is one mail transaction: the envelope from MAIL to the end of
// DATA.
type Transaction struct {
	From       smtp.Path
	FromParams []smtp.Param
	// Rcpts are the recipients accepted so far (by moat and by the
	// upstream).
	Rcpts []Recipient

	// MailResult and DataResult are the judgements of the mail and data
	// stages of this transaction, on top of the session's. Recipients
	// carry their own (Recipient.Result).
	MailResult StageResult
	DataResult StageResult
}

// Recipient is one RCPT of a transaction.
type Recipient struct {
	Path   smtp.Path
	Params []smtp.Param
	// Result is the rcpt stage's judgement of this recipient. Its score
	// is not carried into the data stage (each recipient is judged on
	// its own), but data-stage meta rules may name its rules.
	Result StageResult
}

// StageResult is what one stage's rules concluded on their own: the score
// they added, the rules that matched (enforced, not shadow) and whether
// an allowlist rule accepted. Later stages build on it.
type StageResult struct {
	Score       float64
	Rules       []string
	Allowlisted bool
}

// Keep stores v's result as the session's result of stage (connect or
// helo), replacing what an earlier run of the same stage left.
func (s *Session) Keep(stage Stage, v Verdict) {
	switch stage {
	case StageConnect:
		s.ConnectResult = v.Result
	case StageHelo:
		s.HeloResult = v.Result
	}
}

// Keep stores v's result as the transaction's result of stage (mail or
// data), replacing what an earlier run of the same stage left.
func (t *Transaction) Keep(stage Stage, v Verdict) {
	switch stage {
	case StageMail:
		t.MailResult = v.Result
	case StageData:
		t.DataResult = v.Result
	}
}

// Before sums up the results of the stages before stage: the score and
// rules a stage builds on, and whether an allowlist rule accepted
// earlier. A stage that runs again never sees its own earlier result.
func Before(stage Stage, s *Session, t *Transaction) StageResult {
	var out StageResult
	add := func(r StageResult) {
		out.Score += r.Score
		out.Rules = append(out.Rules, r.Rules...)
		out.Allowlisted = out.Allowlisted || r.Allowlisted
	}
	if stage > StageConnect {
		add(s.ConnectResult)
	}
	if stage > StageHelo {
		add(s.HeloResult)
	}
	if t != nil && stage > StageMail {
		add(t.MailResult)
	}
	return out
}

// Message is the content of a transaction as received after DATA:
// dot-unstuffed, line endings as the client sent them.
type Message struct {
	// Size is the length of the content in bytes.
	Size int64
	// Body reads the content; it is valid only during the Data call.
	Body ReaderAt
	// BareLF and BareCR record line endings other than CRLF inside the
	// content, a protocol anomaly and the raw material of SMTP smuggling.
	BareLF, BareCR bool
}

// ReaderAt is the random-access view of a message body. Both an in-memory
// buffer and a spooled temp file satisfy it, so the engine never needs the
// whole message in memory.
type ReaderAt interface {
	ReadAt(p []byte, off int64) (int, error)
}
