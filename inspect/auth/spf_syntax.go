package auth

// The grammar of an SPF record (RFC 7208 §12, the collected ABNF):
//
//	record    = version terms *SP
//	version   = "v=spf1"
//	terms     = *( 1*SP ( directive / modifier ) )
//	directive = [ qualifier ] mechanism
//	modifier  = redirect / explanation / unknown-modifier
//
// RFC 7208 §4.6: "if there are any syntax errors anywhere in the record,
// check_host() returns immediately with the result "permerror", without
// further interpretation or evaluation". blitiri.com.ar/go/spf reads terms
// one at a time as it evaluates them, so it never sees an error after the
// term that decides, nor one in exp=, which it skips. checkSPFSyntax reads
// the whole record first, against the grammar alone: it looks nothing up.
//
// All the literal strings of the grammar — version, mechanism and modifier
// names, macro letters, the "r" transformer — are case-insensitive
// (RFC 5234 §2.3; RFC 7208 §4.6.1 says so of names).

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// spfSyntaxError is a record's departure from the grammar: what is wrong,
// and the term where it is.
type spfSyntaxError struct {
	msg  string
	term string // "" when the fault is the record's, not a term's
}

func (e *spfSyntaxError) Error() string {
	if e.term == "" {
		return e.msg
	}
	return e.msg + " in " + spfQuote(e.term)
}

// spfQuote quotes a term of a record, which is the sender's text, short
// and in printable ASCII, for a reason or a log line.
func spfQuote(term string) string {
	const short = 64
	if len(term) > short {
		return strconv.QuoteToASCII(term[:short]) + "..."
	}
	return strconv.QuoteToASCII(term)
}

// checkSPFSyntax reports whether record, an SPF record as selected by
// RFC 7208 §4.5 (it begins with "v=spf1" and then a space or its end),
// is well-formed by the grammar of §12 and the rules stated beside it,
// and if not, why: the first error found, reading left to right. It is a
// pure function of its argument, linear in its length.
func checkSPFSyntax(record string) error {
	if !isSPFRecord(record) {
		return &spfSyntaxError{msg: `not an SPF record: it does not begin with "v=spf1" and a space`}
	}
	// RFC 7208 §3.1: the record is US-ASCII; §4.6.1, §12: its terms are
	// separated by spaces (SP), no other white space. Every other octet
	// the grammar allows anywhere is visible ASCII (%x21-7E).
	for i := 0; i < len(record); i++ {
		switch c := record[i]; {
		case c >= 0x80:
			return &spfSyntaxError{msg: fmt.Sprintf("octet 0x%02x at offset %d: not 7-bit ASCII", c, i)}
		case c < 0x20 || c == 0x7f:
			return &spfSyntaxError{msg: fmt.Sprintf(
				"control character 0x%02x at offset %d: terms are separated by spaces only", c, i)}
		}
	}
	rest := record[len(spfVersion):]
	// §6: "These two modifiers MUST NOT appear in a record more than once
	// each."
	var redirects, exps int
	for rest != "" {
		var term string
		term, rest, _ = strings.Cut(rest, " ")
		if term == "" {
			continue // 1*SP between terms, *SP at the end
		}
		if name, value, ok := spfModifier(term); ok {
			switch strings.ToLower(name) {
			case "redirect":
				if redirects++; redirects > 1 {
					return &spfSyntaxError{msg: "redirect= appears more than once", term: term}
				}
				if p := checkSPFDomainSpec(value); p != "" {
					return &spfSyntaxError{msg: "redirect: " + p, term: term}
				}
			case "exp":
				if exps++; exps > 1 {
					return &spfSyntaxError{msg: "exp= appears more than once", term: term}
				}
				if p := checkSPFDomainSpec(value); p != "" {
					return &spfSyntaxError{msg: "exp: " + p, term: term}
				}
			default:
				// unknown-modifier = name "=" macro-string, where name is
				// not a known modifier's: its value is never expanded
				// (§6: it is ignored), but it must be a macro-string. The
				// ABNF's macro-letter includes c, r and t, and this is not
				// a domain-spec, so they are taken.
				if _, p := scanSPFMacroString(value, true); p != "" {
					return &spfSyntaxError{msg: "modifier " + spfQuote(name) + ": " + p, term: term}
				}
			}
			continue
		}
		if p := checkSPFDirective(term); p != "" {
			return &spfSyntaxError{msg: p, term: term}
		}
	}
	return nil
}

