package inspect_test

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"moat/inspect"
	"moat/inspect/ratelimit"
	"moat/internal/redistest"
	"moat/internal/state"
	"moat/rules"
)

// rateRules: a rule over each limit, so the tests see the condition too.
const rateRules = `
rules:
  - {name: TOO_MANY_RCPTS, stage: rcpt, when: {rate_limit: rcpts}, action: reject, reply: "550 5.7.1 too many"}
  - {name: SENDER_BUSY, stage: data, when: {rate_limit: sender}, score: 3}
`

type rateHarness struct {
	e   *inspect.Engine
	reg *prometheus.Registry
	m   *ratelimit.Metrics
}

// newRateHarness builds an engine with limits on store (nil: no store,
// as offline). Every limit named in rateRules exists, so the rules load.
func newRateHarness(t *testing.T, store state.Store, limits ratelimit.Config) *rateHarness {
	t.Helper()
	return newRateHarnessMode(t, store, limits, false)
}

func newRateHarnessMode(t *testing.T, store state.Store, limits ratelimit.Config, monitor bool) *rateHarness {
	t.Helper()
	have := map[string]bool{}
	for _, l := range limits {
		have[l.Name] = true
	}
	for _, n := range []string{"rcpts", "sender"} {
		if !have[n] {
			limits = append(limits, ratelimit.Limit{Name: n, Key: ratelimit.KeyMailFrom, Count: ratelimit.CountMessages, Rate: "1000/1h"})
			if n == "rcpts" {
				limits[len(limits)-1].Count = ratelimit.CountRecipients
			}
		}
	}
	limits.Defaults()
	stages := map[string]inspect.Stage{}
	for _, l := range limits {
		stages[l.Name] = inspect.RateLimitStage(l.Count)
	}
	set, err := rules.Parse("rate.yaml", []byte(rateRules), rules.Options{RateLimits: stages})
	if err != nil {
		t.Fatal(err)
	}
	h := &rateHarness{reg: prometheus.NewRegistry()}
	h.m = ratelimit.NewMetrics(h.reg)
	var lim *ratelimit.Limiter
	if store != nil {
		if lim, err = ratelimit.New(limits, store, h.m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.e, err = inspect.New(inspect.Config{Judge: set, RateLimits: lim, RateLimitsMonitor: monitor}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *rateHarness) count(limit string, d ratelimit.Decision) float64 {
	return testutil.ToFloat64(h.m.Counter(limit, d))
}

// message runs one session from client: connect, MAIL, one RCPT per
// recipient, and DATA when every recipient was accepted. It returns the
// verdict of the first stage that refused, or the data stage's.
func (h *rateHarness) message(t *testing.T, client, from string, rcpts ...string) (inspect.Stage, inspect.Verdict) {
	t.Helper()
	ctx := context.Background()
	s := &inspect.Session{ID: "r", Client: netip.AddrPortFrom(netip.MustParseAddr(client), 4000), HeloVerb: "EHLO", Helo: "mail.sender.test"}
	defer h.e.End(s)
	v := h.e.Connect(ctx, s)
	if s.Keep(inspect.StageConnect, v); v.Action >= inspect.Tempfail {
		return inspect.StageConnect, v
	}
	s.Keep(inspect.StageHelo, h.e.Helo(ctx, s))
	tx := &inspect.Transaction{From: path(from)}
	tx.Keep(inspect.StageMail, h.e.Mail(ctx, s, tx))
	for _, r := range rcpts {
		rc := inspect.Recipient{Path: path(r)}
		if v := h.e.Rcpt(ctx, s, tx, rc); v.Action >= inspect.Tempfail {
			return inspect.StageRcpt, v
		}
		tx.Rcpts = append(tx.Rcpts, rc)
	}
	body := []byte("Subject: hello\r\n\r\nbody\r\n")
	return inspect.StageData, h.e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(body)), Body: bytes.NewReader(body)})
}

