package rules

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect"
)

// Metrics are the rule engine's collectors. Create them once per process
// and hand them to every Load, so counts survive reloads.
type Metrics struct {
	hits     *prometheus.CounterVec
	errors   *prometheus.CounterVec
	verdicts *prometheus.CounterVec
	duration *prometheus.HistogramVec
	score    prometheus.Histogram
}

// NewMetrics registers the collectors on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_rules_hits_total", Help: "Rule matches by rule and mode (enforce, shadow).",
		}, []string{"rule", "mode"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_rules_errors_total", Help: "Rules left unknown by a failed lookup, by rule.",
		}, []string{"rule"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_rules_verdicts_total", Help: "Verdicts by stage, action taken and action the rules called for (differs in monitor mode).",
		}, []string{"stage", "action", "would_be"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_rules_evaluation_seconds", Help: "Time to evaluate a stage's rules.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}, []string{"stage"}),
		score: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "moat_rules_message_score", Help: "Total score of messages at the data stage.",
			Buckets: []float64{-5, 0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30},
		}),
	}
	m.initKnownSeries()
	if reg != nil {
		for _, c := range []prometheus.Collector{m.hits, m.errors, m.verdicts, m.duration, m.score} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// initKnownSeries creates at zero the verdict and duration series of every
// stage, so that a fresh install's dashboards show 0 rather than "no
// data". Only verdicts a Set can give are created: action and would_be
// agree, except in monitor mode, where the action is accept whatever the
// rules called for; tag is a data-stage action. Hits and errors are per
// rule: initRules creates them when a rule set loads.
func (m *Metrics) initKnownSeries() {
	stages := []inspect.Stage{inspect.StageConnect, inspect.StageHelo, inspect.StageMail, inspect.StageRcpt, inspect.StageData}
	for _, stage := range stages {
		m.duration.WithLabelValues(stage.String())
		wouldBe := []inspect.Action{inspect.Accept, inspect.Tempfail, inspect.Reject}
		if stage == inspect.StageData {
			wouldBe = append(wouldBe, inspect.Tag)
		}
		for _, w := range wouldBe {
			m.verdicts.WithLabelValues(stage.String(), w.String(), w.String())
			if w != inspect.Accept {
				m.verdicts.WithLabelValues(stage.String(), inspect.Accept.String(), w.String()) // monitor mode
			}
		}
	}
}

// initRules creates at zero the hit and error series of every rule of a
// freshly loaded set (its mode: shadow or enforce), so that a rule that
// never matched shows 0 on the rules dashboard rather than nothing.
func (m *Metrics) initRules(s *Set) {
	for _, st := range s.stages {
		for _, r := range st {
			mode := "enforce"
			if r.shadow {
				mode = "shadow"
			}
			m.hits.WithLabelValues(r.name, mode)
			m.errors.WithLabelValues(r.name)
		}
	}
}

func (m *Metrics) hit(rule, mode string) { m.hits.WithLabelValues(rule, mode).Inc() }

func (m *Metrics) ruleError(rule string) { m.errors.WithLabelValues(rule).Inc() }

func (m *Metrics) observe(stage inspect.Stage, v inspect.Verdict, d time.Duration) {
	m.verdicts.WithLabelValues(stage.String(), v.Action.String(), v.WouldBe.String()).Inc()
	m.duration.WithLabelValues(stage.String()).Observe(d.Seconds())
	if stage == inspect.StageData {
		m.score.Observe(v.Score)
	}
}
