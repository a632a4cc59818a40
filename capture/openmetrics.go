package capture

import (
	"bufio"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// OpenMetrics keeps the counters of an offline run with the capture's own
// timestamps and writes them in the OpenMetrics text format
// (https://prometheus.io/docs/specs/om/open_metrics_spec/), which
// `promtool tsdb create-blocks-from openmetrics` turns into Prometheus
// blocks: a past capture then shows in the dashboards built for live
// traffic, at the time it was captured.
//
// The series carry live mode's names where live mode has the counter —
// moat_proxy_sessions_total{action,stage} (a session's harshest verdict),
// moat_proxy_refusals_total{stage,action,reason} (here one per refused
// transaction), moat_rules_hits_total{rule,mode} (here the rules of each
// transaction's verdict) — and capture's own (metrics.go) otherwise:
// moat_capture_sessions_total{tls}, moat_capture_transactions_total
// {action,stage}, moat_capture_problems_total{problem}. Every series is
// labelled mode="offline", except the rules' hits, whose mode label says
// enforce or shadow, which are labelled source="offline" as with
// --metrics. moat_build_info, from which the dashboards list instances,
// comes along.
//
// A session counts at its last packet, a transaction at its MAIL command.
// Counters are sampled at the start of every Step (default one minute) of
// capture time, but only around traffic: from the step an event falls in
// to five steps after it, so that rate() windows of a few minutes see
// every increase and a long quiet stretch of a capture costs nothing.
// Each series starts with a 0 at the step of its first event, as a
// counter that has just been created.
type OpenMetrics struct {
	opts   OpenMetricsOptions
	series map[string]*omSeries
	active map[int64]bool // steps (Unix seconds of their start) with events
}

// OpenMetricsOptions configure an OpenMetrics.
type OpenMetricsOptions struct {
	// Labels are added to every series: job and instance, typically,
	// which a scrape would have added.
	Labels map[string]string
	// Version is moat_build_info's version label; "" writes no
	// moat_build_info.
	Version string
	// Step is the sampling interval; default one minute.
	Step time.Duration
}

// omTail is how many steps after an event are still sampled.
const omTail = 5

// omFamily is one metric family: its name without _total, type and help.
type omFamily struct {
	name, typ, help string
}

var omFamilies = []omFamily{
	{"moat_build_info", "gauge", "Always 1; labels carry moat's version."},
	{"moat_capture_problems", "counter", "Sessions with a reconstruction problem, by problem."},
	{"moat_capture_sessions", "counter", "SMTP sessions reconstructed from captures, by TLS (none, starttls, implicit)."},
	{"moat_capture_transactions", "counter", "Transactions reconstructed from captures, by the action moat would have taken and the stage."},
	{"moat_proxy_refusals", "counter", "Transactions moat would have refused, by stage, action (tempfail, reject) and reason constant."},
	{"moat_proxy_sessions", "counter", "Sessions by the harshest action moat would have taken in them and the stage it was taken at; for accept, the furthest stage judged. none: never judged."},
	{"moat_rules_hits", "counter", "Rules in the verdict of each transaction, by rule and mode (enforce, shadow)."},
}

// omSeries is one labelled series and its events per step.
type omSeries struct {
	family string
	labels string // rendered, {...}
	counts map[int64]float64
}

// NewOpenMetrics returns an empty OpenMetrics.
func NewOpenMetrics(opts OpenMetricsOptions) *OpenMetrics {
	if opts.Step <= 0 {
		opts.Step = time.Minute
	}
	return &OpenMetrics{opts: opts, series: make(map[string]*omSeries), active: make(map[int64]bool)}
}

// Add counts a session and its transactions. It is not safe for
// concurrent use; an Analyzer's emit callback is never called
// concurrently.
func (m *OpenMetrics) Add(s *Session) {
	end := s.End
	if end.IsZero() {
		end = s.Start
	}
	tls := "none"
	switch {
	case s.ImplicitTLS:
		tls = "implicit"
	case s.TLS:
		tls = "starttls"
	}
	m.inc("moat_capture_sessions", end, "tls", tls, "mode", "offline")
	for _, p := range s.Problems {
		m.inc("moat_capture_problems", end, "problem", p, "mode", "offline")
	}
	var o outcome
	for i := range s.Records {
		r := &s.Records[i]
		ts := r.TS.Time()
		if ts.IsZero() {
			ts = s.Start
		}
		v := r.Verdict
		if v == "" {
			v = "none"
		}
		m.inc("moat_capture_transactions", ts, "action", v, "stage", r.Stage, "mode", "offline")
		if v == "tempfail" || v == "reject" {
			reason := r.Reason
			if reason == "" {
				reason = "unknown" // as the proxy counts it
			}
			m.inc("moat_proxy_refusals", ts, "stage", r.Stage, "action", v, "reason", reason, "mode", "offline")
		}
		for _, rule := range r.Rules {
			m.inc("moat_rules_hits", ts, "rule", rule, "mode", "enforce", "source", "offline")
		}
		o.note(r.Stage, r.Verdict)
	}
	if o.stage == "" {
		m.inc("moat_proxy_sessions", end, "action", "none", "stage", "none", "mode", "offline")
	} else {
		m.inc("moat_proxy_sessions", end, "action", o.action, "stage", o.stage, "mode", "offline")
	}
}

// outcome is a session's harshest verdict and its stage, as the proxy's
// sessionOutcome keeps it: for a session only ever accepted, the
// furthest stage judged.
type outcome struct{ stage, action string }

var (
	actionRank = map[string]int{"accept": 1, "tag": 2, "tempfail": 3, "reject": 4}
	stageRank  = map[string]int{"connect": 1, "helo": 2, "mail": 3, "rcpt": 4, "data": 5}
)

func (o *outcome) note(stage, action string) {
	if actionRank[action] == 0 || stageRank[stage] == 0 {
		return // not judged
	}
	a, oa := actionRank[action], actionRank[o.action]
	if o.stage == "" || a > oa || a == oa && stageRank[stage] > stageRank[o.stage] {
		o.stage, o.action = stage, action
	}
}

// inc counts one event at t in the series of family with the label pairs
// kv; a label with an empty value is left out, as Prometheus does.
func (m *OpenMetrics) inc(family string, t time.Time, kv ...string) {
	labels := renderLabels(kv, m.opts.Labels)
	key := family + labels
	s := m.series[key]
	if s == nil {
		s = &omSeries{family: family, labels: labels, counts: make(map[int64]float64)}
		m.series[key] = s
	}
	step := m.stepOf(t)
	s.counts[step]++
	m.active[step] = true
}

func (m *OpenMetrics) stepOf(t time.Time) int64 {
	return t.Truncate(m.opts.Step).Unix()
}

// renderLabels writes {k="v",...}: the pairs in their order, then the
// constant labels sorted by name.
func renderLabels(kv []string, constant map[string]string) string {
	var b strings.Builder
	sep := byte('{')
	add := func(k, v string) {
		if v == "" {
			return
		}
		b.WriteByte(sep)
		sep = ','
		b.WriteString(k)
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(v))
		b.WriteByte('"')
	}
	for i := 0; i+1 < len(kv); i += 2 {
		add(kv[i], kv[i+1])
	}
	for _, k := range slices.Sorted(maps.Keys(constant)) {
		add(k, constant[k])
	}
	if sep == '{' {
		return ""
	}
	b.WriteByte('}')
	return b.String()
}

