package sequencer

import (
	"moat/inspect"
	"moat/inspect/smtp"
)

// authMechanisms are the SASL mechanisms moat offers: the two that
// every submission client speaks and whose user name moat can read for
// the lockout (RFC 4616 PLAIN, and LOGIN, draft-murchison-sasl-login).
// Both send the password in the clear, so they are offered only under
// TLS. Challenge-response mechanisms would work through the relay too,
// but their user name comes too late or not at all.
const authMechanisms = "PLAIN LOGIN"

// maxAuthResponses bounds the client's responses in one exchange: PLAIN
// needs one, LOGIN two.
const maxAuthResponses = 4

// authExchange is an AUTH exchange in progress (RFC 4954 §4): from the
// AUTH command to the upstream's final reply.
type authExchange struct {
	mech  string
	user  string // "" until a response carried it
	steps int    // client responses so far, the initial one included
	// cancel: moat cancelled the upstream's exchange with "*" (the
	// lockout refused the user once it was known, or the client's
	// response was too long); the upstream's 501 is replaced by this
	// reply, with this outcome.
	cancel  *smtp.Reply
	outcome inspect.AuthOutcome
}

// authOffered reports whether this session's EHLO reply offers AUTH.
func (q *Sequencer) authOffered() bool {
	return q.cfg.FollowAuth || q.cfg.Submission && q.Session.TLS != nil
}

// cmdAuth starts an AUTH exchange (RFC 4954 §4). moat checks the
// session's policy — TLS first, one success per session, never inside a
// transaction, the lockout — and relays the rest to the upstream, which
// holds the passwords.
func (q *Sequencer) cmdAuth(cmd smtp.Command) Step {
	switch {
	case q.cfg.FollowAuth:
	case !q.cfg.Submission:
		// Not a submission listener: AUTH is not offered (port 25).
		return q.refuse(replyNotImplemented)
	case q.Session.TLS == nil:
		// RFC 3207 §4 and RFC 4954 §4's 530 (RFC 3463 X.7.0): the
		// credentials would cross the network in clear.
		return q.refuse(replyMustStartTLS)
	}
	switch {
	case !q.offer.AUTH:
		// RFC 4954 §4: AUTH follows an EHLO that offered it.
		return q.refuse(replyHeloFirst)
	case q.Session.AuthUser != "":
		// RFC 4954 §4: once authenticated, further AUTH gets 503.
		return q.refuse(replyAlreadyAuthenticated)
	case q.state >= StateMail && q.state != StateRefused:
		// RFC 4954 §4: not permitted during a mail transaction.
		return q.refuse(replyTxInProgress)
	}
	mech, initial, err := smtp.ParseAuthArg(cmd.Arg)
	if err != nil {
		return q.refuse(replyAuthSyntax)
	}
	if mech != "PLAIN" && mech != "LOGIN" && !q.cfg.FollowAuth {
		// RFC 4954 §4: 504 for a mechanism not supported.
		return q.refuse(replyAuthMechanism)
	}
	x := &authExchange{mech: mech}
	line := smtp.VerbAUTH + " " + mech
	if initial != "" {
		// SASL-IR (RFC 4954 §4): the first response rides on the
		// command.
		x.user, _ = smtp.SASLUser(mech, 0, initial)
		x.steps = 1
		line += " " + initial
	}
	if r, ok := q.engine.AuthAllowed(q.ctx, &q.Session, x.user); !ok {
		q.engine.AuthDone(q.ctx, &q.Session, mech, x.user, inspect.AuthLocked)
		s := q.refuse(r)
		s.Authed = &AuthEnded{Mech: mech, User: x.user, Outcome: inspect.AuthLocked, Reply: r}
		return s
	}
	q.auth = x
	return Step{Op: OpAuth, Line: line}
}

// authResponse takes a client line inside an exchange: its response to
// the upstream's challenge, or "*" to cancel (RFC 4954 §4). It goes to
// the upstream as it came, unless the user name it reveals is locked
// out: then the upstream's exchange is cancelled and the password never
// leaves moat.
func (q *Sequencer) authResponse(line []byte, tooLong bool) Step {
	x := q.auth
	resp := string(line)
	if tooLong || x.steps >= maxAuthResponses {
		// Cancel upstream; the client hears why.
		r := replyAuthSyntax
		x.cancel, x.outcome = &r, inspect.AuthAborted
		return Step{Op: OpAuth, Line: "*"}
	}
	step := x.steps
	x.steps++
	if resp == "*" {
		return Step{Op: OpAuth, Line: "*"}
	}
	if x.user == "" {
		if u, ok := smtp.SASLUser(x.mech, step, resp); ok {
			x.user = u
			if r, ok := q.engine.AuthAllowed(q.ctx, &q.Session, u); !ok {
				x.cancel, x.outcome = &r, inspect.AuthLocked
				return Step{Op: OpAuth, Line: "*"}
			}
		}
	}
	return Step{Op: OpAuth, Line: resp}
}

// AuthReply takes the upstream's reply to an OpAuth line; failed: the
// upstream could not be asked or did not answer (r is then moat's 4xx
// for it). A 334 challenge goes to the client and the exchange goes on;
// any other reply ends it and goes back unchanged (RFC 4954 §6: 235,
// 535, 454 are the upstream's to give), but for moat's own refusals.
func (q *Sequencer) AuthReply(r smtp.Reply, failed bool) Step {
	x := q.auth
	if x == nil {
		return Step{}
	}
	if !failed && r.Code == 334 && x.cancel == nil {
		return reply(r)
	}
	q.auth = nil
	outcome := inspect.AuthFailure
	switch {
	case x.cancel != nil:
		r, outcome = *x.cancel, x.outcome
	case failed:
		// The upstream is gone: the credentials were not checked.
		r, outcome = replyAuthUnavailable, inspect.AuthError
	case r.Code == 334:
		// A challenge after the last response moat allows.
		r, outcome = replyAuthSyntax, inspect.AuthAborted
	case r.Code == 235:
		outcome = inspect.AuthSuccess
		if x.user == "" {
			// PLAIN and LOGIN always carry it; a mechanism that did
			// not still has an authenticated session.
			x.user = "unknown"
		}
		q.Session.AuthUser = x.user
	case r.Code == 501:
		// RFC 4954 §4: the client cancelled (or sent bad base64).
		outcome = inspect.AuthAborted
	case r.Class() == 4:
		outcome = inspect.AuthTempfail
	}
	q.engine.AuthDone(q.ctx, &q.Session, x.mech, x.user, outcome)
	r = q.relayed(r, smtp.VerbAUTH)
	s := reply(r)
	if r.Class() == 5 {
		// A refused AUTH counts against the session's error budget, as
		// Postfix's smtpd_hard_error_limit counts it.
		s = q.refuse(r)
	}
	s.Authed = &AuthEnded{Mech: x.mech, User: x.user, Outcome: outcome, Reply: r}
	return s
}

// InAuth reports whether an AUTH exchange is in progress: the client's
// next line is a response, not a command.
func (q *Sequencer) InAuth() bool { return q.auth != nil }
