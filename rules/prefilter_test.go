package rules

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestRequiredLiteral(t *testing.T) {
	tests := []struct {
		expr, lit string
		fold      bool
	}{
		{`(?i)\bviagra\b`, "viagra", true},
		{`Viagra`, "Viagra", false},
		{`(?i)^Subject: .*WIN`, "subject: ", true},
		{`(?i)(cheap|free) watches`, " watches", true},
		{`(?i)\.(exe|scr)$`, "", false},  // no literal of 3+ that every match has
		{`a+b+c+`, "", false},            // runs too short
		{`(?i)gr(ü|ue)sse`, "sse", true}, // the ASCII run after the alternation
		{`(?:abc){2,}def`, "abc", false}, // repeat with min >= 1
		{`x?hello`, "hello", false},      // optional parts break runs
		{`(?i)[a-z]+ offers now`, " offers now", true},
	}
	for _, tt := range tests {
		lit, fold := requiredLiteral(tt.expr)
		if lit != tt.lit || lit != "" && fold != tt.fold {
			t.Errorf("requiredLiteral(%q) = %q, %v; want %q, %v", tt.expr, lit, fold, tt.lit, tt.fold)
		}
	}
}

// The prefilter never changes an answer: for every pattern and text the
// filtered match equals the plain regexp's, including the runes whose
// case folding reaches ASCII letters (ſ, K).
func TestPrefilterAgreesWithRegexp(t *testing.T) {
	patterns := []string{`(?i)\bviagra\b`, `(?i)kiss`, `Kiss`, `(?i)(cheap|free) watches`, `(?i)lossless`, `(?i)x?hello world`}
	texts := []string{"VIAGRA now", "viagra", "vi agra", "ſex and KISS", "\u212Aiss me", "loſsleſs", "CHEAP WATCHES", "free  watches",
		"say HELLO WORLD", "", "Ｖiagra"}
	var lits literals
	var ms []matcher
	for _, p := range patterns {
		ms = append(ms, newMatcher(regexp.MustCompile(p), &lits))
	}
	lits.build()
	for _, m := range ms {
		for _, s := range texts {
			want := m.re.MatchString(s)
			if got := m.match(s, nil); got != want {
				t.Errorf("%q on %q: prefiltered %v, regexp %v", m.re, s, got, want)
			}
			if got := m.match(s, newScanCache(&lits)); got != want {
				t.Errorf("%q on %q: automaton-prefiltered %v, regexp %v", m.re, s, got, want)
			}
		}
	}
}

// The automaton finds exactly the patterns strings.Contains finds,
// overlapping and nested ones included.
func TestAhoCorasick(t *testing.T) {
	pats := []string{"he", "she", "his", "hers", "abcab", "bca", "aaa", "aa", "xyz"}
	m := buildAC(pats, false)
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 2000; i++ {
		b := make([]byte, r.IntN(40))
		if i%4 == 0 {
			b = make([]byte, 500+r.IntN(3000)) // long enough for the four-way scan
		}
		for j := range b {
			b[j] = "abcehirsxyz"[r.IntN(11)]
		}
		s := string(b)
		found := make([]uint64, 1)
		m.scan(s, found)
		for id, p := range pats {
			if got, want := found[0]&(1<<id) != 0, strings.Contains(s, p); got != want {
				t.Fatalf("%q in %q: automaton %v, Contains %v", p, s, got, want)
			}
		}
	}
}

// A folding automaton finds in any text exactly what the plain one finds
// in the text lower-cased (ASCII), with bytes no pattern holds mixed in.
func TestAhoCorasickFold(t *testing.T) {
	pats := []string{"he", "she", "his", "hers", "abcab", "bca", "aaa", "aa", "x-y", "\xc3\xa9t\xc3\xa9"}
	m := buildAC(pats, true)
	r := rand.New(rand.NewPCG(8, 8))
	const alphabet = "abcehirsxyABCEHIRSXY-_\xc3\xa9\x89 Z"
	for i := 0; i < 5000; i++ {
		b := make([]byte, r.IntN(50))
		if i%4 == 0 {
			b = make([]byte, 500+r.IntN(3000)) // long enough for the four-way scan
		}
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		s := string(b)
		found := make([]uint64, 1)
		m.scan(s, found)
		lower := foldASCII(s)
		for id, p := range pats {
			if got, want := found[0]&(1<<id) != 0, strings.Contains(lower, p); got != want {
				t.Fatalf("%q in %q: automaton %v, Contains on folded %v", p, s, got, want)
			}
		}
	}
}

// A pattern longer than a quarter of the text keeps the scan in one
// chain; patterns across the middle of a long text are found.
func TestAhoCorasickLongPattern(t *testing.T) {
	long := strings.Repeat("ab", 400)
	m := buildAC([]string{long, "zz"}, false)
	for _, s := range []string{long, "x" + long + "x", strings.Repeat("a", 600) + "zz" + strings.Repeat("a", 600)} {
		found := make([]uint64, 1)
		m.scan(s, found)
		var want uint64
		if strings.Contains(s, long) {
			want |= 1
		}
		if strings.Contains(s, "zz") {
			want |= 2
		}
		if found[0] != want {
			t.Errorf("scan of %d bytes found %b, want %b", len(s), found[0], want)
		}
	}
}

// BenchmarkAhoCorasick scans 200 KB of text for the literals of the
// benchmark rule set's shape (200 words like "w042xqz", folded).
func BenchmarkAhoCorasick(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	var pats []string
	for i := range 200 {
		pats = append(pats, fmt.Sprintf("w%03dx%c%c", i, 'a'+r.IntN(26), 'a'+r.IntN(26)))
	}
	m := buildAC(pats, true)
	prose := strings.Repeat("Dear customer, our new collection is here. Visit the shop for details and offers. ", 2500)[:200<<10]
	xs := strings.Repeat(strings.Repeat("X", 78)+"\n", 2600)[:200<<10]
	for _, tc := range []struct{ name, text string }{{"prose", prose}, {"smtp-source", xs}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.text)))
			found := make([]uint64, 4)
			for b.Loop() {
				m.scan(tc.text, found)
			}
		})
	}
}
