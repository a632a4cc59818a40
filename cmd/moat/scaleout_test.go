package main

import (
	"fmt"
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/internal/haproxytest"
	"moat/internal/postfixtest"
	"moat/internal/redistest"
)

// scaleOut is three moat instances sharing one Redis behind HAProxy (PROXY
// v2), in front of one real Postfix: the layout of README's "Several
// instances".
type scaleOut struct {
	pf    *postfixtest.Postfix
	redis *redistest.Server
	moats []*moatProc
	lb    *haproxytest.Server
}

func startScaleOut(t *testing.T, rules, extra string) *scaleOut {
	t.Helper()
	so := &scaleOut{pf: postfixtest.Start(t, postfixtest.Options{}), redis: redistest.Start(t)}
	rulesPath := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for i := 0; i < 3; i++ {
		cfg := configFor(t, so.pf.Addr, fmt.Sprintf(`listen_proxy_protocol: ["127.0.0.1"]   # HAProxy
rules:
  file: %q
state:
  backend: redis
  redis:
    address: %q
%s`, rulesPath, so.redis.Addr, extra))
		m := startMoat(t, "--config", cfg)
		so.moats = append(so.moats, m)
		addrs = append(addrs, m.smtp)
	}
	so.lb = haproxytest.Start(t, addrs)
	deadline := time.Now().Add(20 * time.Second)
	for {
		up := so.lb.Up(t)
		if up["m0"] && up["m1"] && up["m2"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy does not see the three moats up: %v", up)
		}
		time.Sleep(50 * time.Millisecond) // polling HAProxy's health checks
	}
	return so
}

// instanceWith returns the index of the moat whose log has a line
// containing all of subs, -1 if none.
func (so *scaleOut) instanceWith(subs ...string) int {
	for i, m := range so.moats {
		for _, line := range strings.Split(m.log.String(), "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				return i
			}
		}
	}
	return -1
}

// Greylisting across instances (issue 15): a client greylisted through
// one instance retries after the delay, lands on another instance, and is
// let through, because the instances share the entry in Redis.
func TestScaleOutGreylisting(t *testing.T) {
	so := startScaleOut(t, "rules:\n  - {name: GREYLIST_ALL, stage: rcpt, when: {rcpt: {ends_with: \"@example.net\"}}, action: greylist}\n",
		"greylist:\n  delay: 1s\n")
	out, err := swaks(t, so.lb.Addr, "--to", "bo@example.net", "--from", "ana@client.test")
	if err == nil || !strings.Contains(out, "<** 451 4.7.1 Greylisted") {
		t.Fatalf("first attempt through HAProxy: %v\n%s", err, out)
	}
	first := time.Now()                             // the entry is older than this: made before the 451
	for time.Since(first) < 1200*time.Millisecond { // wait out the configured delay
		time.Sleep(50 * time.Millisecond)
	}
	out, err = swaks(t, so.lb.Addr, "--to", "bo@example.net", "--from", "ana@client.test")
	if err != nil || !strings.Contains(out, "<-  250") {
		t.Fatalf("retry after the delay: %v\n%s", err, out)
	}
	so.pf.WaitMessages(t, 1, 20*time.Second)
	greyed := so.instanceWith(`"reason":"greylisted"`)
	passed := so.instanceWith(`"verdict":"delivered"`)
	t.Logf("greylisted by moat %d, let through by moat %d; HAProxy sessions %v", greyed, passed, so.lb.Sessions(t))
	if greyed < 0 || passed < 0 {
		t.Fatalf("decisions not found in the logs (greylisted %d, delivered %d)", greyed, passed)
	}
	if greyed == passed {
		t.Errorf("both attempts landed on moat %d: round-robin should have moved the retry", greyed)
	}
	// Each moat saw the real client through the PROXY header.
	if so.instanceWith(`"client_ip":"127.0.0.1"`) < 0 {
		t.Errorf("no transaction line names the client's address")
	}
}

// One moat killed during a bounded load (issue 15): HAProxy's health check
// takes it out, the clients' retries land on the other two, and every
// message a client saw acknowledged is in the mailbox — moat acknowledges
// only what the upstream took.
func TestScaleOutInstanceKilled(t *testing.T) {
	so := startScaleOut(t, "rules:\n  - {name: NOTHING, stage: data, when: {subject: never-matches-anything}, score: 1}\n", "")
	const clients, perClient = 4, 15
	var mu sync.Mutex
	acked := map[string]bool{}
	attempts, failures := 0, 0
	send := func(subject string) error {
		c, err := smtp.Dial(so.lb.Addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Hello("load.client.test"); err != nil {
			return err
		}
		if err := c.Mail("ana@client.test"); err != nil {
			return err
		}
		if err := c.Rcpt("bo@example.net"); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "Subject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\nload\r\n", subject, subject)
		if err := w.Close(); err != nil { // the final reply: 250 or not
			return err
		}
		c.Quit()
		return nil
	}
	var killOnce sync.Once
	var wg sync.WaitGroup
	for cl := 0; cl < clients; cl++ {
		wg.Go(func() {
			for i := 0; i < perClient; i++ {
				subject := fmt.Sprintf("load-%d-%d", cl, i)
				// An MTA retries a message that was not acknowledged;
				// bounded here.
				for try := 0; try < 10; try++ {
					err := send(subject)
					mu.Lock()
					attempts++
					if err == nil {
						acked[subject] = true
					} else {
						failures++
					}
					n := len(acked)
					mu.Unlock()
					if n >= clients*perClient/3 {
						// A third of the load is through: kill one instance
						// outright, no goodbye.
						killOnce.Do(func() { so.moats[1].cmd.Process.Kill() })
					}
					if err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond) // a client's retry back-off, bounded
				}
			}
		})
	}
	wg.Wait()
	// Wait until every acknowledged message is in the mailbox (a retried
	// message may arrive twice, so counting is not enough), bounded.
	var msgs [][]byte
	delivered := map[string]bool{}
	missing := func() []string {
		var out []string
		for s := range acked {
			if !delivered[s] {
				out = append(out, s)
			}
		}
		return out
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		msgs = so.pf.WaitMessages(t, len(delivered)+1, 60*time.Second)
		for _, m := range msgs {
			for _, line := range strings.Split(string(m), "\n") {
				if s, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "Subject: "); ok {
					delivered[s] = true
				}
			}
		}
		if len(missing()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged but not in the mailbox after 60 s: %v", missing())
		}
		if len(msgs) > len(delivered) {
			time.Sleep(50 * time.Millisecond) // duplicates: poll the mailbox for the rest
		}
	}
	t.Logf("sent %d messages in %d attempts (%d failed and were retried); acknowledged %d; delivered %d (%d distinct); HAProxy sessions %v",
		clients*perClient, attempts, failures, len(acked), len(msgs), len(delivered), so.lb.Sessions(t))
	if len(acked) != clients*perClient {
		t.Errorf("only %d of %d messages were acknowledged within 10 tries each", len(acked), clients*perClient)
	}
}

