package inspect

import (
	"context"
	"log/slog"

	"moat/inspect/ratelimit"
	"moat/inspect/smtp"
)

// The replies of an exceeded limit with an action: RFC 3463's X.7.0
// (other security or policy status). 451 refuses the command; 421 also
// ends the session (RFC 5321 §3.8), and is the only refusal a greeting
// may carry, so a limit exceeded at connect always answers 421.
var (
	RateLimitReply      = smtp.Replyf(451, "4.7.0", "Rate limit exceeded, try again later")
	RateLimitCloseReply = smtp.Replyf(421, "4.7.0", "Rate limit exceeded, closing connection")
	// RateLimitStoreErrorReply answers when the store failed and the
	// limit says on_store_error: tempfail (RFC 3463 X.3.0).
	RateLimitStoreErrorReply = smtp.Replyf(451, "4.3.0", "Temporary local problem, please try again later")
)

// errRateUnknown: no store (offline), or the store failed: a
// {rate_limit: NAME} condition is unknown, and the rule's on_error
// decides (fail open by default).
const errRateUnknown = constError("rate limit unknown (no state store, or the store failed)")

// countStage is the stage at which a limit's events are counted.
// Refused commands (errors) are counted after each stage's verdict.
func countStage(count string) Stage {
	switch count {
	case ratelimit.CountRecipients:
		return StageRcpt
	case ratelimit.CountMessages, ratelimit.CountBytes:
		return StageData
	}
	return StageConnect
}

// RateLimitStage is the first stage at which a {rate_limit: NAME}
// condition on a limit counting count can be known.
func RateLimitStage(count string) Stage { return countStage(count) }

// rateSubject is who the events of facts f are about.
func rateSubject(f *Facts) ratelimit.Subject {
	s := ratelimit.Subject{Client: f.Session.Client.Addr(), AuthUser: f.Session.AuthUser}
	if f.Tx != nil {
		s.Sender, s.NullSender = f.Tx.From.String(), f.Tx.From.IsNull()
	}
	if f.Rcpt != nil {
		s.Rcpt = f.Rcpt.Path.String()
	}
	return s
}

// postmasterOnly reports whether the recipients the stage is about are
// all postmaster: RFC 5321 §4.5.1 requires a server to accept mail to
// postmaster, so no limit refuses it and no rate_limit condition holds.
func postmasterOnly(stage Stage, f *Facts) bool {
	switch {
	case stage == StageRcpt && f.Rcpt != nil:
		return ratelimit.IsPostmaster(f.Rcpt.Path.String())
	case stage == StageData && f.Tx != nil && len(f.Tx.Rcpts) > 0:
		for _, r := range f.Tx.Rcpts {
			if !ratelimit.IsPostmaster(r.Path.String()) {
				return false
			}
		}
		return true
	}
	return false
}

// countRates counts the events of stage against every limit that counts
// them there, before the rules run, and keeps each decision in the
// session for the rules ({rate_limit: NAME}) and for rateVerdict.
func (e *Engine) countRates(ctx context.Context, stage Stage, f *Facts) {
	if e.rates == nil || postmasterOnly(stage, f) {
		return
	}
	st := e.state(f.Session)
	if st.rates == nil {
		st.rates = map[string]ratelimit.Decision{}
	}
	subj := rateSubject(f)
	for _, r := range e.rates.Rules() {
		if r.Count == ratelimit.CountErrors || countStage(r.Count) != stage {
			continue
		}
		n := 1
		if r.Count == ratelimit.CountBytes {
			if f.Message == nil {
				continue
			}
			n = int(min(f.Message.Size, 1<<31-1))
		}
		st.rates[r.Name] = e.allowRate(ctx, stage, f, r, subj, n)
	}
}

