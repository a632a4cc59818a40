package inspect

import (
	"context"
	"io"
	"strconv"
	"strings"
	"time"

	"moat/inspect/auth"
)

// AuthConfig turns on sender authentication: SPF for the envelope sender
// and the HELO name, DKIM, ARC and DMARC for every message, and an
// Authentication-Results header field on every relayed message.
type AuthConfig struct {
	// Resolver asks the DNS (package dnsbl's client, or a capture's
	// recorded answers).
	Resolver auth.Resolver
	// AuthservID names moat in the Authentication-Results fields it adds
	// and in those it removes as forged (RFC 8601 §2.5, §5).
	AuthservID string
	// MaxSignatures bounds the DKIM signatures verified per message.
	MaxSignatures int
	// Timeout bounds each check's DNS work (default 20s, RFC 7208
	// §4.6.4's floor for SPF).
	Timeout time.Duration
	// Recorded: the resolver knows only the answers a capture recorded,
	// so a check that could not get an answer is unknown, never a
	// temporary error or a failure.
	Recorded bool
	// DMARC is what moat does with a message that fails DMARC: "reject"
	// honours p=reject (and tags p=quarantine), "quarantine" tags both,
	// "monitor" only reports. It becomes the fact dmarc_action.
	DMARC string
	// TrustedSealers are the ARC sealers (ARC-Seal d=) whose pass the
	// rules may trust (fact arc_trusted): the mailing lists and
	// forwarders the site knows.
	TrustedSealers []string
	// OrgDomain finds a domain's organizational domain for DMARC; nil
	// means the public suffix list (RFC 7489 §3.2).
	OrgDomain func(string) string
	// Metrics counts the results; nil counts nothing.
	Metrics *AuthMetrics
}

// The DMARC enforcement settings.
const (
	DMARCReject     = "reject"
	DMARCQuarantine = "quarantine"
	DMARCMonitor    = "monitor"
)

// authState is the engine's sender-authentication work for one session.
type authState struct {
	helo *pendingSPF
	mail *pendingSPF
	msg  *auth.Message // the message of the current transaction, nil before it
}

type pendingSPF struct {
	key  string
	done chan struct{}
	res  auth.SPFResult
}

func (p *pendingSPF) wait(ctx context.Context) (auth.SPFResult, error) {
	if p == nil {
		// No client address to check (a front end that knows none).
		return auth.SPFResult{Result: auth.None, Reason: "no client address"}, nil
	}
	select {
	case <-p.done:
		return p.res, nil
	case <-ctx.Done():
		return auth.SPFResult{}, ctx.Err()
	}
}

func (e *Engine) authTimeout() time.Duration {
	if e.auth.Timeout > 0 {
		return e.auth.Timeout
	}
	return 20 * time.Second
}

// startSPF runs check in the background unless the same key runs already.
func (e *Engine) startSPF(s *Session, slot **pendingSPF, key string, check func(context.Context) auth.SPFResult) {
	if p := *slot; p != nil && p.key == key {
		return
	}
	st := e.state(s)
	p := &pendingSPF{key: key, done: make(chan struct{})}
	*slot = p
	go func() {
		defer close(p.done)
		ctx, cancel := context.WithTimeout(st.ctx, e.authTimeout())
		defer cancel()
		p.res = e.settle(check(ctx))
	}()
}

// settle makes an SPF verdict that failed for want of a recorded answer
// unknown (offline).
func (e *Engine) settle(r auth.SPFResult) auth.SPFResult {
	if e.auth.Recorded && (r.Result == auth.TempError || unanswered(r.Lookups)) {
		r.Result = auth.Unknown
	}
	return r
}

// unanswered reports whether a lookup failed rather than answered.
func unanswered(ls []auth.Lookup) bool {
	for _, l := range ls {
		if l.Err != "" && l.Err != "not found" {
			return true
		}
	}
	return false
}

// startHeloSPF checks the HELO identity (RFC 7208 §2.3) as soon as it is
// known, so that it overlaps the rest of the session.
func (e *Engine) startHeloSPF(s *Session) {
	if e.auth == nil || !s.Client.Addr().IsValid() {
		return
	}
	a := e.authState(s)
	ip, helo := s.Client.Addr().Unmap(), s.Helo
	e.startSPF(s, &a.helo, helo, func(ctx context.Context) auth.SPFResult {
		return auth.CheckSPFHelo(ctx, e.auth.Resolver, ip, helo)
	})
}

