// Package reputation counts past verdicts per client network and per
// sender domain on moat's state store, like rspamd's IP reputation: how
// many transactions from a /24 (IPv4) or /64 (IPv6), or with a MAIL FROM
// domain, were accepted, tagged or rejected over a sliding window. The
// counts are facts for the rules; they decide nothing by themselves.
package reputation

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"moat/inspect/ratelimit"
	"moat/internal/state"
)

// Config is the reputation: section.
type Config struct {
	// Enabled turns counting and the facts on (a state: store is also
	// needed).
	Enabled bool `yaml:"enabled"`
	// Window is how far back the counts go; 168h (7 days) by default.
	Window time.Duration `yaml:"window"`
}

// DefaultWindow is the default counting window: a week.
const DefaultWindow = 7 * 24 * time.Hour

// Defaults fills in the window.
func (c *Config) Defaults() {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
}

// Validate checks c after Defaults.
func (c *Config) Validate() error {
	if c.Window < 0 {
		return errors.New("reputation.window must be positive")
	}
	return nil
}

// Outcome is the class of a transaction's verdict.
type Outcome int

const (
	Accepted Outcome = iota // accepted unchanged
	Tagged                  // accepted with spam headers
	Rejected                // refused by a verdict: reject or tempfail
)

var outcomes = [...]string{"accepted", "tagged", "rejected"}

func (o Outcome) String() string { return outcomes[o] }

// Counts are the outcomes counted over the window.
type Counts struct {
	Accepted, Tagged, Rejected int64
}

// RejectRatio is Rejected over all outcomes; ok is false when nothing
// was counted (the ratio is unknown, not 0).
func (c Counts) RejectRatio() (float64, bool) {
	total := c.Accepted + c.Tagged + c.Rejected
	if total == 0 {
		return 0, false
	}
	return float64(c.Rejected) / float64(total), true
}

// Of returns the count of outcome o.
func (c Counts) Of(o Outcome) int64 {
	return [...]int64{c.Accepted, c.Tagged, c.Rejected}[o]
}

// Counter counts outcomes on a store. It is safe for concurrent use.
type Counter struct {
	store  state.Store
	window time.Duration
	m      *Metrics
	log    *slog.Logger
}

// New builds a Counter on store; cfg must have been validated.
func New(cfg Config, store state.Store, m *Metrics, log *slog.Logger) *Counter {
	cfg.Defaults()
	if log == nil {
		log = slog.Default()
	}
	return &Counter{store: store, window: cfg.Window, m: m, log: log}
}

// Network is the network key part of client a ("" without an address):
// the same /24 or /64 the rate limits use.
func Network(a netip.Addr) string { return ratelimit.Network(a) }

// Domain is the key part of a sender domain: lower-cased, "" for the
// null sender.
func Domain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

func key(kind, subject string, o Outcome) state.Key {
	return state.NewKey("rep", kind, subject, o.String())
}

// Record adds one outcome o for network net and domain dom; an empty
// subject is skipped. A store error is logged and counted, never
// returned: reputation never holds up mail.
func (c *Counter) Record(ctx context.Context, net, dom string, o Outcome) {
	for _, s := range [...]struct{ kind, subj string }{{"net", net}, {"domain", dom}} {
		if s.subj == "" {
			continue
		}
		if _, err := c.store.Add(ctx, key(s.kind, s.subj, o), 1, c.window); err != nil {
			c.m.count("store_error")
			c.log.Warn("reputation store error", slog.String("subject", s.kind), slog.Any("err", err))
			continue
		}
		c.m.count("ok")
	}
}

// NetCounts reads the counts of network net.
func (c *Counter) NetCounts(ctx context.Context, net string) (Counts, error) {
	return c.counts(ctx, "net", net)
}

// DomainCounts reads the counts of sender domain dom.
func (c *Counter) DomainCounts(ctx context.Context, dom string) (Counts, error) {
	return c.counts(ctx, "domain", dom)
}

func (c *Counter) counts(ctx context.Context, kind, subj string) (Counts, error) {
	var n [3]int64
	for o := Accepted; o <= Rejected; o++ {
		v, err := c.store.Count(ctx, key(kind, subj, o), c.window)
		if err != nil {
			return Counts{}, err
		}
		n[o] = v
	}
	return Counts{Accepted: n[0], Tagged: n[1], Rejected: n[2]}, nil
}
