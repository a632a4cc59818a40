package dnsbl

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// Result is what one list said about one key.
type Result struct {
	List, Zone string
	Kind       Kind
	Key        string // the key in normal form ("192.0.2.1", "example.com")

	// Listed is true when an answer matched the code table. On an
	// allowlist (Allow) a listing is good news.
	Listed bool
	Allow  bool
	// Answers are the A records the list answered, also when none
	// matched the code table. The slice is shared: do not modify it.
	Answers []netip.Addr
	// Reasons name the code rules that matched, in code table order.
	// The slice is shared: do not modify it.
	Reasons []string
	// Weight is the sum of the matching rules' weights; negative on an
	// allowlist.
	Weight float64
	// TXT is the list's TXT record for a listed key (txt: true),
	// reduced to printable ASCII.
	TXT string

	// Err is a failed lookup: timeout, SERVFAIL, REFUSED, the list's
	// error codes, an unhealthy list. A failure is never a listing.
	Err error
	// ErrKind names the failure for metrics and logs: one of the
	// ErrKind constants.
	ErrKind string
	// OnErrorClosed is set on a failed result of an on_error: closed
	// list: the engine should answer with a temporary failure rather
	// than go on as if not listed. Never set for an unhealthy list, whose
	// results are ignored.
	OnErrorClosed bool
	// Cached is true when the result came from the cache.
	Cached bool

	hideZone bool
}

// Describe says what the list said in words fit for a reject text:
// "listed on zen.spamhaus.org (sbl)", with the list's TXT after a colon
// when there is one. With hide_zone neither the zone nor the TXT (which
// usually names the list's web site) appear: "listed (sbl)".
func (r Result) Describe() string {
	switch {
	case r.Err != nil:
		return "lookup failed (" + r.ErrKind + ")"
	case !r.Listed:
		return "not listed"
	}
	var b strings.Builder
	b.WriteString("listed")
	if !r.hideZone {
		b.WriteString(" on ")
		b.WriteString(r.Zone)
	}
	if len(r.Reasons) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(r.Reasons, ", "))
		b.WriteString(")")
	}
	if r.TXT != "" && !r.hideZone {
		b.WriteString(": ")
		b.WriteString(r.TXT)
	}
	return b.String()
}

// base is a result of l for key with nothing known yet: not listed.
func (l *list) base(key string) Result {
	return Result{List: l.name, Zone: l.zone, Kind: l.kind, Key: key, Allow: l.allow, hideZone: l.hide}
}

// fail turns r into a failure of kind.
func (l *list) fail(r *Result, kind string, err error) {
	r.Listed, r.Reasons, r.Weight, r.TXT = false, nil, 0, ""
	r.Err = fmt.Errorf("dnsbl %s (%s): %w", l.name, l.zone, err)
	r.ErrKind = kind
	r.OnErrorClosed = l.closed && kind != ErrKindUnhealthy && kind != ErrKindCanceled
}

// classify maps res.Answers through the code table. Answers outside
// 127.0.0.0/8 (RFC 5782 §2.3: listings are in 127/8; anything else comes
// from a resolver rewriting NXDOMAIN), answers matching an error code and
// answers in 127.255.255.0/24 that no address rule of the table maps (see
// refusalRange) are failures, whatever else was answered. Without listing
// entries in the table any other answer is a listing, "listed" with weight
// 1; with them only matching answers are, each matching rule adding its
// reason once and its weight once.
func (l *list) classify(res *Result) (string, error) {
	for _, a := range res.Answers {
		if !a.Is4() || a.As4()[0] != 127 {
			return ErrKindBadAnswer, fmt.Errorf("%w: %s", ErrBadAnswer, a)
		}
	}
	for _, r := range l.codes {
		if r.Error && matchAny(r.Key, res.Answers) {
			return ErrKindBlockedResolver, fmt.Errorf("%w: answer %s", ErrBlocked, res.Answers[0])
		}
	}
	for _, a := range res.Answers {
		if refusalRange.Contains(a) && !l.mapsAddress(a) {
			return ErrKindBlockedResolver, fmt.Errorf("%w: answer %s (127.255.255.0/24 answers are about the query)", ErrBlocked, a)
		}
	}
	if !l.listing {
		res.Listed, res.Reasons, res.Weight = true, []string{"listed"}, l.sign(1)
		return "", nil
	}
	for _, r := range l.codes {
		if r.Error || !matchAny(r.Key, res.Answers) {
			continue
		}
		res.Listed = true
		res.Weight += l.sign(r.Weight)
		if !contains(res.Reasons, r.Reason) {
			res.Reasons = append(res.Reasons, r.Reason)
		}
	}
	return "", nil
}

// refusalRange is where DNS lists answer about the query instead of the
// queried key: Spamhaus returns 127.255.255.252 (typo in the zone name),
// .254 (query through a public resolver) and .255 (excessive queries) on
// every zone, and reserves the whole /24 for such answers (see
// spamhausErrors), a convention other lists and mirrors follow. RFC 5782
// §2.3 leaves the meaning of answers to each list, so a list's own code
// table may still map an address here to a listing; when it does not, such
// an answer is the list refusing the query — a list error — and never "not
// listed", nor, on a list without codes, "listed".
var refusalRange = netip.MustParsePrefix("127.255.255.0/24")

// mapsAddress reports whether a listing rule of l's code table written as an
// address pattern matches a. Bitmask rules ("bit:N") do not count: they
// decode the last octet of a list's 127.0.0.x answers, and the last octet
// of 127.255.255.254 has nearly every bit set, so URIBL's table would read
// Spamhaus-style refusals as black, grey and red at once.
func (l *list) mapsAddress(a netip.Addr) bool {
	for _, r := range l.codes {
		if !r.Error && r.Key.mask == 0 && r.Key.Match(a) {
			return true
		}
	}
	return false
}

func (l *list) sign(w float64) float64 {
	if l.allow {
		return -math.Abs(w)
	}
	return w
}

func matchAny(k CodeKey, as []netip.Addr) bool {
	for _, a := range as {
		if k.Match(a) {
			return true
		}
	}
	return false
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