func wantRateLimited(t *testing.T, stage inspect.Stage, v inspect.Verdict, code int, what string) {
	t.Helper()
	if v.Action != inspect.Tempfail || v.Reply.Code != code || v.Reply.Enhanced != "4.7.0" || v.Reason != "rate_limited" {
		t.Errorf("%s: %s %v %v (%s), want %d 4.7.0 rate_limited", what, stage, v.Action, v.Reply, v.Reason, code)
	}
}

func wantAccepted(t *testing.T, stage inspect.Stage, v inspect.Verdict, what string) {
	t.Helper()
	if stage != inspect.StageData || v.Action != inspect.Accept {
		t.Errorf("%s: %s %v %v (%s), want accepted at data", what, stage, v.Action, v.Reply, v.Reason)
	}
}

var perIP = ratelimit.Limit{Name: "per-ip", Key: ratelimit.KeyClientIP, Count: ratelimit.CountMessages,
	Rate: "3/1h", Burst: 3, Action: ratelimit.ActionTempfail}

// Exactly burst messages, then 451 4.7.0; another client has its own
// bucket; after one emission interval (1h/3) one more fits.
func TestRateLimitEmbeddedMessages(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newRateHarness(t, embeddedStore(t, clock.Now), ratelimit.Config{perIP})
	for i := range 3 {
		st, v := h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
		wantAccepted(t, st, v, "within the burst")
		_ = i
	}
	st, v := h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantRateLimited(t, st, v, 451, "burst+1")
	if st != inspect.StageData {
		t.Errorf("limited at %s, want data", st)
	}
	st, v = h.message(t, "192.0.2.2", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "another client")
	clock.Add(20 * time.Minute)
	st, v = h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "after one interval")
	st, v = h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantRateLimited(t, st, v, 451, "again over")
	if a, l := h.count("per-ip", ratelimit.Allowed), h.count("per-ip", ratelimit.Limited); a != 5 || l != 2 {
		t.Errorf("metric: allowed %v limited %v, want 5 and 2", a, l)
	}
}

// A limit without an action only feeds the rules: {rate_limit: rcpts}
// rejects the third recipient with the rule's reply. Postmaster is never
// counted nor limited (RFC 5321 §4.5.1).
func TestRateLimitRuleConditionAndPostmaster(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newRateHarness(t, embeddedStore(t, clock.Now), ratelimit.Config{{Name: "rcpts",
		Key: ratelimit.KeyClientIP, Count: ratelimit.CountRecipients, Rate: "2/1h", Burst: 2}})
	st, v := h.message(t, "192.0.2.1", "a@s.test", "one@r.test", "two@r.test", "three@r.test")
	if st != inspect.StageRcpt || v.Action != inspect.Reject || v.Reply.Code != 550 {
		t.Errorf("third recipient: %s %v %v, want the rule's 550", st, v.Action, v.Reply)
	}
	for _, pm := range []string{"postmaster", "Postmaster@r.test"} {
		st, v = h.message(t, "192.0.2.1", "a@s.test", pm)
		wantAccepted(t, st, v, "postmaster over the limit: "+pm)
	}
	st, v = h.message(t, "192.0.2.1", "a@s.test", "four@r.test")
	if st != inspect.StageRcpt || v.Action != inspect.Reject {
		t.Errorf("after postmaster: %s %v, still limited", st, v.Action)
	}
	if a := h.count("rcpts", ratelimit.Allowed); a != 2 {
		t.Errorf("allowed %v, want 2 (postmaster not counted)", a)
	}
}

// The null sender is keyed by the client network, not by an empty
// sender that every bounce would share.
func TestRateLimitNullSenderByNetwork(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newRateHarness(t, embeddedStore(t, clock.Now), ratelimit.Config{{Name: "sender",
		Key: ratelimit.KeyMailFrom, Count: ratelimit.CountMessages, Rate: "1/1h", Burst: 1, Action: ratelimit.ActionTempfail}})
	st, v := h.message(t, "192.0.2.1", "", "b@r.test")
	wantAccepted(t, st, v, "first bounce")
	st, v = h.message(t, "192.0.2.99", "", "b@r.test")
	wantRateLimited(t, st, v, 451, "a bounce from the same /24")
	st, v = h.message(t, "198.51.100.1", "", "b@r.test")
	wantAccepted(t, st, v, "a bounce from another network")
	st, v = h.message(t, "192.0.2.1", "x@s.test", "b@r.test")
	wantAccepted(t, st, v, "a real sender from the first network")
}

