package inspect_test

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"moat/inspect"
	"moat/inspect/greylist"
	"moat/inspect/smtp"
	"moat/internal/redistest"
	"moat/internal/state"
	"moat/rules"
)

const greyRules = `
rules:
  - {name: GREY_ALL, stage: rcpt, when: {client_ip: {cidr: [0.0.0.0/0, "::/0"]}}, action: greylist}
  - {name: GREY_SUBJECT, stage: data, when: {subject: {contains: greylist-me}}, action: greylist}
`

// fakeClock is the embedded store's clock, moved by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func embeddedStore(t *testing.T, now func() time.Time) state.Store {
	t.Helper()
	cfg := state.Config{Dir: filepath.Join(t.TempDir(), "state")}
	cfg.Defaults()
	s, err := state.New(cfg, state.Deps{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func redisStore(t *testing.T) (state.Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	cfg := state.Config{Backend: state.BackendRedis, Redis: state.RedisConfig{Address: srv.Addr}}
	cfg.Defaults()
	s, err := state.New(cfg, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, srv
}

type greyHarness struct {
	e   *inspect.Engine
	reg *prometheus.Registry
	m   *greylist.Metrics
}

func newGreyHarness(t *testing.T, store state.Store, cfg greylist.Config, a *inspect.AuthConfig) *greyHarness {
	t.Helper()
	set, err := rules.Parse("grey.yaml", []byte(greyRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &greyHarness{reg: prometheus.NewRegistry()}
	h.m = greylist.NewMetrics(h.reg)
	var g *greylist.Greylister
	if store != nil {
		cfg.Defaults()
		if g, err = greylist.New(cfg, store, h.m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.e, err = inspect.New(inspect.Config{Judge: set, Greylist: g, Auth: a}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *greyHarness) count(d greylist.Decision) float64 {
	return testutil.ToFloat64(h.m.Counter(d))
}

// rcpt runs a session from client up to one RCPT and returns its verdict.
func (h *greyHarness) rcpt(t *testing.T, client, from, to string) inspect.Verdict {
	t.Helper()
	ctx := context.Background()
	s := &inspect.Session{ID: "g", Client: netip.AddrPortFrom(netip.MustParseAddr(client), 4000), HeloVerb: "EHLO", Helo: "mail.sender.test"}
	defer h.e.End(s)
	s.Keep(inspect.StageConnect, h.e.Connect(ctx, s))
	s.Keep(inspect.StageHelo, h.e.Helo(ctx, s))
	tx := &inspect.Transaction{From: path(from)}
	tx.Keep(inspect.StageMail, h.e.Mail(ctx, s, tx))
	return h.e.Rcpt(ctx, s, tx, inspect.Recipient{Path: path(to)})
}

func path(a string) smtp.Path {
	if a == "" {
		return smtp.Path{}
	}
	p, _, err := smtp.ParseRcptArg("TO:<" + a + ">")
	if err != nil {
		panic(err)
	}
	return p
}

func wantGreylisted(t *testing.T, v inspect.Verdict, what string) {
	t.Helper()
	if v.Action != inspect.Tempfail || v.Reply.Code != 451 || v.Reply.Enhanced != "4.7.1" || v.GreylistDecision != "greylisted" {
		t.Errorf("%s: %v %v (%s), want greylisted 451 4.7.1", what, v.Action, v.Reply, v.GreylistDecision)
	}
}

func wantPassed(t *testing.T, v inspect.Verdict, decision, what string) {
	t.Helper()
	if v.Action != inspect.Accept || v.GreylistDecision != decision {
		t.Errorf("%s: %v %v (%s), want accept (%s)", what, v.Action, v.Reply, v.GreylistDecision, decision)
	}
}

// The life of a triplet on the embedded store, on a fake clock: first
// seen → 451; retried before the delay → 451; after it → passed; and
// after allowlist_after passes the network is no longer greylisted.
func TestGreylistEmbeddedTriplet(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newGreyHarness(t, embeddedStore(t, clock.Now), greylist.Config{AllowlistAfter: 2}, nil)

	wantGreylisted(t, h.rcpt(t, "192.0.2.10", "Alice@Sender.test", "bob@rcpt.test"), "first attempt")
	clock.Add(time.Minute)
	wantGreylisted(t, h.rcpt(t, "192.0.2.10", "alice@sender.test", "bob@rcpt.test"), "retry before the delay")
	clock.Add(5 * time.Minute)
	// Another address of the same /24 retries: same triplet.
	wantPassed(t, h.rcpt(t, "192.0.2.77", "alice@sender.test", "BOB@rcpt.test"), "passed", "retry after the delay")
	wantPassed(t, h.rcpt(t, "192.0.2.10", "alice@sender.test", "bob@rcpt.test"), "passed", "passed triplet")
	// Another /24: a new triplet.
	wantGreylisted(t, h.rcpt(t, "192.0.3.10", "alice@sender.test", "bob@rcpt.test"), "another network")

	// The null sender, a second pass of the network → allowlisted.
	wantGreylisted(t, h.rcpt(t, "192.0.2.10", "", "bob@rcpt.test"), "null sender")
	clock.Add(6 * time.Minute)
	wantPassed(t, h.rcpt(t, "192.0.2.10", "", "bob@rcpt.test"), "passed", "null sender retried")
	wantPassed(t, h.rcpt(t, "192.0.2.10", "new@other.test", "carol@rcpt.test"), "allowlisted", "allowlisted network")

	// A first sighting older than the retry window starts again.
	wantGreylisted(t, h.rcpt(t, "198.51.100.1", "x@y.test", "bob@rcpt.test"), "late sender")
	clock.Add(49 * time.Hour)
	wantGreylisted(t, h.rcpt(t, "198.51.100.1", "x@y.test", "bob@rcpt.test"), "retry after the window")

	if h.count(greylist.Greylisted) != 6 || h.count(greylist.Passed) != 3 || h.count(greylist.Allowlisted) != 1 {
		t.Errorf("metrics: greylisted %v passed %v allowlisted %v", h.count(greylist.Greylisted), h.count(greylist.Passed), h.count(greylist.Allowlisted))
	}
}

// IPv6 clients are keyed by their /64.
func TestGreylistIPv6Network(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newGreyHarness(t, embeddedStore(t, clock.Now), greylist.Config{}, nil)
	wantGreylisted(t, h.rcpt(t, "2001:db8:1:2::10", "a@s.test", "b@r.test"), "first")
	clock.Add(10 * time.Minute)
	wantPassed(t, h.rcpt(t, "2001:db8:1:2:ffff::1", "a@s.test", "b@r.test"), "passed", "same /64")
	wantGreylisted(t, h.rcpt(t, "2001:db8:1:3::10", "a@s.test", "b@r.test"), "another /64")
}

// When SPF passes, the SPF domain replaces the network: a large sender
// that retries from another network is let through.
func TestGreylistSPFDomain(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	zone := map[string][]string{"big.test": {"v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 -all"}}
	h := newGreyHarness(t, embeddedStore(t, clock.Now), greylist.Config{},
		&inspect.AuthConfig{Resolver: zoneResolver{txt: zone}, AuthservID: "mx.moat.test"})
	wantGreylisted(t, h.rcpt(t, "198.51.100.1", "news@big.test", "b@r.test"), "first, from the first network")
	clock.Add(10 * time.Minute)
	v := h.rcpt(t, "203.0.113.9", "news@big.test", "b@r.test")
	wantPassed(t, v, "passed", "retry from another network, SPF pass")
	// Without SPF (a domain with no record) the networks differ.
	wantGreylisted(t, h.rcpt(t, "198.51.100.1", "a@nospf.test", "b@r.test"), "no SPF, first")
	clock.Add(10 * time.Minute)
	wantGreylisted(t, h.rcpt(t, "203.0.113.9", "a@nospf.test", "b@r.test"), "no SPF, another network")
}

// At the data stage (rules over the content) the message is greylisted
// while any recipient's triplet has not passed; the reply is at end of
// data.
func TestGreylistDataStage(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newGreyHarness(t, embeddedStore(t, clock.Now), greylist.Config{AllowlistAfter: -1}, nil)
	data := func(rcpts ...string) inspect.Verdict {
		ctx := context.Background()
		s := &inspect.Session{ID: "d", Client: netip.MustParseAddrPort("192.0.2.1:4000"), HeloVerb: "EHLO", Helo: "h.test"}
		defer h.e.End(s)
		tx := &inspect.Transaction{From: path("a@s.test")}
		for _, r := range rcpts {
			tx.Rcpts = append(tx.Rcpts, inspect.Recipient{Path: path(r)})
		}
		body := []byte("Subject: please greylist-me\r\n\r\nbody\r\n")
		return h.e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(body)), Body: bytes.NewReader(body)})
	}
	wantGreylisted(t, data("one@r.test"), "first message")
	clock.Add(10 * time.Minute)
	wantGreylisted(t, data("one@r.test", "two@r.test"), "a second recipient not yet seen")
	clock.Add(10 * time.Minute)
	wantPassed(t, data("one@r.test", "two@r.test"), "passed", "both passed")
}

// Without a store (offline analysis, no state configured) the decision
// is unknown and the rule's action is not taken.
func TestGreylistNoStoreIsUnknown(t *testing.T) {
	h := newGreyHarness(t, nil, greylist.Config{}, nil)
	v := h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test")
	if v.Action != inspect.Accept || v.GreylistDecision != inspect.GreylistUnknown || !v.Greylist {
		t.Errorf("no store: %v %q", v.Action, v.GreylistDecision)
	}
}

// A store that fails: the mail goes on (fail open) or is tempfailed, as
// configured, and the metric counts it.
func TestGreylistStoreDown(t *testing.T) {
	store := embeddedStore(t, nil)
	h := newGreyHarness(t, store, greylist.Config{}, nil)
	store.Close()
	v := h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test")
	wantPassed(t, v, "store_error", "store closed, fail open")
	if h.count(greylist.StoreError) != 1 {
		t.Errorf("store_error counted %v times", h.count(greylist.StoreError))
	}
	h = newGreyHarness(t, store, greylist.Config{OnStoreError: greylist.OnErrorTempfail}, nil)
	if v := h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test"); v.Action != inspect.Tempfail || v.Reply.Code != 451 {
		t.Errorf("on_store_error tempfail: %v %v", v.Action, v.Reply)
	}
}

// The same on a real redis-server, whose clock cannot be faked: a 1s
// delay waited out with a bounded retry loop; then Redis killed → fail
// open and counted, and back after a restart.
func TestGreylistRedis(t *testing.T) {
	store, srv := redisStore(t)
	h := newGreyHarness(t, store, greylist.Config{Delay: time.Second, AllowlistAfter: 1}, nil)
	wantGreylisted(t, h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test"), "first")
	wantGreylisted(t, h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test"), "at once")
	deadline := time.Now().Add(10 * time.Second)
	var v inspect.Verdict
	for {
		v = h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test")
		if v.Action == inspect.Accept || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // waiting out the configured delay
	}
	wantPassed(t, v, "passed", "after the delay")
	wantPassed(t, h.rcpt(t, "192.0.2.1", "c@s.test", "d@r.test"), "allowlisted", "allowlisted network")

	srv.Kill()
	wantPassed(t, h.rcpt(t, "192.0.2.1", "a@s.test", "b@r.test"), "store_error", "redis down")
	if h.count(greylist.StoreError) != 1 {
		t.Errorf("store_error counted %v times", h.count(greylist.StoreError))
	}
	srv.Restart()
	wantGreylisted(t, h.rcpt(t, "192.0.9.1", "a@s.test", "b@r.test"), "redis back")
}
