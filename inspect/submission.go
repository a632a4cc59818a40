package inspect

import (
	"context"
	"net/netip"
	"strings"

	"moat/inspect/authguard"
	"moat/inspect/smtp"
)

// AuthOutcome is how an SMTP AUTH exchange (RFC 4954) ended.
type AuthOutcome string

// The outcomes, as the metric and the log name them.
const (
	AuthSuccess  AuthOutcome = "success"  // the upstream said 235
	AuthFailure  AuthOutcome = "failure"  // the upstream refused the credentials (535, or another 5xx)
	AuthLocked   AuthOutcome = "locked"   // the lockout refused it; the upstream was not asked
	AuthTempfail AuthOutcome = "tempfail" // the upstream said 4xx (454)
	AuthAborted  AuthOutcome = "aborted"  // the client cancelled with "*", or broke the exchange
	AuthError    AuthOutcome = "error"    // the upstream could not be asked
)

// AuthGuard is the brute-force lockout of SMTP AUTH on the state store
// (*authguard.Guard): failed attempts counted per client address,
// network and user name; past a limit, a cool-down.
type AuthGuard interface {
	// Check reports whether client, and user when known (not ""), is
	// locked out now. A store failure returns an error (fail open).
	Check(ctx context.Context, client netip.Addr, user string) (authguard.Decision, error)
	// Failed counts a failed attempt; Succeeded resets the client's
	// failures.
	Failed(ctx context.Context, client netip.Addr, user string) (authguard.Decision, authguard.Spray, error)
	Succeeded(ctx context.Context, client netip.Addr, user string) error
}

// DefaultLockedReply answers an AUTH refused by the lockout: RFC 4954
// §6's 454 4.7.0, temporary, so a real user's client retries later.
var DefaultLockedReply = smtp.Replyf(454, "4.7.0", "Too many failed authentication attempts, try again later")

// SubmissionConfig is what the engine does for authenticated senders.
type SubmissionConfig struct {
	// Guard is the lockout; nil (offline, or no store) counts nothing
	// and locks nobody out.
	Guard AuthGuard
	// LockedReply answers a locked-out attempt; the zero value means
	// DefaultLockedReply (454 4.7.0). 535 5.7.8 hides the lockout.
	LockedReply smtp.Reply
	// Senders maps a user name to the addresses it may send as: an
	// address ("alice@example.net") or a whole domain ("@example.net").
	// nil: the mail_from_owned and from_owned facts are unknown.
	Senders map[string][]string
}

// AuthAllowed asks the lockout whether the session's client (and user,
// when the exchange revealed it) may try to authenticate now. Without a
// guard, or when its store fails, the attempt goes on (fail open: the
// upstream still checks the password).
func (e *Engine) AuthAllowed(ctx context.Context, s *Session, user string) (smtp.Reply, bool) {
	g := e.submission.Guard
	if g == nil {
		return smtp.Reply{}, true
	}
	d, err := g.Check(ctx, s.Client.Addr(), user)
	if err != nil {
		e.log.Warn("auth lockout check failed, letting the attempt through", "err", err)
		return smtp.Reply{}, true
	}
	if !d.Locked {
		return smtp.Reply{}, true
	}
	if r := e.submission.LockedReply; r.Code != 0 {
		return r, false
	}
	return DefaultLockedReply, false
}

// AuthDone records how an AUTH exchange ended: a failure counts towards
// the lockout, a success resets the client's failures.
func (e *Engine) AuthDone(ctx context.Context, s *Session, mech, user string, o AuthOutcome) {
	g := e.submission.Guard
	if g == nil {
		return
	}
	var err error
	switch o {
	case AuthFailure:
		var d authguard.Decision
		var spray authguard.Spray
		d, spray, err = g.Failed(ctx, s.Client.Addr(), user)
		if d.Locked {
			e.log.Warn("auth lockout", "scope", string(d.Scope), "key", d.Key, "cooldown_s", d.RetryAfter.Seconds(),
				"client_ip", s.Client.Addr().String(), "user", user)
		}
		if spray.UsersPerNetwork || spray.NetworksPerUser {
			e.log.Warn("password spraying", "users_per_network", spray.UsersPerNetwork,
				"networks_per_user", spray.NetworksPerUser, "client_ip", s.Client.Addr().String(), "user", user)
		}
	case AuthSuccess:
		err = g.Succeeded(ctx, s.Client.Addr(), user)
	}
	if err != nil {
		e.log.Warn("auth lockout update failed", "outcome", string(o), "err", err)
	}
}

// errNotAuthenticated: the session did not authenticate, so whether the
// sender belongs to its user is not a question (unknown).
const errNotAuthenticated = constError("the session is not authenticated")

// errNoSenderMap: submission.senders is not configured.
const errNoSenderMap = constError("no submission.senders map is configured")

// SenderOwned reports whether addr belongs to the session's
// authenticated user by submission.senders. An unauthenticated session
// or a missing map makes it unknown (an error), never false.
func (f *Facts) SenderOwned(addr string) (bool, error) {
	if f.Session.AuthUser == "" {
		return false, errNotAuthenticated
	}
	m := f.engine.submission.Senders
	if m == nil {
		return false, errNoSenderMap
	}
	return senderOwned(m[f.Session.AuthUser], addr), nil
}

// senderOwned reports whether addr matches one of owned: an address
// (compared case-insensitively: RFC 5321 §2.4 lets the local part be
// case-sensitive, but no mail system that hosts users does so) or
// "@domain" for every address of the domain.
func senderOwned(owned []string, addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	domain := addr[at:]
	for _, o := range owned {
		if strings.EqualFold(o, addr) || strings.HasPrefix(o, "@") && strings.EqualFold(o, domain) {
			return true
		}
	}
	return false
}
