package dnsbl

import (
	"testing"
)

// A freshly built Checker, gathered before any lookup, already holds every
// configured list's series at zero — its errors by every kind a lookup can
// fail with and its listings by every reason of its code table — so that a
// fresh install's dashboards show 0 instead of "no data".
func TestMetricsKnownSeriesAtZero(t *testing.T) {
	_, reg := newChecker(t, `
dnsbl:
  resolver: 127.0.0.1:53
  lists:
    - {name: zen, profile: spamhaus-zen}
    - {name: plain, zone: plain.test}
`)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ name, list, label string } // label: the reason or kind
	got := map[key]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := key{name: mf.GetName()}
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "list":
					k.list = lp.GetValue()
				case "reason", "kind":
					k.label = lp.GetValue()
				}
			}
			got[k] = m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	check := func(k key) {
		t.Helper()
		if v, ok := got[k]; !ok || v != 0 {
			t.Errorf("%s{list=%q %q}: present %v, value %v; want present at 0", k.name, k.list, k.label, ok, v)
		}
	}
	for _, list := range []string{"zen", "plain"} {
		for _, kind := range []string{ErrKindTimeout, ErrKindServfail, ErrKindRefused, ErrKindTruncated,
			ErrKindBlockedResolver, ErrKindBadAnswer, ErrKindNetwork, ErrKindNoResolver} {
			check(key{"moat_dnsbl_errors_total", list, kind})
		}
		for _, name := range []string{"moat_dnsbl_queries_total", "moat_dnsbl_cache_hits_total",
			"moat_dnsbl_cache_misses_total", "moat_dnsbl_lookup_duration_seconds"} {
			check(key{name, list, ""})
		}
		// Neither unhealthy nor canceled lookups are counted as errors.
		for _, kind := range []string{ErrKindUnhealthy, ErrKindCanceled} {
			if _, ok := got[key{"moat_dnsbl_errors_total", list, kind}]; ok {
				t.Errorf("moat_dnsbl_errors_total{list=%q,kind=%q} created, but never counted", list, kind)
			}
		}
	}
	for _, reason := range []string{"sbl", "css", "xbl", "drop", "pbl", "bcl"} {
		check(key{"moat_dnsbl_listings_total", "zen", reason})
	}
	check(key{"moat_dnsbl_listings_total", "plain", "listed"})
	// Until the first probe, a list counts as healthy.
	if v, ok := got[key{"moat_dnsbl_list_healthy", "zen", ""}]; !ok || v != 1 {
		t.Errorf("moat_dnsbl_list_healthy{list=zen}: present %v, value %v; want 1", ok, v)
	}
}
