package inspect

import (
	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect/auth"
)

// AuthMetrics counts sender-authentication results. It outlives engines:
// cmd/moat makes one and hands it to every engine a reload builds.
type AuthMetrics struct {
	results *prometheus.CounterVec
}

// NewAuthMetrics registers the sender-authentication metrics on reg.
func NewAuthMetrics(reg prometheus.Registerer) *AuthMetrics {
	m := &AuthMetrics{results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moat_auth_results_total",
		Help: "Sender authentication results of judged messages, by method (spf, helo_spf, dkim per signature, arc, dmarc) and result (pass, fail, softfail, neutral, none, temperror, permerror, policy, unknown).",
	}, []string{"method", "result"})}
	// The series an alert or a dashboard panel reads exist from the start.
	for _, method := range []string{"spf", "helo_spf", "dkim", "arc", "dmarc"} {
		for _, r := range []auth.Result{auth.Pass, auth.Fail, auth.TempError} {
			m.results.WithLabelValues(method, string(r))
		}
	}
	if reg != nil {
		reg.MustRegister(m.results)
	}
	return m
}

func (m *AuthMetrics) count(r *auth.Results) {
	if m == nil || r == nil {
		return
	}
	add := func(method string, res auth.Result) {
		if res != "" {
			m.results.WithLabelValues(method, string(res)).Inc()
		}
	}
	add("spf", r.SPF.Result)
	add("helo_spf", r.HELO.Result)
	if len(r.DKIM) == 0 {
		add("dkim", auth.None)
	}
	for _, d := range r.DKIM {
		add("dkim", d.Result)
	}
	add("arc", r.ARC.Result)
	add("dmarc", r.DMARC.Result)
}
