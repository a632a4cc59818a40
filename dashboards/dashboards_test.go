package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"moat/dnsbl"
	"moat/inspect"
	"moat/inspect/authguard"
	"moat/inspect/greylist"
	"moat/inspect/ratelimit"
	"moat/inspect/reputation"
	"moat/internal/state"
	"moat/proxy"
	"moat/rules"
)

// The checks below are the rules of github.com/grafana/dashboard-linter
// (template-datasource, template-job, template-instance,
// template-label-promql, panel-datasource, panel-title-description,
// panel-units, target-promql, target-rate-interval, target-job,
// target-instance, target-counter-agg), written out here because the
// linter's module cannot be fetched in moat's build environment (the Go
// module proxy refuses it); PromQL syntax is checked by promtool, which
// parses with Prometheus' own parser. Beyond the linter: thresholds and
// ids, and that every metric queried exists.

func loadAll(t *testing.T) []Dashboard {
	t.Helper()
	ds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 {
		t.Fatalf("%d dashboards, want overview, rules and dnsbl", len(ds))
	}
	return ds
}

// Units Grafana knows (its valueFormats categories) that suit moat's
// metrics; a typo or an invented unit fails.
var grafanaUnits = []string{
	"none", "short", "percent", "percentunit", "bytes", "decbytes", "bits", "kbytes", "mbytes",
	"ns", "µs", "ms", "s", "m", "h", "d", "dtdurations", "dateTimeAsIso", "dateTimeFromNow",
	"cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "Bps", "binBps", "bool", "bool_yes_no",
}

// Lint every dashboard.
func TestDashboardsLint(t *testing.T) {
	uids := map[string]bool{}
	for _, d := range loadAll(t) {
		t.Run(d.File, func(t *testing.T) {
			if d.UID == "" || d.Title == "" || d.Description == "" {
				t.Errorf("uid %q, title %q, description %q: all three are needed", d.UID, d.Title, d.Description)
			}
			if uids[d.UID] {
				t.Errorf("uid %q used twice", d.UID)
			}
			uids[d.UID] = true
			for _, p := range lint(&d) {
				t.Error(p)
			}
		})
	}
}

// linter collects what is wrong with a dashboard.
type linter struct{ problems []string }

