package inspect

import (
	"context"
	"log/slog"

	"moat/inspect/auth"
	"moat/inspect/greylist"
	"moat/inspect/smtp"
)

// GreylistReply is the answer to greylisted mail: RFC 6647 §2.1's
// temporary failure, with RFC 3463's X.7.1 (delivery not authorized).
var GreylistReply = smtp.Replyf(451, "4.7.1", "Greylisted, please try again later")

// GreylistUnknown is the decision reported when no store can decide.
const GreylistUnknown = "unknown"

// greylist decides the greylisting the rules asked for in v: at the rcpt
// stage for the recipient judged, at the data stage for every recipient
// of the transaction (one not yet passed greylists the message). A
// greylisted transaction gets a Tempfail with GreylistReply; anything
// else leaves v's action as the rules made it.
func (e *Engine) greylist(ctx context.Context, stage Stage, f *Facts, v *Verdict) {
	if e.grey == nil {
		// Offline, or no store: nothing can remember a first attempt,
		// so the rule's action is not taken (fail open).
		v.GreylistDecision = GreylistUnknown
		v.Trace = append(v.Trace, "greylist: unknown (no state store)")
		return
	}
	if f.Tx == nil {
		return
	}
	r := greylist.Request{Client: f.Session.Client.Addr(), Sender: f.Tx.From.String()}
	if stage == StageRcpt && f.Rcpt != nil {
		r.Recipients = []string{f.Rcpt.Path.String()}
	} else {
		for _, rc := range f.Tx.Rcpts {
			r.Recipients = append(r.Recipients, rc.Path.String())
		}
	}
	if res, err := f.SPF(); err == nil && res.Result == auth.Pass && res.Domain != "" {
		r.SPFDomain = res.Domain
	}
	d, err := e.grey.Check(ctx, r)
	v.GreylistDecision = d.String()
	v.Trace = append(v.Trace, "greylist: "+d.String()+" ("+greylist.Origin(r)+")")
	switch d {
	case greylist.Greylisted:
		v.Action, v.WouldBe, v.Reply, v.Reason = Tempfail, Tempfail, GreylistReply, "greylisted"
		v.Headers, v.SubjectPrefix = nil, ""
	case greylist.StoreError:
		e.log.Warn("greylist store error", slog.String("session", f.Session.ID),
			slog.String("stage", stage.String()), slog.String("on_store_error", e.grey.Config().OnStoreError),
			slog.Any("err", err))
		if e.grey.Config().OnStoreError == greylist.OnErrorTempfail {
			v.Action, v.WouldBe, v.Reason = Tempfail, Tempfail, "greylist_store_error"
			v.Reply = smtp.Replyf(451, "4.3.0", "Temporary local problem, please try again later")
			v.Headers, v.SubjectPrefix = nil, ""
		}
	}
}
