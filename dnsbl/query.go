package dnsbl

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// queryKey is a lookup key in normal form: an address for IP keys, a
// lower-case domain without the trailing dot for domain keys.
type queryKey struct {
	addr netip.Addr
	name string
}

// String returns the key as results show it.
func (k queryKey) String() string {
	if k.addr.IsValid() {
		return k.addr.String()
	}
	return k.name
}

// parseKey normalises key for a list of kind. It does not allocate for a
// key already in normal form, so cached lookups stay allocation-free.
// A key that is not an address (ip lists) or a host name (domain lists)
// is refused: the list is not asked.
func parseKey(kind Kind, key string) (queryKey, bool) {
	switch kind {
	case KindIP:
		if a, ok := parseIP(key); ok {
			return queryKey{addr: a}, true
		}
	case KindDomain:
		if _, isIP := parseIP(key); isIP {
			return queryKey{}, false // RHSBLs list names; Spamhaus DBL even answers IPs with an error
		}
		if n, ok := normalDomain(key); ok {
			return queryKey{name: n}, true
		}
	case KindURI:
		// URL hosts: a domain, or an IP address that SURBL, URIBL and
		// DBL list reversed like an ip list (RFC 5782 §2.1).
		if a, ok := parseIP(key); ok {
			return queryKey{addr: a}, true
		}
		if n, ok := normalDomain(key); ok {
			return queryKey{name: n}, true
		}
	}
	return queryKey{}, false
}

func parseIP(s string) (netip.Addr, bool) {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1] // URL form of an IPv6 host
	}
	// Only addresses are parsed: ParseAddr's error for a domain would
	// cost an allocation on every cached domain lookup.
	if !maybeIP(s) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	// An IPv4-mapped IPv6 address is the IPv4 client behind a dual-stack
	// socket, and is listed as such.
	return a.Unmap().WithZone(""), true
}

// maybeIP reports whether s could be an address: it has a colon (IPv6)
// or only digits and dots (IPv4).
func maybeIP(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ':' {
			return true
		} else if c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// normalDomain lower-cases s and drops a trailing dot, and checks that it
// is a host name: labels of 1 to 63 letters, digits, '-' or '_'.
func normalDomain(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return "", false
	}
	upper := false
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
			continue
		case 'A' <= c && c <= 'Z':
			upper = true
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return "", false
		}
		label++
		if label > 63 {
			return "", false
		}
	}
	if upper {
		s = strings.ToLower(s)
	}
	return s, true
}

// queryName is the name asked of a list with FQDN zone: the key's
// reversed octets (IPv4) or nibbles (IPv6), or the domain, then the zone
// (RFC 5782 §2.1, §2.2, §2.4).
func queryName(k queryKey, zone string) string {
	if !k.addr.IsValid() {
		return k.name + "." + zone
	}
	var b []byte
	if k.addr.Is4() {
		a := k.addr.As4()
		b = make([]byte, 0, 16+len(zone))
		for i := 3; i >= 0; i-- {
			b = appendUint8(b, a[i])
			b = append(b, '.')
		}
	} else {
		const hex = "0123456789abcdef"
		a := k.addr.As16()
		b = make([]byte, 0, 64+len(zone))
		for i := 15; i >= 0; i-- {
			b = append(b, hex[a[i]&0xf], '.', hex[a[i]>>4], '.')
		}
	}
	return string(append(b, zone...))
}

func appendUint8(b []byte, v uint8) []byte {
	if v >= 100 {
		b = append(b, '0'+v/100)
	}
	if v >= 10 {
		b = append(b, '0'+v/10%10)
	}
	return append(b, '0'+v%10)
}

// Errors found in results' Err, to be matched with errors.Is.
var (
	// ErrBlocked is a list answering with one of its error codes: the
	// query came through a public resolver, over quota, or was malformed.
	ErrBlocked = errors.New("dnsbl: the list refused the query (blocked resolver, over quota or bad query)")
	// ErrBadAnswer is an answer outside 127.0.0.0/8 (RFC 5782 §2.3),
	// typically from a resolver that rewrites NXDOMAIN, or an rcode
	// other than NOERROR, NXDOMAIN, SERVFAIL and REFUSED.
	ErrBadAnswer = errors.New("dnsbl: answer is not a DNSBL answer")
	// ErrServfail and ErrRefused are the resolver's SERVFAIL and REFUSED.
	ErrServfail = errors.New("dnsbl: SERVFAIL")
	ErrRefused  = errors.New("dnsbl: REFUSED")
	// ErrTruncated is a truncated UDP answer whose retry over TCP failed.
	ErrTruncated = errors.New("dnsbl: truncated answer, and TCP failed")
	// ErrUnhealthy is the result of a list that failed its health probe:
	// it is not asked until it recovers.
	ErrUnhealthy = errors.New("dnsbl: list failed its health check")
	// ErrNoResolver is a lookup with no resolver to send it to.
	ErrNoResolver = errors.New("dnsbl: no resolver configured")
)

// ErrKind values: low-cardinality names of failures, used as metric
// labels and in logs.
const (
	ErrKindTimeout         = "timeout"
	ErrKindServfail        = "servfail"
	ErrKindRefused         = "refused"
	ErrKindTruncated       = "truncated"
	ErrKindBlockedResolver = "blocked_resolver"
	ErrKindBadAnswer       = "bad_answer"
	ErrKindNetwork         = "network"
	ErrKindUnhealthy       = "unhealthy"
	// ErrKindCanceled is a lookup whose caller gave up (its context
	// ended): not the list's failure, and not counted in metrics.
	ErrKindCanceled = "canceled"
	// ErrKindNoResolver: there is no resolver to ask.
	ErrKindNoResolver = "no_resolver"
)

