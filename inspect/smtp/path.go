package smtp

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Size limits of RFC 5321 §4.5.3.1.
const (
	MaxLocalPartLen = 64  // RFC 5321 §4.5.3.1.1: octets in a local part
	MaxDomainLen    = 255 // RFC 5321 §4.5.3.1.2: octets in a domain
	MaxPathLen      = 256 // RFC 5321 §4.5.3.1.3: octets in a path, brackets included
	maxLabelLen     = 63  // RFC 1035 §2.3.4: octets in one domain label
	maxParams       = 32  // ESMTP parameters per MAIL or RCPT; real clients send a handful
)

// Path is a mailbox in an SMTP reverse-path or forward-path. The null
// reverse-path "<>" is the zero Path.
type Path struct {
	// Local is the local part exactly as on the wire: a quoted local part
	// keeps its quotes and backslash escapes. For "<postmaster>" in RCPT it
	// is the word as sent ("postmaster", "Postmaster", ...).
	Local string
	// Domain is the domain or address literal ("[192.0.2.1]",
	// "[IPv6:2001:db8::1]") as sent, not lower-cased; "" for the null path
	// and for "<postmaster>".
	Domain string
}

// IsNull reports whether p is the null reverse-path "<>" (RFC 5321 §4.5.5).
func (p Path) IsNull() bool { return p.Local == "" && p.Domain == "" }

// String returns "local@domain", "" for the null path, and just the local
// part for a path without a domain (RCPT's "<postmaster>").
func (p Path) String() string {
	if p.Domain == "" {
		return p.Local
	}
	return p.Local + "@" + p.Domain
}

// Param is an ESMTP parameter of MAIL or RCPT (RFC 5321 §4.1.2,
// Mail-parameters and Rcpt-parameters).
type Param struct {
	Key   string // esmtp-keyword, upper-cased
	Value string // esmtp-value as sent; "" when the parameter has no "="
}

// ParseMailArg parses the argument of MAIL: "FROM:<path> params...".
//
// The keyword "FROM:" is case-insensitive. Spaces between "FROM:" and "<"
// are tolerated (RFC 5321 §4.1.1.2 has none, but they are common and Postfix
// accepts them); the angle brackets are required. The null path "<>" is
// allowed (RFC 5321 §4.5.5). A source route ("<@a,@b:user@c>") is accepted
// and discarded (RFC 5321 §4.1.2 and Appendix C). The local part may be a
// dot-string or a quoted string with backslash escapes; local part and
// domain may hold UTF-8 (RFC 6531 §3.3); the domain may be an IPv4 or IPv6
// address literal (RFC 5321 §4.1.3).
//
// Leniency: an unquoted local part may have leading, trailing or repeated
// dots, which RFC 5321's Dot-string forbids but which real mailboxes (some
// mobile carriers' among them) have and common MTAs accept.
//
// Errors wrap [ErrSyntax]: missing brackets, bad domain syntax, a local part
// over 64 octets or a domain over 255 (RFC 5321 §4.5.3.1.1, §4.5.3.1.2), a
// path over 256 octets (§4.5.3.1.3), control characters, invalid UTF-8,
// malformed or duplicate parameters, and malformed values of the parameters
// moat understands: SIZE (RFC 1870 §6), BODY (RFC 6152 §2, RFC 3030 §3),
// SMTPUTF8 (RFC 6531 §3.4), RET and ENVID (RFC 3461 §4.3, §4.4) and AUTH
// (RFC 4954 §5). Other parameters are returned unchecked beyond the
// esmtp-param grammar, for the caller to accept or refuse.
func ParseMailArg(arg string) (Path, []Param, error) {
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		return Path{}, nil, fmt.Errorf("%w: MAIL argument must start with FROM:", ErrSyntax)
	}
	p, rest, err := parsePath(strings.TrimLeft(rest, " "), true, false)
	if err != nil {
		return Path{}, nil, err
	}
	params, err := parseParams(rest, checkMailParam)
	if err != nil {
		return Path{}, nil, err
	}
	return p, params, nil
}

// ParseRcptArg parses the argument of RCPT: "TO:<path> params...". It
// follows the rules of [ParseMailArg], except that the null path is an
// error and "<postmaster>" without a domain (any case) is allowed
// (RFC 5321 §4.1.1.3). The DSN parameters NOTIFY and ORCPT are checked
// (RFC 3461 §4.1, §4.2).
func ParseRcptArg(arg string) (Path, []Param, error) {
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		return Path{}, nil, fmt.Errorf("%w: RCPT argument must start with TO:", ErrSyntax)
	}
	p, rest, err := parsePath(strings.TrimLeft(rest, " "), false, true)
	if err != nil {
		return Path{}, nil, err
	}
	params, err := parseParams(rest, checkRcptParam)
	if err != nil {
		return Path{}, nil, err
	}
	return p, params, nil
}

