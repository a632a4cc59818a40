package capture

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are capture's collectors. moat analyze --metrics registers them
// (and the rules engine's) with the constant label mode="offline", so one
// dashboard can show live and offline traffic side by side.
type Metrics struct {
	sessions     *prometheus.CounterVec
	transactions *prometheus.CounterVec
	problems     *prometheus.CounterVec
}

// NewMetrics registers capture's collectors on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_capture_sessions_total", Help: "SMTP sessions reconstructed from captures, by TLS (none, starttls, implicit).",
		}, []string{"tls"}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_capture_transactions_total", Help: "Transactions reconstructed from captures, by the action moat would have taken and the stage.",
		}, []string{"action", "stage"}),
		problems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_capture_problems_total", Help: "Sessions with a reconstruction problem, by problem.",
		}, []string{"problem"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sessions, m.transactions, m.problems} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) session(s *Session) {
	tls := "none"
	switch {
	case s.ImplicitTLS:
		tls = "implicit"
	case s.TLS:
		tls = "starttls"
	}
	m.sessions.WithLabelValues(tls).Inc()
	for _, r := range s.Records {
		v := r.Verdict
		if v == "" {
			v = "none"
		}
		m.transactions.WithLabelValues(v, r.Stage).Inc()
	}
	for _, p := range s.Problems {
		m.problems.WithLabelValues(p).Inc()
	}
}
