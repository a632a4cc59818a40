package reputation

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the reputation collectors. They outlive reloads: make them
// once per process.
type Metrics struct {
	updates *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg (nil: registered nowhere):
//
//	moat_reputation_updates_total{result}  ok, store_error
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{updates: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_reputation_updates_total",
		Help: "Reputation counter updates, by result (ok, store_error).",
	}, []string{"result"})}
	// Both series exist from the start, so a dashboard shows 0, not
	// nothing, before the first update.
	m.updates.WithLabelValues("ok")
	m.updates.WithLabelValues("store_error")
	if reg != nil {
		reg.MustRegister(m.updates)
	}
	return m
}

func (m *Metrics) count(result string) {
	if m == nil {
		return
	}
	m.updates.WithLabelValues(result).Inc()
}

// Counter is the counter of result, for tests.
func (m *Metrics) Counter(result string) prometheus.Counter {
	return m.updates.WithLabelValues(result)
}