// FormatPathArg formats a path and its parameters the way MAIL and RCPT
// carry them after "FROM:" or "TO:": "<local@domain> KEY=VALUE KEY ...".
// For what ParseMailArg or ParseRcptArg returned, parsing "FROM:" or "TO:"
// followed by the result gives the same path and parameters back, so the
// proxy can replay a client's envelope upstream unchanged.
func FormatPathArg(p Path, params []Param) string {
	var b strings.Builder
	n := len(p.Local) + len(p.Domain) + 3
	for _, pa := range params {
		n += len(pa.Key) + len(pa.Value) + 2
	}
	b.Grow(n)
	b.WriteByte('<')
	b.WriteString(p.String())
	b.WriteByte('>')
	for _, pa := range params {
		b.WriteByte(' ')
		b.WriteString(pa.Key)
		if pa.Value != "" {
			b.WriteByte('=')
			b.WriteString(pa.Value)
		}
	}
	return b.String()
}

// LookupParam returns the value of the parameter named key (matched
// case-insensitively) and whether it is present.
func LookupParam(params []Param, key string) (value string, ok bool) {
	for _, p := range params {
		if strings.EqualFold(p.Key, key) {
			return p.Value, true
		}
	}
	return "", false
}

// ParseSizeValue parses the value of the SIZE parameter of MAIL: 1 to 20
// decimal digits (RFC 1870 §6). Values beyond what an int64 holds are
// returned as math.MaxInt64: they exceed any real limit anyway.
func ParseSizeValue(v string) (int64, error) {
	if v == "" || len(v) > 20 {
		return 0, fmt.Errorf("%w: SIZE value must be 1 to 20 digits", ErrSyntax)
	}
	var n int64
	for i := range len(v) {
		c := v[i]
		if !isDigit(c) {
			return 0, fmt.Errorf("%w: SIZE value must be digits", ErrSyntax)
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	return n, nil
}

// DecodeXtext decodes an xtext value (RFC 3461 §4), the encoding of the DSN
// parameters ENVID and ORCPT and of AUTH=: printable ASCII except "+" and
// "=" stands for itself, and "+XX" (two upper-case hex digits) for the
// byte XX.
func DecodeXtext(s string) (string, error) {
	if err := checkXtext(s); err != nil {
		return "", err
	}
	if strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '+' { // checked: two upper-case hex digits follow
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b), nil
}

// EncodeXtext encodes s as xtext (RFC 3461 §4), for the DSN parameters
// and for XCLIENT's attribute values, which Postfix reads as xtext
// (XCLIENT_README): "+", "=" and every byte outside "!".."~" become "+"
// and two upper-case hex digits; the rest stands for itself.
func EncodeXtext(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !isXchar(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isXchar(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '+', hex[c>>4], hex[c&0xF])
	}
	return string(b)
}

// isXchar reports whether c stands for itself in xtext: "!".."~" except
// "+" and "=" (RFC 3461 §4).
func isXchar(c byte) bool { return '!' <= c && c <= '~' && c != '+' && c != '=' }

// checkXtext validates xtext = *( xchar / hexchar ) (RFC 3461 §4).
func checkXtext(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return fmt.Errorf("%w: bad hexchar in xtext", ErrSyntax)
			}
			i += 2
		case !isXchar(c):
			return fmt.Errorf("%w: invalid character in xtext", ErrSyntax)
		}
	}
	return nil
}

func isUpperHex(c byte) bool { return isDigit(c) || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	if isDigit(c) {
		return c - '0'
	}
	return c - 'A' + 10
}

