package inspect

import (
	"context"

	"moat/inspect/reputation"
)

// errReputationUnknown: no store (offline), reputation not configured,
// or the store failed: the reputation facts are unknown, never 0.
const errReputationUnknown = constError("reputation unknown (no state store, or the store failed)")

// repLookup is one subject's counts, read in the background.
type repLookup struct {
	done   chan struct{}
	counts reputation.Counts
	err    error
}

func startRep(ctx context.Context, read func(context.Context) (reputation.Counts, error)) *repLookup {
	l := &repLookup{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.counts, l.err = read(ctx)
	}()
	return l
}

func (l *repLookup) wait(ctx context.Context) (reputation.Counts, error) {
	if l == nil {
		return reputation.Counts{}, errReputationUnknown
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		return reputation.Counts{}, ctx.Err()
	}
	if l.err != nil {
		return reputation.Counts{}, errReputationUnknown
	}
	return l.counts, nil
}

// startNetReputation reads the client network's counts, from Begin.
func (e *Engine) startNetReputation(s *Session) {
	n := reputation.Network(s.Client.Addr())
	if e.rep == nil || n == "" {
		return
	}
	st := e.state(s)
	st.repNet = startRep(st.ctx, func(ctx context.Context) (reputation.Counts, error) {
		return e.rep.NetCounts(ctx, n)
	})
}

// startDomainReputation reads the sender domain's counts, from Mail.
func (e *Engine) startDomainReputation(s *Session, t *Transaction) {
	st := e.state(s)
	st.repDom = nil
	d := reputation.Domain(t.From.Domain)
	if e.rep == nil || t.From.IsNull() || d == "" {
		return
	}
	st.repDom = startRep(st.ctx, func(ctx context.Context) (reputation.Counts, error) {
		return e.rep.DomainCounts(ctx, d)
	})
}

// recordReputation counts the outcome of transaction t once: at the
// first stage whose verdict settles it — a refusal at mail or rcpt, or
// the data stage's verdict. It is called from evaluate, the one place
// every stage's final verdict passes; st.repTx marks t counted, so a
// stage judged again (a rule re-run, a later RCPT or DATA after a
// refused recipient) never counts it twice. The counts read as facts in
// this transaction were started before, so a transaction never sees
// itself.
func (e *Engine) recordReputation(ctx context.Context, stage Stage, f *Facts, v Verdict) {
	if e.rep == nil || f.Tx == nil {
		return
	}
	var o reputation.Outcome
	switch {
	case deferral(v):
		// A greylisting or a store failure says nothing about the
		// sender: the same mail passes on retry, and is counted then.
		return
	case v.Action >= Tempfail && (stage == StageMail || stage == StageRcpt || stage == StageData):
		o = reputation.Rejected
	case stage != StageData:
		return
	case v.Action == Tag:
		o = reputation.Tagged
	default:
		o = reputation.Accepted
	}
	st := e.state(f.Session)
	if st.repTx == f.Tx {
		return
	}
	st.repTx = f.Tx
	dom := ""
	if !f.Tx.From.IsNull() {
		dom = reputation.Domain(f.Tx.From.Domain)
	}
	e.rep.Record(ctx, reputation.Network(f.Session.Client.Addr()), dom, o)
}

// deferral reports whether v is a tempfail that is no judgement of the
// mail: greylisting, or a state store failure with on_store_error
// tempfail.
func deferral(v Verdict) bool {
	switch v.Reason {
	case "greylisted", "greylist_store_error", "rate_limit_store_error":
		return v.Action == Tempfail
	}
	return false
}

// Reputation returns the counts of the client network (domain false) or
// of the sender domain (domain true) over the configured window, waiting
// for the read started at connect or mail. The error is
// errReputationUnknown without a store, for the null sender, or after a
// store failure.
func (f *Facts) Reputation(domain bool) (reputation.Counts, error) {
	if f.engine == nil || f.engine.rep == nil || f.Session.engine == nil {
		return reputation.Counts{}, errReputationUnknown
	}
	l := f.Session.engine.repNet
	if domain {
		l = f.Session.engine.repDom
	}
	ctx := f.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	return l.wait(ctx)
}
