package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the rate limit collectors. They outlive reloads: make them
// once per process and hand them to every Limiter.
type Metrics struct {
	decisions *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg (nil: registered nowhere):
//
//	moat_ratelimit_decisions_total{limit,decision}  allowed, limited, store_error
//
// limit is a configured limit's name, a bounded set.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_ratelimit_decisions_total",
		Help: "Rate limit decisions, by configured limit and decision (allowed, limited, store_error).",
	}, []string{"limit", "decision"})}
	if reg != nil {
		reg.MustRegister(m.decisions)
	}
	return m
}

func (m *Metrics) count(limit string, d Decision) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(limit, d.String()).Inc()
}

// Counter is the counter of limit's decision d, for tests.
func (m *Metrics) Counter(limit string, d Decision) prometheus.Counter {
	return m.decisions.WithLabelValues(limit, d.String())
}
