package rules

import (
	"net/netip"
	"strings"
	"unicode"

	"moat/inspect"
	"moat/inspect/reputation"
)

// kind is the type of a fact's values.
type kind uint8

const (
	kString kind = iota + 1
	kNumber
	kBool
	kIP
)

func (k kind) String() string {
	return [...]string{"", "string", "number", "boolean", "IP address"}[k]
}

// fact is one thing a condition can test. Accessors return the values
// known at the stage, or an error when a lookup behind the fact failed
// (the condition is then unknown, and the rule's on_error decides).
type fact struct {
	stage inspect.Stage // the earliest stage at which the fact is known
	kind  kind
	depth inspect.Depth // how deep the message must be parsed
	doc   string

	strs func(f *inspect.Facts) ([]string, error)
	num  func(f *inspect.Facts) (float64, bool)
	// numErr, when set, is num for a fact a store lookup serves: an
	// error makes a comparison unknown (the rule's on_error decides),
	// never a comparison with 0.
	numErr func(f *inspect.Facts) (float64, error)
	flag   func(f *inspect.Facts) (bool, error)
	ip     func(f *inspect.Facts) (netip.Addr, bool)
}

func one(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	return []string{s}, nil
}

func boolOK(b bool) (bool, error) { return b, nil }

// facts are the facts conditions can name. "header" is parameterised and
// handled by the compiler.
var facts = map[string]fact{
	// connect
	"client_ip": {stage: inspect.StageConnect, kind: kIP, doc: "the client's IP address (after PROXY/XCLIENT translation)",
		ip: func(f *inspect.Facts) (netip.Addr, bool) {
			a := f.Session.Client.Addr()
			return a, a.IsValid()
		}},
	"client_rdns": {stage: inspect.StageConnect, kind: kString, doc: "the client's reverse DNS name, \"\" when it has none",
		strs: func(f *inspect.Facts) ([]string, error) {
			n, _, err := f.RDNS()
			if err != nil && n == "" && !isNoName(err) {
				return nil, err
			}
			return one(n)
		}},
	"client_fcrdns": {stage: inspect.StageConnect, kind: kBool, doc: "the reverse DNS name resolves back to the client's IP (forward-confirmed)",
		flag: func(f *inspect.Facts) (bool, error) {
			_, ok, err := f.RDNS()
			if err != nil && !isNoName(err) {
				return false, err
			}
			return ok, nil
		}},
	"early_talker": {stage: inspect.StageConnect, kind: kBool, doc: "the client talked before the greeting",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.EarlyTalker) }},
	"tls": {stage: inspect.StageConnect, kind: kBool, doc: "the session runs over TLS",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.TLS != nil) }},

	// helo
	"helo": {stage: inspect.StageHelo, kind: kString, doc: "the HELO/EHLO argument",
		strs: func(f *inspect.Facts) ([]string, error) { return one(f.Session.Helo) }},
	"helo_is_ip": {stage: inspect.StageHelo, kind: kBool, doc: "the HELO name is a bare IP address (not an address literal)",
		flag: func(f *inspect.Facts) (bool, error) {
			_, err := netip.ParseAddr(f.Session.Helo)
			return boolOK(err == nil)
		}},
	"helo_is_literal": {stage: inspect.StageHelo, kind: kBool, doc: "the HELO name is an address literal like [192.0.2.1]",
		flag: func(f *inspect.Facts) (bool, error) {
			_, ok := heloLiteral(f.Session.Helo)
			return boolOK(ok)
		}},
	"helo_fqdn": {stage: inspect.StageHelo, kind: kBool, doc: "the HELO name is a syntactically valid fully qualified domain name",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(isFQDN(f.Session.Helo)) }},
	"helo_matches_rdns": {stage: inspect.StageHelo, kind: kBool, doc: "the HELO name equals the client's reverse DNS name",
		flag: func(f *inspect.Facts) (bool, error) {
			n, _, err := f.RDNS()
			if err != nil && !isNoName(err) {
				return false, err
			}
			return boolOK(n != "" && strings.EqualFold(strings.TrimSuffix(f.Session.Helo, "."), n))
		}},
	"helo_matches_client_ip": {stage: inspect.StageHelo, kind: kBool, doc: "the HELO address literal or IP is the client's address",
		flag: func(f *inspect.Facts) (bool, error) {
			a, ok := heloLiteral(f.Session.Helo)
			if !ok {
				a, _ = netip.ParseAddr(f.Session.Helo)
			}
			return boolOK(a.IsValid() && a.Unmap() == f.Session.Client.Addr().Unmap())
		}},
	"esmtp": {stage: inspect.StageHelo, kind: kBool, doc: "the client greeted with EHLO",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.ESMTP()) }},
	"bare_lf_commands": {stage: inspect.StageHelo, kind: kBool, doc: "a command line ended in a bare LF",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.Anomalies.BareLFCommand) }},
	"invalid_commands": {stage: inspect.StageHelo, kind: kNumber, doc: "command lines that did not parse so far",
		num: func(f *inspect.Facts) (float64, bool) { return float64(f.Session.Anomalies.InvalidCommands), true }},
	"starttls_injection": {stage: inspect.StageHelo, kind: kBool, doc: "commands were pipelined after STARTTLS (CVE-2011-0411)",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Session.Anomalies.STARTTLSInjection) }},

	// mail
	"mail_from": {stage: inspect.StageMail, kind: kString, doc: "the envelope sender, \"\" for the null sender <>",
		strs: func(f *inspect.Facts) ([]string, error) { return one(f.Tx.From.String()) }},
	"mail_from_domain": {stage: inspect.StageMail, kind: kString, doc: "the envelope sender's domain, lower-cased",
		strs: func(f *inspect.Facts) ([]string, error) { return one(strings.ToLower(f.Tx.From.Domain)) }},
	"mail_from_null": {stage: inspect.StageMail, kind: kBool, doc: "the null reverse-path <> (bounces)",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Tx.From.IsNull()) }},
	"mail_size": {stage: inspect.StageMail, kind: kNumber, doc: "the SIZE parameter of MAIL, when given",
		num: func(f *inspect.Facts) (float64, bool) { return paramNumber(f.Tx, "SIZE") }},

	// rcpt
	"rcpt": {stage: inspect.StageRcpt, kind: kString, doc: "at rcpt: the recipient being judged; at data: every accepted recipient",
		strs: func(f *inspect.Facts) ([]string, error) {
			if f.Rcpt != nil {
				return one(f.Rcpt.Path.String())
			}
			out := make([]string, 0, len(f.Tx.Rcpts))
			for _, r := range f.Tx.Rcpts {
				out = append(out, r.Path.String())
			}
			return out, nil
		}},
	"rcpt_domain": {stage: inspect.StageRcpt, kind: kString, doc: "the domain of rcpt, lower-cased",
		strs: func(f *inspect.Facts) ([]string, error) { return rcptDomains(f), nil }},
	"rcpt_count": {stage: inspect.StageRcpt, kind: kNumber, doc: "recipients accepted so far in the transaction",
		num: func(f *inspect.Facts) (float64, bool) { return float64(len(f.Tx.Rcpts)), true }},

	// data, envelope of the message itself
	"size": {stage: inspect.StageData, kind: kNumber, doc: "the message size in bytes",
		num: func(f *inspect.Facts) (float64, bool) { return float64(f.Message.Size), true }},
	"bare_lf": {stage: inspect.StageData, kind: kBool, doc: "the message has bare LF line endings (smuggling material)",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Message.BareLF) }},
	"bare_cr": {stage: inspect.StageData, kind: kBool, doc: "the message has bare CR line endings",
		flag: func(f *inspect.Facts) (bool, error) { return boolOK(f.Message.BareCR) }},

	// reputation: past verdicts over the reputation window (state store)
	"net_accepted":        repFact(false, "transactions from the client's network (/24, /64) accepted over the reputation window", repCount(reputation.Accepted)),
	"net_tagged":          repFact(false, "transactions from the client's network tagged over the reputation window", repCount(reputation.Tagged)),
	"net_rejected":        repFact(false, "transactions from the client's network rejected or tempfailed over the reputation window", repCount(reputation.Rejected)),
	"net_reject_ratio":    repFact(false, "net_rejected / all counted for the client's network; unknown when none", repRatio),
	"domain_accepted":     repFact(true, "transactions with the envelope sender's domain accepted over the reputation window", repCount(reputation.Accepted)),
	"domain_tagged":       repFact(true, "transactions with the envelope sender's domain tagged over the reputation window", repCount(reputation.Tagged)),
	"domain_rejected":     repFact(true, "transactions with the envelope sender's domain rejected or tempfailed over the reputation window", repCount(reputation.Rejected)),
	"domain_reject_ratio": repFact(true, "domain_rejected / all counted for the sender's domain; unknown when none", repRatio),
}

