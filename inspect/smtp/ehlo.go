package smtp

import (
	"strconv"
	"strings"
)

// Extensions are the service extensions a server advertises in its reply
// to EHLO (RFC 5321 §4.1.1.1): each keyword, upper-cased, with its
// parameters in the order given (none: an empty slice). PIPELINING,
// SIZE n (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN
// (RFC 3461), CHUNKING (RFC 3030), STARTTLS (RFC 3207),
// ENHANCEDSTATUSCODES (RFC 2034), AUTH mechanisms (RFC 4954) and
// Postfix's XCLIENT attributes are all read the same way.
type Extensions map[string][]string

// ParseEHLO reads the extensions of a reply to EHLO. The reply's first
// line names the server (ehlo-greet) and is skipped; each later line is
//
//	ehlo-line    = ehlo-keyword *( SP ehlo-param )
//	ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
//	ehlo-param   = 1*(%d33-126)
//
// with the keyword case-insensitive (RFC 5321 §4.1.1.1, §2.4). A line
// whose keyword breaks the grammar, such as the pre-standard "AUTH=LOGIN"
// some servers add for old clients, is ignored; so is a parameter with a
// byte outside %d33-126, and the line's other parameters are kept. Spaces
// and tabs both separate parameters, since servers are not all strict.
// When a keyword comes twice, the first line counts. A reply that is not
// a success (2xx) advertises nothing: the result is nil.
func ParseEHLO(r Reply) Extensions {
	if r.Class() != 2 {
		return nil
	}
	ext := Extensions{}
	for _, l := range r.Lines[min(1, len(r.Lines)):] {
		f := strings.Fields(l)
		if len(f) == 0 || checkKeyword(f[0]) != nil {
			continue
		}
		kw := strings.ToUpper(f[0])
		if _, dup := ext[kw]; dup {
			continue
		}
		params := make([]string, 0, len(f)-1)
		for _, p := range f[1:] {
			if isEHLOParam(p) {
				params = append(params, p)
			}
		}
		ext[kw] = params
	}
	return ext
}

// isEHLOParam reports whether p is an ehlo-param: 1*(%d33-126).
func isEHLOParam(p string) bool {
	for i := range len(p) {
		if p[i] < 33 || p[i] > 126 {
			return false
		}
	}
	return p != ""
}

// Has reports whether the extension keyword (any case) is advertised.
func (e Extensions) Has(keyword string) bool {
	_, ok := e[strings.ToUpper(keyword)]
	return ok
}

// Params returns the parameters of the extension keyword (any case): the
// mechanisms of AUTH, the attributes of XCLIENT; nil when it is not
// advertised.
func (e Extensions) Params(keyword string) []string { return e[strings.ToUpper(keyword)] }

// Size returns the maximum message size SIZE advertises (RFC 1870 §4):
// ok is false without SIZE; max is 0 when SIZE gives no number, or 0,
// which both mean no fixed maximum, or a number that does not parse.
func (e Extensions) Size() (max int64, ok bool) {
	p, ok := e["SIZE"]
	if !ok {
		return 0, false
	}
	if len(p) > 0 {
		if n, err := strconv.ParseInt(p[0], 10, 64); err == nil && n > 0 {
			max = n
		}
	}
	return max, true
}
