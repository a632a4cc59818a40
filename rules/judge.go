package rules

import (
	"bytes"
	"context"
	"net/mail"
	"net/netip"
	"strings"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

// Judgement is the data stage's verdict on one message of a corpus.
type Judgement struct {
	Message string        `json:"message"`
	Score   float64       `json:"score"`
	Action  string        `json:"action"`
	Hits    []inspect.Hit `json:"rules"`
	// Classifier is the statistical classifier's judgement, when a
	// model was at hand and trained.
	Classifier *inspect.ClassifierResult `json:"classifier,omitempty"`
	// Error says why the message could not be judged; Score and Action
	// are then empty and the message counts for nothing.
	Error string `json:"error,omitempty"`
}

// ErrNotMessage is the Judgement.Error of input without a single header
// field: an empty file or one that is not mail (RFC 5322 §3.6 requires at
// least Date and From), such as a stray file in a directory of messages.
const ErrNotMessage = "no header fields: not a message"

// JudgeMessage runs the data-stage rules over one message as the tuning
// tools do: the envelope is taken from the message itself (sender from
// Return-Path or From, recipients from To and Cc), the client is unknown,
// so only data-stage rules apply. DNS lists are not queried. Input that
// is not a message is not judged (Judgement.Error is ErrNotMessage).
func (s *Set) JudgeMessage(name string, msg []byte) Judgement {
	return s.JudgeMessageWith(inspect.Config{}, name, msg)
}

// JudgeMessageWith is JudgeMessage with the other parts of an engine
// taken from ec: the classifier's model (ec.Judge is s).
func (s *Set) JudgeMessageWith(ec inspect.Config, name string, msg []byte) Judgement {
	c := inspect.ParseContent(bytes.NewReader(msg), int64(len(msg)), max(s.needs[inspect.StageData].Depth, inspect.DepthHeaders), inspect.DefaultContentLimits())
	if len(c.Header) == 0 {
		return Judgement{Message: name, Error: ErrNotMessage}
	}
	ec.Judge = s
	e, _ := inspect.New(ec)
	sess := &inspect.Session{ID: "corpus", Client: netip.AddrPortFrom(netip.IPv4Unspecified(), 0)}
	if t, ok := receivedTime(c); ok {
		// Judge archived mail at the time it was received, so that date
		// rules mean what they meant then.
		sess.Clock = func() time.Time { return t }
	}
	tx := &inspect.Transaction{}
	if len(c.From) > 0 {
		tx.From = pathOf(c.From[0].Addr)
	}
	if rp, ok := c.HeaderValue("Return-Path"); ok {
		if p, _, err := smtp.ParseMailArg("FROM:" + rp); err == nil {
			tx.From = p
		}
	}
	for _, a := range append(append([]inspect.Address(nil), c.To...), c.Cc...) {
		tx.Rcpts = append(tx.Rcpts, inspect.Recipient{Path: pathOf(a.Addr)})
	}
	v := e.DataWithContent(context.Background(), sess, tx, &inspect.Message{Size: int64(len(msg))}, c)
	e.End(sess)
	act := v.WouldBe
	return Judgement{Message: name, Score: v.Score, Action: act.String(), Hits: v.Hits, Classifier: v.Classifier}
}

// receivedTime is the date of the newest Received header (RFC 5321 §4.4:
// after the last ";"), else the message's own Date.
func receivedTime(c *inspect.Content) (time.Time, bool) {
	if len(c.Received) > 0 {
		r := c.Received[0]
		if i := strings.LastIndexByte(r, ';'); i >= 0 {
			if t, err := mail.ParseDate(strings.TrimSpace(r[i+1:])); err == nil {
				return t, true
			}
		}
	}
	return c.Date, !c.Date.IsZero()
}

func pathOf(addr string) smtp.Path {
	p, _, err := smtp.ParseRcptArg("TO:<" + addr + ">")
	if err != nil {
		return smtp.Path{}
	}
	return p
}
