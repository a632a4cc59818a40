package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"moat/dashboards"
	"moat/internal/postfixtest"
	"moat/internal/rbldnstest"
)

// prometheusBin is the Prometheus server of Debian's prometheus package.
var prometheusBin = "/usr/bin/prometheus"

const observabilityRules = `
thresholds: {tag: 5, reject: 20}
rules:
  - {name: BL_XBL, stage: connect, when: {dnsbl: {list: bl, reason: xbl}}, action: reject}
  - {name: BL_SBL, stage: connect, when: {dnsbl: {list: bl, reason: sbl}}}
  - {name: BROKEN_LIST, stage: connect, when: {dnsbl: broken}, score: 1}
  - {name: SENDER_DBL, stage: mail, when: {dnsbl: dbl}, action: reject}
  - {name: FROM_CLIENT_TEST, stage: mail, when: {mail_from_domain: client.test}, score: 0.5, shadow: true}
  - name: NO_ABUSE_RCPT
    stage: rcpt
    when: {rcpt: {starts_with: "honeypot@"}}
    action: reject
    reply: "550 5.1.1 No such user here"
  - name: EXE_ATTACHMENT
    stage: data
    when: {attachment_name: {matches: '(?i)\.exe$'}}
    action: reject
  - {name: CHEAP_WATCHES, stage: data, when: {subject: {contains: "cheap watches"}}, score: 6}
`

