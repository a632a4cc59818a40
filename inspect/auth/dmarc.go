package auth

// DMARC (RFC 7489) in plain words: the domain in the message's From:
// field — the address a reader sees — publishes a policy in a TXT record
// at _dmarc.<domain>. A message passes when SPF or DKIM passed for a
// domain that "aligns" with the From: domain: the same name (strict), or
// a name under the same organizational domain, the registrable name
// below a public suffix (relaxed). A message that fails gets the
// published policy — none, quarantine or reject — which a receiver may
// apply to only pct percent of the failing messages.
//
// What moat does with a failing message is not decided here: the check
// returns the result and the policy, and the rules decide.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// DMARCInput is what a DMARC check needs from the message and the other
// checks.
type DMARCInput struct {
	// From holds the raw values of every From: header field of the
	// message (unfolded), as the message had them.
	From []string
	// SPF is the MAIL FROM identity's SPF result; its Domain is the
	// domain checked, which for a null sender is the HELO domain
	// (RFC 7489 §3.1.2, RFC 7208 §2.4).
	SPF SPFResult
	// DKIM holds every signature's result (Domain is its d=).
	DKIM []DKIMResult
	// SampleKey decides pct= sampling (RFC 7489 §6.6.4) by its hash, not
	// by a random number, so that a message checked live and offline
	// gets the same answer. The Message-ID is a good key; every message
	// with the same key falls on the same side of every pct=.
	SampleKey string
}

// DMARCOptions adjusts CheckDMARC.
type DMARCOptions struct {
	// OrgDomain returns the organizational domain of a domain
	// (RFC 7489 §3.2); nil means OrganizationalDomain. It is replaceable
	// for DMARCbis' DNS tree walk, which asks the DNS instead of a list.
	OrgDomain func(domain string) string
}

// maxFromDomains bounds the distinct From: domains checked: each costs up
// to two lookups, and a From: field listing dozens of domains is built to
// cost lookups, not to be read.
const maxFromDomains = 8

