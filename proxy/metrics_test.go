package proxy

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/promtest"
)

// A freshly built registry, gathered before any traffic, already holds the
// labelled series whose label values are known at start, at zero: a new
// install's dashboards show 0, not "no data".
func TestMetricsKnownSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	got := promtest.Series(t, reg)
	want := []string{
		`moat_proxy_sessions_total{action="none",stage="none"}`,
		`moat_proxy_sessions_total{action="accept",stage="connect"}`,
		`moat_proxy_sessions_total{action="accept",stage="data"}`,
		`moat_proxy_sessions_total{action="tag",stage="data"}`,
		`moat_proxy_sessions_total{action="tempfail",stage="rcpt"}`,
		`moat_proxy_sessions_total{action="reject",stage="mail"}`,
		`moat_proxy_refusals_total{action="reject",reason="score",stage="data"}`,
		`moat_proxy_refusals_total{action="tempfail",reason="score",stage="helo"}`,
		`moat_proxy_refusals_total{action="reject",reason="early_talker",stage="connect"}`,
		`moat_proxy_upstream_replies_total{class="2xx",command="mail"}`,
		`moat_proxy_upstream_replies_total{class="4xx",command="rcpt"}`,
		`moat_proxy_upstream_replies_total{class="5xx",command="data"}`,
		`moat_proxy_upstream_duration_seconds{op="connect"}`,
		`moat_proxy_upstream_duration_seconds{op="data"}`,
		`moat_proxy_tls_sessions_total{version="TLS1.2"}`,
		`moat_proxy_tls_sessions_total{version="TLS1.3"}`,
		`moat_proxy_transactions_total{outcome="delivered"}`,
		`moat_proxy_connections_refused_total{limit="max_connections_per_ip"}`,
		`moat_proxy_tls_handshake_failures_total{mode="implicit"}`,
		`moat_proxy_upstream_connects_total{result="error"}`,
		`moat_proxy_bare_line_endings_total{action="rejected",kind="lf"}`,
	}
	for _, s := range want {
		v, ok := got[s]
		switch {
		case !ok:
			t.Errorf("missing before any traffic: %s", s)
		case v != 0:
			t.Errorf("%s = %v before any traffic", s, v)
		}
	}
	// Bounded: no combination that cannot happen, such as a message tag
	// at the connect stage.
	if _, ok := got[`moat_proxy_sessions_total{action="tag",stage="connect"}`]; ok {
		t.Error("a tag at the connect stage was created")
	}
	n := 0
	for s := range got {
		if strings.HasPrefix(s, "moat_proxy_") {
			n++
		}
	}
	if n > 100 {
		t.Errorf("%d proxy series before any traffic; keep the set small", n)
	}
	t.Logf("%d proxy series before any traffic", n)
}
