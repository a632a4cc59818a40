package auth

// SPF (RFC 7208) asks whether the client's IP address may send mail for a
// domain. The domain publishes a TXT record "v=spf1 ..." whose terms name
// the hosts that may (ip4:, ip6:, a, mx, include:, ...) and what to say
// about all others (-all, ~all, ?all). A receiver checks two identities:
// the HELO name (§2.3) and the domain of the MAIL FROM address (§2.4).
//
// The evaluation itself — terms, macros, the limits of §4.6.4 — is
// blitiri.com.ar/go/spf. This file chooses the identity, refuses what is
// not a domain name before any lookup (§4.3), gives the library moat's
// Resolver, holds every SPF record the library fetches to the grammar of
// §12 before the library reads it (spf_syntax.go: the library alone sees
// only the terms it evaluates), bounds the time, and says in a few words
// why.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"golang.org/x/net/idna"
)

// spfTimeout bounds one check when the caller's context has no deadline.
// RFC 7208 §4.6.4: a limit on the time check_host() may take SHOULD allow
// at least 20 seconds, and a check that exceeds it gives temperror.
const spfTimeout = 20 * time.Second

// CheckSPFMailFrom checks the MAIL FROM identity (RFC 7208 §2.4): may ip
// send mail for the domain of mailFrom? mailFrom is the reverse-path's
// address without angle brackets; a null reverse-path ("") checks
// postmaster@<helo> (§2.4). helo is the client's HELO or EHLO argument, as
// sent; it also fills the %{h} macro (§7.3).
//
// The result is none when the domain is not a domain name (§4.3) or
// publishes no SPF record. The DNS lookup and void-lookup limits are
// RFC 7208's (§4.6.4: 10 and 2). The check ends by ctx's deadline, or
// after 20 s if ctx has none; a check cut short is a temperror.
func CheckSPFMailFrom(ctx context.Context, r Resolver, ip netip.Addr, helo, mailFrom string) SPFResult {
	res := SPFResult{Identity: "mailfrom"}
	local, domain := "postmaster", helo
	if mailFrom != "" {
		at := strings.LastIndexByte(mailFrom, '@')
		if at < 0 {
			res.Result, res.Reason = None, "MAIL FROM has no domain"
			return res
		}
		local, domain = mailFrom[:at], mailFrom[at+1:]
	}
	// §4.3: a sender without a local-part is checked as postmaster. The
	// library splits the sender at its first "@", so a quoted local-part
	// holding one ("a@b"@example.com) would make it check the wrong
	// domain: such a sender is checked as postmaster too, so that the
	// domain is always the right one.
	if local == "" || strings.Contains(local, "@") {
		local = "postmaster"
	}
	return checkSPF(ctx, r, ip, res, local, domain, helo)
}

// CheckSPFHelo checks the HELO identity (RFC 7208 §2.3): may ip send mail
// as the host helo? An address literal ("[192.0.2.1]") or a name that is
// not a fully qualified domain name gives none (§2.3, §4.3). The HELO
// name is the <sender>, which, having no local-part, is postmaster@<helo>
// (§4.3). Limits and time bound as for CheckSPFMailFrom.
func CheckSPFHelo(ctx context.Context, r Resolver, ip netip.Addr, helo string) SPFResult {
	return checkSPF(ctx, r, ip, SPFResult{Identity: "helo"}, "postmaster", helo, helo)
}

