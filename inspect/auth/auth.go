// Package auth checks who sent a message: SPF (RFC 7208) for the envelope
// sender and the HELO name, DKIM (RFC 6376, RFC 8301, RFC 8463), ARC
// (RFC 8617) and DMARC (RFC 7489), and writes the verdicts as an
// Authentication-Results header field (RFC 8601).
//
// The checks know nothing of sessions, sockets or rules: they take the
// identities and the message bytes, ask the DNS through a Resolver, and
// return results. Package inspect starts them as early as their inputs
// are known and turns the results into facts.
package auth

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Result is the outcome of one check, in the words of the RFCs' result
// registries (RFC 8601 §2.7), plus Unknown: the check could not be made
// because a DNS answer it needed is not known (offline, not recorded),
// which must never read as a failure.
type Result string

// The results. Not every check uses every one: SPF has none, neutral,
// pass, fail, softfail, temperror and permerror (RFC 7208 §2.6); DKIM
// has none, pass, fail, policy, neutral, temperror and permerror
// (RFC 8601 §2.7.1); DMARC none, pass, fail, temperror and permerror
// (RFC 7489 §11.2); ARC none, pass and fail (RFC 8617 §4.4).
const (
	None      Result = "none"
	Neutral   Result = "neutral"
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	Policy    Result = "policy"
	TempError Result = "temperror"
	PermError Result = "permerror"
	Unknown   Result = "unknown"
)

// Resolver is the DNS the checks ask. moat's implementation is package
// dnsbl's client (its resolvers, cache, timeouts and metrics); offline it
// answers from the DNS answers recorded in a capture; tests use a real
// authoritative server on loopback.
//
// A name or record that does not exist (NXDOMAIN, or NOERROR with no
// answer of the type) is an error for which IsNotFound reports true;
// every other error is a temporary failure.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	// LookupIP returns the A and AAAA addresses of host.
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
	// LookupPTR returns the names of ip's PTR records.
	LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error)
}

// IsNotFound reports whether err says a name or record does not exist,
// as opposed to a lookup that failed.
func IsNotFound(err error) bool {
	var nf interface{ IsNotFound() bool }
	if errors.As(err, &nf) {
		return nf.IsNotFound()
	}
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// NotFound is the error a Resolver returns for a name or record that does
// not exist.
type NotFound struct{ Name string }

func (e NotFound) Error() string    { return e.Name + ": no such record" }
func (e NotFound) IsNotFound() bool { return true }

// Lookup is one DNS question a check asked and what came back, so that an
// operator can see why a check came out as it did (`moat auth check`).
type Lookup struct {
	Type   string   `json:"type"`             // TXT, MX, A/AAAA, PTR
	Name   string   `json:"name"`             // the name asked
	Answer []string `json:"answer,omitempty"` // the records, as text
	Err    string   `json:"error,omitempty"`  // "not found", or the failure
}

// SPFResult is the SPF verdict for one identity (RFC 7208 §2.3, §2.4).
type SPFResult struct {
	Identity string   `json:"identity"` // "mailfrom" or "helo"
	Domain   string   `json:"domain"`   // the domain checked
	Result   Result   `json:"result"`
	Reason   string   `json:"reason,omitempty"` // why, for logs and `moat auth check`
	Lookups  []Lookup `json:"lookups,omitempty"`
}

// DKIMResult is the verdict on one DKIM-Signature field, in the order the
// fields appear in the message.
type DKIMResult struct {
	Result     Result   `json:"result"`
	Domain     string   `json:"domain"`               // d=
	Selector   string   `json:"selector"`             // s=
	Algorithm  string   `json:"algorithm"`            // a=, e.g. rsa-sha256, ed25519-sha256
	Identifier string   `json:"identifier,omitempty"` // i=, or @d= when absent
	Reason     string   `json:"reason,omitempty"`
	Lookups    []Lookup `json:"lookups,omitempty"`
}

// ARCResult is the verdict on a message's ARC chain (RFC 8617 §5.2).
type ARCResult struct {
	// Result is the chain validation status: none (no ARC sets), pass
	// or fail.
	Result Result `json:"result"`
	// Instances is the number of ARC sets in the chain.
	Instances int `json:"instances"`
	// OldestPass is the lowest instance whose ARC-Message-Signature still
	// verifies (RFC 8617 §5.2, step 6 of validation); 0 when none is
	// known.
	OldestPass int `json:"oldest_pass,omitempty"`
	// Sealer is the d= of the newest ARC-Seal: the intermediary that
	// vouches for the chain (a mailing list, a forwarder).
	Sealer string `json:"sealer,omitempty"`
	// Sealers are the d= of every instance's ARC-Seal, oldest first.
	Sealers []string `json:"sealers,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Lookups []Lookup `json:"lookups,omitempty"`
}

// DMARCResult is the DMARC verdict for the RFC5322.From domain.
type DMARCResult struct {
	Result Result `json:"result"`
	// Domain is the From: domain the policy was looked up for; OrgDomain
	// is its organizational domain (RFC 7489 §3.2).
	Domain    string `json:"domain,omitempty"`
	OrgDomain string `json:"org_domain,omitempty"`
	// Policy is the policy that applies to Domain: none, quarantine or
	// reject (p=, or sp= for a subdomain), after pct= sampling has
	// chosen (RFC 7489 §6.6.4): a message outside the sampled share gets
	// the next policy down.
	Policy string `json:"policy,omitempty"`
	// Published is the policy as published, before pct= sampling.
	Published string `json:"published,omitempty"`
	// SPFAligned and DKIMAligned say which identifier aligned (§3.1).
	SPFAligned  bool     `json:"spf_aligned"`
	DKIMAligned bool     `json:"dkim_aligned"`
	Reason      string   `json:"reason,omitempty"`
	Lookups     []Lookup `json:"lookups,omitempty"`
}

// Results are every sender-authentication verdict on one message.
type Results struct {
	SPF   SPFResult    `json:"spf"`  // the MAIL FROM identity
	HELO  SPFResult    `json:"helo"` // the HELO identity
	DKIM  []DKIMResult `json:"dkim,omitempty"`
	ARC   ARCResult    `json:"arc"`
	DMARC DMARCResult  `json:"dmarc"`
}
