package capture

import (
	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect"
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
	m.initKnownSeries()
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sessions, m.transactions, m.problems} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// knownProblems are the reconstruction problems Session.problem is called
// with (TestKnownProblemsComplete keeps the list in step with the code).
var knownProblems = []string{
	"bad_reply", "bdat_invalid", "bdat_lost", "client_only", "gap_client", "gap_server",
	"incomplete_message", "internal_error", "invalid_command", "line_too_long", "message_truncated", "mid_stream",
	"prelude", "reply_mismatch", "server_only", "too_many_commands", "unterminated_command",
	"unterminated_data",
}

// initKnownSeries creates at zero the series whose label values are known
// before any capture is read, so that dashboards show 0 rather than "no
// data": the TLS modes, every problem, and every action at every stage
// (tag only at data, where messages are tagged), plus the transactions no
// stage judged.
func (m *Metrics) initKnownSeries() {
	for _, tls := range []string{"none", "starttls", "implicit"} {
		m.sessions.WithLabelValues(tls)
	}
	for _, p := range knownProblems {
		m.problems.WithLabelValues(p)
	}
	m.transactions.WithLabelValues("none", "")
	for _, stage := range []inspect.Stage{inspect.StageConnect, inspect.StageHelo, inspect.StageMail, inspect.StageRcpt, inspect.StageData} {
		actions := []inspect.Action{inspect.Accept, inspect.Tempfail, inspect.Reject}
		if stage == inspect.StageData {
			actions = append(actions, inspect.Tag)
		}
		for _, a := range actions {
			m.transactions.WithLabelValues(a.String(), stage.String())
		}
	}
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