// checkSPF runs check_host() (RFC 7208 §4) for local@domain, filling res.
func checkSPF(ctx context.Context, r Resolver, ip netip.Addr, res SPFResult, local, domain, helo string) SPFResult {
	res.Domain = domain
	d, why := spfDomain(domain)
	if why != "" {
		res.Result, res.Reason = None, why
		return res
	}
	res.Domain = d
	if !ip.IsValid() {
		// A caller's mistake, not the sender's: no lookup is made. The
		// library answers permerror for it too.
		res.Result, res.Reason = PermError, "invalid client IP address"
		return res
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, spfTimeout)
		defer cancel()
	}
	tr := NewTracer(nilMXFilter{r})
	lr := &spfResolver{r: tr}
	var p spfPath
	result, err := spf.CheckHostWithSender(
		net.IP(ip.Unmap().WithZone("").AsSlice()), helo, local+"@"+d,
		spf.WithContext(ctx), spf.WithResolver(lr), spf.WithTraceFunc(p.trace))
	res.Lookups = tr.Lookups()
	if lr.ctxErr != nil {
		// §4.6.4: a check that runs out of time is a temperror, whatever
		// the library made of the lookups that failed (a failed PTR
		// lookup, for one, is only a mechanism that does not match).
		res.Result = TempError
		res.Reason = "time limit exceeded"
		if errors.Is(lr.ctxErr, context.Canceled) {
			res.Reason = "check cancelled"
		}
		return res
	}
	if lr.syntaxErr != nil {
		// RFC 7208 §4.6: a record with a syntax error anywhere is a
		// permerror, and so is the check that evaluates it through
		// include: (§5.2) or redirect= (§6.1). The library already
		// says permerror for the error LookupTXT gave it; this holds
		// whatever a later version makes of it.
		result = spf.PermError
	}
	res.Result = spfResult(result)
	res.Reason = p.reason(result, err)
	return res
}

// spfDomain returns domain as the check will use it — A-labels, lower
// case, no trailing dot — or, when it cannot be checked, why not. RFC 7208
// §4.3: a malformed domain (a label longer than 63 octets, an empty
// label, ...) or one that is not multi-label gives none, with no lookup;
// internationalized names are checked as A-labels. A name in SMTP is a
// host name (RFC 5321 §4.1.2); beyond letters, digits and hyphens only the
// underscore, common in the wild, is taken: anything else would reach the
// resolver as text it may read as escapes.
func spfDomain(domain string) (string, string) {
	if strings.HasPrefix(domain, "[") {
		return "", "address literal, not a domain name"
	}
	d := strings.TrimSuffix(domain, ".")
	if d == "" {
		return "", "no domain"
	}
	if len(d) > 4*253 { // too long even as UTF-8 for the A-labels to fit
		return "", "malformed domain name"
	}
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", "malformed domain name"
			}
			d = a
			break
		}
	}
	d = strings.ToLower(d)
	if len(d) > 253 {
		return "", "malformed domain name"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "", "not a fully qualified domain name"
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", "malformed domain name"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", "malformed domain name"
			}
		}
	}
	// An all-numeric top-level label is an IPv4 address written without
	// brackets, a frequent bogus HELO (RFC 3696 §2: no TLD is numeric).
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", "address, not a domain name"
	}
	return d, ""
}

// spfResult names the library's result in moat's words; they are the same
// words (RFC 7208 §2.6).
func spfResult(r spf.Result) Result {
	switch r {
	case spf.None:
		return None
	case spf.Neutral:
		return Neutral
	case spf.Pass:
		return Pass
	case spf.Fail:
		return Fail
	case spf.SoftFail:
		return SoftFail
	case spf.TempError:
		return TempError
	}
	// spf.PermError, and any result a later library version may add: not
	// a verdict moat knows how to read, so never a pass.
	return PermError
}

// nilMXFilter drops nil entries from a Resolver's MX answers, which both
// the library and the Tracer would dereference.
type nilMXFilter struct{ Resolver }

func (f nilMXFilter) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mx, err := f.Resolver.LookupMX(ctx, name)
	out := mx[:0:0]
	for _, m := range mx {
		if m != nil {
			out = append(out, m)
		}
	}
	return out, err
}

// spfResolver gives the library moat's Resolver. The library tells
// errors apart only by *net.DNSError's flags, and only when the error is
// one itself (not wrapped): IsNotFound is a name or record that does not
// exist (none for the domain's own record, a void lookup elsewhere,
// §4.6.4); Temporary() is temperror (§2.6.6); any other error reads as
// permerror, so every DNS failure is given as temporary, and only an
// invalid SPF record is given as another error.
type spfResolver struct {
	r Resolver
	// ctxErr is the context's error, once a lookup failed because the
	// check ran out of time or was cancelled.
	ctxErr error
	// syntaxErr is the error of the SPF record that broke the grammar,
	// once one was fetched.
	syntaxErr error
}