// OrganizationalDomain returns the organizational domain of domain
// (RFC 7489 §3.2): the public suffix plus one label, from the public
// suffix list. The domain is lower-cased, a trailing dot is removed and a
// U-label is converted to an A-label (the list is kept in A-labels). A
// domain that is itself a public suffix, or that the list cannot place,
// is its own organizational domain.
func OrganizationalDomain(domain string) string {
	d, ok := aLabelDomain(domain)
	if !ok {
		d = strings.ToLower(strings.TrimSuffix(domain, "."))
	}
	if d == "" {
		return d
	}
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// CheckDMARC evaluates the DMARC policy of the message's RFC5322.From
// domain (RFC 7489 §6.6): it extracts the author domain (§6.6.1),
// discovers the policy record (§6.6.3), checks identifier alignment
// (§3.1) against in.SPF and in.DKIM, and applies pct= sampling (§6.6.4).
//
// The result is none when there is no From: domain or no policy,
// temperror when the policy could not be looked up, permerror when the
// message has several From: fields (RFC 5322 §3.6) or the policy record
// is unusable, pass when SPF or DKIM passed for an aligned domain, and
// fail otherwise — unless an aligned identifier's own check ended in a
// temporary error (then temperror: a later attempt might pass) or is
// unknown (then unknown). Policy is filled whenever a record was found,
// pass or fail, so that logs show what a failure would have meant.
func CheckDMARC(ctx context.Context, r Resolver, in DMARCInput, opts DMARCOptions) DMARCResult {
	c := dmarcCheck{r: NewTracer(r), in: in, org: opts.OrgDomain}
	if c.org == nil {
		c.org = OrganizationalDomain
	}
	domains, res := authorDomains(in.From)
	if res != nil {
		return *res
	}
	if len(domains) == 1 {
		out := c.evaluate(ctx, domains[0])
		out.Lookups = c.r.Lookups()
		return out
	}
	// RFC 7489 §6.6.1: "The case of a syntactically valid multi-valued
	// RFC5322.From field presents a particular challenge. The process in
	// this case is to apply the DMARC check using each of those domains
	// found in the RFC5322.From field as the Author Domain and apply the
	// most strict policy selected among the checks that fail."
	var best DMARCResult
	for i, d := range domains {
		res := c.evaluate(ctx, d)
		if i == 0 || dmarcRank(res) > dmarcRank(best) {
			best = res
		}
	}
	best.Reason = "From: has " + strconv.Itoa(len(domains)) + " domains (" +
		strings.Join(domains, ", ") + "), strictest result kept (RFC 7489 §6.6.1): " + best.Reason
	best.Lookups = c.r.Lookups()
	return best
}

// dmarcRank orders the results of the domains of one From: field: a
// failure under the strictest policy first (§6.6.1), then the results
// that say a failure cannot be ruled out, then pass, then none.
func dmarcRank(r DMARCResult) int {
	switch r.Result {
	case Fail:
		switch r.Policy {
		case dmarc.PolicyReject:
			return 9
		case dmarc.PolicyQuarantine:
			return 8
		}
		return 7
	case TempError:
		return 6
	case Unknown:
		return 5
	case PermError:
		return 4
	case Pass:
		return 3
	}
	return 0
}

// authorDomains extracts the RFC5322.From domains to evaluate
// (RFC 7489 §6.6.1), A-labels, lower case, without duplicates. When there
// is nothing to evaluate it returns the result instead.
//
// §6.6.1: "In order to be processed by DMARC, a message typically needs
// to contain exactly one RFC5322.From domain (a single From: field with a
// single domain in it). Not all messages meet this requirement, and the
// handling of those that are forbidden under [MAIL] or that contain no
// meaningful domains is outside the scope of this document." moat's
// handling: no From: field is none (there is no author domain whose
// policy could apply); several From: fields — forbidden by RFC 5322
// §3.6, and the classic way to show a reader one author while a filter
// checks another — is permerror, so that the rules can refuse it.
func authorDomains(from []string) ([]string, *DMARCResult) {
	switch len(from) {
	case 0:
		return nil, &DMARCResult{Result: None, Reason: "no From: field"}
	case 1:
	default:
		return nil, &DMARCResult{Result: PermError, Reason: strconv.Itoa(len(from)) +
			" From: fields; RFC 5322 §3.6 allows exactly one"}
	}
	var domains []string
	seen := map[string]bool{}
	for _, addr := range fromAddresses(from[0]) {
		at := strings.LastIndexByte(addr, '@')
		if at < 0 {
			continue
		}
		d, ok := aLabelDomain(addr[at+1:])
		if !ok || seen[d] {
			continue
		}
		seen[d] = true
		domains = append(domains, d)
	}
	switch {
	case len(domains) == 0:
		return nil, &DMARCResult{Result: None, Reason: "no From: domain"}
	case len(domains) > maxFromDomains:
		return nil, &DMARCResult{Result: PermError, Reason: "From: has " + strconv.Itoa(len(domains)) +
			" domains; at most " + strconv.Itoa(maxFromDomains) + " are checked"}
	}
	return domains, nil
}

// fromAddresses returns the addr-specs of a From: field value. When the
// value is not a valid address list (RFC 5322 §3.4) — common in spam,
// and an author address is still what a reader is shown — it falls back
// to every <addr-spec> in angle brackets, or, with none, to every
// whitespace- or comma-separated word holding an "@".
func fromAddresses(value string) []string {
	if list, err := mail.ParseAddressList(value); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	var out []string
	for rest := value; ; {
		lt := strings.IndexByte(rest, '<')
		if lt < 0 {
			break
		}
		gt := strings.IndexByte(rest[lt:], '>')
		if gt < 0 {
			break
		}
		out = append(out, strings.TrimSpace(rest[lt+1:lt+gt]))
		rest = rest[lt+gt+1:]
	}
	if len(out) > 0 {
		return out
	}
	for _, w := range strings.FieldsFunc(value, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n'
	}) {
		if strings.Contains(w, "@") {
			out = append(out, strings.Trim(w, `"'()[];:`))
		}
	}
	return out
}

// aLabelDomain returns the form in which domains are compared and
// looked up: lower case, no trailing dot, and A-labels (RFC 7489 §6.6.1:
// "If the domain is a U-label, the domain name MUST be converted to an
// A-label"). ok is false for what is not a domain name: empty labels,
// over-long names, or characters no host name has (a domain literal such
// as [192.0.2.1] is not a domain).
func aLabelDomain(s string) (string, bool) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" || len(s) > 253*4 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(s)
			if err != nil {
				return "", false
			}
			s = a
			break
		}
	}
	s = strings.ToLower(s)
	if len(s) > 253 {
		return "", false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return s, true
}

