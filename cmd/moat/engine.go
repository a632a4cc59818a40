package main

import (
	"context"
	"log/slog"

	"moat/dnsbl"
	"moat/inspect"
	"moat/inspect/authguard"
	"moat/inspect/classifier"
	"moat/inspect/greylist"
	"moat/inspect/ratelimit"
	"moat/inspect/reputation"
	"moat/internal/state"
	"moat/rules"
)

// engineDeps are what an engine is built with besides the configuration:
// metrics that outlive reloads, and how the DNS answers.
type engineDeps struct {
	Rules *rules.Metrics
	Auth  *inspect.AuthMetrics
	// Store is the state store moat serve opened (nil: none, or
	// offline, where greylisting never writes a store and is unknown).
	Store state.Store
	// StateConfig is the state section Store was opened with (reload
	// warns when the file's differs).
	StateConfig *state.Config
	Greylist    *greylist.Metrics
	RateLimits  *ratelimit.Metrics
	// ReadStore is a store offline analysis may read and never write
	// (moat analyze --state): the reputation facts come from it.
	ReadStore  state.Store
	Reputation *reputation.Metrics
	AuthGuard  *authguard.Metrics
	// Classifier is the classifier's model in force (moat serve's, kept
	// fresh from the store; analyze's, read once from --state).
	Classifier *classifier.Live
	// Autolearn is moat serve's autolearner (nil: off).
	Autolearn *classifier.Autolearner
	// Recorded: the DNS knows only the answers recorded in a capture.
	Recorded bool
	// NotQueried: offline without DNS (moat analyze --dns off).
	NotQueried bool
	// Live: moat serve (warn about what cannot work live).
	Live bool
	Log  *slog.Logger
}

// buildEngine compiles the configured rules and wires the inspection
// engine to them, to the DNS lists and to sender authentication. Called
// at startup and on every reload; an error leaves whatever runs untouched.
func buildEngine(cfg *Config, lists *dnsbl.Checker, d engineDeps) (*inspect.Engine, *rules.Set, error) {
	m, log := d.Rules, d.Log
	var ad listsAdapter
	if lists != nil {
		ad.c = lists
	}
	set, err := rules.LoadConfigured(cfg.Rules, rules.Options{Lists: ad, Metrics: m, RateLimits: rateLimitStages(cfg),
		Classifier: cfg.Classifier.Enabled})
	if err != nil {
		return nil, nil, &configError{err}
	}
	ec := inspect.Config{Judge: set, Logger: log}
	switch {
	case lists == nil:
	case d.NotQueried:
		// The rules know the lists by name; every lookup answers "not
		// queried", a failed lookup and never "not listed". No DNS at
		// all: no rDNS and no sender authentication.
		if len(lists.Lists()) > 0 {
			ec.Blocklists = notQueried{lists}
		}
	default:
		ec.Blocklists = ad
		ec.Resolver = lists.DNS()
		ec.Auth = engineAuth(cfg, lists, d.Auth, d.Recorded)
	}
	if d.Store != nil {
		g, err := greylist.New(cfg.Greylist, d.Store, d.Greylist, log)
		if err != nil {
			return nil, nil, &configError{err}
		}
		ec.Greylist = g
	} else if set.Greylists() && d.Live {
		log.Warn("rules use action greylist but no state store is configured: greylisting is off, the mail goes on", "rules", set.File())
	}
	if d.Store != nil && len(cfg.RateLimits) > 0 {
		l, err := ratelimit.New(cfg.RateLimits, d.Store, d.RateLimits, log)
		if err != nil {
			return nil, nil, &configError{err}
		}
		ec.RateLimits, ec.RateLimitsMonitor = l, cfg.Rules.Mode == "monitor"
	} else if len(cfg.RateLimits) > 0 && d.Live {
		log.Warn("rate_limits are configured but no state store is: the limits are off, rate_limit conditions unknown")
	}
	ec.Reputation = offlineReputation(cfg, d)
	if d.Store != nil && cfg.Reputation.Enabled {
		ec.Reputation = reputation.New(cfg.Reputation, d.Store, d.Reputation, log)
	} else if cfg.Reputation.Enabled && d.Live {
		log.Warn("reputation is enabled but no state store is configured: reputation facts are unknown")
	}
	if cfg.Classifier.Enabled && d.Classifier != nil {
		ec.Classifier, ec.Autolearn = d.Classifier, d.Autolearn
	}
	if ec.Submission, err = engineSubmission(cfg, d); err != nil {
		return nil, nil, &configError{err}
	}
	e, err := inspect.New(ec)
	if err != nil {
		return nil, nil, err
	}
	return e, set, nil
}

// offlineReputation reads reputation from the read-only store of moat
// analyze --state; nil without one. Greylisting and rate limits stay
// unknown offline even then: their decisions are writes.
func offlineReputation(cfg *Config, d engineDeps) *reputation.Counter {
	if d.Store != nil || d.ReadStore == nil || !cfg.Reputation.Enabled {
		return nil
	}
	return reputation.New(cfg.Reputation, d.ReadStore, d.Reputation, d.Log)
}

// rateLimitStages tells the rules loader the configured rate limits and
// the stage each is counted at.
func rateLimitStages(cfg *Config) map[string]inspect.Stage {
	m := make(map[string]inspect.Stage, len(cfg.RateLimits))
	for _, l := range cfg.RateLimits {
		m[l.Name] = inspect.RateLimitStage(l.Count)
	}
	return m
}

// newChecker builds the DNS list client of cfg.
func newChecker(cfg *Config, deps dnsbl.Deps) (*dnsbl.Checker, error) {
	c, err := dnsbl.New(cfg.DNSBL, deps)
	if err != nil {
		return nil, &configError{err}
	}
	return c, nil
}

// listsAdapter presents package dnsbl to packages rules and inspect,
// which know lists only by name, kind and answer.
type listsAdapter struct{ c *dnsbl.Checker }

func (a listsAdapter) ListKind(name string) (inspect.ListKind, bool) {
	if a.c == nil {
		return 0, false
	}
	li, ok := a.c.List(name)
	return toInspectKind(li.Kind), ok
}

func toInspectKind(k dnsbl.Kind) inspect.ListKind {
	switch k {
	case dnsbl.KindIP:
		return inspect.KindIP
	case dnsbl.KindDomain:
		return inspect.KindDomain
	}
	return inspect.KindURI
}

func (a listsAdapter) Lookup(ctx context.Context, kind inspect.ListKind, key string) func(context.Context) []inspect.ListResult {
	k := dnsbl.KindURI
	switch kind {
	case inspect.KindIP:
		k = dnsbl.KindIP
	case inspect.KindDomain:
		k = dnsbl.KindDomain
	}
	p := a.c.Lookup(ctx, k, key)
	return func(ctx context.Context) []inspect.ListResult {
		rs := p.Wait(ctx)
		out := make([]inspect.ListResult, len(rs))
		for i, r := range rs {
			out[i] = inspect.ListResult{List: r.List, Key: r.Key, Listed: r.Listed, Allow: r.Allow,
				Reasons: r.Reasons, Weight: r.Weight, Text: r.Describe(), Err: r.Err, ErrKind: r.ErrKind,
				FailClosed: r.OnErrorClosed}
		}
		return out
	}
}

type inspectHit = inspect.Hit

// listKinds tells the rules loader which DNS lists the config has.
func listKinds(cfg *Config) rules.Lists {
	c, err := dnsbl.New(cfg.DNSBL, dnsbl.Deps{})
	if err != nil {
		return listsAdapter{}
	}
	return listsAdapter{c}
}