// LookupTXT implements spf.DNSResolver. The library asks for TXT records
// only to fetch the SPF record of a domain it is about to evaluate: the
// checked domain's (§4.4), an include:'s (§5.2) or a redirect='s (§6.1);
// never for exp= (it does not evaluate explanations). So the answer's
// SPF record, if it has exactly one, is held to the grammar here, before
// the library reads any term of it; an invalid one is handed to the
// library as an error that is not a *net.DNSError, which it reads as a
// permerror and carries up through include: and redirect=. TXT records
// that are not SPF records (§4.5) are none of this check's business; an
// answer with more than one SPF record is the library's permerror (§4.5).
func (s *spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := s.before(ctx, name); err != nil {
		return nil, err
	}
	txt, err := s.r.LookupTXT(ctx, name)
	if err != nil {
		return nil, s.dnsError(ctx, name, err)
	}
	var record string
	n := 0
	for _, t := range txt {
		if isSPFRecord(t) {
			record = t
			n++
		}
	}
	if n == 1 {
		if err := checkSPFSyntax(record); err != nil {
			s.syntaxErr = fmt.Errorf("invalid SPF record of %s: %w", strings.TrimSuffix(name, "."), err)
			return nil, s.syntaxErr
		}
	}
	return txt, nil
}

// LookupMX implements spf.DNSResolver.
func (s *spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if err := s.before(ctx, name); err != nil {
		return nil, err
	}
	mx, err := s.r.LookupMX(ctx, name)
	if err != nil {
		return nil, s.dnsError(ctx, name, err)
	}
	return mx, nil
}

// LookupIPAddr implements spf.DNSResolver: the A and AAAA records of
// host (the library keeps those of the client's family).
func (s *spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if err := s.before(ctx, host); err != nil {
		return nil, err
	}
	ips, err := s.r.LookupIP(ctx, host)
	if err != nil {
		return nil, s.dnsError(ctx, host, err)
	}
	out := make([]net.IPAddr, 0, len(ips))
	for _, ip := range ips {
		if ip.IsValid() {
			out = append(out, net.IPAddr{IP: net.IP(ip.Unmap().WithZone("").AsSlice())})
		}
	}
	return out, nil
}

// LookupAddr implements spf.DNSResolver: the reverse lookup of the ptr
// mechanism and %{p} (§5.5), addr being the client's address as text.
func (s *spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "not an IP address", Name: addr, IsNotFound: true}
	}
	if err := spfCtxErr(ctx); err != nil {
		return nil, s.dnsError(ctx, addr, err)
	}
	names, err := s.r.LookupPTR(ctx, ip)
	if err != nil {
		return nil, s.dnsError(ctx, addr, err)
	}
	return names, nil
}

// before stops a lookup that must not be made: the check is out of time,
// or name is not one a DNS question can be asked for. A name that is not a
// domain name does not exist, as Go's own resolver says of one; the
// library counts it as a void lookup (§4.6.4).
func (s *spfResolver) before(ctx context.Context, name string) error {
	if err := spfCtxErr(ctx); err != nil {
		return s.dnsError(ctx, name, err)
	}
	if !spfQueryable(name) {
		return &net.DNSError{Err: "not a domain name", Name: name, IsNotFound: true}
	}
	return nil
}

// dnsError turns a Resolver's error into the *net.DNSError the library
// reads (see spfResolver).
func (s *spfResolver) dnsError(ctx context.Context, name string, err error) error {
	if IsNotFound(err) {
		return &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
	}
	if cerr := spfCtxErr(ctx); cerr != nil {
		s.ctxErr = cerr
		return &net.DNSError{Err: cerr.Error(), Name: name, IsTimeout: true, IsTemporary: true}
	}
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: timeout, IsTemporary: true}
}

// spfCtxErr is ctx.Err(), and DeadlineExceeded as soon as the deadline
// has passed: a resolver that sets its socket's deadline from ctx's sees
// it pass before ctx's own timer says so.
func spfCtxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// spfQueryable reports whether name, built by the library from a record
// and macros, can be asked of the DNS as it is: printable ASCII without
// backslashes (which a resolver taking names as text reads as escapes),
// labels of 1 to 63 octets, at most 253 in all. Spaces and "%" stay: the
// macros %_ and %- put them there (RFC 7208 §7.3).
func spfQueryable(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c < ' ' || c >= 0x7f || c == '\\':
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return true
}