// dmarcCheck is one CheckDMARC call.
type dmarcCheck struct {
	r   *Tracer
	in  DMARCInput
	org func(string) string
}

// orgDomain is the organizational domain of an already normalized
// domain, normalized again in case a replacement OrgDomain is careless.
func (c *dmarcCheck) orgDomain(d string) string {
	o := c.org(d)
	if n, ok := aLabelDomain(o); ok {
		return n
	}
	return d
}

// evaluate runs DMARC for one author domain.
func (c *dmarcCheck) evaluate(ctx context.Context, domain string) DMARCResult {
	res := DMARCResult{Domain: domain, OrgDomain: c.orgDomain(domain)}

	// Policy discovery, RFC 7489 §6.6.3.
	at := domain
	txt, err := c.lookupPolicy(ctx, at)
	if err == nil && txt == nil && res.OrgDomain != domain {
		// Step 3: no record at the author domain; ask the
		// organizational domain.
		at = res.OrgDomain
		txt, err = c.lookupPolicy(ctx, at)
	}
	switch {
	case err != nil:
		// §6.6.3 leaves DNS errors to the receiver; a policy that could
		// not be read may exist, so this is no "none".
		res.Result = TempError
		res.Reason = err.Error()
		return res
	case txt == nil:
		res.Result = None
		res.Reason = "no DMARC record at _dmarc." + domain
		if at != domain {
			res.Reason += " or _dmarc." + at
		}
		return res
	case len(txt) > 1:
		// Step 5: "If the remaining set contains multiple records or no
		// records, policy discovery terminates and DMARC processing is
		// not applied to this message."
		res.Result = None
		res.Reason = strconv.Itoa(len(txt)) + " DMARC records at _dmarc." + at + ", none applies (RFC 7489 §6.6.3)"
		return res
	}
	rec, note, err := parseDMARCRecord(txt[0])
	if err != nil {
		res.Result = PermError
		res.Reason = "_dmarc." + at + ": " + err.Error()
		return res
	}

	// Which policy: p= for the domain that published it, sp= for its
	// subdomains (RFC 7489 §6.3: sp "applies only to subdomains of the
	// domain queried and not to the domain itself"; absent, p= applies).
	published := rec.Policy
	if at != domain && rec.SubdomainPolicy != "" {
		published = rec.SubdomainPolicy
	}
	res.Published = string(published)
	res.Policy = res.Published
	if rec.Percent != nil && !pctSampled(c.in.SampleKey, *rec.Percent) {
		// §6.6.4: a message not selected gets the next lower policy.
		res.Policy = string(lowerPolicy(published))
	}

	// Identifier alignment, §3.1.
	var spfNote, dkimNote string
	var uncertain Result
	spf := c.in.SPF
	if d, ok := aLabelDomain(spf.Domain); ok && c.aligned(d, domain, rec.SPFAlignment) {
		switch spf.Result {
		case Pass:
			res.SPFAligned = true
			spfNote = "SPF " + d
		case TempError, Unknown:
			uncertain = dmarcWorse(uncertain, spf.Result)
		}
	}
	for _, k := range c.in.DKIM {
		d, ok := aLabelDomain(k.Domain)
		if !ok || !c.aligned(d, domain, rec.DKIMAlignment) {
			continue
		}
		// Only a passing signature counts (§3.1.1, §4.2): a failing
		// signature of the right domain authenticates nothing.
		switch k.Result {
		case Pass:
			if !res.DKIMAligned {
				dkimNote = "DKIM d=" + d
			}
			res.DKIMAligned = true
		case TempError, Unknown:
			uncertain = dmarcWorse(uncertain, k.Result)
		}
	}
	modes := "adkim=" + string(rec.DKIMAlignment) + " aspf=" + string(rec.SPFAlignment)
	switch {
	case res.SPFAligned || res.DKIMAligned:
		res.Result = Pass
		var which []string
		for _, n := range []string{spfNote, dkimNote} {
			if n != "" {
				which = append(which, n)
			}
		}
		res.Reason = strings.Join(which, " and ") + " aligned with " + domain + " (" + modes + ")"
	case uncertain != "":
		// RFC 7489 §11.2: temperror, "a later attempt might produce a
		// final result" — an aligned identifier whose own check could
		// not finish might have passed.
		res.Result = uncertain
		res.Reason = "no aligned pass for " + domain + ", but an aligned identifier's check was " + string(uncertain) + " (" + modes + ")"
	default:
		res.Result = Fail
		res.Reason = "no SPF or DKIM pass aligned with " + domain + " (" + modes + ")"
	}
	if res.Policy != res.Published && res.Result != Pass {
		res.Reason += "; not in pct=" + strconv.Itoa(*rec.Percent) + " sample, " + res.Published + " lowered to " + res.Policy
	}
	if note != "" {
		res.Reason += "; " + note
	}
	return res
}

