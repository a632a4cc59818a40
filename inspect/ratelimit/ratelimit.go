// Package ratelimit counts what clients do against configured rate limits
// on moat's state store.
//
// A limit counts one thing (connections, messages, recipients, bytes or
// refused commands) per key (the client address or network, the envelope
// sender or its domain, the recipient, or the authenticated user) at a
// rate like 100/1h with a burst: the store's GCRA (state.Store.Allow)
// admits burst events at once, then one every period/events. An event
// that does not fit is not counted, so a client that stays over a limit
// does not push its own refill further away.
//
// The package decides; it does not reply. The inspect engine counts at
// each stage, keeps the latest Decision per limit in the session (the
// rules read it with {rate_limit: NAME}), and turns an exceeded limit
// with an action into 451 4.7.0 or 421 4.7.0.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"moat/internal/state"
)

// The keys a limit counts by.
const (
	KeyClientIP       = "client_ip"
	KeyClientNetwork  = "client_network" // /24 for IPv4, /64 for IPv6
	KeyMailFrom       = "mail_from"
	KeyMailFromDomain = "mail_from_domain"
	KeyRcpt           = "rcpt"
	KeyAuthUser       = "auth_user"
)

// What a limit counts.
const (
	CountConnections = "connections" // at connect
	CountMessages    = "messages"    // at end of data, one per message
	CountRecipients  = "recipients"  // at rcpt, one per recipient
	CountBytes       = "bytes"       // at end of data, the message size
	CountErrors      = "errors"      // each command moat's verdict refuses
)

// The actions of an exceeded limit.
const (
	ActionNone     = "none"     // only the rules ({rate_limit: NAME}) act
	ActionTempfail = "tempfail" // 451 4.7.0
	ActionClose    = "close"    // 421 4.7.0, and the session ends
)

