package proxy

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect"
)

// metrics are the proxy's collectors. Labels carry bounded values only:
// stages, actions, outcomes, reply classes, limit names, TLS versions and
// the reason constants of verdicts (built-in constants and configured
// rule and list names) — never an address, a name a client chose or a
// message ID.
type metrics struct {
	connsCurrent    prometheus.Gauge
	connsTotal      prometheus.Counter
	sessions        *prometheus.CounterVec
	refusals        *prometheus.CounterVec
	transactions    *prometheus.CounterVec
	messageSize     prometheus.Histogram
	upstreamReplies *prometheus.CounterVec
	upstreamConns   *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	upstreamUp      prometheus.Gauge
	connsRefused    *prometheus.CounterVec
	tlsSessions     *prometheus.CounterVec
	tlsFailures     *prometheus.CounterVec
	bareEndings     *prometheus.CounterVec
	panics          prometheus.Counter
	authAttempts    *prometheus.CounterVec
}

// Label values known in advance. Their series are created at zero, so
// that dashboards and alerts see "none yet" instead of "no data".
var (
	txOutcomes    = []string{"delivered", "reject", "tempfail", "rejected", "aborted", "upstream_refused", "upstream_failed"}
	refusedLimits = []string{"max_connections", "max_connections_per_ip"}
	tlsModes      = []string{"starttls", "implicit"}
	// relayedCommands are the commands whose upstream replies are counted,
	// replyClasses the classes a final reply can have (RFC 5321 §4.2.1).
	relayedCommands = []string{"mail", "rcpt", "data"}
	replyClasses    = []string{"2xx", "4xx", "5xx"}
	// tlsVersions are the versions a client handshake can end with: moat
	// requires TLS 1.2 at least.
	tlsVersions = []string{"TLS1.2", "TLS1.3"}
	// authOutcomes are how an AUTH exchange can end (inspect.AuthOutcome).
	authOutcomes = []inspect.AuthOutcome{inspect.AuthSuccess, inspect.AuthFailure, inspect.AuthLocked,
		inspect.AuthTempfail, inspect.AuthAborted, inspect.AuthError}
	// allStages are the stages a verdict is taken at, in order.
	allStages = []inspect.Stage{inspect.StageConnect, inspect.StageHelo, inspect.StageMail, inspect.StageRcpt, inspect.StageData}
)

// initKnownSeries creates at zero the series whose label values are known
// before any traffic, so that a fresh install's dashboards and alerts show
// 0 rather than "no data". Only combinations that can occur are created:
// the set stays small and bounded. Refusals by a rule or a list
// ("rule:NAME", "lookup_failed:NAME") depend on the rules file and appear
// with their first event.
func (m *metrics) initKnownSeries() {
	for _, o := range txOutcomes {
		m.transactions.WithLabelValues(o)
	}
	for _, l := range refusedLimits {
		m.connsRefused.WithLabelValues(l)
	}
	for _, mode := range tlsModes {
		m.tlsFailures.WithLabelValues(mode)
	}
	for _, v := range tlsVersions {
		m.tlsSessions.WithLabelValues(v)
	}
	for _, r := range []string{"ok", "error", "reused"} {
		m.upstreamConns.WithLabelValues(r)
	}
	for _, op := range []string{"connect", "data"} {
		m.upstreamLatency.WithLabelValues(op)
	}
	for _, cmd := range relayedCommands {
		for _, class := range replyClasses {
			m.upstreamReplies.WithLabelValues(cmd, class)
		}
	}
	for _, kind := range []string{"lf", "cr"} {
		for _, action := range []string{"normalized", "rejected"} {
			m.bareEndings.WithLabelValues(kind, action)
		}
	}
	for _, o := range authOutcomes {
		m.authAttempts.WithLabelValues(string(o))
	}
	m.sessions.WithLabelValues("none", "none")
	for _, stage := range allStages {
		actions := []inspect.Action{inspect.Accept, inspect.Tempfail, inspect.Reject}
		if stage == inspect.StageData {
			actions = append(actions, inspect.Tag) // tagging is for messages
		}
		for _, a := range actions {
			m.sessions.WithLabelValues(a.String(), stage.String())
		}
		// The score thresholds refuse at any stage.
		for _, a := range []inspect.Action{inspect.Tempfail, inspect.Reject} {
			m.refusals.WithLabelValues(stage.String(), a.String(), "score")
		}
	}
	m.refusals.WithLabelValues(inspect.StageConnect.String(), inspect.Reject.String(), "early_talker")
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connsCurrent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_proxy_connections_current", Help: "Client connections open now.",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_proxy_connections_total", Help: "Client connections accepted.",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_sessions_total",
			Help: "Client sessions ended, by the harshest action taken in them (accept, tag, tempfail, reject) and the stage it was taken at; for accept, the furthest stage judged. none: ended before the connect stage (TLS, PROXY header or per-IP limit).",
		}, []string{"action", "stage"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_refusals_total",
			Help: "Commands and sessions refused by a verdict, by stage, action (tempfail, reject) and reason constant (score, rule:NAME, lookup_failed:NAME, early_talker).",
		}, []string{"stage", "action", "reason"}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_transactions_total", Help: "Mail transactions by outcome.",
		}, []string{"outcome"}),
		messageSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "moat_proxy_message_size_bytes", Help: "Size of messages received and judged at the data stage.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 9), // 1 KiB .. 64 MiB
		}),
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
		upstreamUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_proxy_upstream_up", Help: "1 when the upstream answered the last probe or connection attempt (what /readyz reports), else 0.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_connections_refused_total", Help: "Client connections turned away by a limit.",
		}, []string{"limit"}),
		tlsSessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_tls_sessions_total", Help: "Client TLS handshakes completed, by TLS version.",
		}, []string{"version"}),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_tls_handshake_failures_total", Help: "Client TLS handshakes that failed, by mode (starttls, implicit).",
		}, []string{"mode"}),
		bareEndings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_bare_line_endings_total", Help: "Messages with bare CR or LF line endings (SMTP smuggling material), by kind and what was done.",
		}, []string{"kind", "action"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_proxy_panics_total", Help: "Sessions ended by a recovered panic (a bug in moat): each was closed with 421 4.3.0 and logged with its stack.",
		}),
		authAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_smtp_auth_attempts_total",
			Help: "SMTP AUTH exchanges on submission listeners by outcome: success (upstream 235), failure (upstream 5xx), locked (refused by the lockout, upstream not asked), tempfail (upstream 4xx), aborted (client cancelled), error (upstream unreachable).",
		}, []string{"outcome"}),
	}
	m.initKnownSeries()
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connsCurrent, m.connsTotal, m.sessions, m.refusals, m.transactions, m.messageSize,
			m.upstreamReplies, m.upstreamConns, m.upstreamLatency, m.upstreamUp, m.connsRefused, m.tlsSessions, m.tlsFailures, m.bareEndings, m.panics, m.authAttempts} {
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

func (m *metrics) authAttempt(outcome string) { m.authAttempts.WithLabelValues(outcome).Inc() }

func (m *metrics) messageReceived(size int64) { m.messageSize.Observe(float64(size)) }

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
	m.upstreamReady(err == nil)
}

