package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"moat/inspect"
	"moat/inspect/authguard"
	"moat/inspect/ratelimit"
	"moat/inspect/smtp"
)

// SubmissionConfig is what moat does for the shielded server's own
// users on the submission listeners (listen_submission,
// listen_submission_tls), where AUTH is relayed to the upstream.
type SubmissionConfig struct {
	// Lockout counts failed AUTH attempts on the state store and locks
	// a client, its networks or a user name out for a cool-down.
	Lockout authguard.Config `yaml:"lockout"`
	// LockedReply is what a locked-out attempt hears: 454 (default,
	// 454 4.7.0, RFC 4954 §6) or 535 (535 5.7.8, as a wrong password).
	LockedReply int `yaml:"locked_reply"`
	// UserLimits are per-user sending limits: a stolen password must
	// not turn the server into a spam cannon.
	UserLimits UserLimits `yaml:"user_limits"`
	// Senders maps a user name to the addresses it may use in MAIL FROM
	// and From: ("alice@example.net", or "@example.net" for a whole
	// domain); the built-in rules refuse others. Empty: not checked.
	Senders map[string][]string `yaml:"senders"`
}

// UserLimits are rates like "100/1h", or "off".
type UserLimits struct {
	Messages   string `yaml:"messages"`
	Recipients string `yaml:"recipients"`
}

// The names of the per-user limits among the rate limits ({rate_limit:
// NAME}, logs, moat_ratelimit_decisions_total).
const (
	userMessagesLimit   = "submission_user_messages"
	userRecipientsLimit = "submission_user_recipients"
)

// submissionListeners reports whether any submission listener is
// configured.
func (c *Config) submissionListeners() bool {
	return len(c.ListenSubmission)+len(c.ListenSubmissionTLS) > 0
}

func (s *SubmissionConfig) defaults(c *Config) {
	s.Lockout.Defaults()
	if s.LockedReply == 0 {
		s.LockedReply = 454
	}
	if s.UserLimits.Messages == "" {
		s.UserLimits.Messages = "100/1h"
	}
	if s.UserLimits.Recipients == "" {
		s.UserLimits.Recipients = "500/1h"
	}
	if !c.submissionListeners() {
		return
	}
	// The per-user limits are rate limits keyed by auth_user: the same
	// store operations, the same 451 4.7.0, the same metric and
	// {rate_limit: NAME} for rules.
	for _, l := range []struct{ name, count, rate string }{
		{userMessagesLimit, ratelimit.CountMessages, s.UserLimits.Messages},
		{userRecipientsLimit, ratelimit.CountRecipients, s.UserLimits.Recipients},
	} {
		if l.rate == "off" || c.hasRateLimit(l.name) {
			continue
		}
		c.RateLimits = append(c.RateLimits, ratelimit.Limit{Name: l.name, Key: ratelimit.KeyAuthUser,
			Count: l.count, Rate: l.rate, Action: ratelimit.ActionTempfail})
	}
}

func (c *Config) hasRateLimit(name string) bool {
	for _, l := range c.RateLimits {
		if l.Name == name {
			return true
		}
	}
	return false
}

func (s *SubmissionConfig) validate() error {
	if err := s.Lockout.Validate(); err != nil {
		return err
	}
	if s.LockedReply != 454 && s.LockedReply != 535 {
		return fmt.Errorf("submission.locked_reply: %d is not 454 or 535", s.LockedReply)
	}
	for key, v := range map[string]string{"messages": s.UserLimits.Messages, "recipients": s.UserLimits.Recipients} {
		if v == "off" {
			continue
		}
		if _, err := ratelimit.ParseRate(v); err != nil {
			return fmt.Errorf("submission.user_limits.%s: %v (or \"off\")", key, err)
		}
	}
	for user, addrs := range s.Senders {
		for _, a := range addrs {
			if strings.Count(a, "@") != 1 || strings.HasSuffix(a, "@") {
				return fmt.Errorf("submission.senders.%s: %q is not an address or @domain", user, a)
			}
		}
	}
	return nil
}

// lockedReply is the reply to a locked-out AUTH.
func (s *SubmissionConfig) lockedReply() smtp.Reply {
	if s.LockedReply == 535 {
		return smtp.Replyf(535, "5.7.8", "Authentication credentials invalid")
	}
	return inspect.DefaultLockedReply
}

// engineSubmission wires the submission part of the engine: the lockout
// on the store (live only; analysis never writes one) and the sender
// map.
func engineSubmission(cfg *Config, d engineDeps) (inspect.SubmissionConfig, error) {
	sc := inspect.SubmissionConfig{LockedReply: cfg.Submission.lockedReply()}
	if len(cfg.Submission.Senders) > 0 {
		sc.Senders = cfg.Submission.Senders
	}
	if !cfg.submissionListeners() || !d.Live {
		return sc, nil
	}
	if d.Store == nil {
		d.Log.Warn("submission listeners without a state store: no AUTH lockout (configure state:)")
		return sc, nil
	}
	g, err := authguard.New(d.Store, cfg.Submission.Lockout, d.AuthGuard)
	if err != nil {
		return sc, err
	}
	sc.Guard = g
	if cfg.Upstream.TLS == "off" && !loopbackAddress(string(cfg.Upstream.Address)) {
		d.Log.Warn("submission passwords go to the upstream in clear: set upstream.tls (the upstream is not on loopback)",
			"upstream", string(cfg.Upstream.Address))
	}
	return sc, nil
}

// loopbackAddress reports whether host:port names a loopback address.
func loopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
