package authguard

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// The outcomes of an AUTH attempt, the values of
// moat_smtp_auth_attempts_total's outcome label.
const (
	OutcomeSuccess  = "success"  // the upstream said 235
	OutcomeFailure  = "failure"  // the upstream said 535
	OutcomeLocked   = "locked"   // refused by a lock, upstream not asked (Check counts it)
	OutcomeTempfail = "tempfail" // the upstream said 4xx, or could not be reached
	OutcomeAborted  = "aborted"  // the client cancelled the exchange ("*", RFC 4954 §4)
	OutcomeError    = "error"    // anything else: a malformed exchange, a 5xx other than 535
)

var outcomes = []string{OutcomeSuccess, OutcomeFailure, OutcomeLocked, OutcomeTempfail, OutcomeAborted, OutcomeError}

// The kinds of spraying, the values of moat_smtp_auth_spraying_total's
// kind label.
const (
	KindUsersPerNetwork = "users_per_network"
	KindNetworksPerUser = "networks_per_user"
)

// Metrics are the AUTH guard's collectors. They outlive reloads: make
// them once per process and hand them to every Guard. A nil *Metrics
// counts nothing.
type Metrics struct {
	attempts    *prometheus.CounterVec
	lockouts    *prometheus.CounterVec
	spraying    *prometheus.CounterVec
	storeErrors prometheus.Counter
}

// NewMetrics registers the collectors on reg (nil: registered nowhere):
//
//	moat_smtp_auth_attempts_total{outcome}  success, failure, locked, tempfail, aborted, error
//	moat_smtp_auth_lockouts_total{scope}    ip, net_narrow, net_wide, user: a scope value got locked
//	moat_smtp_auth_spraying_total{kind}     users_per_network, networks_per_user
//	moat_smtp_auth_store_errors_total       guard calls that failed open on a store error
//
// Every label value exists from the start, at 0.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_smtp_auth_attempts_total",
			Help: "SMTP AUTH attempts on submission listeners, by outcome (success, failure, locked, tempfail, aborted, error).",
		}, []string{"outcome"}),
		lockouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_smtp_auth_lockouts_total",
			Help: "Failed AUTH limits reached: a client address, network or username locked for the cooldown, by scope.",
		}, []string{"scope"}),
		spraying: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_smtp_auth_spraying_total",
			Help: "Password spraying detected: many usernames failing from one network, or one username failing from many networks (once per spray window each).",
		}, []string{"kind"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_smtp_auth_store_errors_total",
			Help: "AUTH guard calls that failed open because the state store failed.",
		}),
	}
	for _, o := range outcomes {
		m.attempts.WithLabelValues(o)
	}
	for _, s := range Scopes {
		m.lockouts.WithLabelValues(string(s))
	}
	m.spraying.WithLabelValues(KindUsersPerNetwork)
	m.spraying.WithLabelValues(KindNetworksPerUser)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.attempts, m.lockouts, m.spraying, m.storeErrors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("authguard: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Attempt counts one AUTH attempt with its outcome, one of the Outcome
// constants; the caller counts every outcome but locked, which Check
// counts. An unknown outcome counts as error, so the label stays bounded.
func (m *Metrics) Attempt(outcome string) {
	if m == nil {
		return
	}
	known := false
	for _, o := range outcomes {
		known = known || o == outcome
	}
	if !known {
		outcome = OutcomeError
	}
	m.attempts.WithLabelValues(outcome).Inc()
}

func (m *Metrics) lockout(s Scope) {
	if m != nil {
		m.lockouts.WithLabelValues(string(s)).Inc()
	}
}

func (m *Metrics) spray(kind string) {
	if m != nil {
		m.spraying.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) storeError() {
	if m != nil {
		m.storeErrors.Inc()
	}
}