// The dashboards against a real Prometheus: moat in front of a real
// Postfix with a real rbldnsd serving its DNS lists, scraped every second
// by a real Prometheus that also loads the alert rules. Mail is sent that
// the rules accept, tag and reject, from clients the lists name, with
// STARTTLS, with a failed TLS handshake and with bare LFs, and a reload
// fails and succeeds. Then every query of every panel of every dashboard,
// its template variables substituted as Grafana would, must return data.
func TestObservabilityEndToEnd(t *testing.T) {
	start := time.Now()
	bl := rbldnstest.Start(t, map[string]rbldnstest.Zone{
		"bl.test": {Type: "ip4set", Default: "127.0.0.2", Entries: []rbldnstest.Entry{
			{Key: "127.0.0.2", A: "127.0.0.2"}, // sbl: scored 6, tagged
			{Key: "127.0.0.3", A: "127.0.0.4"}, // xbl: refused at connect
		}},
		"dbl.test": {Type: "dnset", Default: "127.0.1.2", Entries: []rbldnstest.Entry{{Key: "evil.test"}}},
	})
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(observabilityRules), 0o644); err != nil {
		t.Fatal(err)
	}
	// broken.test is not served by rbldnsd: every lookup on it fails
	// (REFUSED), which feeds the error panels and the rule-error panel.
	cfg := configFor(t, pf.Addr, fmt.Sprintf(`rules:
  file: %q
dnsbl:
  resolver: %q
  timeout: 1s
  lists:
    - {name: bl, zone: bl.test, kind: ip, codes: {"127.0.0.2": {reason: sbl, weight: 6}, "127.0.0.4": {reason: xbl, weight: 10}}}
    - {name: dbl, zone: dbl.test, kind: domain, health_check: false}
    - {name: broken, zone: broken.test, kind: ip, health_check: false}
auth:
  enabled: true   # its lookups fail (rbldnsd refuses): the temperror panels get data
# A state store with a rate limit that never bites and reputation: the
# State row's panels get data.
state:
  dir: %q
rate_limits:
  - {name: per-ip, key: client_ip, count: messages, rate: 100000/1s}
reputation:
  enabled: true
`, rulesPath, bl.Addr, filepath.Join(dir, "state")))
	m := startMoat(t, "--config", cfg)
	prom := startPrometheus(t, m.http)

	// /debug/pprof is off by default.
	if code := httpStatus(t, "http://"+m.http+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without http.pprof: status %d, want 404", code)
	}

	sessions := 0
	round := func(n int) {
		t.Helper()
		send := func(src string, args ...string) string {
			t.Helper()
			sessions++
			out, _ := swaksFrom(t, src, m.smtp, args...)
			return out
		}
		for i := range 2 {
			if out := send("127.0.0.1", "--to", "bo@example.net", "--header", fmt.Sprintf("Subject: hello %d.%d", n, i)); !strings.Contains(out, "  250 2.0.0 Ok: queued") {
				t.Fatalf("plain message not delivered:\n%s", out)
			}
		}
		if out := send("127.0.0.1", "--tls", "--to", "bo@example.net", "--header", "Subject: over TLS"); !strings.Contains(out, "  250 2.0.0 Ok: queued") {
			t.Fatalf("TLS message not delivered:\n%s", out)
		}
		if out := send("127.0.0.1", "--to", "bo@example.net", "--header", "Subject: cheap watches"); !strings.Contains(out, "  250 2.0.0 Ok: queued") {
			t.Fatalf("tagged message not delivered:\n%s", out)
		}
		exe := filepath.Join(dir, "setup.exe")
		os.WriteFile(exe, []byte("MZ not really a program"), 0o644)
		if out := send("127.0.0.1", "--to", "bo@example.net", "--attach", "@"+exe); !strings.Contains(out, "<** 550 5.7.1") {
			t.Fatalf("executable not refused:\n%s", out)
		}
		if out := send("127.0.0.1", "--to", "honeypot@example.net"); !strings.Contains(out, "<** 550 5.1.1 No such user here") {
			t.Fatalf("honeypot recipient not refused:\n%s", out)
		}
		if out := send("127.0.0.2", "--to", "bo@example.net", "--header", "Subject: from sbl"); !strings.Contains(out, "  250 2.0.0 Ok: queued") {
			t.Fatalf("sbl client's message not delivered:\n%s", out)
		}
		if out := send("127.0.0.4", "--from", "x@evil.test", "--to", "bo@example.net"); !strings.Contains(out, "<** 550 5.7.1") {
			t.Fatalf("listed sender domain not refused:\n%s", out)
		}
		sessions++
		if g := greetingFrom(t, "127.0.0.3", m.smtp); !strings.HasPrefix(g, "554 ") {
			t.Fatalf("xbl client greeted with %q", g)
		}
		sessions++
		failTLSHandshake(t, m.smtp)
		sessions++
		if err := sendBareLF(m.smtp); err != nil {
			t.Fatalf("message with bare LF: %v", err)
		}
	}

	// Two rounds with scrapes before, between and after them: a series
	// that first appears in round 1 rises in round 2, so every rate() and
	// histogram_quantile() over the run has an increase to show.
	// Prometheus takes a few seconds to apply its targets, so the first
	// scrape is awaited before any traffic.
	waitScraped(t, prom, m.http, 0)
	round(1)
	waitScraped(t, prom, m.http, sessions)
	reloadTwice(t, m, cfg)
	round(2)
	waitScraped(t, prom, m.http, sessions)

	// Grafana's template variables: job and instance list exactly this
	// moat; the others (rule, list) are left at "All", which is .+.
	instance := m.http
	for _, q := range []struct{ label, match, want string }{
		{"job", "moat_build_info", "moat"},
		{"instance", `moat_build_info{job=~"moat"}`, instance},
	} {
		var vals []string
		promGet(t, prom, "/api/v1/label/"+q.label+"/values?"+url.Values{"match[]": {q.match}}.Encode(), &vals)
		if len(vals) != 1 || vals[0] != q.want {
			t.Errorf("variable %s: label_values(%s, %s) = %v, want [%s]", q.label, q.match, q.label, vals, q.want)
		}
	}
	// $__rate_interval and $__range become a window that covers the whole
	// run (started - now, plus a margin for the first scrape): Grafana
	// would use at least four scrape intervals and, on a dashboard showing
	// the last hours, about a minute; what matters here is that the window
	// holds both rounds of traffic, which on a slow machine may take
	// longer than a minute.
	window := fmt.Sprintf("%ds", int(time.Since(start).Seconds())+15)
	vars := map[string]string{
		"job": "moat", "instance": dashboards.RegexValue(instance), "rule": ".+", "list": ".+",
		"__rate_interval": window, "__range": window, "__interval": "15s",
	}
	ds, err := dashboards.Load()
	if err != nil {
		t.Fatal(err)
	}
	queries := 0
	for _, d := range ds {
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				queries++
				expr := dashboards.Expand(tg.Expr, vars)
				res := promQuery(t, prom, expr)
				finite := 0
				for _, r := range res {
					if !math.IsNaN(r.value) && !math.IsInf(r.value, 0) {
						finite++
					}
				}
				// Every series is a number: NaN (a quantile or ratio over
				// nothing) would be an empty line in Grafana.
				if len(res) == 0 || finite < len(res) {
					t.Errorf("%s panel %q query %s: %d series, %d of them numbers: %v\n%s", d.File, p.Title, tg.RefID, len(res), finite, res, expr)
				} else {
					t.Logf("%s %q %s: %d series, e.g. %v = %g", d.File, p.Title, tg.RefID, len(res), res[0].metric, res[0].value)
				}
			}
		}
	}
	if queries < 40 {
		t.Errorf("only %d panel queries", queries)
	}

	// Prometheus loaded the alert rules and evaluates them without error.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name, Health, LastError string
			}
		}
	}
	promGet(t, prom, "/api/v1/rules", &rules)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" && r.Health != "unknown" {
				t.Errorf("alert %s: health %s: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	alerts, err := os.ReadFile("../../dashboards/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Count(string(alerts), "- alert: "); n != want || n == 0 {
		t.Errorf("Prometheus loaded %d alert rules, want the %d of alerts.yaml", n, want)
	}
	t.Logf("%d sessions, %d panel queries, %s", sessions, queries, time.Since(start).Round(time.Millisecond))
}