// spfVersion begins every SPF record (§4.5, §12).
const spfVersion = "v=spf1"

// isSPFRecord reports whether txt, one TXT record (its strings joined,
// §3.3), is an SPF record: RFC 7208 §4.5, it begins with "v=spf1" (in any
// case, §12) followed by a space or the end of the record.
func isSPFRecord(txt string) bool {
	if len(txt) < len(spfVersion) || len(txt) > len(spfVersion) && txt[len(spfVersion)] != ' ' {
		return false
	}
	for i := 0; i < len(spfVersion); i++ {
		c := txt[i]
		if isSPFAlpha(c) {
			c |= 0x20
		}
		if c != spfVersion[i] {
			return false
		}
	}
	return true
}

// spfModifier splits term as a modifier: name "=" value, where
// name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) (§4.6.1, §12). A term
// that is not one is a directive, or nothing; a mechanism's name is never
// followed by "=".
func spfModifier(term string) (name, value string, ok bool) {
	if term == "" || !isSPFAlpha(term[0]) {
		return "", "", false
	}
	i := 1
	for i < len(term) && (isSPFAlpha(term[i]) || isSPFDigit(term[i]) || term[i] == '-' || term[i] == '_' || term[i] == '.') {
		i++
	}
	if i == len(term) || term[i] != '=' {
		return "", "", false
	}
	return term[:i], term[i+1:], true
}

// checkSPFDirective checks directive = [ qualifier ] mechanism (§4.6.2,
// §5, §12) and returns what is wrong with it, or "".
func checkSPFDirective(term string) string {
	d := term
	if strings.IndexByte("+-?~", d[0]) >= 0 {
		d = d[1:]
	}
	i := strings.IndexAny(d, ":/")
	if i < 0 {
		i = len(d)
	}
	name, arg := strings.ToLower(d[:i]), d[i:]
	switch name {
	case "all": // §5.1: all = "all"
		if arg != "" {
			return "all: takes no argument"
		}
	case "include", "exists": // §5.2, §5.7: name ":" domain-spec
		spec, ok := strings.CutPrefix(arg, ":")
		if !ok {
			return name + `: no ":" and domain-spec`
		}
		if p := checkSPFDomainSpec(spec); p != "" {
			return name + ": " + p
		}
	case "a", "mx": // §5.3, §5.4: name [ ":" domain-spec ] [ dual-cidr-length ]
		spec, hasSpec := strings.CutPrefix(arg, ":")
		spec, v4, v6 := cutSPFDualCIDR(spec)
		if !hasSpec && spec != "" {
			return name + ": malformed cidr length"
		}
		if v4 != "" {
			if p := checkSPFCIDR(v4, 32); p != "" {
				return name + ": ip4 " + p
			}
		}
		if v6 != "" {
			if p := checkSPFCIDR(v6, 128); p != "" {
				return name + ": ip6 " + p
			}
		}
		if hasSpec {
			if p := checkSPFDomainSpec(spec); p != "" {
				return name + ": " + p
			}
		}
	case "ptr": // §5.5: ptr = "ptr" [ ":" domain-spec ]
		if arg == "" {
			break
		}
		spec, ok := strings.CutPrefix(arg, ":")
		if !ok {
			return "ptr: takes no cidr length"
		}
		if p := checkSPFDomainSpec(spec); p != "" {
			return "ptr: " + p
		}
	case "ip4", "ip6": // §5.6: name ":" ipN-network [ ipN-cidr-length ]
		network, ok := strings.CutPrefix(arg, ":")
		if !ok {
			return name + `: no ":" and network`
		}
		network, cidr, hasCIDR := strings.Cut(network, "/")
		bits := 32
		if name == "ip4" {
			// ip4-network = qnum "." qnum "." qnum "." qnum, each 0-255
			// without leading zeros: exactly what netip parses as an
			// IPv4 address.
			if a, err := netip.ParseAddr(network); err != nil || !a.Is4() {
				return "ip4: not a dotted-quad IPv4 network"
			}
		} else {
			// ip6-network as in RFC 4291 §2.2 (which has no zones).
			bits = 128
			if a, err := netip.ParseAddr(network); err != nil || !a.Is6() || a.Zone() != "" {
				return "ip6: not an IPv6 network"
			}
		}
		if hasCIDR {
			if p := checkSPFCIDR("/"+cidr, bits); p != "" {
				return name + ": " + p
			}
		}
	case "":
		if d == "" {
			return "a qualifier without a mechanism"
		}
		return "no mechanism name"
	default:
		if _, _, ok := spfModifier(d); ok {
			return "a modifier takes no qualifier" // §4.6.1: only directives do
		}
		if strings.IndexByte(d, '=') >= 0 {
			return "a modifier name begins with a letter and holds only letters, digits, " +
				`"-", "_" and "."`
		}
		return "unknown mechanism " + spfQuote(d[:i])
	}
	return ""
}

