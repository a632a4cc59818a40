package rules

import (
	"bytes"
	"context"
	"net/netip"

	"moat/inspect"
	"moat/inspect/smtp"
)

// Judgement is the data stage's verdict on one message of a corpus.
type Judgement struct {
	Message string        `json:"message"`
	Score   float64       `json:"score"`
	Action  string        `json:"action"`
	Hits    []inspect.Hit `json:"rules"`
}

// JudgeMessage runs the data-stage rules over one message as the tuning
// tools do: the envelope is taken from the message itself (sender from
// Return-Path or From, recipients from To and Cc), the client is unknown,
// so only data-stage rules apply. DNS lists are not queried.
func (s *Set) JudgeMessage(name string, msg []byte) Judgement {
	e, _ := inspect.New(inspect.Config{Judge: s})
	c := inspect.ParseContent(bytes.NewReader(msg), int64(len(msg)), max(s.needs[inspect.StageData].Depth, inspect.DepthHeaders), inspect.DefaultContentLimits())
	sess := &inspect.Session{ID: "corpus", Client: netip.AddrPortFrom(netip.IPv4Unspecified(), 0)}
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
	return Judgement{Message: name, Score: v.Score, Action: act.String(), Hits: v.Hits}
}

func pathOf(addr string) smtp.Path {
	p, _, err := smtp.ParseRcptArg("TO:<" + addr + ">")
	if err != nil {
		return smtp.Path{}
	}
	return p
}
