package rules

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A freshly built registry, gathered before any message, already holds
// every stage's verdict and duration series at zero: a new install's
// dashboards show 0, not "no data".
func TestMetricsKnownSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]bool{} // name → "label=value,…" present at 0
	for _, mf := range mfs {
		series[mf.GetName()] = map[string]bool{}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			zero := m.GetCounter().GetValue() == 0 && m.GetHistogram().GetSampleCount() == 0
			series[mf.GetName()][strings.Join(labels, ",")] = zero
		}
	}
	for _, v := range []string{
		"action=accept,stage=connect,would_be=accept",
		"action=reject,stage=connect,would_be=reject",
		"action=tempfail,stage=helo,would_be=tempfail",
		"action=accept,stage=mail,would_be=reject", // monitor mode
		"action=accept,stage=rcpt,would_be=tempfail",
		"action=tag,stage=data,would_be=tag",
		"action=accept,stage=data,would_be=tag",
		"action=reject,stage=data,would_be=reject",
	} {
		if zero, ok := series["moat_rules_verdicts_total"][v]; !ok || !zero {
			t.Errorf("moat_rules_verdicts_total{%s}: present %v, at zero %v", v, ok, zero)
		}
	}
	// 5 stages × {accept, tempfail, reject} with the two monitor-mode
	// refusals, and tag and accept-would-be-tag at data: bounded.
	if n := len(series["moat_rules_verdicts_total"]); n != 5*5+2 {
		t.Errorf("moat_rules_verdicts_total has %d series before any message, want %d", n, 5*5+2)
	}
	if _, ok := series["moat_rules_verdicts_total"]["action=tag,stage=connect,would_be=tag"]; ok {
		t.Error("a tag verdict at the connect stage was created")
	}
	for _, stage := range []string{"connect", "helo", "mail", "rcpt", "data"} {
		if zero, ok := series["moat_rules_evaluation_seconds"]["stage="+stage]; !ok || !zero {
			t.Errorf("moat_rules_evaluation_seconds{stage=%s}: present %v, at zero %v", stage, ok, zero)
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
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, lp := range s.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = s.GetCounter().GetValue() == 0
		}
	}
	for _, want := range []string{
		"moat_rules_hits_total{mode=enforce,rule=LOUD}",
		"moat_rules_hits_total{mode=shadow,rule=QUIET}",
		"moat_rules_errors_total{rule=LOUD}",
		"moat_rules_errors_total{rule=QUIET}",
	} {
		if zero, ok := got[want]; !ok || !zero {
			t.Errorf("%s: present %v, at zero %v", want, ok, zero)
		}
	}
}