// minAttempts is how many times a query is sent when there is one
// resolver: a lost UDP packet is retransmitted once within the timeout,
// as a stub resolver does (RFC 1035 §4.2.1).
const minAttempts = 2

// ednsSize is the UDP payload size offered (EDNS0, RFC 6891): the DNS
// flag day 2020 value, safe from IP fragmentation.
const ednsSize = 1232

// ask sends one question for name and qtype to the resolvers, in turn from
// a rotating start, until one answers with NOERROR or NXDOMAIN or ctx
// ends. A truncated UDP answer is asked again over TCP (RFC 7766 §5).
// It returns the answer, or the last failure with its ErrKind.
func (c *Checker) ask(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, error) {
	servers := c.resolvers
	if len(servers) == 0 {
		return nil, ErrKindNoResolver, ErrNoResolver
	}
	attempts := max(len(servers), minAttempts)
	start := int(c.next.Add(1))
	kind, err := ErrKindTimeout, error(context.DeadlineExceeded)
	for i := 0; i < attempts; i++ {
		if ctx.Err() != nil {
			break
		}
		server := servers[(start+i)%len(servers)]
		// The time left is shared among the attempts left, so a dead
		// first resolver leaves time for the next.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(attempts-i))
		}
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.Id = dns.Id() // random (RFC 5452 §4.3)
		m.SetEdns0(ednsSize, false)
		r, e := exchange(actx, "udp", server, m)
		if e == nil && r.Truncated {
			r, e = exchange(actx, "tcp", server, m)
			if e != nil {
				kind, err = ErrKindTruncated, errors.Join(ErrTruncated, e)
				cancel()
				continue
			}
		}
		cancel()
		if e != nil {
			kind, err = netErrKind(ctx, e), e
			continue
		}
		switch r.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return r, "", nil
		case dns.RcodeServerFailure:
			kind, err = ErrKindServfail, ErrServfail
		case dns.RcodeRefused:
			kind, err = ErrKindRefused, ErrRefused
		default:
			kind, err = ErrKindBadAnswer, ErrBadAnswer
		}
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		kind, err = netErrKind(ctx, ctx.Err()), errors.Join(ctx.Err(), err)
	}
	return nil, kind, err
}

// netErrKind names a transport failure.
func netErrKind(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() == context.Canceled:
		return ErrKindCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ErrKindTimeout
	}
	return ErrKindNetwork
}

var errMismatch = errors.New("dnsbl: answer does not match the question")

// exchange sends m to server over network ("udp" or "tcp") and returns the
// first reply to it: same ID, QR set, the same question. Over UDP anything
// else — late answers to earlier queries, spoofed or garbled packets — is
// ignored and the wait goes on (RFC 5452 §9.1); over TCP it is an error.
// The wait ends with ctx.
func exchange(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	co := &dns.Conn{Conn: conn, UDPSize: ednsSize}
	defer co.Close()
	if dl, ok := ctx.Deadline(); ok {
		co.SetDeadline(dl)
	}
	// Cancellation interrupts a blocked read.
	stop := context.AfterFunc(ctx, func() { co.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	udp := network == "udp"
	for {
		r, err := co.ReadMsg()
		if err != nil {
			if udp && (r != nil || errors.Is(err, dns.ErrShortRead)) {
				continue // a packet that is not a DNS message
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				// The read deadline is ctx's: report it as ctx's,
				// even if ctx's own timer has not fired yet.
				return nil, context.DeadlineExceeded
			}
			return nil, err
		}
		if r.Id != m.Id || !r.Response || !sameQuestion(r, m) {
			if udp {
				continue
			}
			return nil, errMismatch
		}
		return r, nil
	}
}

func sameQuestion(r, m *dns.Msg) bool {
	if len(r.Question) != 1 {
		return false
	}
	a, b := r.Question[0], m.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// Caps on cached TTLs: a day for answers, three hours for negative
// answers (RFC 2308 §5 recommends one to three hours at most).
const (
	maxTTL         = 24 * time.Hour
	maxNegativeTTL = 3 * time.Hour
)

// answerRecords returns the records of type qtype that answer name in r,
// following CNAMEs within the answer section (Spamhaus DQS answers its
// public zone names with a CNAME into dq.spamhaus.net), and the smallest
// TTL along the way.
func answerRecords(r *dns.Msg, name string, qtype uint16) ([]dns.RR, time.Duration) {
	ttl := maxTTL
	owner := name
	var out []dns.RR
	for hops := 0; hops < 8; hops++ {
		next := ""
		for _, rr := range r.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, owner) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				out = append(out, rr)
				ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
			case h.Rrtype == dns.TypeCNAME && next == "":
				next = rr.(*dns.CNAME).Target
				ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
			}
		}
		if len(out) > 0 || next == "" {
			break
		}
		owner = next
	}
	if len(out) == 0 {
		return nil, negativeTTL(r)
	}
	return out, ttl
}

// negativeTTL is how long a "not listed" answer may be cached: the SOA's
// TTL or its MINIMUM field, whichever is less (RFC 2308 §5). Without an
// SOA it is not cached (RFC 2308 §5: "SHOULD NOT be cached").
func negativeTTL(r *dns.Msg) time.Duration {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxNegativeTTL)
		}
	}
	return 0
}

// cleanTXT makes a list's TXT fit a reject text: printable ASCII only (no
// CR or LF to break the SMTP reply), at most 200 bytes.
func cleanTXT(parts []string) string {
	var b strings.Builder
	for _, p := range parts {
		for i := 0; i < len(p) && b.Len() < 200; i++ {
			c := p[i]
			if c < 0x20 || c > 0x7e {
				c = ' '
			}
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}