// cutPrefixFold is strings.CutPrefix ignoring ASCII case; prefix is upper
// case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !equalFoldASCII(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// parsePath parses a Path or Reverse-path (RFC 5321 §4.1.2) at the start of
// s and returns it with the rest of s.
func parsePath(s string, allowNull, allowPostmaster bool) (Path, string, error) {
	if s == "" || s[0] != '<' {
		return Path{}, "", fmt.Errorf("%w: path must start with <", ErrSyntax)
	}
	if strings.HasPrefix(s, "<>") {
		if !allowNull {
			return Path{}, "", fmt.Errorf("%w: null path not allowed here", ErrSyntax)
		}
		return Path{}, s[2:], nil
	}
	i := 1
	// A-d-l, the obsolete source route: "@one,@two:" (RFC 5321 §4.1.2).
	// It must be accepted and its hosts ignored (RFC 5321 Appendix C).
	if i < len(s) && s[i] == '@' {
		for {
			i++ // the '@'
			j := i + scanDomain(s[i:])
			if err := checkDomain(s[i:j]); err != nil {
				return Path{}, "", fmt.Errorf("source route: %w", err)
			}
			i = j
			if i < len(s) && s[i] == ',' && i+1 < len(s) && s[i+1] == '@' {
				i++
				continue
			}
			if i < len(s) && s[i] == ':' {
				i++
				break
			}
			return Path{}, "", fmt.Errorf("%w: malformed source route", ErrSyntax)
		}
	}

	start := i
	if i < len(s) && s[i] == '"' {
		n, err := scanQuoted(s[i:])
		if err != nil {
			return Path{}, "", err
		}
		i += n
	} else {
		n, err := scanDotString(s[i:])
		if err != nil {
			return Path{}, "", err
		}
		if n == 0 {
			// Dot-string = Atom *("." Atom), Atom = 1*atext.
			return Path{}, "", fmt.Errorf("%w: empty local part", ErrSyntax)
		}
		i += n
	}
	local := s[start:i]
	if len(local) > MaxLocalPartLen {
		return Path{}, "", fmt.Errorf("%w: local part longer than %d octets", ErrSyntax, MaxLocalPartLen)
	}

	var domain string
	switch {
	case i < len(s) && s[i] == '@':
		i++
		start := i
		if i < len(s) && s[i] == '[' {
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return Path{}, "", fmt.Errorf("%w: unterminated address literal", ErrSyntax)
			}
			i += end + 1
			if err := checkAddressLiteral(s[start:i]); err != nil {
				return Path{}, "", err
			}
		} else {
			i += scanDomain(s[i:])
			if err := checkDomain(s[start:i]); err != nil {
				return Path{}, "", err
			}
		}
		domain = s[start:i]
	case allowPostmaster && strings.EqualFold(local, "postmaster"):
		// RFC 5321 §4.1.1.3: "<Postmaster>" without a domain must be
		// accepted as a recipient.
	default:
		return Path{}, "", fmt.Errorf("%w: mailbox has no @domain", ErrSyntax)
	}
	if i >= len(s) || s[i] != '>' {
		return Path{}, "", fmt.Errorf("%w: path must end with >", ErrSyntax)
	}
	i++
	if i > MaxPathLen {
		return Path{}, "", fmt.Errorf("%w: path longer than %d octets", ErrSyntax, MaxPathLen)
	}
	return Path{Local: local, Domain: domain}, s[i:], nil
}

// isAtext reports the ASCII atext characters of RFC 5322 §3.2.3, which
// RFC 5321 §4.1.2 uses for Atom.
func isAtext(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '/', '=', '?', '^', '_', '`', '{', '|', '}', '~':
		return true
	}
	return false
}

// scanDotString returns the length of the unquoted local part at the start
// of s: atext, dots and UTF-8 (RFC 6531 §3.3 adds UTF8-non-ascii to atext).
// It stops at '@' or '>' and fails on anything else.
func scanDotString(s string) (int, error) {
	i := 0
	ascii := true
	for i < len(s) {
		c := s[i]
		switch {
		case c == '@' || c == '>':
			if !ascii && !utf8.ValidString(s[:i]) {
				return 0, fmt.Errorf("%w: invalid UTF-8 in local part", ErrSyntax)
			}
			return i, nil
		case isAtext(c) || c == '.':
		case c >= 0x80:
			ascii = false
		default:
			return 0, fmt.Errorf("%w: invalid character 0x%02x in local part", ErrSyntax, c)
		}
		i++
	}
	return 0, fmt.Errorf("%w: path must end with >", ErrSyntax)
}

// scanQuoted returns the length of the Quoted-string (RFC 5321 §4.1.2,
// with RFC 6531 §3.3's UTF-8 in qtextSMTP) at the start of s, quotes
// included.
func scanQuoted(s string) (int, error) {
	ascii := true
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			if !ascii && !utf8.ValidString(s[:i]) {
				return 0, fmt.Errorf("%w: invalid UTF-8 in local part", ErrSyntax)
			}
			return i + 1, nil
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126
			i++
			if i >= len(s) || s[i] < 32 || s[i] > 126 {
				return 0, fmt.Errorf("%w: bad quoted-pair in local part", ErrSyntax)
			}
		case c >= 0x80:
			ascii = false
		case c < 32 || c == 127:
			return 0, fmt.Errorf("%w: control character in local part", ErrSyntax)
		}
	}
	return 0, fmt.Errorf("%w: unterminated quoted local part", ErrSyntax)
}