// Redis killed and restarted under the instances (issue 15): greylisting
// fails open — mail goes through, nothing is refused for the store's
// sake — the store errors are counted, and once Redis is back the
// instances greylist again.
func TestScaleOutRedisRestart(t *testing.T) {
	so := startScaleOut(t, "rules:\n  - {name: GREYLIST_ALL, stage: rcpt, when: {rcpt: {ends_with: \"@example.net\"}}, action: greylist}\n",
		"greylist:\n  delay: 1h\n")
	try := func(from string) (string, error) {
		return swaks(t, so.lb.Addr, "--to", "bo@example.net", "--from", from)
	}
	if out, err := try("before@client.test"); err == nil || !strings.Contains(out, "<** 451 4.7.1") {
		t.Fatalf("with Redis up, a first attempt is greylisted: %v\n%s", err, out)
	}
	so.redis.Kill()
	for i := 0; i < 3; i++ { // one per instance, round-robin
		if out, err := try(fmt.Sprintf("during%d@client.test", i)); err != nil || !strings.Contains(out, "<-  250") {
			t.Fatalf("with Redis down, mail must go through (fail open): %v\n%s", err, out)
		}
	}
	so.pf.WaitMessages(t, 3, 20*time.Second)
	errs := 0.0
	for _, m := range so.moats {
		errs += scrapeSum(t, m.http, `moat_greylist_decisions_total{decision="store_error"}`)
	}
	if errs < 3 {
		t.Errorf("store errors counted: %v, want at least 3", errs)
	}
	so.redis.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		out, err := try(fmt.Sprintf("after%d@client.test", i))
		if err != nil && strings.Contains(out, "<** 451 4.7.1") {
			break // greylisting is back
		}
		if time.Now().After(deadline) {
			t.Fatalf("greylisting did not resume within 20 s of Redis' restart:\n%s", out)
		}
	}
}

// scrapeSum adds up the samples of moat's /metrics whose line starts with
// prefix (a metric name with some of its labels).
func scrapeSum(t *testing.T, httpAddr, prefix string) float64 {
	t.Helper()
	body := scrape(t, httpAddr)
	sum := 0.0
	name, labels, _ := strings.Cut(strings.TrimSuffix(prefix, "}"), "{")
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, labels) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// Rate limits across instances (issue 15): one client sends through
// HAProxy, which spreads its sessions over three moats; the limit (5 an
// hour, burst 5) holds over all of them together — the sum acknowledged
// stays within the limit plus the burst, and no instance refuses alone
// what the shared counter allows.
func TestScaleOutRateLimit(t *testing.T) {
	so := startScaleOut(t, "rules:\n  - {name: NOTHING, stage: data, when: {subject: never-matches-anything}, score: 1}\n",
		"rate_limits:\n  - {name: per-ip, key: client_ip, count: messages, rate: 5/1h, burst: 5, action: tempfail}\n")
	const n = 12
	accepted, limited := 0, 0
	for i := 0; i < n; i++ {
		out, err := swaks(t, so.lb.Addr, "--to", "bo@example.net", "--from", "ana@client.test", "--header", fmt.Sprintf("Subject: rate-%d", i))
		switch {
		case err == nil && strings.Contains(out, "<-  250"):
			accepted++
		case strings.Contains(out, "<** 451 4.7.0 Rate limit exceeded"):
			limited++
		default:
			t.Fatalf("message %d: %v\n%s", i, err, out)
		}
	}
	per := make([]float64, len(so.moats))
	for i, m := range so.moats {
		per[i] = scrapeSum(t, m.http, `moat_ratelimit_decisions_total{decision="limited"}`)
	}
	t.Logf("sent %d through HAProxy: %d accepted, %d limited; limited per instance %v; sessions %v", n, accepted, limited, per, so.lb.Sessions(t))
	// 12 messages within a second or so: the limit admits the burst (5)
	// and at most one more as the hour's rate trickles in.
	if accepted < 5 || accepted > 5+1 {
		t.Errorf("%d accepted over three instances, want the shared burst of 5 (at most one more)", accepted)
	}
	busy := 0
	for _, v := range per {
		if v > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("refusals came from %d instance(s): the sessions did not spread, or the limit was not shared", busy)
	}
	so.pf.WaitMessages(t, accepted, 20*time.Second)
}