var (
	keys    = []string{KeyClientIP, KeyClientNetwork, KeyMailFrom, KeyMailFromDomain, KeyRcpt, KeyAuthUser}
	counts  = []string{CountConnections, CountMessages, CountRecipients, CountBytes, CountErrors}
	actions = []string{ActionNone, ActionTempfail, ActionClose}
	nameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// Limit is one entry of the rate_limits section.
type Limit struct {
	// Name is how rules ({rate_limit: NAME}), logs and the metric name
	// the limit: lower case letters, digits, _ and -.
	Name string `yaml:"name"`
	// Key is what the limit counts by (client_ip, client_network,
	// mail_from, mail_from_domain, rcpt, auth_user).
	Key string `yaml:"key"`
	// Count is what it counts (connections, messages, recipients, bytes,
	// errors).
	Count string `yaml:"count"`
	// Rate is EVENTS/PERIOD, like 100/1h (a Go duration; 1d is 24h).
	Rate string `yaml:"rate"`
	// Burst is how many events may come at once; default the rate's
	// events. For bytes it must be at least the largest message.
	Burst int `yaml:"burst"`
	// Action is what an exceeded limit does by itself: none (default:
	// only rules act), tempfail or close.
	Action string `yaml:"action"`
	// OnStoreError is what a store failure does to a limit with an
	// action: accept (default: fail open, the limit is unknown) or
	// tempfail (451 4.3.0, the client retries).
	OnStoreError string `yaml:"on_store_error"`
}

// The OnStoreError settings.
const (
	OnErrorAccept   = "accept"
	OnErrorTempfail = "tempfail"
)

// Config is the rate_limits section: its limits, in order.
type Config []Limit

// Defaults fills every unset key with its default.
func (c Config) Defaults() {
	for i := range c {
		l := &c[i]
		if l.Action == "" {
			l.Action = ActionNone
		}
		if l.OnStoreError == "" {
			l.OnStoreError = OnErrorAccept
		}
		if l.Burst == 0 {
			if r, err := ParseRate(l.Rate); err == nil {
				l.Burst = int(min(r.Events, 1<<31-1))
			}
		}
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c Config) Validate() error {
	seen := map[string]bool{}
	for i, l := range c {
		at := fmt.Sprintf("rate_limits[%d]", i)
		if !nameRE.MatchString(l.Name) {
			return fmt.Errorf("%s.name: %q is not a name (a-z, 0-9, _ and -)", at, l.Name)
		}
		at = "rate_limits." + l.Name
		if seen[l.Name] {
			return fmt.Errorf("%s: the name is used twice", at)
		}
		seen[l.Name] = true
		if !contains(keys, l.Key) {
			return fmt.Errorf("%s.key: %q is not one of %s", at, l.Key, strings.Join(keys, ", "))
		}
		if !contains(counts, l.Count) {
			return fmt.Errorf("%s.count: %q is not one of %s", at, l.Count, strings.Join(counts, ", "))
		}
		if l.Count == CountConnections && l.Key != KeyClientIP && l.Key != KeyClientNetwork {
			return fmt.Errorf("%s.key: connections are counted at connect, when only the client is known: %s cannot key them", at, l.Key)
		}
		if l.Count == CountMessages || l.Count == CountBytes {
			if l.Key == KeyRcpt {
				return fmt.Errorf("%s.key: a message has several recipients: count recipients to limit by rcpt", at)
			}
		}
		if _, err := ParseRate(l.Rate); err != nil {
			return fmt.Errorf("%s.rate: %v", at, err)
		}
		if l.Burst < 1 {
			return fmt.Errorf("%s.burst: must be at least 1", at)
		}
		if !contains(actions, l.Action) {
			return fmt.Errorf("%s.action: %q is not one of %s", at, l.Action, strings.Join(actions, ", "))
		}
		if l.OnStoreError != OnErrorAccept && l.OnStoreError != OnErrorTempfail {
			return fmt.Errorf("%s.on_store_error: %q is neither accept nor tempfail", at, l.OnStoreError)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ParseRate parses EVENTS/PERIOD: a positive whole number of events, a
// slash, and a positive Go duration ("100/1h", "5/30s", "1000/24h"). A
// bare unit means one of it ("10/h" is refused: write 10/1h).
func ParseRate(s string) (state.Rate, error) {
	ev, per, ok := strings.Cut(s, "/")
	if !ok {
		return state.Rate{}, fmt.Errorf("%q is not EVENTS/PERIOD, like 100/1h", s)
	}
	n, err := strconv.ParseInt(ev, 10, 64)
	if err != nil || n < 1 {
		return state.Rate{}, fmt.Errorf("%q: events %q is not a positive whole number", s, ev)
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return state.Rate{}, fmt.Errorf("%q: period %q is not a positive duration, like 1h or 30s", s, per)
	}
	if d < time.Second {
		return state.Rate{}, fmt.Errorf("%q: period %v is shorter than a second", s, d)
	}
	return state.Rate{Events: n, Period: d}, nil
}

// Decision is the outcome of counting one event against one limit.
type Decision uint8

// The decisions; their names are the metric's label values.
const (
	// Allowed: the events fit the limit and were counted.
	Allowed Decision = iota + 1
	// Limited: they did not fit; the limit is exceeded.
	Limited
	// StoreError: the store failed; the limit is unknown (fail open).
	StoreError
)

var decisionNames = [...]string{"", "allowed", "limited", "store_error"}

func (d Decision) String() string {
	if int(d) < len(decisionNames) && d != 0 {
		return decisionNames[d]
	}
	return fmt.Sprintf("decision(%d)", uint8(d))
}

// Rule is a validated limit, ready to count.
type Rule struct {
	Limit
	Rate state.Rate
}

// Limiter counts events against the configured limits on a store. It
// is safe for concurrent use.
type Limiter struct {
	rules []Rule
	store state.Store
	m     *Metrics
	log   *slog.Logger
}

// New builds a Limiter on store. cfg must have passed Validate after
// Defaults; m may be nil (nothing counted), log nil (slog.Default).
func New(cfg Config, store state.Store, m *Metrics, log *slog.Logger) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("rate limits: no state store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	l := &Limiter{store: store, m: m, log: log}
	for _, lim := range cfg {
		r, _ := ParseRate(lim.Rate)
		l.rules = append(l.rules, Rule{Limit: lim, Rate: r})
	}
	return l, nil
}

// Rules returns the limits, in configuration order.
func (l *Limiter) Rules() []Rule { return l.rules }

// Subject is who an event is about: the parts of the session and
// transaction the keys are made of. Empty parts are not known yet.
type Subject struct {
	Client netip.Addr
	// Sender is the envelope sender; NullSender marks the null path <>.
	Sender     string
	NullSender bool
	Rcpt       string
	AuthUser   string
}

// Network is the client's /24 (IPv4) or /64 (IPv6), "" without an
// address.
func Network(a netip.Addr) string {
	a = a.Unmap()
	if !a.IsValid() {
		return ""
	}
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

// KeyOf is the store key of limit r for subject s; ok is false when s
// does not have that part (no authenticated user, no sender yet).
//
// The null sender (bounces, RFC 5321 §4.5.5) is keyed by the client
// network instead: every bounce has the same empty sender, and one
// global bucket for them would let one bouncing host stop all bounces.
func KeyOf(r Rule, s Subject) (state.Key, bool) {
	var v string
	switch r.Key {
	case KeyClientIP:
		if s.Client.IsValid() {
			v = s.Client.Unmap().String()
		}
	case KeyClientNetwork:
		v = Network(s.Client)
	case KeyMailFrom, KeyMailFromDomain:
		switch {
		case s.NullSender:
			if n := Network(s.Client); n != "" {
				v = "<>@" + n
			}
		case r.Key == KeyMailFrom:
			v = strings.ToLower(s.Sender)
		default:
			if i := strings.LastIndexByte(s.Sender, '@'); i >= 0 {
				v = strings.ToLower(s.Sender[i+1:])
			}
		}
	case KeyRcpt:
		v = strings.ToLower(s.Rcpt)
	case KeyAuthUser:
		v = s.AuthUser
	}
	if v == "" {
		return state.Key{}, false
	}
	return state.NewKey("rate", r.Name, v), true
}

// IsPostmaster reports whether a recipient is postmaster: <postmaster>
// or postmaster@ any domain, in any case. RFC 5321 §4.5.1 requires a
// server to accept mail to postmaster, so it is never rate limited.
func IsPostmaster(rcpt string) bool {
	local, _, _ := strings.Cut(rcpt, "@")
	return strings.EqualFold(local, "postmaster")
}

// Allow counts n events of limit r for subject s. A subject without
// the limit's key part counts nothing and is Allowed without a store
// round trip. The error is the store's, with the decision StoreError.
func (l *Limiter) Allow(ctx context.Context, r Rule, s Subject, n int) (Decision, error) {
	key, ok := KeyOf(r, s)
	if !ok {
		return Allowed, nil
	}
	d := Allowed
	fits, _, err := l.store.Allow(ctx, key, r.Rate, r.Burst, n)
	switch {
	case err != nil:
		d = StoreError
	case !fits:
		d = Limited
	}
	l.m.count(r.Name, d)
	return d, err
}