func (l *linter) errorf(format string, args ...any) {
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

// lint returns the problems of a dashboard, one line each.
func lint(d *Dashboard) []string {
	var l linter
	l.variables(d)
	l.panels(d)
	return l.problems
}

func (l *linter) variables(d *Dashboard) {
	ds, ok := d.Variable("datasource")
	if !ok || ds.Type != "datasource" || ds.QueryString() != "prometheus" || ds.Label != "Data source" {
		l.errorf("template-datasource-rule: need a variable datasource, type datasource, query prometheus, label \"Data source\"; have %+v", ds)
	}
	for _, name := range []string{"job", "instance"} {
		if _, ok := d.Variable(name); !ok {
			l.errorf("template-%s-rule: no %s variable", name, name)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		where := "variable " + v.Name
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			l.errorf("%s: must use the datasource ${datasource}, has %+v", where, v.Datasource)
		}
		if v.Label != strings.ToUpper(v.Name[:1])+v.Name[1:] {
			l.errorf("%s: label %q, want the title-cased name", where, v.Label)
		}
		if !v.Multi || !v.IncludeAll || v.AllValue != ".+" {
			l.errorf("%s: must be multi-value with All meaning .+ (multi %v, includeAll %v, allValue %q)", where, v.Multi, v.IncludeAll, v.AllValue)
		}
		if v.Refresh != 2 {
			l.errorf("%s: refresh %d, want 2 (on time range change)", where, v.Refresh)
		}
		sel, label, err := labelValues(v.QueryString())
		if err != nil {
			l.errorf("template-label-promql-rule: %s: %v", where, err)
			continue
		}
		if label != v.Name {
			l.errorf("%s: lists values of label %q", where, label)
		}
		if _, err := selectors(Expand(sel, testVars)); err != nil {
			l.errorf("template-label-promql-rule: %s: %v", where, err)
		}
	}
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// labelValues splits label_values(selector, label).
func labelValues(q string) (sel, label string, err error) {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		return "", "", fmt.Errorf("query %q is not label_values(selector, label)", q)
	}
	return m[1], m[2], nil
}

// testVars expand the dashboards' variables for the static checks.
var testVars = map[string]string{
	"job": ".+", "instance": ".+", "rule": ".+", "list": ".+",
	"__rate_interval": "1m", "__range": "1h", "__interval": "15s",
}

func (l *linter) panels(d *Dashboard) {
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			l.errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			l.errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
	}
	panels := d.AllPanels()
	if len(panels) == 0 {
		l.errorf("no panels")
	}
	for _, p := range panels {
		where := fmt.Sprintf("panel %q", p.Title)
		if p.Title == "" || p.Description == "" {
			l.errorf("panel-title-description-rule: %s: title and description are needed", where)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			l.errorf("panel-datasource-rule: %s: datasource %+v, want ${datasource}", where, p.Datasource)
		}
		if !slices.Contains(grafanaUnits, p.FieldConfig.Defaults.Unit) {
			l.errorf("panel-units-rule: %s: unit %q is not a Grafana unit", where, p.FieldConfig.Defaults.Unit)
		}
		if th := p.FieldConfig.Defaults.Thresholds; th == nil || len(th.Steps) == 0 || th.Steps[0].Value != nil {
			l.errorf("%s: needs thresholds, starting with a base step", where)
		}
		if len(p.Targets) == 0 {
			l.errorf("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				l.errorf("%s: refId %q missing or used twice", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				l.errorf("panel-datasource-rule: %s: query %s has datasource %+v", where, tg.RefID, tg.Datasource)
			}
			l.expr(d, where+" query "+tg.RefID, tg.Expr)
		}
	}
}

var grafanaVar = regexp.MustCompile(`\$\{?(\w+)`)

func (l *linter) expr(d *Dashboard, where, expr string) {
	for _, m := range grafanaVar.FindAllStringSubmatch(expr, -1) {
		if _, ok := d.Variable(m[1]); !ok && !strings.HasPrefix(m[1], "__") {
			l.errorf("%s: uses $%s, which the dashboard does not define", where, m[1])
		}
	}
	// The rate interval and range are the only variables outside label
	// matchers; replace them by their sentinel durations so ranges can
	// be told apart.
	sels, err := selectors(strings.NewReplacer("$__rate_interval", "RATEINTERVAL", "$__range", "RANGE").Replace(expr))
	if err != nil {
		l.errorf("target-promql-rule: %s: %v", where, err)
		return
	}
	if len(sels) == 0 {
		l.errorf("%s: selects no series", where)
	}
	for _, s := range sels {
		if s.Matchers["job"] != `=~$job` {
			l.errorf("target-job-rule: %s: %s needs job=~\"$job\"", where, s.Name)
		}
		if s.Matchers["instance"] != `=~$instance` {
			l.errorf("target-instance-rule: %s: %s needs instance=~\"$instance\"", where, s.Name)
		}
		switch {
		case s.Func == "rate" || s.Func == "irate":
			if s.Range != "RATEINTERVAL" {
				l.errorf("target-rate-interval-rule: %s: %s(%s[%s]) must use $__rate_interval", where, s.Func, s.Name, s.Range)
			}
		case s.Range != "" && s.Range != "RATEINTERVAL" && s.Range != "RANGE":
			l.errorf("%s: %s[%s]: use $__rate_interval, or $__range for totals over the dashboard's time range", where, s.Name, s.Range)
		}
		counter := strings.HasSuffix(s.Name, "_total") || strings.HasSuffix(s.Name, "_bucket") ||
			strings.HasSuffix(s.Name, "_count") || strings.HasSuffix(s.Name, "_sum")
		if counter && s.Func != "rate" && s.Func != "irate" && s.Func != "increase" {
			l.errorf("target-counter-agg-rule: %s: counter %s must be inside rate() or increase()", where, s.Name)
		}
		if !counter && s.Range != "" {
			l.errorf("%s: gauge %s used with a range", where, s.Name)
		}
	}
}

