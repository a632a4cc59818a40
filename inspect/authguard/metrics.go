package authguard

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

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
	lockouts    *prometheus.CounterVec
	spraying    *prometheus.CounterVec
	storeErrors prometheus.Counter
}

// NewMetrics registers the collectors on reg (nil: registered nowhere):
//
//	moat_smtp_auth_lockouts_total{scope}    ip, net_narrow, net_wide, user: a scope value got locked
//	moat_smtp_auth_spraying_total{kind}     users_per_network, networks_per_user
//	moat_smtp_auth_store_errors_total       guard calls that failed open on a store error
//
// Every label value exists from the start, at 0. The attempts
// themselves, by outcome, are the proxy's moat_smtp_auth_attempts_total.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
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
	for _, s := range Scopes {
		m.lockouts.WithLabelValues(string(s))
	}
	m.spraying.WithLabelValues(KindUsersPerNetwork)
	m.spraying.WithLabelValues(KindNetworksPerUser)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.lockouts, m.spraying, m.storeErrors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("authguard: registering metrics: %w", err)
			}
		}
	}
	return m, nil
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