func isNoName(err error) bool {
	type notFound interface{ IsNotFound() bool }
	nf, ok := err.(notFound)
	return ok && nf.IsNotFound()
}

// heloLiteral parses an RFC 5321 address literal: [192.0.2.1] or
// [IPv6:2001:db8::1].
func heloLiteral(h string) (netip.Addr, bool) {
	if len(h) < 3 || h[0] != '[' || h[len(h)-1] != ']' {
		return netip.Addr{}, false
	}
	s := h[1 : len(h)-1]
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		s = s[5:]
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// isFQDN reports whether s is a syntactically valid domain name with at
// least two labels and a non-numeric top label (RFC 1123 §2.1).
func isFQDN(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r == '-' || r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r >= 0x80) {
				return false
			}
		}
	}
	top := labels[len(labels)-1]
	return strings.IndexFunc(top, func(r rune) bool { return !unicode.IsDigit(r) }) >= 0
}

func paramNumber(t *inspect.Transaction, key string) (float64, bool) {
	for _, p := range t.FromParams {
		if p.Key == key {
			var n float64
			for _, c := range p.Value {
				if c < '0' || c > '9' {
					return 0, false
				}
				n = n*10 + float64(c-'0')
			}
			return n, true
		}
	}
	return 0, false
}

func rcptDomains(f *inspect.Facts) []string {
	if f.Rcpt != nil {
		if d := strings.ToLower(f.Rcpt.Path.Domain); d != "" {
			return []string{d}
		}
		return nil
	}
	out := make([]string, 0, len(f.Tx.Rcpts))
	for _, r := range f.Tx.Rcpts {
		if d := strings.ToLower(r.Path.Domain); d != "" {
			out = append(out, d)
		}
	}
	return out
}