// scanDomain returns the length of the run of domain characters (letters,
// digits, hyphens, dots, UTF-8 bytes) at the start of s.
func scanDomain(s string) int {
	i := 0
	for i < len(s) {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '.' && c < 0x80 {
			break
		}
		i++
	}
	return i
}

// checkDomain validates Domain = sub-domain *("." sub-domain) with
// sub-domain = Let-dig [Ldh-str] (RFC 5321 §4.1.2), extended with U-labels
// for SMTPUTF8 (RFC 6531 §3.3), and the length limits of RFC 5321
// §4.5.3.1.2 and RFC 1035 §2.3.4.
func checkDomain(d string) error {
	if d == "" {
		return fmt.Errorf("%w: empty domain", ErrSyntax)
	}
	if len(d) > MaxDomainLen {
		return fmt.Errorf("%w: domain longer than %d octets", ErrSyntax, MaxDomainLen)
	}
	ascii := true
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return fmt.Errorf("%w: empty label in domain", ErrSyntax)
		}
		if len(label) > maxLabelLen {
			return fmt.Errorf("%w: domain label longer than %d octets", ErrSyntax, maxLabelLen)
		}
		for i := range len(label) {
			c := label[i]
			switch {
			case isAlpha(c) || isDigit(c):
			case c >= 0x80:
				ascii = false
			case c == '-' && i > 0 && i < len(label)-1:
			default:
				return fmt.Errorf("%w: invalid character %q in domain", ErrSyntax, c)
			}
		}
	}
	if !ascii && !utf8.ValidString(d) {
		return fmt.Errorf("%w: invalid UTF-8 in domain", ErrSyntax)
	}
	return nil
}

// checkAddressLiteral validates "[IPv4]" or "[IPv6:addr]" (RFC 5321
// §4.1.3). General-address-literals with other tags are refused: none is
// registered for use in mail.
func checkAddressLiteral(lit string) error {
	if len(lit) > MaxDomainLen {
		return fmt.Errorf("%w: address literal longer than %d octets", ErrSyntax, MaxDomainLen)
	}
	inner := lit[1 : len(lit)-1]
	if v6, ok := cutPrefixFold(inner, "IPV6:"); ok {
		a, err := netip.ParseAddr(v6)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Errorf("%w: bad IPv6 address literal", ErrSyntax)
		}
		return nil
	}
	if !isIPv4Literal(inner) {
		return fmt.Errorf("%w: bad address literal", ErrSyntax)
	}
	return nil
}

// isIPv4Literal checks IPv4-address-literal = Snum 3("." Snum), Snum =
// 1*3DIGIT with a value of 0 to 255 (RFC 5321 §4.1.3). Unlike
// netip.ParseAddr it allows leading zeros, as the grammar does.
func isIPv4Literal(s string) bool {
	parts := 0
	for part := range strings.SplitSeq(s, ".") {
		parts++
		if parts > 4 || part == "" || len(part) > 3 {
			return false
		}
		v := 0
		for i := range len(part) {
			if !isDigit(part[i]) {
				return false
			}
			v = v*10 + int(part[i]-'0')
		}
		if v > 255 {
			return false
		}
	}
	return parts == 4
}

// parseParams parses " KEY[=VALUE] ..." after a path (RFC 5321 §4.1.2:
// esmtp-param *(SP esmtp-param); runs of spaces are tolerated). check
// validates the values of known keywords.
func parseParams(s string, check func(key, value string) error) ([]Param, error) {
	if s == "" {
		return nil, nil
	}
	if s[0] != ' ' {
		return nil, fmt.Errorf("%w: junk after path", ErrSyntax)
	}
	var params []Param
	for word := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ' ' }) {
		if len(params) == maxParams {
			return nil, fmt.Errorf("%w: more than %d parameters", ErrSyntax, maxParams)
		}
		key, value, hasValue := strings.Cut(word, "=")
		if err := checkKeyword(key); err != nil {
			return nil, err
		}
		if hasValue {
			if err := checkValue(value); err != nil {
				return nil, fmt.Errorf("%w (parameter %s)", err, key)
			}
		}
		key = strings.ToUpper(key)
		for _, p := range params {
			if p.Key == key {
				return nil, fmt.Errorf("%w: duplicate parameter %s", ErrSyntax, key)
			}
		}
		if err := check(key, value); err != nil {
			return nil, err
		}
		params = append(params, Param{Key: key, Value: value})
	}
	return params, nil
}

