package inspect

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"time"

	"moat/inspect/classifier"
	"moat/inspect/greylist"
	"moat/inspect/ratelimit"
	"moat/inspect/reputation"
)

// Judge turns the facts of a stage into a verdict. The rules package
// implements it; the Engine never knows rule syntax.
type Judge interface {
	// Needs reports what the rules of a stage look at, so the engine
	// parses and looks up only that.
	Needs(stage Stage) Needs
	// Evaluate judges one stage. It must be safe for concurrent use.
	Evaluate(stage Stage, f *Facts) Verdict
}

// Needs is what a stage's rules require beyond the session facts.
type Needs struct {
	Depth Depth // how deep to parse the message (data stage)
	RDNS  bool  // the client's reverse DNS
	// Recipients: the stage reads the recipients accepted so far
	// (rcpt_count), so each RCPT must be answered before the next is
	// judged.
	Recipients bool
}

// Resolver answers the DNS questions behind the rDNS facts. moat's
// implementation goes to the configured resolver; tests inject their own
// server, never the system's.
type Resolver interface {
	LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error)
	LookupAddr(ctx context.Context, host string) ([]netip.Addr, error)
}

// Engine judges sessions stage by stage. It is immutable and safe for
// concurrent use by any number of sessions; a reload builds a new Engine.
//
// Call order for one session: Connect, then Helo (again for every HELO or
// EHLO), then for each transaction Mail, Rcpt once per recipient, Data;
// finally End. The methods of one session are called from one goroutine.
// Lookups a session needs start as early as their inputs are known and
// run concurrently with the conversation; a stage waits only for the
// answers its rules use.
type Engine struct {
	judge      Judge
	resolver   Resolver
	blocks     Blocklists
	limits     ContentLimits
	log        *slog.Logger
	now        func() time.Time
	needRDNS   bool        // some rule looks at the client's reverse DNS
	auth       *AuthConfig // nil: no sender authentication
	grey       *greylist.Greylister
	rates      *ratelimit.Limiter  // nil: no limits, or no store
	rateMon    bool                // monitor: a limit's action is only WouldBe
	rep        *reputation.Counter // nil: no reputation facts
	submission SubmissionConfig
	classifier *classifier.Live // nil: no classifier
	autolearn  *classifier.Autolearner
}

// Config wires an Engine.
type Config struct {
	// Judge evaluates rules; nil accepts everything.
	Judge Judge
	// Resolver serves the rDNS facts; nil leaves them unknown.
	Resolver Resolver
	// Blocklists serves the DNSBL facts; nil means no lists.
	Blocklists Blocklists
	// ContentLimits bound message parsing; zero means the defaults.
	ContentLimits ContentLimits
	// Auth turns on sender authentication (SPF, DKIM, ARC, DMARC); nil
	// leaves it off and its facts unknown.
	Auth *AuthConfig
	// Greylist decides the greylisting the rules ask for (action
	// greylist) on the state store; nil (offline, or no store
	// configured) leaves it unknown and the mail goes on.
	Greylist *greylist.Greylister
	// RateLimits counts the configured rate limits on the state store;
	// nil (offline, or none) leaves {rate_limit: NAME} unknown.
	RateLimits *ratelimit.Limiter
	// RateLimitsMonitor (rules.mode monitor): an exceeded limit's action
	// is logged as what would have happened (WouldBe), never taken.
	RateLimitsMonitor bool
	// Reputation counts verdicts per client network and sender domain
	// and serves the reputation facts; nil (offline, or not configured)
	// leaves them unknown.
	Reputation *reputation.Counter
	// Submission is the lockout and the sender map of authenticated
	// sessions (submission listeners).
	Submission SubmissionConfig
	// Classifier is the statistical classifier's model in force; nil
	// leaves the classifier facts unknown.
	Classifier *classifier.Live
	// Autolearn teaches the classifier from confident verdicts (live
	// only); nil: off.
	Autolearn *classifier.Autolearner
	Logger    *slog.Logger
}