// cutSPFDualCIDR cuts the dual-cidr-length off the end of s:
//
//	dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
//
// v4 and v6 keep their "/" ("" when absent); digits are not checked, so a
// malformed length ("/", "/032") is cut off and found by checkSPFCIDR.
// The cut is unambiguous: a domain-spec ends in a macro-expand or a
// toplabel, and neither ends in "/" and digits.
func cutSPFDualCIDR(s string) (rest, v4, v6 string) {
	j := len(s)
	for j > 0 && isSPFDigit(s[j-1]) {
		j--
	}
	if j == 0 || s[j-1] != '/' {
		return s, "", ""
	}
	if j < 2 || s[j-2] != '/' {
		return s[:j-1], s[j-1:], ""
	}
	rest, v6 = s[:j-2], s[j-1:]
	k := len(rest)
	for k > 0 && isSPFDigit(rest[k-1]) {
		k--
	}
	if k > 0 && rest[k-1] == '/' {
		rest, v4 = rest[:k-1], rest[k-1:]
	}
	return rest, v4, v6
}

// checkSPFCIDR checks a CIDR length with its "/" (§12):
//
//	ip4-cidr-length = "/" ("0" / %x31-39 0*1DIGIT) ; value range 0-32
//	ip6-cidr-length = "/" ("0" / %x31-39 0*2DIGIT) ; value range 0-128
//
// bits, the largest value, is 32 or 128.
func checkSPFCIDR(c string, bits int) string {
	digits := c[1:]
	switch {
	case digits == "":
		return "cidr length is empty"
	case strings.Trim(digits, "0123456789") != "":
		return "cidr length is not a number"
	case len(digits) > 1 && digits[0] == '0':
		return "cidr length with a leading zero"
	}
	if n, err := strconv.Atoi(digits); err != nil || n > bits {
		return "cidr length above " + strconv.Itoa(bits)
	}
	return ""
}

// checkSPFDomainSpec checks a domain-spec (§7.1, §12) and returns what is
// wrong with it, or "":
//
//	domain-spec = macro-string domain-end
//	domain-end  = ( "." toplabel [ "." ] ) / macro-expand
//
// The name it expands to is not checked: that is the lookup's business
// (§4.6.4), not the record's grammar.
func checkSPFDomainSpec(s string) string {
	if s == "" {
		return "empty domain-spec"
	}
	end, p := scanSPFMacroString(s, false)
	if p != "" {
		return p
	}
	if end == len(s) {
		return "" // ends in a macro-expand
	}
	// What follows the last macro-expand is all macro-literal: it must
	// end in "." toplabel, and perhaps one more ".".
	tail := strings.TrimSuffix(s[end:], ".")
	dot := strings.LastIndexByte(tail, '.')
	if dot < 0 {
		if end == 0 {
			return "a single-label domain"
		}
		return `no "." before the top label`
	}
	return checkSPFToplabel(tail[dot+1:])
}