// The linter finds what it is meant to find: a dashboard with one
// mistake of each kind.
func TestLintCatchesMistakes(t *testing.T) {
	const bad = `{
	  "uid": "bad", "title": "Bad", "description": "broken on purpose",
	  "templating": {"list": [
	    {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
	    {"name": "instance", "label": "instance", "type": "query", "datasource": {"uid": "Prometheus"},
	     "query": {"query": "label_values(moat_build_info, job)"}, "multi": false, "includeAll": true, "allValue": ".*", "refresh": 1}
	  ]},
	  "panels": [
	    {"id": 1, "type": "timeseries", "title": "No description", "datasource": {"uid": "Prometheus"},
	     "gridPos": {"h": 8, "w": 12, "x": 18, "y": 0},
	     "fieldConfig": {"defaults": {"unit": "messages/s"}},
	     "targets": [{"refId": "A", "datasource": {"uid": "${datasource}"},
	       "expr": "rate(moat_proxy_connections_total{instance=~\"$instance\"}[5m]) + moat_proxy_transactions_total{job=~\"$job\", instance=~\"$instance\"} + x{job=~\"$job\", instance=~\"$nope\"}"}]}
	  ]
	}`
	var d Dashboard
	if err := json.Unmarshal([]byte(bad), &d); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(lint(&d), "\n")
	for _, want := range []string{
		"template-job-rule: no job variable",
		"variable instance: must use the datasource ${datasource}",
		`variable instance: label "instance"`,
		"variable instance: must be multi-value",
		"variable instance: refresh 1",
		`variable instance: lists values of label "job"`,
		"gridPos",
		"panel-title-description-rule",
		"panel-datasource-rule: panel",
		`panel-units-rule: panel "No description": unit "messages/s"`,
		"needs thresholds",
		"target-job-rule: panel \"No description\" query A: moat_proxy_connections_total needs job",
		"target-rate-interval-rule",
		"target-counter-agg-rule: panel \"No description\" query A: counter moat_proxy_transactions_total",
		"uses $nope",
		"target-instance-rule: panel \"No description\" query A: x needs instance",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lint did not report %q; it said:\n%s", want, got)
		}
	}
}

// Every panel query is valid PromQL, as Prometheus' own parser (in
// promtool) reads it: they become recording rules of a rule file that
// promtool checks.
func TestPanelQueriesParse(t *testing.T) {
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rs []rule
	for _, d := range loadAll(t) {
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				sel, _, err := labelValues(v.QueryString())
				if err == nil {
					rs = append(rs, rule{fmt.Sprintf("check_%d", len(rs)), Expand(sel, testVars)})
				}
			}
		}
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				rs = append(rs, rule{fmt.Sprintf("check_%d", len(rs)), Expand(tg.Expr, testVars)})
			}
		}
	}
	file := map[string]any{"groups": []map[string]any{{"name": "dashboards", "rules": rs}}}
	data, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queries.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := promtool(t, "check", "rules", path)
	if !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(rs))) {
		t.Fatalf("promtool:\n%s", out)
	}
}

// promtool runs promtool (Debian package prometheus) and fails the test
// when it fails.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (scripts/install-test-deps.sh installs the prometheus package): %v", err)
	}
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// metricSet is what moat registers: names, and which are histograms or
// summaries (whose series carry _bucket, _sum and _count suffixes).
type metricSet struct {
	names                 map[string]bool
	histograms, summaries map[string]bool
}

