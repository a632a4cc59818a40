package inspect

import (
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// urlSet collects the distinct URLs of a message, up to a limit.
type urlSet struct {
	list  []URL
	seen  map[string]struct{}
	max   int
	flaws *flaws
}

// add records raw if it is a web or FTP URL with a host and is new.
func (s *urlSet) add(raw string) {
	if len(s.list) >= s.max {
		if _, dup := s.seen[raw]; !dup {
			s.flaws.add(MalformedURLsTruncated)
		}
		return
	}
	if _, dup := s.seen[raw]; dup {
		return
	}
	host, ok := urlHost(raw)
	if !ok {
		return
	}
	if s.seen == nil {
		s.seen = make(map[string]struct{})
	}
	s.seen[raw] = struct{}{}
	s.list = append(s.list, URL{Raw: raw, Host: host})
}

// urlPrefixLen returns the length of the scheme prefix s starts with
// ("http://", "https://", "ftp://" in any case, with backslashes for
// slashes as browsers allow, and "www." for the bare links mail clients
// make clickable), or 0.
func urlPrefixLen(s string) int {
	for _, scheme := range [...]string{"http:", "https:", "ftp:"} {
		n := len(scheme)
		if len(s) >= n+2 && strings.EqualFold(s[:n], scheme) && isSlash(s[n]) && isSlash(s[n+1]) {
			return n + 2
		}
	}
	if len(s) >= 4 && strings.EqualFold(s[:4], "www.") {
		return 4
	}
	return 0
}

func isSlash(c byte) bool { return c == '/' || c == '\\' }

// urlHost returns the lower-cased host of a URL, without user info and
// port. Browsers read "\" as "/" and extra slashes after the scheme, and
// decode percent escapes in the host; so does this, since spam relies on
// all three. IP hosts are kept as written (without brackets); IDN
// punycode is left as it is.
func urlHost(raw string) (string, bool) {
	rest := raw
	if i := strings.IndexByte(rest, ':'); i > 0 && !(len(rest) >= 4 && strings.EqualFold(rest[:4], "www.")) {
		rest = strings.TrimLeft(rest[i+1:], "/\\")
	}
	if i := strings.IndexAny(rest, "/?#\\"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if strings.Contains(rest, "%") {
		if u, err := url.PathUnescape(rest); err == nil && utf8.ValidString(u) {
			rest = u
		}
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return "", false
		}
		addr, err := netip.ParseAddr(rest[1:end])
		if err != nil {
			return "", false
		}
		return addr.String(), true
	}
	host := rest
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	// Cut at the first character no host name has.
	for i, r := range host {
		if !(r == '.' || r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)) {
			host = host[:i]
			break
		}
	}
	host = strings.ToLower(strings.Trim(host, "."))
	if host == "" || strings.HasPrefix(host, "-") {
		return "", false
	}
	return host, true
}

// scanText finds the links in plain text: http://, https:// and ftp://
// URLs and bare www. names, which mail clients make clickable. A URL ends
// at whitespace, a quote or angle bracket, or non-ASCII punctuation;
// trailing punctuation that usually ends the sentence is not part of it.
//
// Every link holds a ':' (the scheme's) or a '.' (after "www"), so the
// text is searched for those two bytes, which memchr-style search skips
// to quickly, and only the few places before them are looked at.
func (s *urlSet) scanText(text string) {
	next := 0                             // candidates before this lie in a URL already found
	colon := strings.IndexByte(text, ':') // the next of each anchor, or -1
	dot := strings.IndexByte(text, '.')
	for colon >= 0 || dot >= 0 {
		var j int
		var cands [3]int // ascending; -1 for none
		if dot < 0 || colon >= 0 && colon < dot {
			j = colon
			cands = [3]int{j - 5, j - 4, j - 3} // https, http, ftp
			colon = nextByte(text, ':', j)
		} else {
			j = dot
			cands = [3]int{-1, -1, j - 3} // www.
			dot = nextByte(text, '.', j)
		}
		for _, i := range cands {
			if i < next {
				continue
			}
			if end, ok := s.scanAt(text, i); ok {
				next = end
				if len(s.list) >= s.max && s.flaws.has(MalformedURLsTruncated) {
					return
				}
			}
		}
		// An anchor inside a URL found is passed over.
		if colon >= 0 && colon < next {
			colon = nextByte(text, ':', next-1)
		}
		if dot >= 0 && dot < next {
			dot = nextByte(text, '.', next-1)
		}
	}
}

// nextByte is the index of the first c in text after index j, or -1.
func nextByte(text string, c byte, j int) int {
	k := strings.IndexByte(text[j+1:], c)
	if k < 0 {
		return -1
	}
	return j + 1 + k
}

// scanAt takes the link that starts at text[i], if one does, and reports
// where it ends.
func (s *urlSet) scanAt(text string, i int) (end int, ok bool) {
	if i > 0 && !urlBoundary(text[i-1]) {
		return 0, false
	}
	n := urlPrefixLen(text[i:])
	if n == 0 {
		return 0, false
	}
	end = i + n
	for end < len(text) {
		c := text[end]
		if c < utf8.RuneSelf {
			if urlStopASCII[c] {
				break
			}
			end++
			continue
		}
		r, size := utf8.DecodeRuneInString(text[end:])
		if urlStop(r) {
			break
		}
		end += size
	}
	raw := trimURLTail(text[i:end])
	if len(raw) > n {
		s.add(raw)
	}
	return end, true
}

// urlStopASCII is urlStop for the ASCII characters.
var urlStopASCII = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = urlStop(rune(c))
	}
	return t
}()

// urlBoundary reports whether a URL may start after byte c: not inside a
// word, an e-mail address or another URL.
func urlBoundary(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return false
	case c == '@' || c == '.' || c == '/' || c == '-' || c == '_' || c == '%':
		return false
	}
	return true
}

// urlStop reports whether r ends a URL in running text.
func urlStop(r rune) bool {
	if r < 0x80 {
		return r <= ' ' || r == 0x7f || strings.ContainsRune("<>\"`{}|^", r)
	}
	return unicode.IsSpace(r) || unicode.IsPunct(r) || unicode.IsControl(r) || r == utf8.RuneError
}

// trimURLTail drops the punctuation that ends a sentence rather than the
// URL, and closing brackets without an opening one inside the URL. The
// brackets are counted once, so a URL ending in a million ")" costs a
// million steps, not a million squared.
func trimURLTail(u string) string {
	var open, closed [3]int // (), [], {}
	counted := false
	for u != "" {
		c := u[len(u)-1]
		switch c {
		case '.', ',', ';', ':', '!', '?', '\'', '*':
			u = u[:len(u)-1]
			continue
		case ')', ']', '}':
			if !counted {
				for i := 0; i < len(u); i++ {
					switch u[i] {
					case '(':
						open[0]++
					case '[':
						open[1]++
					case '{':
						open[2]++
					case ')':
						closed[0]++
					case ']':
						closed[1]++
					case '}':
						closed[2]++
					}
				}
				counted = true
			}
			k := 0
			if c == ']' {
				k = 1
			} else if c == '}' {
				k = 2
			}
			if open[k] < closed[k] {
				closed[k]--
				u = u[:len(u)-1]
				continue
			}
		}
		return u
	}
	return u
}

// addLink records a link from an HTML attribute (href, src...) when it is
// absolute or a bare www. name; relative links name no host.
func (s *urlSet) addLink(v string) {
	v = strings.TrimSpace(v)
	if urlPrefixLen(v) == 0 {
		return
	}
	s.add(v)
}
