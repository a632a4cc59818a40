package rules

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// A regular expression rarely matches, and RE2 costs tens of nanoseconds
// per byte when a pattern has no literal prefix to skip with — which
// (?i) and \b take away. Most spam-rule patterns still contain a literal
// that every match must include ("(?i)\bviagra\b" needs "viagra"), so
// each compiled pattern carries its longest required literal and the
// regexp runs only on text that contains it. The check is a substring
// search over the text, case-folded once per evaluation for (?i)
// literals.

// requiredLiteral returns the longest literal every match of re must
// contain, and whether it is case-folded; "" when there is none worth
// using. Only ASCII literals are used, so the folding below is exact.
func requiredLiteral(expr string) (lit string, fold bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return "", false
	}
	best, bestFold := "", false
	consider := func(s string, f bool) {
		if len(s) > len(best) {
			best, bestFold = s, f
		}
	}
	var walk func(re *syntax.Regexp)
	walk = func(re *syntax.Regexp) {
		switch re.Op {
		case syntax.OpLiteral:
			consider(string(re.Rune), re.Flags&syntax.FoldCase != 0)
		case syntax.OpCapture, syntax.OpPlus:
			walk(re.Sub[0])
		case syntax.OpRepeat:
			if re.Min >= 1 {
				walk(re.Sub[0])
			}
		case syntax.OpConcat:
			// Adjacent literals with the same folding form one run.
			var run []rune
			runFold := false
			flush := func() {
				if len(run) > 0 {
					consider(string(run), runFold)
				}
				run = nil
			}
			for _, sub := range re.Sub {
				if sub.Op == syntax.OpLiteral {
					f := sub.Flags&syntax.FoldCase != 0
					if len(run) > 0 && f != runFold {
						flush()
					}
					run, runFold = append(run, sub.Rune...), f
					continue
				}
				flush()
				walk(sub)
			}
			flush()
		}
	}
	walk(re)
	if len(best) < 3 {
		return "", false
	}
	for i := 0; i < len(best); i++ {
		if best[i] >= utf8.RuneSelf {
			return "", false
		}
	}
	if bestFold {
		best = foldASCII(best)
	}
	return best, bestFold
}

// foldASCII lower-cases s the way (?i) sees ASCII letters: every rune
// whose case-fold orbit holds an ASCII letter becomes that letter, so
// "ſ" (U+017F) is "s" and the Kelvin sign "K" (U+212A) is "k". Other
// runes are kept.
func foldASCII(s string) string {
	needs := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' || c >= utf8.RuneSelf {
			needs = true
			break
		}
	}
	if !needs {
		return s
	}
	// Folding never lengthens: ASCII stays one byte, the two runes that
	// fold to ASCII shrink to one, every other rune is copied.
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b = append(b, c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch r {
		case 0x17F:
			b = append(b, 's')
		case 0x212A:
			b = append(b, 'k')
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// hasNonASCIIFold reports whether s holds one of the two runes outside
// ASCII that (?i) folds to an ASCII letter, ſ (U+017F) and K (U+212A):
// only then must s be folded before the folding automaton scans it.
func hasNonASCIIFold(s string) bool {
	return strings.Contains(s, "\u017f") || strings.Contains(s, "\u212a")
}

// scanCache remembers, during one stage's evaluation, which prefilter
// literals each fact value contains: a value is folded and scanned once,
// by one automaton pass, however many rules look at it.
type scanCache struct {
	lits *literals
	m    map[foldKey]*scanned
}

type foldKey struct {
	p *byte
	n int
}

type scanned struct {
	exact, folded []uint64 // literal bitsets; nil until scanned
}

func newScanCache(lits *literals) *scanCache {
	return &scanCache{lits: lits, m: map[foldKey]*scanned{}}
}

// has reports whether v contains m's literal.
func (sc *scanCache) has(v string, m matcher) bool {
	k := foldKey{unsafe.StringData(v), len(v)}
	e := sc.m[k]
	if e == nil {
		e = &scanned{}
		sc.m[k] = e
	}
	if m.fold {
		if e.folded == nil {
			e.folded = make([]uint64, (sc.lits.folded.n+63)/64)
			if hasNonASCIIFold(v) {
				v = foldASCII(v)
			}
			sc.lits.folded.scan(v, e.folded)
		}
		return e.folded[m.id>>6]&(1<<(m.id&63)) != 0
	}
	if e.exact == nil {
		e.exact = make([]uint64, (sc.lits.exact.n+63)/64)
		sc.lits.exact.scan(v, e.exact)
	}
	return e.exact[m.id>>6]&(1<<(m.id&63)) != 0
}

// matcher is a compiled "matches" operator with its prefilter.
type matcher struct {
	re   *regexp.Regexp
	lit  string
	fold bool
	id   int // the literal's id in its rule set's automaton
}

func newMatcher(re *regexp.Regexp, lits *literals) matcher {
	lit, fold := requiredLiteral(re.String())
	m := matcher{re: re, lit: lit, fold: fold}
	if lit != "" && lits != nil {
		m.id = lits.add(lit, fold)
	}
	return m
}

// match is re.MatchString(v), skipped when v lacks the literal. With a
// scan cache the literal is looked up in the set's one-pass scan;
// without, searched directly.
func (m matcher) match(v string, sc *scanCache) bool {
	switch {
	case m.lit == "":
	case sc != nil:
		if !sc.has(v, m) {
			return false
		}
	case m.fold:
		if !strings.Contains(foldASCII(v), m.lit) {
			return false
		}
	default:
		if !strings.Contains(v, m.lit) {
			return false
		}
	}
	return m.re.MatchString(v)
}