// New builds an Engine from cfg.
func New(cfg Config) (*Engine, error) {
	e := &Engine{judge: cfg.Judge, resolver: cfg.Resolver, blocks: cfg.Blocklists,
		limits: cfg.ContentLimits, log: cfg.Logger, now: time.Now, grey: cfg.Greylist, rates: cfg.RateLimits, rateMon: cfg.RateLimitsMonitor, rep: cfg.Reputation,
		submission: cfg.Submission, classifier: cfg.Classifier, autolearn: cfg.Autolearn}
	if cfg.Auth != nil && cfg.Auth.Resolver != nil {
		a := *cfg.Auth
		if a.AuthservID == "" {
			a.AuthservID = "localhost"
		}
		if a.DMARC == "" {
			a.DMARC = DMARCReject
		}
		e.auth = &a
	}
	if e.limits == (ContentLimits{}) {
		e.limits = DefaultContentLimits()
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.judge != nil {
		for st := StageConnect; st <= StageData; st++ {
			e.needRDNS = e.needRDNS || e.judge.Needs(st).RDNS
		}
	}
	return e, nil
}

// sessionState is the engine's per-session memory: lookups in flight and
// their answers. It lives in Session so that the engine stays stateless.
type sessionState struct {
	ctx    context.Context
	cancel context.CancelFunc
	begun  bool // Begin ran
	rdns   *rdnsLookup
	lists  map[listKey]*pendingList
	auth   *authState
	rates  map[string]ratelimit.Decision // latest decision per limit name
	repNet *repLookup                    // the client network's reputation
	repDom *repLookup                    // the current sender domain's reputation
	repTx  *Transaction                  // the transaction whose outcome was counted
}

func (e *Engine) state(s *Session) *sessionState {
	if s.engine == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.engine = &sessionState{ctx: ctx, cancel: cancel}
	}
	return s.engine
}

// Begin starts the lookups about the client address (s.Client is set):
// its reverse DNS and the IP lists. A caller that does something before
// Connect — the proxy's greeting delay — calls Begin as soon as the
// address is known, so that the lookups overlap it; Connect calls it
// otherwise. Only the first call per session does anything.
func (e *Engine) Begin(s *Session) {
	st := e.state(s)
	if st.begun {
		return
	}
	st.begun = true
	if e.resolver != nil && e.needRDNS && s.Client.Addr().IsValid() {
		st.rdns = startRDNS(st.ctx, e.resolver, s.Client.Addr())
	}
	e.startKeys(s, KindIP, listKeys(s, nil, nil, SourceClientIP))
	e.startNetReputation(s)
}

// Connect judges a new connection: s.Client and s.Start are set. Lookups
// about the client address start here unless Begin started them.
func (e *Engine) Connect(ctx context.Context, s *Session) Verdict {
	e.Begin(s)
	return e.evaluate(ctx, StageConnect, &Facts{Session: s})
}

// Helo judges the HELO/EHLO greeting: s.HeloVerb and s.Helo are set.
func (e *Engine) Helo(ctx context.Context, s *Session) Verdict {
	e.startKeys(s, KindDomain, listKeys(s, nil, nil, SourceHelo))
	e.startHeloSPF(s)
	return e.evaluate(ctx, StageHelo, &Facts{Session: s})
}

// Mail judges the envelope sender of a new transaction.
func (e *Engine) Mail(ctx context.Context, s *Session, t *Transaction) Verdict {
	e.startKeys(s, KindDomain, listKeys(s, t, nil, SourceMailFrom))
	e.newAuthTransaction(s)
	e.startMailSPF(s, t)
	e.startDomainReputation(s, t)
	return e.evaluate(ctx, StageMail, &Facts{Session: s, Tx: t})
}

// Rcpt judges one recipient before it is added to t.Rcpts.
func (e *Engine) Rcpt(ctx context.Context, s *Session, t *Transaction, r Recipient) Verdict {
	return e.evaluate(ctx, StageRcpt, &Facts{Session: s, Tx: t, Rcpt: &r})
}

// Data judges the message of a transaction. The message is parsed only as
// deep as the data stage's rules need (ContentDepth).
func (e *Engine) Data(ctx context.Context, s *Session, t *Transaction, m *Message) Verdict {
	var c *Content
	if d := e.ContentDepth(); d > DepthNone {
		c = ParseContent(m.Body, m.Size, d, e.limits)
	}
	return e.DataWithContent(ctx, s, t, m, c)
}

// RcptReadsRecipients reports whether judging a recipient depends on the
// ones accepted before it. When it does not, the proxy may send a
// pipelined batch of RCPTs to the upstream before reading any reply.
func (e *Engine) RcptReadsRecipients() bool {
	return e.judge != nil && e.judge.Needs(StageRcpt).Recipients
}

// ContentDepth is how deep the data stage's rules need a message parsed.
func (e *Engine) ContentDepth() Depth {
	d := DepthNone
	if e.judge != nil {
		d = e.judge.Needs(StageData).Depth
	}
	if e.autolearn != nil {
		// Autolearn learns the decoded text whether or not a rule reads
		// the classifier.
		d = DepthText
	}
	return d
}

