package greylist

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the greylisting collectors. They outlive reloads: make
// them once per process and hand them to every Greylister.
type Metrics struct {
	decisions *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg (nil: registered nowhere):
//
//	moat_greylist_decisions_total{decision}  greylisted, passed, allowlisted, store_error
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_greylist_decisions_total",
		Help: "Greylisting decisions, by decision (greylisted, passed, allowlisted, store_error).",
	}, []string{"decision"})}
	for d := Greylisted; d <= StoreError; d++ {
		m.decisions.WithLabelValues(d.String())
	}
	if reg != nil {
		reg.MustRegister(m.decisions)
	}
	return m
}

func (m *Metrics) count(d Decision) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(d.String()).Inc()
}

// Counter is the counter of decision d, for tests.
func (m *Metrics) Counter(d Decision) prometheus.Counter {
	return m.decisions.WithLabelValues(d.String())
}
