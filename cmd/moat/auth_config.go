package main

import (
	"fmt"
	"strings"
	"time"

	"moat/dnsbl"
	"moat/inspect"
)

// AuthConfig is the auth section: sender authentication (SPF, DKIM, ARC,
// DMARC) and the Authentication-Results header field.
type AuthConfig struct {
	// Enabled turns the checks on. Off by default: they ask the DNS for
	// every message, and a machine's resolver is the operator's choice
	// to make (dnsbl.resolver), not moat's to assume.
	Enabled bool `yaml:"enabled"`
	// AuthservID names moat in the Authentication-Results fields it adds
	// and removes as forged (RFC 8601 §2.5, §5); default: hostname.
	AuthservID string `yaml:"authserv_id"`
	// DMARC: what to do with mail that fails DMARC — reject (honour
	// p=reject with 550, tag p=quarantine), quarantine (tag both) or
	// monitor (report only). Default reject.
	DMARC string `yaml:"dmarc"`
	// MaxSignatures bounds the DKIM signatures verified per message
	// (default 5).
	MaxSignatures int `yaml:"max_signatures"`
	// Timeout bounds each check's DNS work (default 20s).
	Timeout time.Duration `yaml:"timeout"`
	// ARCTrustedSealers are the ARC sealers (mailing lists, forwarders)
	// whose passing chain the rules trust (fact arc_trusted).
	ARCTrustedSealers []string `yaml:"arc_trusted_sealers"`
}

func (a *AuthConfig) defaults(hostname string) {
	if a.AuthservID == "" {
		a.AuthservID = hostname
	}
	if a.DMARC == "" {
		a.DMARC = inspect.DMARCReject
	}
	if a.MaxSignatures == 0 {
		a.MaxSignatures = 5
	}
	if a.Timeout == 0 {
		a.Timeout = 20 * time.Second
	}
}

func (a *AuthConfig) validate() error {
	switch a.DMARC {
	case inspect.DMARCReject, inspect.DMARCQuarantine, inspect.DMARCMonitor:
	default:
		return fmt.Errorf("auth.dmarc: %q is not reject, quarantine or monitor", a.DMARC)
	}
	if a.MaxSignatures < 1 || a.MaxSignatures > 50 {
		return fmt.Errorf("auth.max_signatures: %d is not between 1 and 50", a.MaxSignatures)
	}
	if a.Timeout < 0 || a.Timeout > 5*time.Minute {
		return fmt.Errorf("auth.timeout: %v is not between 0 and 5m", a.Timeout)
	}
	// The id goes into a header field: RFC 8601 §2.2 makes it a value
	// (a token, in practice a host name).
	if a.AuthservID == "" || strings.ContainsAny(a.AuthservID, " \t\r\n;()\"\\") {
		return fmt.Errorf("auth.authserv_id: %q is not a host name", a.AuthservID)
	}
	for _, s := range a.ARCTrustedSealers {
		if s == "" || strings.ContainsAny(s, " \t\r\n;@") {
			return fmt.Errorf("auth.arc_trusted_sealers: %q is not a domain", s)
		}
	}
	return nil
}

// engineAuth is the engine's view of the auth section, asking the DNS
// through lists' client; nil when the checks are off. recorded: the DNS
// knows only a capture's answers.
func engineAuth(cfg *Config, lists *dnsbl.Checker, m *inspect.AuthMetrics, recorded bool) *inspect.AuthConfig {
	if !cfg.Auth.Enabled || lists == nil {
		return nil
	}
	a := cfg.Auth
	return &inspect.AuthConfig{
		Resolver:       lists.DNS(),
		AuthservID:     a.AuthservID,
		MaxSignatures:  a.MaxSignatures,
		Timeout:        a.Timeout,
		Recorded:       recorded,
		DMARC:          a.DMARC,
		TrustedSealers: a.ARCTrustedSealers,
		Metrics:        m,
	}
}