// labelEscaper escapes a label value (OpenMetrics: backslash, double
// quote, line feed).
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// sampleTimes are the steps sampled, in order: each step with events and
// the omTail steps after it.
func (m *OpenMetrics) sampleTimes() []int64 {
	step := int64(m.opts.Step / time.Second)
	if step < 1 {
		step = 1
	}
	set := make(map[int64]bool)
	for t := range m.active {
		for i := int64(0); i <= omTail; i++ {
			set[t+i*step] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// WriteTo writes the metrics in the OpenMetrics text format, ending with
// "# EOF". Families come in name order, series in label order, samples
// in time order, as the format requires; values are cumulative.
func (m *OpenMetrics) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriter(cw)
	times := m.sampleTimes()
	byFamily := make(map[string][]*omSeries)
	for _, s := range m.series {
		byFamily[s.family] = append(byFamily[s.family], s)
	}
	for _, f := range omFamilies {
		var series []*omSeries
		if f.name == "moat_build_info" {
			if m.opts.Version == "" || len(times) == 0 {
				continue
			}
			series = []*omSeries{{labels: renderLabels([]string{"version", m.opts.Version, "mode", "offline"}, m.opts.Labels)}}
		} else {
			series = byFamily[f.name]
			if len(series) == 0 {
				continue
			}
			slices.SortFunc(series, func(a, b *omSeries) int { return strings.Compare(a.labels, b.labels) })
		}
		bw.WriteString("# HELP " + f.name + " " + f.help + "\n")
		bw.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
		name := f.name
		if f.typ == "counter" {
			name += "_total"
		}
		for _, s := range series {
			m.writeSeries(bw, name, s, times)
		}
	}
	bw.WriteString("# EOF\n")
	err := bw.Flush()
	return cw.n, err
}

// writeSeries writes one series' samples: from the step of its first
// event on, the events of the steps before each sample time added up.
// A series without counts (moat_build_info) is 1 throughout.
func (m *OpenMetrics) writeSeries(bw *bufio.Writer, name string, s *omSeries, times []int64) {
	steps := slices.Sorted(maps.Keys(s.counts))
	total, next := 0.0, 0
	for _, t := range times {
		v := 1.0
		if s.counts != nil {
			if t < steps[0] {
				continue
			}
			for next < len(steps) && steps[next] < t {
				total += s.counts[steps[next]]
				next++
			}
			v = total
		}
		bw.WriteString(name)
		bw.WriteString(s.labels)
		bw.WriteByte(' ')
		bw.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
		bw.WriteByte(' ')
		bw.WriteString(strconv.FormatInt(t, 10))
		bw.WriteByte('\n')
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
