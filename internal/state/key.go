package state

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Prefix starts every key moat stores. Its "v1" is the version of the
// key layout and of the entries' encoding: a moat that changes either
// moves to v2 and never misreads what an older one left behind.
const Prefix = "moat:v1:"

// maxPart is the longest escaped key part kept as it is; a longer one is
// replaced by a hash, so that hostile input (a 1,000-byte HELO name)
// cannot make keys of unbounded size.
const maxPart = 200

// Key names one entry: Prefix, a namespace, then parts, separated by ':'.
// The zero Key is invalid; operations on it fail with ErrInvalid.
type Key struct{ s string }

// NewKey makes the key of namespace ns (1 to 32 of a-z, 0-9, '_', '-',
// starting with a letter: "grey", "rate-ip") and parts, which may be any
// bytes, hostile input included. Each part is escaped: bytes other than
// letters, digits and . - _ @ + / = become %XX, so that no part contains
// the ':' separator or a glob character (* ? [ ] \) and parts cannot run
// into each other or into another namespace. A part longer than 200
// bytes once escaped is replaced by '#' and a SHA-256 prefix of it
// ('#' is always escaped, so no other part looks like that). An invalid
// namespace makes the zero Key.
func NewKey(ns string, parts ...string) Key {
	if !validNamespace(ns) {
		return Key{}
	}
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString(ns)
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(EscapePart(p))
	}
	return Key{s: b.String()}
}

// String is the full key, as stored.
func (k Key) String() string { return k.s }

// Valid reports whether k was made from a valid namespace.
func (k Key) Valid() bool { return k.s != "" }

// Pattern is a Scan or Delete pattern that matches k and no other key.
func (k Key) Pattern() string { return strings.TrimPrefix(k.s, Prefix) }

func validNamespace(ns string) bool {
	if len(ns) == 0 || len(ns) > 32 || ns[0] < 'a' || ns[0] > 'z' {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// EscapePart is how NewKey writes one part; operators use it to write a
// pattern that matches a given sender or address exactly.
func EscapePart(p string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if safeByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	if b.Len() > maxPart {
		sum := sha256.Sum256([]byte(p))
		return "#" + hex.EncodeToString(sum[:16])
	}
	return b.String()
}

func safeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == '@' || c == '+' || c == '/' || c == '='
}

// checkPattern refuses patterns that cannot be meant: empty, too long, or
// holding bytes no key has (a pattern is typed by an operator).
func checkPattern(p string) error {
	if p == "" || len(p) > 1024 {
		return fmt.Errorf("%w: pattern must be 1 to 1024 bytes", ErrInvalid)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x21 || p[i] > 0x7e {
			return fmt.Errorf("%w: pattern %q: byte %#x is in no key (escape it as %%XX)", ErrInvalid, p, p[i])
		}
	}
	return nil
}

// literalPrefix is the part of a glob before its first special character:
// every match starts with it, so the embedded store seeks there.
func literalPrefix(pattern string) string {
	if i := strings.IndexAny(pattern, `*?[\`); i >= 0 {
		return pattern[:i]
	}
	return pattern
}

// globMatch matches s against a glob in Redis's syntax (stringmatchlen in
// Redis's util.c): * any run, ? any byte, [abc] [^abc] [a-z] a class, \x
// the byte x. The embedded store uses it so that a pattern means the same
// on both backends. It is iterative with one backtrack point, so hostile
// patterns ("*a*a*a*...") stay linear in practice.
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starI = p, i
				p++
				continue
			case '?':
				p++
				i++
				continue
			case '[':
				if n, ok := matchClass(pattern[p:], s[i]); n > 0 && ok {
					p += n
					i++
					continue
				}
			case '\\':
				if p+1 < len(pattern) && pattern[p+1] == s[i] {
					p += 2
					i++
					continue
				}
			default:
				if c == s[i] {
					p++
					i++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP+1, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the class at the start of pat ("[...]") and
// returns the class's length. An unterminated class runs to the end of
// the pattern, as in Redis.
func matchClass(pat string, c byte) (n int, ok bool) {
	i := 1
	not := false
	if i < len(pat) && pat[i] == '^' {
		not = true
		i++
	}
	match := false
	for i < len(pat) && pat[i] != ']' {
		switch {
		case pat[i] == '\\' && i+1 < len(pat):
			i++
			if pat[i] == c {
				match = true
			}
		case i+2 < len(pat) && pat[i+1] == '-' && pat[i+2] != ']':
			lo, hi := pat[i], pat[i+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			if c >= lo && c <= hi {
				match = true
			}
			i += 2
		default:
			if pat[i] == c {
				match = true
			}
		}
		i++
	}
	if i < len(pat) {
		i++ // the ']'
	}
	return i, match != not
}
