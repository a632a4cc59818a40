package capture

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/promtest"
)

// A freshly built registry, gathered before any capture is read, already
// holds the series whose label values are known at start, at zero.
func TestMetricsKnownSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	got := promtest.Series(t, reg)
	want := []string{
		"moat_capture_sessions_total{tls=\"none\"}",
		"moat_capture_sessions_total{tls=\"starttls\"}",
		"moat_capture_sessions_total{tls=\"implicit\"}",
		"moat_capture_transactions_total{action=\"accept\",stage=\"data\"}",
		"moat_capture_transactions_total{action=\"tag\",stage=\"data\"}",
		"moat_capture_transactions_total{action=\"reject\",stage=\"connect\"}",
		"moat_capture_transactions_total{action=\"tempfail\",stage=\"rcpt\"}",
		"moat_capture_transactions_total{action=\"none\",stage=\"\"}",
	}
	for _, p := range knownProblems {
		want = append(want, "moat_capture_problems_total{problem=\""+p+"\"}")
	}
	for _, s := range want {
		if v, ok := got[s]; !ok || v != 0 {
			t.Errorf("%s: present %v, value %v; want present at 0", s, ok, v)
		}
	}
	if _, ok := got["moat_capture_transactions_total{action=\"tag\",stage=\"connect\"}"]; ok {
		t.Error("a tag at the connect stage was created")
	}
}

// knownProblems names every problem the package reports, so that each
// has its zero series.
func TestKnownProblemsComplete(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`\.problem\("([a-z_]+)"\)`)
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllSubmatch(src, -1) {
			found++
			if !slices.Contains(knownProblems, string(m[1])) {
				t.Errorf("%s reports problem %q, missing from knownProblems", f, m[1])
			}
		}
	}
	if found == 0 {
		t.Fatal("no problem(...) calls found; has the reporting changed?")
	}
}