// startMailSPF checks the MAIL FROM identity (RFC 7208 §2.4) the moment
// MAIL is judged, so that the lookups overlap the RCPT exchange.
func (e *Engine) startMailSPF(s *Session, t *Transaction) {
	if !e.checksSender(s) || !s.Client.Addr().IsValid() {
		return
	}
	a := e.authState(s)
	ip, helo, from := s.Client.Addr().Unmap(), s.Helo, ""
	if !t.From.IsNull() {
		from = t.From.Local + "@" + t.From.Domain
	}
	e.startSPF(s, &a.mail, helo+"\x00"+from, func(ctx context.Context) auth.SPFResult {
		return auth.CheckSPFMailFrom(ctx, e.auth.Resolver, ip, helo, from)
	})
}

// checksSender reports whether the session's mail gets the sender
// authentication checks: when they are on, and the client did not
// authenticate. SPF, DKIM and DMARC judge mail arriving from other
// domains; a user of the shielded server submitting from a hotel network
// (RFC 6409) would fail SPF for its own domain, and the upstream has
// vouched for it already.
func (e *Engine) checksSender(s *Session) bool { return e.auth != nil && s.AuthUser == "" }

// newAuthTransaction forgets the last transaction's message.
func (e *Engine) newAuthTransaction(s *Session) {
	if e.auth == nil || s.engine == nil || s.engine.auth == nil {
		return
	}
	s.engine.auth.end()
	s.engine.auth.msg = nil
}

func (e *Engine) authState(s *Session) *authState {
	st := e.state(s)
	if st.auth == nil {
		st.auth = &authState{}
	}
	return st.auth
}

// MessageWriter returns where a front end writes the content of t's
// message while it reads it (after DATA, or BDAT chunk by chunk), so that
// DKIM and ARC body hashes and key lookups run as the bytes arrive and
// the data stage finds them done: one pass, no second read of the spool.
// It returns nil when sender authentication is off. A message that is
// never judged (refused for its size, the client gone) is abandoned by
// the next MessageWriter or by End.
func (e *Engine) MessageWriter(s *Session, t *Transaction) io.Writer {
	if !e.checksSender(s) {
		return nil
	}
	a := e.authState(s)
	if a.msg != nil {
		a.msg.Close()
	}
	a.msg = auth.NewMessage(e.state(s).ctx, e.auth.Resolver, auth.MessageOptions{MaxSignatures: e.auth.MaxSignatures})
	return a.msg
}

// authenticate gathers the sender-authentication results of t's message
// m: SPF started at MAIL, DKIM and ARC computed while the message was
// read, and DMARC from them and the From: field.
func (e *Engine) authenticate(ctx context.Context, s *Session, t *Transaction, m *Message) *auth.Results {
	if !e.checksSender(s) {
		return nil
	}
	a := e.authState(s)
	if a.msg == nil {
		// A front end that does not stream (the rules tools): read the
		// message once here.
		w := e.MessageWriter(s, t)
		if m != nil && m.Body != nil {
			io.Copy(w, io.NewSectionReader(m.Body, 0, m.Size))
		}
	}
	e.startHeloSPF(s)
	e.startMailSPF(s, t)
	ctx, cancel := context.WithTimeout(ctx, e.authTimeout())
	defer cancel()
	res := &auth.Results{}
	res.SPF, _ = a.mail.wait(ctx)
	res.HELO, _ = a.helo.wait(ctx)
	a.msg.Close()
	mr := a.msg.Wait(ctx)
	res.DKIM = mr.DKIM
	for i := range res.DKIM {
		if e.auth.Recorded && (res.DKIM[i].Result == auth.TempError || unanswered(res.DKIM[i].Lookups)) {
			res.DKIM[i].Result = auth.Unknown
		}
	}
	res.ARC = mr.ARC
	if e.auth.Recorded && res.ARC.Result != auth.None && unanswered(res.ARC.Lookups) {
		res.ARC.Result = auth.Unknown
	}
	key := strings.Join(mr.From, "\n") + "|" + strconv.FormatInt(m.sizeOrZero(), 10) + "|" + t.From.String()
	res.DMARC = auth.CheckDMARC(ctx, e.auth.Resolver,
		auth.DMARCInput{From: mr.From, SPF: res.SPF, DKIM: res.DKIM, SampleKey: key},
		auth.DMARCOptions{OrgDomain: e.auth.OrgDomain})
	if e.auth.Recorded && res.DMARC.Result != auth.Pass && (res.DMARC.Result == auth.TempError ||
		unanswered(res.DMARC.Lookups) || res.DMARC.Result == auth.Fail && authUnknownInput(res)) {
		// A failure for want of a recorded answer is no failure.
		res.DMARC.Result = auth.Unknown
	}
	e.auth.Metrics.count(res)
	return res
}

// authUnknownInput: an identifier DMARC relies on could not be checked.
func authUnknownInput(r *auth.Results) bool {
	if r.SPF.Result == auth.Unknown {
		return true
	}
	for _, d := range r.DKIM {
		if d.Result == auth.Unknown {
			return true
		}
	}
	return false
}

