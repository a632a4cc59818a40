// Package greylist decides greylisting (RFC 6647) on moat's state store.
//
// Greylisting refuses mail from an unknown (client, sender, recipient)
// triplet with a temporary error. A real MTA retries after a while (RFC
// 5321 §4.5.4.1); much spamware does not. The first attempt of a triplet
// is answered 451 4.7.1 (RFC 6647 §2.1, RFC 3463 X.7.1) and remembered
// for the retry window; a retry earlier than the delay is answered the
// same; a retry after the delay, within the window, passes, and the
// triplet is then remembered as passed for the lifetime. A client
// network (or SPF domain) whose triplets passed allowlist_after times
// skips greylisting altogether.
//
// The client part of the triplet is the network, /24 for IPv4 and /64
// for IPv6, because large senders retry from another address of a pool.
// When SPF passed for the envelope sender, it is the SPF-validated
// domain instead: such senders retry from other networks too, and
// greylisting them by IP delays them for hours (postgrey's best-known
// complaint). The SPF pass proves the domain sends from there.
//
// The package decides; it does not reply. The inspect engine turns a
// Decision into a verdict, and rules decide which mail is greylisted at
// all (action greylist). A store failure is a Decision of its own,
// StoreError: the engine fails open or tempfails, as configured.
package greylist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"moat/internal/state"
)

// Config is the greylist section of moat's configuration.
type Config struct {
	// Delay is how long a new triplet is refused: a retry earlier than
	// this is refused again. Default 5m.
	Delay time.Duration `yaml:"delay"`
	// RetryWindow is how long a first sighting is remembered: a retry
	// later than this counts as a first sighting again. Default 48h.
	RetryWindow time.Duration `yaml:"retry_window"`
	// Lifetime is how long a passed triplet, and a network's count of
	// passes, are remembered. Default 35 days (840h).
	Lifetime time.Duration `yaml:"lifetime"`
	// AllowlistAfter is the number of passed triplets after which a
	// client network (or SPF domain) is no longer greylisted, until its
	// passes expire with Lifetime. Default 5; 0 takes the default, a
	// negative value turns the allowlist off.
	AllowlistAfter int `yaml:"allowlist_after"`
	// OnStoreError is what a store failure does to greylisted mail:
	// "accept" (default: fail open, the mail goes on unjudged by
	// greylisting) or "tempfail" (451, the client retries).
	OnStoreError string `yaml:"on_store_error"`
}

// The OnStoreError settings.
const (
	OnErrorAccept   = "accept"
	OnErrorTempfail = "tempfail"
)

