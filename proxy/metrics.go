package proxy

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's collectors. Labels carry bounded values only.
type metrics struct {
	connsCurrent    prometheus.Gauge
	connsTotal      prometheus.Counter
	transactions    *prometheus.CounterVec
	upstreamReplies *prometheus.CounterVec
	upstreamConns   *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	connsRefused    *prometheus.CounterVec
	tlsSessions     *prometheus.CounterVec
	bareEndings     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connsCurrent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_proxy_connections_current", Help: "Client connections open now.",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_proxy_connections_total", Help: "Client connections accepted.",
		}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_transactions_total", Help: "Mail transactions by outcome.",
		}, []string{"outcome"}),
		upstreamReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_upstream_replies_total", Help: "Upstream replies by command and reply class.",
		}, []string{"command", "class"}),
		upstreamConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_upstream_connects_total", Help: "Upstream connection attempts by result.",
		}, []string{"result"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_proxy_upstream_duration_seconds", Help: "Upstream connect and message transfer time.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"op"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_connections_refused_total", Help: "Client connections turned away by a limit.",
		}, []string{"limit"}),
		tlsSessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_tls_sessions_total", Help: "Client TLS handshakes completed, by TLS version.",
		}, []string{"version"}),
		bareEndings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_bare_line_endings_total", Help: "Messages with bare CR or LF line endings (SMTP smuggling material), by kind and what was done.",
		}, []string{"kind", "action"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connsCurrent, m.connsTotal, m.transactions, m.upstreamReplies, m.upstreamConns, m.upstreamLatency, m.connsRefused, m.tlsSessions, m.bareEndings} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) connOpened() { m.connsCurrent.Inc(); m.connsTotal.Inc() }
func (m *metrics) connClosed() { m.connsCurrent.Dec() }

func (m *metrics) transaction(outcome string) { m.transactions.WithLabelValues(outcome).Inc() }

func (m *metrics) upstreamReply(cmd string, code int) {
	m.upstreamReplies.WithLabelValues(cmd, strconv.Itoa(code/100)+"xx").Inc()
}

func (m *metrics) upstreamConnect(err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.upstreamConns.WithLabelValues(result).Inc()
	m.upstreamLatency.WithLabelValues("connect").Observe(d.Seconds())
}

func (m *metrics) upstreamData(err error, d time.Duration) {
	if err == nil {
		m.upstreamLatency.WithLabelValues("data").Observe(d.Seconds())
	}
}

func (m *metrics) connRefused(limit string) { m.connsRefused.WithLabelValues(limit).Inc() }

func (m *metrics) tlsSession(version string) { m.tlsSessions.WithLabelValues(version).Inc() }

func (m *metrics) bareLineEndings(lf, cr, rejected bool) {
	action := "normalized"
	if rejected {
		action = "rejected"
	}
	if lf {
		m.bareEndings.WithLabelValues("lf", action).Inc()
	}
	if cr {
		m.bareEndings.WithLabelValues("cr", action).Inc()
	}
}