// A connections limit with action close answers 421 4.7.0 at connect;
// an errors limit counts the refusals of the rules and, once exceeded,
// closes the session at its next stage.
func TestRateLimitConnectionsAndErrors(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newRateHarness(t, embeddedStore(t, clock.Now), ratelimit.Config{
		{Name: "conns", Key: ratelimit.KeyClientNetwork, Count: ratelimit.CountConnections, Rate: "2/1h", Burst: 2, Action: ratelimit.ActionTempfail},
		{Name: "errs", Key: ratelimit.KeyClientIP, Count: ratelimit.CountErrors, Rate: "1/1h", Burst: 1, Action: ratelimit.ActionClose},
		{Name: "rcpts", Key: ratelimit.KeyClientIP, Count: ratelimit.CountRecipients, Rate: "1/1h", Burst: 1},
	})
	// 198.51.100.1: one recipient fits; the second is refused by the
	// rule (error 1, within errs); the third (error 2) is over errs.
	st, v := h.message(t, "198.51.100.1", "a@s.test", "one@r.test", "two@r.test")
	if st != inspect.StageRcpt || v.Action != inspect.Reject {
		t.Fatalf("second recipient: %s %v", st, v.Action)
	}
	st, v = h.message(t, "198.51.100.1", "a@s.test", "three@r.test")
	if st != inspect.StageRcpt || v.Action != inspect.Reject {
		t.Fatalf("third recipient: %s %v, want the rule's reject (it counts the error)", st, v.Action)
	}
	if h.count("errs", ratelimit.Limited) != 1 {
		t.Errorf("errs limited %v, want 1", h.count("errs", ratelimit.Limited))
	}
	st, v = h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "connection 1")
	st, v = h.message(t, "192.0.2.2", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "connection 2, same /24")
	st, v = h.message(t, "192.0.2.3", "a@s.test", "b@r.test")
	wantRateLimited(t, st, v, 421, "connection 3: 421 at connect")
	if st != inspect.StageConnect {
		t.Errorf("limited at %s, want connect", st)
	}
}

// A store that fails: the limits are unknown, the mail goes on, and the
// metric counts store_error. Without a store (offline) the condition is
// unknown and nothing is refused.
func TestRateLimitStoreDownFailsOpen(t *testing.T) {
	store := embeddedStore(t, nil)
	limits := ratelimit.Config{perIP, {Name: "rcpts", Key: ratelimit.KeyClientIP, Count: ratelimit.CountRecipients, Rate: "1/1h", Burst: 1}}
	h := newRateHarness(t, store, limits)
	store.Close()
	for range 3 {
		st, v := h.message(t, "192.0.2.1", "a@s.test", "one@r.test", "two@r.test")
		wantAccepted(t, st, v, "store closed")
	}
	if n := h.count("per-ip", ratelimit.StoreError); n != 3 {
		t.Errorf("store_error %v, want 3", n)
	}
	if n := h.count("rcpts", ratelimit.StoreError); n != 6 {
		t.Errorf("rcpts store_error %v, want 6", n)
	}
	off := newRateHarness(t, nil, limits)
	for range 3 {
		st, v := off.message(t, "192.0.2.1", "a@s.test", "one@r.test", "two@r.test")
		wantAccepted(t, st, v, "no store")
	}
}

