package rules

import (
	"regexp"
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
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		m := newMatcher(re)
		for _, s := range texts {
			fc := foldCache{}
			if got, want := m.match(s, fc), re.MatchString(s); got != want {
				t.Errorf("%q on %q: prefiltered %v, regexp %v", p, s, got, want)
			}
		}
	}
}