// upstreamReused counts a pooled upstream connection taken up again.
func (m *metrics) upstreamReused() { m.upstreamConns.WithLabelValues("reused").Inc() }

// upstreamReady mirrors Server.ready, which a probe or a session's
// connection attempt has just set.
func (m *metrics) upstreamReady(ok bool) {
	if ok {
		m.upstreamUp.Set(1)
	} else {
		m.upstreamUp.Set(0)
	}
}

func (m *metrics) upstreamData(err error, d time.Duration) {
	if err == nil {
		m.upstreamLatency.WithLabelValues("data").Observe(d.Seconds())
	}
}

func (m *metrics) connRefused(limit string) { m.connsRefused.WithLabelValues(limit).Inc() }

func (m *metrics) tlsSession(version string) { m.tlsSessions.WithLabelValues(version).Inc() }

func (m *metrics) tlsHandshakeFailed(implicit bool) {
	mode := "starttls"
	if implicit {
		mode = "implicit"
	}
	m.tlsFailures.WithLabelValues(mode).Inc()
}

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

// sessionOutcome is the harshest verdict a session has had so far and the
// stage it came at; for a session only ever accepted, the furthest stage
// judged. The zero value is a session never judged.
type sessionOutcome struct {
	stage  inspect.Stage
	action inspect.Action
}

func (o *sessionOutcome) note(stage inspect.Stage, a inspect.Action) {
	if o.stage == 0 || a > o.action || a == o.action && stage > o.stage {
		o.stage, o.action = stage, a
	}
}

func (m *metrics) sessionEnded(o sessionOutcome) {
	if o.stage == 0 {
		for _, o := range authOutcomes {
			m.authAttempts.WithLabelValues(string(o))
		}
		m.sessions.WithLabelValues("none", "none").Inc()
		return
	}
	m.sessions.WithLabelValues(o.action.String(), o.stage.String()).Inc()
}

// noteVerdict records a stage's verdict for the session's outcome and
// counts a refusal with its reason. It may be called twice for the same
// verdict: the outcome keeps the harshest, and only refusals are counted,
// which reach here once.
func (c *conn) noteVerdict(stage inspect.Stage, v inspect.Verdict) {
	c.outcome.note(stage, v.Action)
	if v.Action >= inspect.Tempfail {
		reason := v.Reason
		if reason == "" {
			reason = "unknown"
		}
		c.srv.metrics.refusals.WithLabelValues(stage.String(), v.Action.String(), reason).Inc()
	}
}