// dmarcWorse returns TempError over Unknown over nothing.
func dmarcWorse(a, b Result) Result {
	if a == TempError || b == TempError {
		return TempError
	}
	return b
}

// aligned reports identifier alignment of an authenticated domain with
// the author domain (RFC 7489 §3.1.1, §3.1.2): strict mode wants the same
// name, relaxed mode the same organizational domain.
func (c *dmarcCheck) aligned(authenticated, author string, mode dmarc.AlignmentMode) bool {
	if authenticated == author {
		return true
	}
	return mode != dmarc.AlignmentStrict && c.orgDomain(authenticated) == c.orgDomain(author)
}

// lookupPolicy asks for the DMARC records at _dmarc.<domain> and keeps
// those that begin with the version tag (§6.6.3 steps 1–2, 3–4). No
// record, or no DMARC record, is nil and no error.
func (c *dmarcCheck) lookupPolicy(ctx context.Context, domain string) ([]string, error) {
	name := "_dmarc." + domain + "."
	txts, err := c.r.LookupTXT(ctx, name)
	if err != nil {
		if IsNotFound(err) {
			return nil, nil
		}
		return nil, &dmarcLookupError{name: name, err: err}
	}
	var out []string
	for _, t := range txts {
		if isDMARCRecord(t) {
			out = append(out, t)
		}
	}
	return out, nil
}

type dmarcLookupError struct {
	name string
	err  error
}

func (e *dmarcLookupError) Error() string { return "TXT " + e.name + ": " + e.err.Error() }
func (e *dmarcLookupError) Unwrap() error { return e.err }

// isDMARCRecord reports whether a TXT record starts with the version tag
// of DMARC1 (RFC 7489 §6.6.3 step 2; §6.4: dmarc-version = "v" *WSP "="
// *WSP %x44.4d.41.52.43.31, so "DMARC1" is case-sensitive while the tag
// name, a quoted ABNF string, is not).
func isDMARCRecord(txt string) bool {
	if txt == "" || txt[0]|0x20 != 'v' {
		return false
	}
	s := strings.TrimLeft(txt[1:], " \t")
	if !strings.HasPrefix(s, "=") {
		return false
	}
	s = strings.TrimLeft(s[1:], " \t")
	if !strings.HasPrefix(s, "DMARC1") {
		return false
	}
	s = strings.TrimLeft(s[len("DMARC1"):], " \t")
	return s == "" || s[0] == ';'
}

// dmarcTagOrder is the order in which parseDMARCRecord hands the
// optional tags on to dmarc.Parse.
var dmarcTagOrder = []string{"adkim", "aspf", "fo", "pct", "rf", "ri", "rua", "ruf"}

// errNoValidPolicy: §6.6.3 step 6.2, no DMARC processing.
type errNoValidPolicy string

func (e errNoValidPolicy) Error() string { return string(e) }