// recorder is a Registerer that keeps what is registered on it, and
// registers it on a real registry too, so conflicts fail as they would
// in moat.
type recorder struct {
	reg *prometheus.Registry
	cs  []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.cs = append(r.cs, c)
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// registered builds moat's real collectors the way "moat serve" does and
// describes them: Describe names every metric, even a vector that has no
// series yet (which Gather would leave out). The few metrics package
// main registers itself are read from its source, since package main
// cannot be imported.
func registered(t *testing.T) metricSet {
	t.Helper()
	rec := &recorder{reg: prometheus.NewRegistry()}
	rec.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	if _, err := rules.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := dnsbl.New(dnsbl.Config{}, dnsbl.Deps{Registerer: rec}); err != nil {
		t.Fatal(err)
	}
	inspect.NewAuthMetrics(rec)
	greylist.NewMetrics(rec)
	ratelimit.NewMetrics(rec)
	if _, err := authguard.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	reputation.NewMetrics(rec)
	// Redis connects lazily: the store's metrics register without a server.
	sc := state.Config{Backend: state.BackendRedis}
	sc.Defaults()
	sc.Redis.Address = "127.0.0.1:9"
	if st, err := state.New(sc, state.Deps{Registerer: rec}); err != nil {
		t.Fatal(err)
	} else {
		st.Close()
	}
	engine, err := inspect.New(inspect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.New(proxy.Config{Hostname: "moat.test"}, proxy.Deps{Engine: engine, Registerer: rec, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	ms := metricSet{names: map[string]bool{}, histograms: map[string]bool{}, summaries: map[string]bool{}}
	for _, c := range rec.cs {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		var names []string
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			names = append(names, m[1])
			ms.names[m[1]] = true
		}
		switch c.(type) {
		case *prometheus.HistogramVec, prometheus.Histogram:
			ms.histograms[names[0]] = true
		case *prometheus.SummaryVec, prometheus.Summary:
			ms.summaries[names[0]] = true
		}
	}
	// Collectors of many metrics (Go, process) have them all gathered.
	mfs, err := rec.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			ms.histograms[mf.GetName()] = true
		case dto.MetricType_SUMMARY:
			ms.summaries[mf.GetName()] = true
		}
	}
	mainMetrics(t, ms)
	if len(ms.names) < 40 {
		t.Fatalf("only %d metrics registered", len(ms.names))
	}
	return ms
}

// mainMetrics adds the metrics cmd/moat creates: every
// prometheus.XxxOpts{Name: "..."} literal in its non-test source.
func mainMetrics(t *testing.T, ms metricSet) {
	t.Helper()
	files, err := filepath.Glob("../cmd/moat/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("cmd/moat sources: %v", err)
	}
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(node ast.Node) bool {
			lit, ok := node.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
				return true
			}
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
					if b, ok := kv.Value.(*ast.BasicLit); ok && b.Kind == token.STRING {
						name, _ := strconv.Unquote(b.Value)
						ms.names[name] = true
						n++
						switch sel.Sel.Name {
						case "HistogramOpts":
							ms.histograms[name] = true
						case "SummaryOpts":
							ms.summaries[name] = true
						}
					}
				}
			}
			return true
		})
	}
	if n < 3 {
		t.Fatalf("found only %d metrics in cmd/moat", n)
	}
}

// check reports whether a selector's metric name is one moat exports.
func (ms metricSet) check(name string) error {
	if name == "" {
		return errors.New("a selector without a metric name")
	}
	if ms.names[name] {
		if ms.histograms[name] || ms.summaries[name] {
			return fmt.Errorf("%s is a histogram or summary: query its _bucket, _sum or _count series", name)
		}
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if ms.histograms[base] || ms.summaries[base] && suffix != "_bucket" {
			return nil
		}
	}
	return fmt.Errorf("moat registers no metric %s", name)
}

