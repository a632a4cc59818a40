package rules

import (
	"testing"
)

func TestDefaultRulesCompile(t *testing.T) {
	s, err := Default(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() < 15 {
		t.Fatalf("default set has %d rules", s.Len())
	}
}
