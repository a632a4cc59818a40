package proxy

import (
	"fmt"
	"strings"
	"testing"
)

// Authentication-Results with many results is folded at its "; "
// separators: no line over 78 characters, nothing lost, and a short one
// stays on one line.
func TestFoldAtSemicolons(t *testing.T) {
	short := "mx.test; spf=pass smtp.mailfrom=a@b.test"
	if got := foldAtSemicolons(len("Authentication-Results: "), short); got != short {
		t.Errorf("short value folded: %q", got)
	}
	var parts []string
	parts = append(parts, "mx.example.test")
	for i := 0; i < 40; i++ {
		parts = append(parts, fmt.Sprintf("dkim=pass header.d=example%d.test header.s=sel%d header.a=rsa-sha256", i, i))
	}
	v := strings.Join(parts, "; ")
	got := foldAtSemicolons(len("Authentication-Results: "), v)
	lines := strings.Split("Authentication-Results: "+got, "\r\n")
	if len(lines) < 40 {
		t.Fatalf("folded into %d lines", len(lines))
	}
	for i, l := range lines {
		if len(l) > 78 {
			t.Errorf("line %d is %d long: %q", i, len(l), l)
		}
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("continuation line %d does not start with WSP: %q", i, l)
		}
	}
	if unfolded := strings.ReplaceAll(got, ";\r\n\t", "; "); unfolded != v {
		t.Errorf("unfolding does not give the value back:\n%s\n%s", unfolded, v)
	}
}