func redisLimiter(t *testing.T, addr string, limits ratelimit.Config) *rateHarness {
	t.Helper()
	cfg := state.Config{Backend: state.BackendRedis, Redis: state.RedisConfig{Address: addr}}
	cfg.Defaults()
	s, err := state.New(cfg, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return newRateHarness(t, s, limits)
}

// On a real redis-server: exactly burst, then limited; refill after an
// emission interval by Redis's own clock; and a Redis that goes away
// fails open.
func TestRateLimitRedis(t *testing.T) {
	store, srv := redisStore(t)
	h := newRateHarness(t, store, ratelimit.Config{{Name: "per-ip", Key: ratelimit.KeyClientIP,
		Count: ratelimit.CountMessages, Rate: "2/2s", Burst: 2, Action: ratelimit.ActionTempfail}})
	for range 2 {
		st, v := h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
		wantAccepted(t, st, v, "within the burst")
	}
	st, v := h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantRateLimited(t, st, v, 451, "burst+1")
	st, v = h.message(t, "192.0.2.2", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "another client")
	time.Sleep(1100 * time.Millisecond) // one interval of Redis's clock: not synchronisation
	st, v = h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "after one interval")
	srv.Kill()
	st, v = h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantAccepted(t, st, v, "redis down")
	if h.count("per-ip", ratelimit.StoreError) != 1 {
		t.Errorf("store_error %v, want 1", h.count("per-ip", ratelimit.StoreError))
	}
}

// Two engines on one redis-server, as two moat instances behind a load
// balancer, share the limit: of many concurrent messages from one client
// the sum admitted stays within the limit plus the burst (here, within
// one hour, exactly the burst).
func TestRateLimitRedisSharedByInstances(t *testing.T) {
	srv := redistest.Start(t)
	limits := ratelimit.Config{{Name: "per-ip", Key: ratelimit.KeyClientIP, Count: ratelimit.CountMessages,
		Rate: "5/1h", Burst: 5, Action: ratelimit.ActionTempfail}}
	engines := []*rateHarness{redisLimiter(t, srv.Addr, limits), redisLimiter(t, srv.Addr, limits)}
	var admitted, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, v := engines[i%2].message(t, "192.0.2.1", "a@s.test", "b@r.test")
			switch {
			case st == inspect.StageData && v.Action == inspect.Accept:
				admitted.Add(1)
			case v.Reason == "rate_limited":
				limited.Add(1)
			}
		}()
	}
	wg.Wait()
	if admitted.Load() > 5+5 || admitted.Load() != 5 || limited.Load() != 35 {
		t.Errorf("admitted %d, limited %d; want 5 and 35 (limit 5/1h, burst 5)", admitted.Load(), limited.Load())
	}
	for i, h := range engines {
		if h.count("per-ip", ratelimit.Allowed) == 0 {
			t.Logf("instance %d admitted nothing", i)
		}
	}
}

// In monitor mode (rules.mode: monitor) an exceeded limit's action is
// what would have happened, never taken.
func TestRateLimitMonitor(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	limit := perIP
	limit.Burst = 1
	h := newRateHarnessMode(t, embeddedStore(t, clock.Now), ratelimit.Config{limit}, true)
	h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	st, v := h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	if st != inspect.StageData || v.Action != inspect.Accept || v.WouldBe != inspect.Tempfail {
		t.Errorf("monitor: %s %v would be %v, want accept, would be tempfail", st, v.Action, v.WouldBe)
	}
	if h.count("per-ip", ratelimit.Limited) != 1 {
		t.Errorf("limited %v, want 1", h.count("per-ip", ratelimit.Limited))
	}
}

// on_store_error: tempfail turns a store failure of a limit with an
// action into 451 4.3.0, and the metric still counts store_error.
func TestRateLimitStoreDownTempfail(t *testing.T) {
	store := embeddedStore(t, nil)
	limit := perIP
	limit.OnStoreError = ratelimit.OnErrorTempfail
	h := newRateHarness(t, store, ratelimit.Config{limit})
	store.Close()
	st, v := h.message(t, "192.0.2.1", "a@s.test", "b@r.test")
	if st != inspect.StageData || v.Action != inspect.Tempfail || v.Reply.Code != 451 || v.Reply.Enhanced != "4.3.0" {
		t.Errorf("store down, tempfail: %s %v %v", st, v.Action, v.Reply)
	}
	if h.count("per-ip", ratelimit.StoreError) != 1 {
		t.Errorf("store_error %v, want 1", h.count("per-ip", ratelimit.StoreError))
	}
}