func (m *Message) sizeOrZero() int64 {
	if m == nil {
		return 0
	}
	return m.Size
}

// authHeaders returns the Authentication-Results field moat adds to the
// message and the spans of incoming ones that carry moat's authserv-id,
// which are forged and must go (RFC 8601 §5).
func (e *Engine) authHeaders(s *Session, res *auth.Results) (HeaderField, []Span) {
	a := e.authState(s)
	var drop []Span
	if a.msg != nil {
		for _, h := range a.msg.Wait(context.Background()).AuthResults {
			if auth.HasAuthservID(h.Value, e.auth.AuthservID) {
				drop = append(drop, Span{Start: h.Start, End: h.End})
			}
		}
	}
	return HeaderField{Name: "Authentication-Results", Value: auth.AuthResultsValue(e.auth.AuthservID, *res)}, drop
}

// forgedAuthResults are the spans of m's Authentication-Results fields
// that carry moat's authserv-id, read from the message itself: its
// header section as the parse measured it (c), else up to the first
// megabyte, the header section's bound.
func (e *Engine) forgedAuthResults(m *Message, c *Content) []Span {
	if m == nil || m.Body == nil {
		return nil
	}
	size := min(m.Size, 1<<20)
	if c != nil && c.HeaderBytes > 0 {
		size = min(size, c.HeaderBytes)
	}
	head := make([]byte, size)
	n, _ := m.Body.ReadAt(head, 0)
	var drop []Span
	for _, h := range auth.AuthResultsFields(head[:n]) {
		if auth.HasAuthservID(h.Value, e.auth.AuthservID) {
			drop = append(drop, Span{Start: h.Start, End: h.End})
		}
	}
	return drop
}

// Span is a byte range of a message, End exclusive.
type Span struct{ Start, End int64 }

// endAuth abandons the session's checks.
func (a *authState) end() {
	if a != nil && a.msg != nil {
		a.msg.Close()
	}
}

// SPF returns the SPF verdict on the transaction's envelope sender,
// waiting for the check started at MAIL. err is set when it is unknown.
func (f *Facts) SPF() (auth.SPFResult, error) {
	return f.spf(false)
}

// HeloSPF returns the SPF verdict on the HELO name.
func (f *Facts) HeloSPF() (auth.SPFResult, error) {
	return f.spf(true)
}

func (f *Facts) spf(helo bool) (auth.SPFResult, error) {
	if f.Auth != nil { // at data: the results are in
		r := f.Auth.SPF
		if helo {
			r = f.Auth.HELO
		}
		return r, unknownErr(r.Result)
	}
	if f.engine == nil || !f.engine.checksSender(f.Session) {
		return auth.SPFResult{}, errAuthOff
	}
	a := f.engine.authState(f.Session)
	var p *pendingSPF
	if helo {
		f.engine.startHeloSPF(f.Session)
		p = a.helo
	} else {
		if f.Tx == nil {
			return auth.SPFResult{}, errAuthOff
		}
		f.engine.startMailSPF(f.Session, f.Tx)
		p = a.mail
	}
	if p == nil {
		return auth.SPFResult{}, errAuthOff
	}
	r, err := p.wait(f.ctx)
	if err != nil {
		return r, err
	}
	return r, unknownErr(r.Result)
}

func unknownErr(r auth.Result) error {
	if r == auth.Unknown || r == "" {
		return errAuthUnknown
	}
	return nil
}

const (
	errAuthOff     = constError("sender authentication is not configured")
	errAuthUnknown = constError("sender authentication result unknown (a DNS answer was not recorded)")
)

// ARCTrusted reports whether the message's ARC chain passes and its
// newest seal is by a sealer the configuration trusts.
func (f *Facts) ARCTrusted() bool {
	if f.Auth == nil || f.engine == nil || f.engine.auth == nil || f.Auth.ARC.Result != auth.Pass {
		return false
	}
	for _, s := range f.engine.auth.TrustedSealers {
		if strings.EqualFold(strings.TrimSuffix(s, "."), f.Auth.ARC.Sealer) {
			return true
		}
	}
	return false
}

// DMARCAction is what the configuration says to do with this message by
// its DMARC result: "reject", "quarantine" or "none".
func (f *Facts) DMARCAction() string { return f.DMARCActionWith(f.engine) }

// DMARCActionWith is DMARCAction under e's configuration.
func (f *Facts) DMARCActionWith(e *Engine) string {
	if f.Auth == nil || e == nil || e.auth == nil || f.Auth.DMARC.Result != auth.Fail {
		return "none"
	}
	switch p := f.Auth.DMARC.Policy; {
	case e.auth.DMARC == DMARCMonitor, p != "reject" && p != "quarantine":
		return "none"
	case p == "reject" && e.auth.DMARC == DMARCReject:
		return "reject"
	}
	return "quarantine"
}