// checkSPFToplabel checks the last label of a domain-spec (§7.1, §12):
//
//	toplabel = ( *alphanum ALPHA *alphanum ) /
//	           ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
//
// letters, digits and hyphens, not all digits (RFC 3696 §2: no top-level
// domain is all-numeric), not beginning or ending with a hyphen.
func checkSPFToplabel(l string) string {
	if l == "" {
		return "empty top label"
	}
	alpha, hyphen := false, false
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case isSPFAlpha(c):
			alpha = true
		case c == '-':
			hyphen = true
		case !isSPFDigit(c):
			return "top label holds " + strconv.QuoteRuneToASCII(rune(c))
		}
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return "top label begins or ends with a hyphen"
	}
	if !alpha && !hyphen {
		return "top label is all digits"
	}
	return ""
}

// scanSPFMacroString checks s against macro-string (§7.1, §12) and returns
// the offset just past its last macro-expand (0 if it has none):
//
//	macro-string  = *( macro-expand / macro-literal )
//	macro-expand  = ( "%{" macro-letter transformers *delimiter "}" )
//	                / "%%" / "%_" / "%-"
//	macro-literal = %x21-24 / %x26-7E   ; visible characters except "%"
//	macro-letter  = "s" / "l" / "o" / "d" / "i" / "p" / "h" /
//	                "c" / "r" / "t" / "v"
//	transformers  = *DIGIT [ "r" ]
//	delimiter     = "." / "-" / "+" / "," / "/" / "_" / "="
//
// §7.2: the letters c, r and t are allowed only in explanation text, so
// crt allows them or not.
func scanSPFMacroString(s string, crt bool) (end int, problem string) {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			if c < 0x21 || c > 0x7e {
				return 0, "character " + strconv.QuoteRuneToASCII(rune(c)) + " is not allowed"
			}
			i++
			continue
		}
		if i+1 == len(s) {
			return 0, `a lone "%" at the end (a literal "%" is written "%%")`
		}
		switch s[i+1] {
		case '%', '_', '-':
			i += 2
		case '{':
			body, _, ok := strings.Cut(s[i+2:], "}")
			if !ok {
				return 0, "unterminated macro"
			}
			if p := checkSPFMacro(body, crt); p != "" {
				return 0, p
			}
			i += len("%{") + len(body) + len("}")
		default:
			return 0, `"%" followed by ` + strconv.QuoteRuneToASCII(rune(s[i+1])) +
				` (a literal "%" is written "%%")`
		}
		end = i
	}
	return end, ""
}

// checkSPFMacro checks what is between "%{" and "}": macro-letter
// transformers *delimiter (§7.1).
func checkSPFMacro(body string, crt bool) string {
	if body == "" {
		return "empty macro"
	}
	letter := body[0] | 0x20 // ASCII lower case; non-letters stay unknown
	switch letter {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if !crt {
			return "macro letter " + string(letter) + " is allowed only in explanation text"
		}
	default:
		return "unknown macro letter " + strconv.QuoteRuneToASCII(rune(body[0]))
	}
	i := 1
	for i < len(body) && isSPFDigit(body[i]) {
		i++
	}
	// §7.3: "If a DIGIT is specified, the value MUST be nonzero."
	if i > 1 && strings.Trim(body[1:i], "0") == "" {
		return "macro with a zero digit transformer"
	}
	if i < len(body) && body[i]|0x20 == 'r' {
		i++
	}
	for i < len(body) && strings.IndexByte(".-+,/_=", body[i]) >= 0 {
		i++
	}
	if i != len(body) {
		return "malformed macro " + spfQuote("%{"+body+"}")
	}
	return ""
}

func isSPFAlpha(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

func isSPFDigit(c byte) bool { return '0' <= c && c <= '9' }