func (e *Engine) allowRate(ctx context.Context, stage Stage, f *Facts, r ratelimit.Rule, subj ratelimit.Subject, n int) ratelimit.Decision {
	d, err := e.rates.Allow(ctx, r, subj, n)
	switch d {
	case ratelimit.Limited:
		e.log.Info("rate limit exceeded", slog.String("session", f.Session.ID), slog.String("stage", stage.String()),
			slog.String("limit", r.Name), slog.String("reason", "rate_limited"))
	case ratelimit.StoreError:
		e.log.Warn("rate limit store error, limit unknown", slog.String("session", f.Session.ID),
			slog.String("stage", stage.String()), slog.String("limit", r.Name), slog.Any("err", err))
	}
	return d
}

// rateVerdict applies what a limit does by itself once the rules have
// judged: a limit with action tempfail or close, exceeded at this stage
// (or an errors limit exceeded earlier in the session), refuses. Then
// a refusal by the rules counts against the errors limits.
func (e *Engine) rateVerdict(ctx context.Context, stage Stage, f *Facts, v *Verdict) {
	if e.rates == nil || postmasterOnly(stage, f) {
		return
	}
	st := e.state(f.Session)
	for _, r := range e.rates.Rules() {
		if r.Count != ratelimit.CountErrors && countStage(r.Count) != stage {
			continue
		}
		d := st.rates[r.Name]
		if d == ratelimit.StoreError && r.Action != ratelimit.ActionNone && r.OnStoreError == ratelimit.OnErrorTempfail && v.Action < Tempfail {
			v.Trace = append(v.Trace, "rate_limit: "+r.Name+" store error, on_store_error tempfail")
			if !e.rateMon {
				v.Action, v.WouldBe, v.Reason = Tempfail, Tempfail, "rate_limit_store_error"
				v.Reply = RateLimitStoreErrorReply
				v.Headers, v.SubjectPrefix = nil, ""
			}
			continue
		}
		if d != ratelimit.Limited {
			continue
		}
		v.Trace = append(v.Trace, "rate_limit: "+r.Name+" exceeded")
		if r.Action == ratelimit.ActionNone || v.Action == Reject {
			continue
		}
		reply := RateLimitReply
		if r.Action == ratelimit.ActionClose || stage == StageConnect {
			reply = RateLimitCloseReply
		}
		if v.Action == Tempfail && v.Reply.Code == 421 {
			continue // already closing
		}
		if e.rateMon {
			v.WouldBe = max(v.WouldBe, Tempfail)
			v.Trace = append(v.Trace, "monitor: would refuse ("+r.Name+" exceeded)")
			continue
		}
		v.Action, v.WouldBe, v.Reply, v.Reason = Tempfail, Tempfail, reply, "rate_limited"
		v.Headers, v.SubjectPrefix = nil, ""
	}
	if v.Action < Tempfail || v.Reason == "rate_limited" || v.Reason == "rate_limit_store_error" {
		return // a refusal by a limit is not counted as the client's error
	}
	subj := rateSubject(f)
	if st.rates == nil {
		st.rates = map[string]ratelimit.Decision{}
	}
	for _, r := range e.rates.Rules() {
		if r.Count == ratelimit.CountErrors {
			st.rates[r.Name] = e.allowRate(ctx, stage, f, r, subj, 1)
		}
	}
}

// RateLimit reports whether the limit named name is exceeded for this
// session: the latest count of that limit in the session did not fit.
// A limit not counted yet in the session is not exceeded. The error is
// errRateUnknown without a store (offline) or after a store failure.
// At a stage about postmaster only it is never exceeded (RFC 5321
// §4.5.1).
func (f *Facts) RateLimit(name string) (bool, error) {
	if f.engine == nil || f.engine.rates == nil {
		return false, errRateUnknown
	}
	if postmasterOnly(f.Stage, f) {
		return false, nil
	}
	var d ratelimit.Decision
	if st := f.Session.engine; st != nil {
		d = st.rates[name]
	}
	switch d {
	case ratelimit.Limited:
		return true, nil
	case ratelimit.StoreError:
		return false, errRateUnknown
	}
	return false, nil
}