// Every metric named in a panel query, a variable query or an alert rule
// is one that moat registers.
func TestMetricsExist(t *testing.T) {
	ms := registered(t)
	used := map[string]bool{}
	check := func(where, expr string) {
		t.Helper()
		sels, err := selectors(Expand(expr, testVars))
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		for _, s := range sels {
			used[s.Name] = true
			if err := ms.check(s.Name); err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
	}
	for _, d := range loadAll(t) {
		for _, v := range d.Templating.List {
			if v.Type == "query" {
				sel, _, _ := labelValues(v.QueryString())
				check(d.File+" variable "+v.Name, sel)
			}
		}
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				check(fmt.Sprintf("%s panel %q query %s", d.File, p.Title, tg.RefID), tg.Expr)
			}
		}
	}
	for _, r := range alertRules(t) {
		check("alerts.yaml "+r.Alert, r.Expr)
	}
	// The check must be able to fail.
	for _, bad := range []string{"moat_proxy_connectoins_total", "moat_proxy_upstream_duration_seconds", "moat_proxy_connections_total_bucket"} {
		if ms.check(bad) == nil {
			t.Errorf("%s passes the check", bad)
		}
	}
	// Every moat_ metric shows on some dashboard or alert: a metric
	// nobody looks at is either missing from the dashboards or useless.
	for name := range ms.names {
		if !strings.HasPrefix(name, "moat_") {
			continue
		}
		seen := used[name]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			seen = seen || used[name+suffix]
		}
		if !seen {
			t.Errorf("no dashboard or alert uses %s", name)
		}
	}
}

type alertRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(Alerts, &f); err != nil {
		t.Fatal(err)
	}
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// promtool checks the alert rules and runs their unit tests, and every
// alert has a test where it fires and one where it stays quiet.
func TestAlertRules(t *testing.T) {
	if out := promtool(t, "check", "rules", "alerts.yaml"); !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
	if out := promtool(t, "test", "rules", "alerts_test.yaml"); !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	data, err := os.ReadFile("alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	want := []string{"MoatUpstreamUnreachable", "MoatDNSBLListUnhealthy", "MoatDNSBLListErrors",
		"MoatRejectRateJump", "MoatConfigReloadFailed", "MoatTLSHandshakeFailures", "MoatSessionPanics",
		"MoatAuthTempErrors", "MoatGreylistStoreErrors", "MoatRateLimitStoreErrors",
		"MoatAuthSpraying", "MoatAuthLockouts", "MoatAuthStoreErrors"}
	var have []string
	for _, r := range alertRules(t) {
		have = append(have, r.Alert)
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("alert %s: needs a test case where it fires (%v) and one where it does not (%v)", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("alerts.yaml lacks %s", w)
		}
	}
}

// The provisioning files are what Grafana's file provider reads.
func TestProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, URL, Access string
		} `yaml:"datasources"`
	}
	readYAML(t, "provisioning/datasources/moat-prometheus.yaml", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" ||
		ds.Datasources[0].URL == "" || ds.Datasources[0].Access != "proxy" {
		t.Errorf("datasource provisioning: %+v", ds)
	}
	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type, Folder string
			Options            struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "provisioning/dashboards/moat.yaml", &dp)
	if dp.APIVersion != 1 || len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || !filepath.IsAbs(dp.Providers[0].Options.Path) {
		t.Errorf("dashboard provisioning: %+v", dp)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(false)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The README names every dashboard and panel, so it keeps saying what
// exists.
func TestReadmeListsPanels(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, d := range loadAll(t) {
		if !strings.Contains(readme, d.File) {
			t.Errorf("README.md does not mention %s", d.File)
		}
		for _, p := range d.AllPanels() {
			if !strings.Contains(readme, "**"+p.Title+"**") {
				t.Errorf("README.md does not describe panel **%s** of %s", p.Title, d.File)
			}
		}
	}
	for _, r := range alertRules(t) {
		if !strings.Contains(readme, r.Alert) {
			t.Errorf("README.md does not describe alert %s", r.Alert)
		}
	}
}

// Expand substitutes the forms Grafana accepts, and only known names.
func TestExpand(t *testing.T) {
	got := Expand(`a{job=~"$job", i=~"${instance}", x="[[job]]", y="${job:regex}", z="$unknown"}[$__rate_interval]`,
		map[string]string{"job": "moat", "instance": RegexValue("127.0.0.1:9325"), "__rate_interval": "1m"})
	want := `a{job=~"moat", i=~"127\\.0\\.0\\.1:9325", x="moat", y="moat", z="$unknown"}[1m]`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