// DataWithContent judges a message whose content the caller parsed
// already, at least as deep as ContentDepth (the capture analyser, which
// also reports the headers; the rules test tools). c may be nil when the
// rules need no content.
func (e *Engine) DataWithContent(ctx context.Context, s *Session, t *Transaction, m *Message, c *Content) Verdict {
	f := &Facts{Session: s, Tx: t, Message: m, Content: c}
	if c != nil {
		e.startKeys(s, KindDomain, listKeys(s, t, c, SourceFrom))
		e.startKeys(s, KindURI, listKeys(s, t, c, SourceURL))
	}
	f.Auth = e.authenticate(ctx, s, t, m)
	v := e.evaluate(ctx, StageData, f)
	if c := f.classified; c != nil && c.err == nil {
		v.Classifier = &ClassifierResult{Prob: c.r.Prob, Confidence: c.r.Confidence}
		// The decision line's trace names the classifier's part next to
		// the CLASSIFIER_* rule it made fire.
		v.Trace = append(v.Trace, "classifier="+strconv.FormatFloat(c.r.Prob, 'g', 4, 64)+
			" confidence="+strconv.FormatFloat(c.r.Confidence, 'f', 2, 64))
	}
	if e.autolearn != nil && c != nil && c.Depth >= DepthText {
		// The score without the classifier's own rules: a verdict the
		// classifier made must not teach it (SpamAssassin leaves its
		// BAYES_ rules out of the autolearn score the same way).
		score := v.Score
		for _, h := range v.Hits {
			if strings.HasPrefix(h.Rule, "CLASSIFIER_") {
				score -= h.Score
			}
		}
		if class := e.autolearn.Offer(f.classifierDoc(), score); class != "" {
			v.Trace = append(v.Trace, "autolearn="+class)
		}
	}
	if f.Auth == nil && e.auth != nil && s.AuthUser != "" {
		// An authenticated submission is not verified, but a field
		// forged with moat's authserv-id goes all the same: the
		// shielded server's own users would read it as moat's word.
		v.DropHeaders = e.forgedAuthResults(m, c)
	}
	if f.Auth != nil {
		h, drop := e.authHeaders(s, f.Auth)
		v.Headers = append([]HeaderField{h}, v.Headers...)
		v.DropHeaders = drop
		v.Auth = f.Auth
	}
	return v
}

// End releases what the engine holds for session s: lookups still in
// flight are cancelled.
func (e *Engine) End(s *Session) {
	if s.engine != nil {
		s.engine.auth.end()
		s.engine.cancel()
	}
}

func (e *Engine) evaluate(ctx context.Context, stage Stage, f *Facts) Verdict {
	e.countRates(ctx, stage, f)
	if e.judge == nil {
		v := Verdict{Action: Accept}
		e.rateVerdict(ctx, stage, f, &v)
		e.recordReputation(ctx, stage, f, v)
		return v
	}
	f.Stage = stage
	f.ctx = ctx
	f.engine = e
	f.Now = e.now()
	if f.Session.Clock != nil {
		f.Now = f.Session.Clock()
	}
	v := e.judge.Evaluate(stage, f)
	if v.Greylist {
		e.greylist(ctx, stage, f, &v)
	}
	e.rateVerdict(ctx, stage, f, &v)
	e.recordReputation(ctx, stage, f, v)
	return v
}

// rdnsLookup is the client's reverse DNS, resolved in the background.
type rdnsLookup struct {
	done      chan struct{}
	name      string
	confirmed bool
	err       error
}

// startRDNS resolves the PTR of ip and confirms it forward (FCrDNS: one
// PTR name whose A/AAAA records include ip).
func startRDNS(ctx context.Context, r Resolver, ip netip.Addr) *rdnsLookup {
	l := &rdnsLookup{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		names, err := r.LookupPTR(ctx, ip)
		if err != nil {
			l.err = err
			return
		}
		for i, n := range names {
			if i >= 5 {
				break // bound the forward lookups
			}
			addrs, err := r.LookupAddr(ctx, n)
			if err != nil {
				continue
			}
			for _, a := range addrs {
				if a.Unmap() == ip.Unmap() {
					l.name, l.confirmed = trimDot(n), true
					return
				}
			}
		}
		if len(names) > 0 {
			l.name = trimDot(names[0])
		}
	}()
	return l
}

func trimDot(s string) string {
	if len(s) > 0 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}

// heloDomain is the HELO argument as a domain to look up, "" when it is an
// address literal, an address, or a single label (no list holds those).
func heloDomain(h string) string {
	if h == "" || h[0] == '[' {
		return ""
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	d := domainKey(h)
	if strings.IndexByte(d, '.') < 0 {
		return ""
	}
	return d
}
