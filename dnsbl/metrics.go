package dnsbl

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Checker's collectors. Every label value is a configured
// list name, a reason from a code table or an ErrKind: bounded, never a
// looked-up key.
type metrics struct {
	queries     *prometheus.CounterVec
	listings    *prometheus.CounterVec
	errors      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	cacheHits   *prometheus.CounterVec
	cacheMisses *prometheus.CounterVec
	healthy     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsbl_queries_total",
			Help: "DNS lookups sent to a list (cache misses; health probes not counted).",
		}, []string{"list"}),
		listings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsbl_listings_total",
			Help: "Lookups a list answered with a listing, by reason (once per reason; cache hits not counted again).",
		}, []string{"list", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsbl_errors_total",
			Help: "Failed lookups by kind: timeout, servfail, refused, truncated, blocked_resolver, bad_answer, network, no_resolver.",
		}, []string{"list", "kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_dnsbl_lookup_duration_seconds",
			Help:    "Time a lookup on a list took, TXT and retries included (cache misses only).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"list"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsbl_cache_hits_total",
			Help: "Lookups answered from the cache or by joining a query in flight.",
		}, []string{"list"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsbl_cache_misses_total",
			Help: "Lookups that had to ask the list.",
		}, []string{"list"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_dnsbl_list_healthy",
			Help: "1 while a list passes its RFC 5782 health probe, 0 while its answers are ignored.",
		}, []string{"list"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, r := range []func() error{
		func() error { return register(reg, &m.queries) },
		func() error { return register(reg, &m.listings) },
		func() error { return register(reg, &m.errors) },
		func() error { return register(reg, &m.duration) },
		func() error { return register(reg, &m.cacheHits) },
		func() error { return register(reg, &m.cacheMisses) },
		func() error { return register(reg, &m.healthy) },
	} {
		err = errors.Join(err, r())
	}
	return m, err
}

// register registers *c on reg, or takes the collector already there: a
// Checker rebuilt on reload keeps counting in the same series.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	err := reg.Register(*c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			*c = old
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("dnsbl metrics: %w", err)
	}
	return nil
}

// listMetrics are one list's series, resolved once so that the lookup
// path does no label lookups.
type listMetrics struct {
	queries, cacheHits, cacheMisses prometheus.Counter
	duration                        prometheus.Observer
	healthy                         prometheus.Gauge
	listings                        map[string]prometheus.Counter // by reason
	errors                          *prometheus.CounterVec
	name                            string
}

func (m *metrics) forList(l *list) listMetrics {
	lm := listMetrics{
		queries:     m.queries.WithLabelValues(l.name),
		cacheHits:   m.cacheHits.WithLabelValues(l.name),
		cacheMisses: m.cacheMisses.WithLabelValues(l.name),
		duration:    m.duration.WithLabelValues(l.name),
		healthy:     m.healthy.WithLabelValues(l.name),
		listings:    map[string]prometheus.Counter{},
		errors:      m.errors,
		name:        l.name,
	}
	for _, reason := range l.info().Reasons {
		lm.listings[reason] = m.listings.WithLabelValues(l.name, reason)
	}
	// The error series too, at zero, so that an error-rate panel shows 0
	// for a list that never failed instead of "no data".
	for _, kind := range countedErrKinds {
		m.errors.WithLabelValues(l.name, kind)
	}
	return lm
}

// countedErrKinds are the ErrKinds record can count: the failures of a
// query sent (ask) and of its answer (classify). Unhealthy and canceled
// lookups are not counted.
var countedErrKinds = []string{
	ErrKindTimeout, ErrKindServfail, ErrKindRefused, ErrKindTruncated,
	ErrKindBlockedResolver, ErrKindBadAnswer, ErrKindNetwork, ErrKindNoResolver,
}

// record counts the outcome of one lookup.
func (lm listMetrics) record(r Result) {
	if r.Err != nil {
		lm.errors.WithLabelValues(lm.name, r.ErrKind).Inc()
		return
	}
	for _, reason := range r.Reasons {
		if c, ok := lm.listings[reason]; ok {
			c.Inc()
		}
	}
}