// parseDMARCRecord reads a DMARC record (RFC 7489 §6.3, §6.4) the way the
// RFC asks, with dmarc.Parse judging each tag's value:
//
//   - "Unknown tags MUST be ignored. Syntax errors in the remainder of
//     the record SHOULD be discarded in favor of default values (if any)
//     or ignored outright" (§6.3): a malformed tag, or an invalid value
//     of an optional tag, is dropped and noted, not fatal. (dmarc.Parse
//     alone refuses the whole record for, say, pct=150.)
//   - A missing or invalid p=, or an invalid sp= (§6.6.3 step 6): with a
//     syntactically valid rua= URI the record reads as p=none (6.1);
//     without, "the Mail Receiver applies no DMARC processing" (6.2).
//     moat reports that as permerror — RFC 7489 §11.2's "a
//     syntactically incorrect DMARC record" — with no policy, so that
//     nothing is enforced but the broken record is visible.
//
// Tag names and the keyword values are matched case-insensitively
// (RFC 5234 §2.3: ABNF quoted strings are); the first occurrence of a
// tag wins.
func parseDMARCRecord(txt string) (*dmarc.Record, string, error) {
	tags := map[string]string{}
	var dropped []string
	for _, spec := range strings.Split(txt, ";") {
		if strings.TrimSpace(spec) == "" {
			continue
		}
		k, v, ok := strings.Cut(spec, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			dropped = append(dropped, strings.TrimSpace(spec))
			continue
		}
		if _, dup := tags[k]; dup {
			dropped = append(dropped, k)
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "p", "sp", "adkim", "aspf", "fo", "rf":
			v = strings.ToLower(v)
		}
		tags[k] = v
	}

	valid := func(tag, value string) bool {
		_, err := dmarc.Parse("v=DMARC1; p=none; " + tag + "=" + value)
		return err == nil
	}
	p, hasP := tags["p"]
	sp, hasSP := tags["sp"]
	var b strings.Builder
	b.WriteString("v=DMARC1")
	var note string
	switch {
	case hasP && valid("p", p) && (!hasSP || valid("sp", sp)):
		b.WriteString("; p=" + p)
		if hasSP {
			b.WriteString("; sp=" + sp)
		}
	case validRUA(tags["rua"]):
		b.WriteString("; p=none")
		note = "no valid p=/sp=, read as p=none for its rua= (RFC 7489 §6.6.3)"
	case !hasP:
		return nil, "", errNoValidPolicy("DMARC record has no p= tag (RFC 7489 §6.6.3: no DMARC processing)")
	default:
		return nil, "", errNoValidPolicy("DMARC record has an invalid p= or sp= (RFC 7489 §6.6.3: no DMARC processing)")
	}
	for _, k := range dmarcTagOrder {
		v, ok := tags[k]
		if !ok {
			continue
		}
		if !valid(k, v) {
			dropped = append(dropped, k)
			continue
		}
		b.WriteString("; " + k + "=" + v)
	}
	rec, err := dmarc.Parse(b.String())
	if err != nil {
		// Every part was accepted on its own; not expected.
		return nil, "", errNoValidPolicy("DMARC record: " + err.Error())
	}
	if len(dropped) > 0 {
		if note != "" {
			note += "; "
		}
		if len(dropped) > 5 {
			dropped = append(dropped[:5], "…")
		}
		for i, d := range dropped {
			if len(d) > 20 {
				dropped[i] = d[:20] + "…"
			}
		}
		note += "ignored malformed or repeated tags " + strings.Join(dropped, ", ") + " (RFC 7489 §6.3)"
	}
	return rec, note, nil
}

// validRUA reports whether a rua= value holds at least one syntactically
// valid reporting URI (§6.6.3 step 6.1; §6.2: a URI with an optional
// "!size" suffix).
func validRUA(v string) bool {
	for _, u := range strings.Split(v, ",") {
		u = strings.TrimSpace(u)
		if i := strings.LastIndexByte(u, '!'); i >= 0 {
			u = u[:i]
		}
		if p, err := url.Parse(u); err == nil && p.Scheme != "" && p.Opaque+p.Host+p.Path != "" {
			return true
		}
	}
	return false
}

// pctSampled reports whether a message falls within the pct percent that
// get the published policy (§6.6.4). The sample is a hash of key, so the
// same message is judged alike every time it is checked.
func pctSampled(key string, pct int) bool {
	switch {
	case pct >= 100:
		return true
	case pct <= 0:
		return false
	}
	h := sha256.Sum256([]byte(key))
	return binary.BigEndian.Uint64(h[:8])%100 < uint64(pct)
}

// lowerPolicy is the next policy down (RFC 7489 §6.3, pct: "reject"
// becomes "quarantine", "quarantine" becomes "none").
func lowerPolicy(p dmarc.Policy) dmarc.Policy {
	switch p {
	case dmarc.PolicyReject:
		return dmarc.PolicyQuarantine
	}
	return dmarc.PolicyNone
}