// reloadTwice sends SIGHUP with a broken config file, then with the good
// one again, and waits for each outcome in the log.
func reloadTwice(t *testing.T, m *moatProc, cfg string) {
	t.Helper()
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		data []byte
		log  string
	}{
		{[]byte("upstream:\n  adress: oops\n"), "config reload failed"},
		{good, `"msg":"config reloaded"`},
	} {
		before := strings.Count(m.log.String(), step.log)
		os.WriteFile(cfg, step.data, 0o644)
		m.cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(10 * time.Second); strings.Count(m.log.String(), step.log) == before; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP", step.log)
			}
		}
	}
}

// failTLSHandshake asks for STARTTLS and answers with something that is
// not a TLS ClientHello.
func failTLSHandshake(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if err := smtpStep(c, r, "", "220"); err != nil {
		t.Fatal(err)
	}
	if err := smtpStep(c, r, "EHLO client.test\r\n", "250"); err != nil {
		t.Fatal(err)
	}
	if err := smtpStep(c, r, "STARTTLS\r\n", "220"); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("this is not a ClientHello\r\n\r\n"))
	io.Copy(io.Discard, r) // until moat hangs up
}

// sendBareLF sends a message whose body has a bare LF line ending: moat
// normalizes it (data.bare_lf's default) and delivers it.
func sendBareLF(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	for _, s := range []struct{ send, want string }{
		{"", "220"}, {"EHLO client.test\r\n", "250"}, {"MAIL FROM:<a@client.test>\r\n", "250"},
		{"RCPT TO:<b@example.net>\r\n", "250"}, {"DATA\r\n", "354"},
		{"Subject: bare LF\r\n\r\nfirst line\nsecond line\r\n.\r\n", "250"}, {"QUIT\r\n", "221"},
	} {
		if err := smtpStep(c, r, s.send, s.want); err != nil {
			return err
		}
	}
	return nil
}

// smtpStep sends a line (if any) and reads a reply, which must have the
// code want.
func smtpStep(c net.Conn, r *bufio.Reader, send, want string) error {
	if send != "" {
		if _, err := c.Write([]byte(send)); err != nil {
			return err
		}
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("after %q: %w", send, err)
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("after %q: got %q, want %s", send, line, want)
		}
		if len(line) < 4 || line[3] != '-' {
			return nil
		}
	}
}

// promServer is a running Prometheus.
type promServer struct {
	url string
	log *lockedBuffer
}