// checkKeyword validates esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT /
// "-") (RFC 5321 §4.1.2).
func checkKeyword(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty parameter keyword", ErrSyntax)
	}
	for i := range len(k) {
		c := k[i]
		if !isAlpha(c) && !isDigit(c) && (c != '-' || i == 0) {
			return fmt.Errorf("%w: invalid character in parameter keyword", ErrSyntax)
		}
	}
	return nil
}

// checkValue validates esmtp-value = 1*(%d33-60 / %d62-126) (RFC 5321
// §4.1.2), with UTF-8 allowed by RFC 6531 §3.3.
func checkValue(v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty parameter value", ErrSyntax)
	}
	ascii := true
	for i := range len(v) {
		c := v[i]
		switch {
		case c >= 0x80:
			ascii = false
		case c < 33 || c > 126 || c == '=':
			return fmt.Errorf("%w: invalid character in parameter value", ErrSyntax)
		}
	}
	if !ascii && !utf8.ValidString(v) {
		return fmt.Errorf("%w: invalid UTF-8 in parameter value", ErrSyntax)
	}
	return nil
}

// checkMailParam validates the values of the MAIL parameters moat
// understands; key is upper case.
func checkMailParam(key, value string) error {
	switch key {
	case "SIZE": // RFC 1870 §6
		if _, err := ParseSizeValue(value); err != nil {
			return err
		}
	case "BODY": // RFC 6152 §2; BINARYMIME: RFC 3030 §3
		if !strings.EqualFold(value, "7BIT") && !strings.EqualFold(value, "8BITMIME") && !strings.EqualFold(value, "BINARYMIME") {
			return fmt.Errorf("%w: BODY must be 7BIT, 8BITMIME or BINARYMIME", ErrSyntax)
		}
	case "SMTPUTF8": // RFC 6531 §3.4: no value
		if value != "" {
			return fmt.Errorf("%w: SMTPUTF8 takes no value", ErrSyntax)
		}
	case "RET": // RFC 3461 §4.3
		if !strings.EqualFold(value, "FULL") && !strings.EqualFold(value, "HDRS") {
			return fmt.Errorf("%w: RET must be FULL or HDRS", ErrSyntax)
		}
	case "ENVID": // RFC 3461 §4.4: xtext, at most 100 characters
		if value == "" || len(value) > 100 {
			return fmt.Errorf("%w: ENVID must be 1 to 100 characters", ErrSyntax)
		}
		if err := checkXtext(value); err != nil {
			return err
		}
	case "AUTH": // RFC 4954 §5: xtext or "<>"
		if value == "" {
			return fmt.Errorf("%w: AUTH needs a value", ErrSyntax)
		}
		if value != "<>" {
			if err := checkXtext(value); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRcptParam validates the values of the RCPT parameters moat
// understands; key is upper case.
func checkRcptParam(key, value string) error {
	switch key {
	case "NOTIFY": // RFC 3461 §4.1: NEVER, or a list of SUCCESS, FAILURE, DELAY
		if strings.EqualFold(value, "NEVER") {
			return nil
		}
		if value == "" {
			return fmt.Errorf("%w: NOTIFY needs a value", ErrSyntax)
		}
		seen := 0
		for v := range strings.SplitSeq(value, ",") {
			bit := 0
			switch {
			case strings.EqualFold(v, "SUCCESS"):
				bit = 1
			case strings.EqualFold(v, "FAILURE"):
				bit = 2
			case strings.EqualFold(v, "DELAY"):
				bit = 4
			default:
				return fmt.Errorf("%w: bad NOTIFY value", ErrSyntax)
			}
			if seen&bit != 0 {
				return fmt.Errorf("%w: repeated NOTIFY value", ErrSyntax)
			}
			seen |= bit
		}
	case "ORCPT": // RFC 3461 §4.2: addr-type ";" xtext
		typ, addr, ok := strings.Cut(value, ";")
		if !ok || typ == "" || addr == "" {
			return fmt.Errorf("%w: ORCPT must be addr-type;address", ErrSyntax)
		}
		for i := range len(typ) {
			if !isAtext(typ[i]) {
				return fmt.Errorf("%w: bad ORCPT address type", ErrSyntax)
			}
		}
		// With SMTPUTF8 the address may be utf-8-addr-xtext (RFC 6533 §3),
		// which carries raw UTF-8; only pure-ASCII addresses are xtext.
		if isASCII(addr) {
			if err := checkXtext(addr); err != nil {
				return err
			}
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
