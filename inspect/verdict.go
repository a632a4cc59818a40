package inspect

import (
	"fmt"

	"moat/inspect/auth"
	"moat/inspect/smtp"
)

// Stage is a point in an SMTP session at which the engine is asked for a
// verdict.
type Stage uint8

// The stages, in the order every session passes through them.
const (
	StageConnect Stage = iota + 1
	StageHelo
	StageMail
	StageRcpt
	StageData
)

var stageNames = [...]string{"", "connect", "helo", "mail", "rcpt", "data"}

func (s Stage) String() string {
	if int(s) < len(stageNames) && s != 0 {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", uint8(s))
}

// ParseStage returns the stage named name ("connect", "helo", ...).
func ParseStage(name string) (Stage, bool) {
	for i, n := range stageNames {
		if i > 0 && n == name {
			return Stage(i), true
		}
	}
	return 0, false
}

// Action is what a verdict asks the front end to do.
type Action uint8

// The actions, from mildest to harshest.
const (
	Accept   Action = iota // let the command or message through unchanged
	Tag                    // let the message through with X-Spam-* headers
	Tempfail               // refuse with a 4xx reply; the client retries
	Reject                 // refuse with a 5xx reply
)

var actionNames = [...]string{"accept", "tag", "tempfail", "reject"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Verdict is the engine's judgement at one stage.
type Verdict struct {
	Action Action
	// Reply is the wire reply for Tempfail and Reject. A zero Code means
	// the stage's default (see DefaultReply).
	Reply smtp.Reply
	// Reason is a stable, low-cardinality constant naming why (for logs
	// and metrics); the client never sees it.
	Reason string
	// Score is the total score so far and Rules the names of the rules
	// that matched, in evaluation order.
	Score float64
	Rules []string

	// Headers are added to the message on its way upstream: the
	// X-Spam-* headers of a Tag, or "X-Spam-Status: No" when configured.
	Headers []HeaderField
	// DropHeaders are header fields of the message to leave out on its
	// way upstream: Authentication-Results fields forged with moat's
	// authserv-id (RFC 8601 §5). Byte ranges of the message as received.
	DropHeaders []Span
	// Auth is the sender authentication of the message (data stage, when
	// configured), for logs, records and metrics.
	Auth *auth.Results
	// Classifier is the statistical classifier's judgement of the
	// message (data stage, when the rules asked for it and the model
	// could judge), for logs and records.
	Classifier *ClassifierResult
	// SubjectPrefix, when set, is put in front of the Subject of a
	// tagged message.
	SubjectPrefix string
	// WouldBe is what the verdict would have been without monitor mode
	// or shadow rules; equal to Action otherwise.
	WouldBe Action
	// Trace explains the decision for the log: each matched rule with its
	// score, DNS list answers, errors.
	Trace []string
	// Hits are the rules that matched at this stage, with their scores.
	Hits []Hit
	// Greylist: the rules ask for greylisting (action greylist, rcpt
	// and data stages). The engine decides it with the state store and
	// turns Action into a Tempfail when the mail is greylisted; in the
	// verdict it returns, Greylist stays set and GreylistDecision says
	// what was decided.
	Greylist bool
	// GreylistDecision is the engine's decision: "greylisted",
	// "passed", "allowlisted", "store_error", or "unknown" without a
	// store (offline).
	GreylistDecision string
	// Result is this stage's own contribution, for the front end to Keep
	// in the session or transaction (Score and Rules above are totals).
	Result StageResult
}

// Hit is one rule that matched.
type Hit struct {
	Rule   string  `json:"rule"`
	Score  float64 `json:"score"`
	Shadow bool    `json:"shadow,omitempty"` // evaluated and counted, never acting
	// Classifier: the rule reads the classifier's facts, so its score
	// is the classifier's own (autolearn leaves it out).
	Classifier bool `json:"-"`
}

// WireReply returns the reply to send for a Tempfail or Reject verdict at
// stage: the verdict's own reply when it has one, else the stage default.
func (v Verdict) WireReply(stage Stage) smtp.Reply {
	if v.Reply.Code != 0 {
		return v.Reply
	}
	return DefaultReply(stage, v.Action)
}

// DefaultReply is the reply for a refusal that names no reply of its own.
// At connect a refusal is 554 (RFC 5321 §3.1) or 421 (§3.8), the codes a
// greeting may carry; elsewhere 550/451 with a policy enhanced code
// (RFC 3463 §3.8, X.7.1 "delivery not authorized").
func DefaultReply(stage Stage, a Action) smtp.Reply {
	switch {
	case a == Reject && stage == StageConnect:
		return smtp.Replyf(554, "5.7.1", "Service unavailable")
	case a == Tempfail && stage == StageConnect:
		return smtp.Replyf(421, "4.7.1", "Service temporarily unavailable, try again later")
	case a == Reject && stage == StageData:
		return smtp.Replyf(550, "5.7.1", "Message rejected")
	case a == Reject:
		return smtp.Replyf(550, "5.7.1", "Rejected by policy")
	case a == Tempfail:
		return smtp.Replyf(451, "4.7.1", "Temporarily rejected by policy, try again later")
	}
	return smtp.Replyf(250, "2.0.0", "Ok")
}