// spfPath follows the library's trace to say which terms decided the
// result. The library traces each term that ends its record's
// evaluation as it returns: innermost first, an include: or redirect=
// after the term of the record it pulled in, each handing up the same
// error value. So the decisive path is the tail of the trace in which
// every include: or redirect= carries its predecessor's error. Terms
// traced inside an include: whose result did not end the evaluation stay
// behind, cut off by the next term. The trace's wording is not a stable
// interface of the library: if it changes, the reason loses its terms
// and keeps the error's words, and TestSPFReason says so.
type spfPath struct{ terms []spfTerm }

type spfTerm struct {
	term string
	res  spf.Result
	err  error
}

// maxSPFTerms bounds the path kept. Each include: or redirect= costs a
// lookup, so the library's limit of 10 keeps the trace far shorter.
const maxSPFTerms = 64

func (p *spfPath) trace(format string, a ...any) {
	var t spfTerm
	switch format {
	case "%q %v, %v", "%q: %v, %v": // a decisive term; redirect=
		if len(a) != 3 {
			return
		}
		t.term, _ = a[0].(string)
		t.res, _ = a[1].(spf.Result)
		t.err, _ = a[2].(error)
	case "all: %v":
		if len(a) != 1 {
			return
		}
		t.term, t.err = "all", spf.ErrMatchedAll
		t.res, _ = a[0].(spf.Result)
	default:
		return
	}
	if len(p.terms) == maxSPFTerms {
		p.terms = append(p.terms[:0], p.terms[maxSPFTerms/2:]...)
	}
	p.terms = append(p.terms, t)
}

// path returns the decisive terms, innermost first, if the last traced
// term handed up err, the check's final error.
func (p *spfPath) path(err error) []spfTerm {
	n := len(p.terms)
	if n == 0 || !errors.Is(p.terms[n-1].err, err) {
		return nil
	}
	i := n - 1
	for i > 0 && isSPFPull(p.terms[i].term) && errors.Is(p.terms[i-1].err, p.terms[i].err) {
		i--
	}
	return p.terms[i:]
}

// isSPFPull reports whether term evaluates another record: include: or
// redirect= (names are case-insensitive, RFC 7208 §4.6.1).
func isSPFPull(term string) bool {
	l := strings.ToLower(term)
	return strings.HasPrefix(l, "include:") || strings.HasPrefix(l, "redirect=")
}

// reason says in a few words why the check came out as it did: the term
// that matched, or the error and where.
func (p *spfPath) reason(r spf.Result, err error) string {
	if err == nil && r == spf.Neutral {
		return "no term matched" // §4.7: the default result
	}
	if errors.Is(err, spf.ErrNoResult) && r == spf.None {
		return "no SPF record"
	}
	path := p.path(err)
	var where string
	if len(path) > 0 {
		where = spfTermText(path[0])
		if len(path) > 1 {
			where += " via " + spfTermText(path[len(path)-1])
		}
	}
	switch r {
	case spf.Pass, spf.Fail, spf.SoftFail, spf.Neutral:
		if where != "" {
			return "matched " + where
		}
	}
	msg := "no error given"
	switch {
	case errors.Is(err, spf.ErrNoResult):
		msg = "no SPF record"
	case errors.Is(err, spf.ErrMultipleRecords):
		msg = "more than one SPF record"
	case err != nil:
		msg = err.Error()
	}
	if where != "" {
		return where + ": " + msg
	}
	return msg
}

// spfTermText writes a term as in its record: with its qualifier when it
// matched (§4.6.2; "+" is the default and left out), printable and short,
// because the record is the sender's text.
func spfTermText(t spfTerm) string {
	term := t.term
	if !strings.HasPrefix(strings.ToLower(term), "redirect=") {
		switch t.res {
		case spf.Fail:
			term = "-" + term
		case spf.SoftFail:
			term = "~" + term
		case spf.Neutral:
			term = "?" + term
		}
	}
	const max = 80
	var b strings.Builder
	for i := 0; i < len(term); i++ {
		if b.Len() == max {
			b.WriteString("...")
			break
		}
		c := term[i]
		if c < ' ' || c >= 0x7f {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}
