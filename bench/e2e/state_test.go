//go:build e2ebench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"moat/internal/redistest"
)

var flagStateMessages = 4000

// stateRules greylists every recipient: the rule is the issue's
// "greylisting on every message".
const stateRules = "rules:\n  - {name: GREYLIST_ALL, stage: rcpt, when: {rcpt: {contains: \"@\"}}, action: greylist}\n"

// stateLimits are three rate limits that never bite: each is counted on
// every session (one connection, one recipient, one message) and so
// costs its store operation, but the rates are far above the load.
const stateLimits = `rate_limits:
  - {name: ip-msgs, key: client_ip, count: messages, rate: 1000000/1s, burst: 1000000, action: tempfail}
  - {name: from-rcpts, key: mail_from, count: recipients, rate: 1000000/1s, burst: 1000000, action: tempfail}
  - {name: net-conns, key: client_network, count: connections, rate: 1000000/1s, burst: 1000000, action: close}
`

// TestStateEndToEnd measures the state store end to end (issue 15):
// 5 KB messages sent by 50 concurrent sessions of one message each
// straight to smtp-sink, through the TCP relay, through moat without a
// state store, and through moat greylisting every message (senders
// already allowlisted) with three rate limits that never bite, on the
// embedded store and on Redis. Paths alternate over the rounds. It
// reports throughput against the TCP relay, moat's CPU per message and
// the store operations and round trips per message, read from moat's
// /metrics.
func TestStateEndToEnd(t *testing.T) {
	root, out := benchDirs(t)
	dir := t.TempDir()
	n := workloadSize(flagStateMessages)
	moatBin := buildMoat(t, root, dir)
	rulesFile := filepath.Join(dir, "state-rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(stateRules), 0o644); err != nil {
		t.Fatal(err)
	}
	msg := stateBenchMessage()
	rds := redistest.Start(t)

	snk := startSink(t, dir)
	paths := []*path{{name: "direct", addr: snk.addr}, startRelay(t, dir, snk.addr)}
	httpAddr := map[string]string{}
	for _, backend := range []string{"", "embedded", "redis"} {
		p, h := startStateMoat(t, dir, moatBin, snk.addr, rulesFile, backend, rds.Addr)
		paths = append(paths, p)
		httpAddr[p.name] = h
	}
	stateful := []string{"moat-embedded", "moat-redis"}

	// Warm up the greylist: the first attempt of the triplet is
	// greylisted, a retry after the delay passes and allowlists the
	// network (allowlist_after: 1).
	data := stuffMessage(msg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range stateful {
		p := pathNamed(paths, name)
		first := time.Now()
		if _, err := oneMessage(ctx, p.addr, data); err == nil || !strings.Contains(err.Error(), "451") {
			t.Fatalf("%s: first attempt not greylisted: %v", name, err)
		}
		for time.Since(first) < 1200*time.Millisecond {
			time.Sleep(50 * time.Millisecond)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			ok, err := oneMessage(ctx, p.addr, data)
			if err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: retry after the delay not passed: ok %v, %v", name, ok, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Warm up: caches, sockets, pools.
	for _, p := range paths {
		if _, err := sendSigned(p.addr, msg, 200, 50); err != nil {
			t.Fatalf("warm-up of %s: %v", p.name, err)
		}
	}
	greylisted0 := map[string]float64{}
	for _, name := range stateful {
		m := scrapeMetrics(t, httpAddr[name])
		greylisted0[name] = m.sum(`moat_greylist_decisions_total{decision="greylisted"}`)
	}

	// The store operations and round trips per message, from moat's
	// /metrics around each run.
	ops, rts := map[string][]float64{}, map[string][]float64{}
	var m0 metrics
	hook := func(p *path, after bool) string {
		h := httpAddr[p.name]
		if h == "" {
			return ""
		}
		if !after {
			m0 = scrapeMetrics(t, h)
			return ""
		}
		m1 := scrapeMetrics(t, h)
		o := (m1.sum("moat_state_operations_total") - m0.sum("moat_state_operations_total")) / float64(n)
		rt := (m1.sum("moat_state_round_trips_total") - m0.sum("moat_state_round_trips_total")) / float64(n)
		ops[p.name] = append(ops[p.name], o)
		rts[p.name] = append(rts[p.name], rt)
		return fmt.Sprintf("  store ops %.2f/msg, round trips %.2f/msg", o, rt)
	}
	r := runRounds(t, paths, snk, msg, n, hook)
	for _, name := range stateful {
		m := scrapeMetrics(t, httpAddr[name])
		if g := m.sum(`moat_greylist_decisions_total{decision="greylisted"}`); g != greylisted0[name] {
			t.Fatalf("%s: %v messages greylisted during the rounds; the senders were allowlisted", name, g-greylisted0[name])
		}
		if m.sum(`moat_greylist_decisions_total{decision="allowlisted"}`) == 0 {
			t.Fatalf("%s: no allowlisted greylist decision: the greylist did not run", name)
		}
		for _, l := range []string{"ip-msgs", "from-rcpts", "net-conns"} {
			if m.sum(`moat_ratelimit_decisions_total{decision="allowed",limit="`+l+`"}`)+
				m.sum(`moat_ratelimit_decisions_total{limit="`+l+`",decision="allowed"}`) == 0 {
				t.Fatalf("%s: rate limit %s made no decision", name, l)
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## State store: greylisting and rate limits (TestStateEndToEnd)\n\n%d 5 KB messages, 50 concurrent sessions of one message; moat-embedded and moat-redis greylist every message (`action: greylist` at rcpt, the network allowlisted beforehand) and count three rate limits that never bite (client_ip messages, mail_from recipients, client_network connections); median of %d rounds, paths alternating.\n\n", n, *flagRounds)
	perMsg := func(title string, v map[string][]float64) func(p *path) string {
		return func(p *path) string {
			switch {
			case p == nil:
				return title
			case len(v[p.name]) == 0:
				return "-"
			}
			return fmt.Sprintf("%.2f", median(v[p.name], func(x float64) float64 { return x }))
		}
	}
	r.table(&b, paths, perMsg("store ops/msg", ops), perMsg("store round trips/msg", rts))
	fmt.Fprintf(&b, "\nThe store adds %.3f ms of moat CPU per message on the embedded store and %.3f on Redis (against moat without state). Round trips: Redis requests, or embedded bbolt transactions.\n",
		r.cpu("moat-embedded")-r.cpu("moat-nostate"), r.cpu("moat-redis")-r.cpu("moat-nostate"))
	fmt.Println("\n" + b.String())
	if err := os.WriteFile(filepath.Join(out, "state.md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := r.rate("moat-redis") / r.rate("tcp-relay"); r < 0.70 {
		t.Errorf("moat on Redis with greylisting and three rate limits runs at %.2f× the TCP relay; the bar is 0.70×", r)
	}
}

// stateBenchMessage is an unsigned 5 KB message.
func stateBenchMessage() []byte {
	var body strings.Builder
	for body.Len() < 5<<10 {
		body.WriteString("The quarterly figures for the bench team are attached below, as every week.\r\n")
	}
	return []byte("From: Reports <reports@bench.test>\r\nTo: rcpt@bench.test\r\nSubject: Weekly report for the bench team\r\n" +
		"Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <weekly@bench.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body.String())
}

// stuffMessage dot-stuffs msg and ends it, as DATA sends it.
func stuffMessage(msg []byte) []byte {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(msg), "\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	b.WriteString(".\r\n")
	return []byte(b.String())
}

func pathNamed(paths []*path, name string) *path {
	for _, p := range paths {
		if p.name == name {
			return p
		}
	}
	panic("no path " + name)
}

// startStateMoat runs moat in front of the sink with the greylisting
// rule; backend "" is moat without a state store (the rule's decision is
// then unknown and the mail goes on, the limits are off).
func startStateMoat(t *testing.T, dir, bin, sink, rules, backend, redisAddr string) (*path, string) {
	t.Helper()
	name := "moat-nostate"
	state := ""
	switch backend {
	case "embedded":
		name = "moat-embedded"
		state = fmt.Sprintf("state:\n  backend: embedded\n  dir: %q\n", filepath.Join(dir, "state"))
	case "redis":
		name = "moat-redis"
		state = fmt.Sprintf("state:\n  backend: redis\n  redis: {address: %q}\n", redisAddr)
	}
	if state != "" {
		state += "greylist:\n  delay: 1s\n  allowlist_after: 1\n" + stateLimits
	}
	return startBenchMoat(t, dir, bin, name, sink, fmt.Sprintf("rules:\n  file: %q\n  mode: enforce\n%s", rules, state))
}

// metrics is a scrape of moat's /metrics: each sample line's name and
// labels, as written, and its value.
type metrics map[string]float64

// sum adds the samples whose name and labels start with prefix.
func (m metrics) sum(prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

func scrapeMetrics(t *testing.T, addr string) metrics {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return m
}