// startPrometheus runs Prometheus on a free loopback port with a fresh
// TSDB, scraping moat's HTTP listener target every second as job "moat",
// with moat's alert rules loaded; it is stopped when the test ends.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Fatalf("prometheus not installed (scripts/install-test-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "alerts.yaml")
	if err := os.WriteFile(rulesFile, dashboards.Alerts, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: moat
    static_configs:
      - targets: [%q]
`, rulesFile, target)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &promServer{url: "http://" + addr, log: &lockedBuffer{}}
	cmd := exec.Command(prometheusBin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--storage.tsdb.retention.time=1h")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", lastLogLines(p.log.String(), 30))
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("prometheus exited at startup:\n%s", p.log.String())
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready:\n%s", p.log.String())
		}
	}
}

func lastLogLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// promGet decodes the data of a Prometheus API answer into v.
func promGet(t *testing.T, p *promServer, path string, v any) {
	t.Helper()
	resp, err := http.Get(p.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.Status != "success" {
		t.Fatalf("%s: %s: %s", path, r.Status, r.Error)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type promSample struct {
	metric map[string]string
	value  float64
}

// promQuery runs an instant query at the present moment.
func promQuery(t *testing.T, p *promServer, expr string) []promSample {
	t.Helper()
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	promGet(t, p, "/api/v1/query?"+url.Values{"query": {expr}}.Encode(), &data)
	if data.ResultType != "vector" {
		t.Fatalf("%s: result type %s", expr, data.ResultType)
	}
	var vec []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	if err := json.Unmarshal(data.Result, &vec); err != nil {
		t.Fatal(err)
	}
	out := make([]promSample, len(vec))
	for i, s := range vec {
		str, _ := s.Value[1].(string)
		f, err := strconv.ParseFloat(str, 64)
		if err != nil {
			t.Fatalf("%s: value %v", expr, s.Value)
		}
		out[i] = promSample{s.Metric, f}
	}
	return out
}

// waitScraped waits until moat has counted all the sessions sent so far,
// Prometheus has scraped that, and two more scrapes have happened.
func waitScraped(t *testing.T, p *promServer, moatHTTP string, sessions int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for metricSum(t, moatHTTP, "moat_proxy_sessions_total") < float64(sessions) {
		if time.Now().After(deadline) {
			t.Fatalf("moat counted %g sessions, want %d", metricSum(t, moatHTTP, "moat_proxy_sessions_total"), sessions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := metricSum(t, moatHTTP, "moat_proxy_sessions_total")
	scraped := func() float64 {
		// Before the first session ends the counter has no series; up
		// tells that a scrape happened all the same.
		res := promQuery(t, p, `sum(moat_proxy_sessions_total{job="moat"}) or sum(up{job="moat"}) * 0`)
		if len(res) == 0 {
			return -1
		}
		return res[0].value
	}
	for scraped() < want {
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus has %g sessions, moat %g", scraped(), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lastScrape := func() float64 {
		res := promQuery(t, p, `timestamp(up{job="moat"})`)
		if len(res) == 0 {
			return 0
		}
		return res[0].value
	}
	first := lastScrape()
	for lastScrape() < first+1.5 {
		if time.Now().After(deadline) {
			t.Fatal("Prometheus stopped scraping moat")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricSum adds up the samples of a metric on moat's /metrics.
func metricSum(t *testing.T, moatHTTP, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + moatHTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

func httpStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// pyroscopeUpload is one profile upload as Pyroscope's /ingest receives
// it.
type pyroscopeUpload struct {
	query url.Values
	parts map[string][]byte // multipart form files by field name
}

// moat pushes profiles to the configured Pyroscope server, here an
// in-process stand-in for its ingest endpoint, under the configured
// application name and tags: CPU and heap profiles, gzipped pprof. The
// same moat has http.pprof on, so /debug/pprof answers.
func TestPyroscopeProfiling(t *testing.T) {
	var mu sync.Mutex
	var uploads []pyroscopeUpload
	var bad []string
	ingest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up, err := readUpload(r)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad = append(bad, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		uploads = append(uploads, up)
	}))
	defer ingest.Close()

	cfg := configFor(t, "127.0.0.1:9", fmt.Sprintf(`profiling:
  pyroscope:
    server_address: %q
    application_name: moat-e2e
    tags: {env: e2e, host: mx1}
    profile_types: [cpu, inuse_space, alloc_space]
    upload_interval: 1s
`, ingest.URL))
	// http.pprof on, in the existing http section.
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(data, []byte("http:\n"), []byte("http:\n  pprof: true\n"), 1), 0o644)
	m := startMoat(t, "--config", cfg)

	if code := httpStatus(t, "http://"+m.http+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("/debug/pprof/cmdline with http.pprof: status %d", code)
	}

	var cpu, heap *pyroscopeUpload
	for deadline := time.Now().Add(30 * time.Second); cpu == nil || heap == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("after 30s: %d uploads (cpu %v, heap %v), refused: %v", len(uploads), cpu != nil, heap != nil, bad)
		}
		mu.Lock()
		for i := range uploads {
			u := &uploads[i]
			if u.query.Get("units") == "samples" {
				cpu = u
			}
			if bytes.Contains(u.parts["sample_type_config"], []byte("inuse_space")) {
				heap = u
			}
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("malformed uploads: %v", bad)
	}
	for _, u := range uploads {
		app, tags := parseSeriesName(u.query.Get("name"))
		if app != "moat-e2e" || tags["env"] != "e2e" || tags["host"] != "mx1" {
			t.Errorf("upload named %q: application %q, tags %v", u.query.Get("name"), app, tags)
		}
		if u.query.Get("from") == "" || u.query.Get("until") == "" || u.query.Get("spyName") != "gospy" {
			t.Errorf("upload query %v", u.query)
		}
		if p := u.parts["profile"]; len(p) < 2 || p[0] != 0x1f || p[1] != 0x8b {
			t.Errorf("profile of %d bytes is not gzipped pprof", len(p))
		}
	}
	t.Logf("%d uploads; a CPU one: %s", len(uploads), cpu.query.Encode())
}

// readUpload reads a POST /ingest: the series name and time range in the
// query string, the profile in a multipart form.
func readUpload(r *http.Request) (pyroscopeUpload, error) {
	up := pyroscopeUpload{query: r.URL.Query(), parts: map[string][]byte{}}
	if r.Method != http.MethodPost || r.URL.Path != "/ingest" {
		return up, fmt.Errorf("%s %s", r.Method, r.URL.Path)
	}
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return up, err
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return up, err
		}
		b, err := io.ReadAll(io.LimitReader(part, 16<<20))
		if err != nil {
			return up, err
		}
		up.parts[part.FormName()] = b
	}
	return up, nil
}

// parseSeriesName splits Pyroscope's "app{k=v,k2=v2}".
func parseSeriesName(s string) (app string, tags map[string]string) {
	tags = map[string]string{}
	app, rest, ok := strings.Cut(s, "{")
	if !ok {
		return s, tags
	}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			tags[k] = v
		}
	}
	return app, tags
}

// Profiling settings are checked when the config is loaded.
func TestProfilingConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tt := range map[string]struct{ yaml, want string }{
		"profile type": {"profiling:\n  pyroscope:\n    server_address: http://127.0.0.1:4040\n    profile_types: [cpu, heap]\n", `profile_types: unknown type "heap"`},
		"address":      {"profiling:\n  pyroscope:\n    server_address: pyroscope:4040\n", "is not an http:// or https:// URL"},
		"tag":          {"profiling:\n  pyroscope:\n    tags: {\"bad tag\": x}\n", `"bad tag" is not a valid tag name`},
		"interval":     {"profiling:\n  pyroscope:\n    upload_interval: 10ms\n", "shorter than 1s"},
		"pprof":        {"http:\n  pprof: maybe\n", "http.pprof"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		os.WriteFile(path, []byte(tt.yaml), 0o644)
		code, _, stderr := runMoat(t, "config", "check", path)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, %q; want 2 and %q", name, code, stderr, tt.want)
		}
	}
}