// Defaults fills every unset key with its default.
func (c *Config) Defaults() {
	if c.Delay == 0 {
		c.Delay = 5 * time.Minute
	}
	if c.RetryWindow == 0 {
		c.RetryWindow = 48 * time.Hour
	}
	if c.Lifetime == 0 {
		c.Lifetime = 35 * 24 * time.Hour
	}
	if c.AllowlistAfter == 0 {
		c.AllowlistAfter = 5
	}
	if c.OnStoreError == "" {
		c.OnStoreError = OnErrorAccept
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	switch {
	case c.Delay <= 0:
		return errors.New("greylist.delay: must be positive")
	case c.RetryWindow <= c.Delay:
		return fmt.Errorf("greylist.retry_window: %v must be longer than the delay %v", c.RetryWindow, c.Delay)
	case c.Lifetime <= 0:
		return errors.New("greylist.lifetime: must be positive")
	}
	switch c.OnStoreError {
	case OnErrorAccept, OnErrorTempfail:
	default:
		return fmt.Errorf("greylist.on_store_error: %q is neither accept nor tempfail", c.OnStoreError)
	}
	return nil
}

// Decision is the outcome of one greylisting question.
type Decision uint8

// The decisions; their names are the metric's label values.
const (
	// Greylisted: a triplet not yet passed; answer 451 4.7.1.
	Greylisted Decision = iota + 1
	// Passed: every triplet retried after the delay (or passed before).
	Passed
	// Allowlisted: the network or SPF domain passed often enough.
	Allowlisted
	// StoreError: the store failed; Config.OnStoreError decides.
	StoreError
)

var decisionNames = [...]string{"", "greylisted", "passed", "allowlisted", "store_error"}

func (d Decision) String() string {
	if int(d) < len(decisionNames) && d != 0 {
		return decisionNames[d]
	}
	return fmt.Sprintf("decision(%d)", uint8(d))
}

// Request is what one greylisting question is about: a transaction's
// client, sender and recipients (one at the rcpt stage, all of them at
// the data stage).
type Request struct {
	Client netip.Addr
	// Sender is the envelope sender, "" for the null path.
	Sender string
	// Recipients are the envelope recipients.
	Recipients []string
	// SPFDomain is the domain SPF validated for the sender ("" when SPF
	// did not pass): it replaces the client network in the keys.
	SPFDomain string
}

// Greylister decides greylisting with a store. It is safe for
// concurrent use.
type Greylister struct {
	cfg   Config
	store state.Store
	m     *Metrics
	log   *slog.Logger
}

// New builds a Greylister on store. cfg must have passed Validate after
// Defaults; m may be nil (nothing counted), log nil (slog.Default).
func New(cfg Config, store state.Store, m *Metrics, log *slog.Logger) (*Greylister, error) {
	if store == nil {
		return nil, errors.New("greylist: no state store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Greylister{cfg: cfg, store: store, m: m, log: log}, nil
}

// Config returns the configuration g was built with.
func (g *Greylister) Config() Config { return g.cfg }

// The store values of a triplet entry.
var (
	valSeen   = []byte("seen")
	valPassed = []byte("passed")
)

// Namespaces: "grey" holds triplets, "grey-ok" a count of passes per
// origin (network or SPF domain).
const (
	nsTriplet = "grey"
	nsOrigin  = "grey-ok"
)

// Origin is the client part of the keys: "spf:DOMAIN" when SPF passed,
// else "net:PREFIX" (/24 or /64), "none" without a client address.
func Origin(r Request) string {
	if r.SPFDomain != "" {
		return "spf:" + strings.ToLower(strings.TrimSuffix(r.SPFDomain, "."))
	}
	a := r.Client.Unmap()
	if !a.IsValid() {
		return "none"
	}
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return "net:" + p.String()
}

// TripletKey is the store key of one (origin, sender, recipient).
func TripletKey(origin, sender, rcpt string) state.Key {
	if sender == "" {
		sender = "<>"
	}
	return state.NewKey(nsTriplet, origin, strings.ToLower(sender), strings.ToLower(rcpt))
}

// Check decides whether the transaction r describes is greylisted. One
// recipient not yet passed greylists the whole request. The error is the
// store's, with the decision StoreError.
func (g *Greylister) Check(ctx context.Context, r Request) (Decision, error) {
	d, err := g.check(ctx, r)
	if err != nil {
		d = StoreError
	}
	g.m.count(d)
	return d, err
}

func (g *Greylister) check(ctx context.Context, r Request) (Decision, error) {
	origin := Origin(r)
	okKey := state.NewKey(nsOrigin, origin)
	if g.cfg.AllowlistAfter > 0 {
		n, err := g.store.Count(ctx, okKey, g.cfg.Lifetime)
		if err != nil {
			return StoreError, err
		}
		if n >= int64(g.cfg.AllowlistAfter) {
			return Allowlisted, nil
		}
	}
	d := Passed
	for _, rcpt := range r.Recipients {
		td, err := g.triplet(ctx, TripletKey(origin, r.Sender, rcpt), okKey)
		if err != nil {
			return StoreError, err
		}
		if td == Greylisted {
			d = Greylisted // go on: every recipient's retry starts its clock now
		}
	}
	return d, nil
}

// triplet decides one key: first seen, seen too recently, or passed.
func (g *Greylister) triplet(ctx context.Context, key, okKey state.Key) (Decision, error) {
	v, age, found, err := g.store.Get(ctx, key)
	if err != nil {
		return StoreError, err
	}
	if !found {
		// First sighting. A lost SetNX race means another session saw it
		// first, just now: greylisted either way.
		if _, err := g.store.SetNX(ctx, key, valSeen, g.cfg.RetryWindow); err != nil {
			return StoreError, err
		}
		return Greylisted, nil
	}
	if string(v) == string(valPassed) {
		return Passed, nil
	}
	if age < g.cfg.Delay {
		return Greylisted, nil
	}
	// Retried after the delay, within the window (the entry expires at
	// its end): passed, remembered for the lifetime, counted for the
	// network's allowlisting.
	if err := g.store.Set(ctx, key, valPassed, g.cfg.Lifetime); err != nil {
		return StoreError, err
	}
	if g.cfg.AllowlistAfter > 0 {
		if _, err := g.store.Add(ctx, okKey, 1, g.cfg.Lifetime); err != nil {
			return StoreError, err
		}
	}
	return Passed, nil
}
