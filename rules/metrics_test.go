package rules

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/promtest"
)

// A freshly built registry, gathered before any message, already holds
// every stage's verdict and duration series at zero: a new install's
// dashboards show 0, not "no data".
func TestMetricsKnownSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	got := promtest.Series(t, reg)
	verdict := func(action, stage, wouldBe string) string {
		return `moat_rules_verdicts_total{action="` + action + `",stage="` + stage + `",would_be="` + wouldBe + `"}`
	}
	for _, v := range []string{
		verdict("accept", "connect", "accept"),
		verdict("reject", "connect", "reject"),
		verdict("tempfail", "helo", "tempfail"),
		verdict("accept", "mail", "reject"), // monitor mode
		verdict("accept", "rcpt", "tempfail"),
		verdict("tag", "data", "tag"),
		verdict("accept", "data", "tag"),
		verdict("reject", "data", "reject"),
	} {
		if n, ok := got[v]; !ok || n != 0 {
			t.Errorf("%s: present %v, at zero %v", v, ok, n == 0)
		}
	}
	// 5 stages × {accept, tempfail, reject} with the two monitor-mode
	// refusals, and tag and accept-would-be-tag at data: bounded.
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "moat_rules_verdicts_total{") {
			n++
		}
	}
	if n != 5*5+2 {
		t.Errorf("moat_rules_verdicts_total has %d series before any message, want %d", n, 5*5+2)
	}
	if _, ok := got[verdict("tag", "connect", "tag")]; ok {
		t.Error("a tag verdict at the connect stage was created")
	}
	for _, stage := range []string{"connect", "helo", "mail", "rcpt", "data"} {
		k := `moat_rules_evaluation_seconds{stage="` + stage + `"}`
		if n, ok := got[k]; !ok || n != 0 {
			t.Errorf("%s: present %v, at zero %v", k, ok, n == 0)
		}
	}
}

// Loading a rule set creates its rules' hit and error series at zero, in
// the mode each rule runs in.
func TestMetricsRuleSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("t.yaml", []byte(`rules:
  - {name: LOUD, stage: helo, when: {helo: x}, score: 1}
  - {name: QUIET, stage: data, when: {size: 1}, score: 1, shadow: true}
`), Options{Metrics: m}); err != nil {
		t.Fatal(err)
	}
	got := promtest.Series(t, reg)
	for _, want := range []string{
		`moat_rules_hits_total{mode="enforce",rule="LOUD"}`,
		`moat_rules_hits_total{mode="shadow",rule="QUIET"}`,
		`moat_rules_errors_total{rule="LOUD"}`,
		`moat_rules_errors_total{rule="QUIET"}`,
	} {
		if n, ok := got[want]; !ok || n != 0 {
			t.Errorf("%s: present %v, at zero %v", want, ok, n == 0)
		}
	}
}
