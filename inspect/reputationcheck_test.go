package inspect_test

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"moat/inspect"
	"moat/inspect/greylist"
	"moat/inspect/reputation"
	"moat/internal/state"
	"moat/rules"
)

// repRules: outcomes chosen by the subject or the sender, and rules over
// the reputation facts, so the tests see them known, unknown and scored.
const repRules = `
rules:
  - {name: REJECT_ME, stage: data, when: {subject: {contains: reject-me}}, action: reject, reply: "550 5.7.1 no"}
  - {name: TAG_ME, stage: data, when: {subject: {contains: tag-me}}, action: tag}
  - {name: REFUSE_SENDER, stage: mail, when: {mail_from: {contains: refuse@}}, action: tempfail, reply: "451 4.7.1 later"}
  - {name: NO_RCPT, stage: rcpt, when: {rcpt: {contains: nobody@}}, action: reject, reply: "550 5.1.1 no such user"}
  - {name: GREY_ME, stage: rcpt, when: {rcpt: {contains: grey@}}, action: greylist}
  - {name: BAD_NET, stage: connect, when: {net_reject_ratio: {gt: 0.5}}, score: 1}
  - {name: BAD_DOMAIN, stage: mail, when: {domain_reject_ratio: {gt: 0.5}}, score: 2}
  - {name: NEW_NET, stage: connect, when: {net_accepted: {lt: 1}}, score: 0.25}
  - {name: NET_UNKNOWN, stage: connect, when: {net_accepted: {exists: false}}, score: 0.5}
`

type repHarness struct {
	e   *inspect.Engine
	c   *reputation.Counter
	m   *reputation.Metrics
	reg *prometheus.Registry
}

// newRepHarness builds an engine counting reputation on store (nil: no
// store, as offline) over window.
func newRepHarness(t *testing.T, store state.Store, window time.Duration) *repHarness {
	t.Helper()
	set, err := rules.Parse("rep.yaml", []byte(repRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &repHarness{reg: prometheus.NewRegistry()}
	h.m = reputation.NewMetrics(h.reg)
	var g *greylist.Greylister
	if store != nil {
		cfg := reputation.Config{Enabled: true, Window: window}
		cfg.Defaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		h.c = reputation.New(cfg, store, h.m, nil)
		gc := greylist.Config{}
		gc.Defaults()
		if g, err = greylist.New(gc, store, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if h.e, err = inspect.New(inspect.Config{Judge: set, Reputation: h.c, Greylist: g}); err != nil {
		t.Fatal(err)
	}
	return h
}

// repResult is what one session saw: the connect and mail verdicts, and
// the final stage and verdict.
type repResult struct {
	connect, mail inspect.Verdict
	stage         inspect.Stage
	final         inspect.Verdict
}

// session runs connect, MAIL, the RCPTs (a refused one is skipped, as a
// client does) and DATA with subject unless MAIL was refused.
func (h *repHarness) session(t *testing.T, client, from, subject string, rcpts ...string) repResult {
	t.Helper()
	ctx := context.Background()
	s := &inspect.Session{ID: "rep", Client: netip.AddrPortFrom(netip.MustParseAddr(client), 4000), HeloVerb: "EHLO", Helo: "mail.sender.test"}
	defer h.e.End(s)
	var r repResult
	r.connect = h.e.Connect(ctx, s)
	s.Keep(inspect.StageConnect, r.connect)
	s.Keep(inspect.StageHelo, h.e.Helo(ctx, s))
	tx := &inspect.Transaction{From: path(from)}
	r.mail = h.e.Mail(ctx, s, tx)
	tx.Keep(inspect.StageMail, r.mail)
	if r.mail.Action >= inspect.Tempfail {
		r.stage, r.final = inspect.StageMail, r.mail
		return r
	}
	if len(rcpts) == 0 {
		rcpts = []string{"user@rcpt.test"}
	}
	for _, rc := range rcpts {
		rr := inspect.Recipient{Path: path(rc)}
		if v := h.e.Rcpt(ctx, s, tx, rr); v.Action >= inspect.Tempfail {
			continue
		}
		tx.Rcpts = append(tx.Rcpts, rr)
	}
	if len(tx.Rcpts) == 0 {
		return r // no recipient: the client ends the transaction
	}
	body := []byte("Subject: " + subject + "\r\n\r\nbody\r\n")
	r.stage = inspect.StageData
	r.final = h.e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(body)), Body: bytes.NewReader(body)})
	return r
}

func (h *repHarness) net(t *testing.T, client string) reputation.Counts {
	t.Helper()
	c, err := h.c.NetCounts(context.Background(), reputation.Network(netip.MustParseAddr(client)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (h *repHarness) domain(t *testing.T, d string) reputation.Counts {
	t.Helper()
	c, err := h.c.DomainCounts(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (h *repHarness) updates(result string) float64 {
	return testutil.ToFloat64(h.m.Counter(result))
}

func hit(v inspect.Verdict, rule string) bool { return slices.Contains(v.Rules, rule) }

// repFeed sends a mix from client: one accepted, one tagged, two
// rejected at data, one refused at mail, one with a refused recipient
// then accepted at data (counted once, as rejected: the first verdict
// that refuses settles it), and one from the null sender (the network
// only).
func repFeed(t *testing.T, h *repHarness, client string) {
	t.Helper()
	h.session(t, client, "a@good.test", "hello")
	h.session(t, client, "a@good.test", "tag-me")
	h.session(t, client, "b@Bad.TEST", "reject-me")
	h.session(t, client, "b@bad.test", "reject-me")
	h.session(t, client, "refuse@bad.test", "hello")
	h.session(t, client, "c@other.test", "hello", "nobody@rcpt.test", "user@rcpt.test")
	h.session(t, client, "", "hello") // null sender: the network only
}

func checkRepCounts(t *testing.T, h *repHarness, sibling string) {
	t.Helper()
	want := reputation.Counts{Accepted: 2, Tagged: 1, Rejected: 4}
	if got := h.net(t, sibling); got != want {
		t.Errorf("network of %s: %+v, want %+v", sibling, got, want)
	}
	if got, want := h.domain(t, "bad.test"), (reputation.Counts{Rejected: 3}); got != want {
		t.Errorf("bad.test: %+v, want %+v", got, want)
	}
	if got, want := h.domain(t, "good.test"), (reputation.Counts{Accepted: 1, Tagged: 1}); got != want {
		t.Errorf("good.test: %+v, want %+v", got, want)
	}
	if got, want := h.domain(t, "other.test"), (reputation.Counts{Rejected: 1}); got != want {
		t.Errorf("other.test: %+v, want %+v", got, want)
	}
	if n := h.updates("ok"); n != 7+6 {
		t.Errorf("updates ok %v, want 13", n)
	}
	// Facts in rules: 4/7 rejected from the network, 3/3 for bad.test.
	r := h.session(t, sibling, "x@bad.test", "hello")
	if !hit(r.connect, "BAD_NET") || hit(r.connect, "NEW_NET") || hit(r.connect, "NET_UNKNOWN") {
		t.Errorf("connect from %s: rules %v, want BAD_NET only", sibling, r.connect.Rules)
	}
	if !hit(r.mail, "BAD_DOMAIN") || r.mail.Score != 3 {
		t.Errorf("mail from bad.test: rules %v score %v, want BAD_DOMAIN, 3", r.mail.Rules, r.mail.Score)
	}
	r = h.session(t, sibling, "x@good.test", "hello")
	if hit(r.mail, "BAD_DOMAIN") {
		t.Errorf("good.test: rules %v, want no BAD_DOMAIN", r.mail.Rules)
	}
	// Another network: nothing counted, so the ratio is unknown (not 0)
	// and the count is a known 0.
	r = h.session(t, "198.51.100.7", "x@new.test", "hello")
	if hit(r.connect, "BAD_NET") || !hit(r.connect, "NEW_NET") || hit(r.connect, "NET_UNKNOWN") || hit(r.mail, "BAD_DOMAIN") {
		t.Errorf("new network: connect rules %v, mail rules %v, want NEW_NET only", r.connect.Rules, r.mail.Rules)
	}
}

// The embedded store on a fake clock: every outcome counted once per
// client network (/24, /64) and sender domain, the facts and ratios in
// rules, and the window's expiry.
func TestReputationEmbedded(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	h := newRepHarness(t, embeddedStore(t, clock.Now), 0)
	repFeed(t, h, "192.0.2.1")
	checkRepCounts(t, h, "192.0.2.200")

	h6 := newRepHarness(t, embeddedStore(t, clock.Now), 0)
	repFeed(t, h6, "2001:db8:1::1")
	checkRepCounts(t, h6, "2001:db8:1::ffff")
	if got := h6.net(t, "2001:db8:1:2::1"); got != (reputation.Counts{}) {
		t.Errorf("another /64: %+v, want nothing", got)
	}

	// Greylisting defers, it does not judge: nothing counted.
	if r := h.session(t, "203.0.113.5", "g@grey.test", "hello", "grey@rcpt.test"); r.stage == inspect.StageData {
		t.Errorf("greylisted session reached data")
	}
	if got := h.net(t, "203.0.113.5"); got != (reputation.Counts{}) {
		t.Errorf("greylisted: %+v, want nothing counted", got)
	}
	if got := h.domain(t, "grey.test"); got != (reputation.Counts{}) {
		t.Errorf("greylisted domain: %+v, want nothing counted", got)
	}

	clock.Add(reputation.DefaultWindow / 2)
	if got := h.net(t, "192.0.2.1"); got.Rejected == 0 {
		t.Errorf("half a window on: %+v, want still counted", got)
	}
	clock.Add(2 * reputation.DefaultWindow)
	if got := h.net(t, "192.0.2.1"); got != (reputation.Counts{}) {
		t.Errorf("two windows on: %+v, want expired", got)
	}
	r := h.session(t, "192.0.2.1", "x@bad.test", "hello")
	if hit(r.connect, "BAD_NET") || !hit(r.connect, "NEW_NET") || hit(r.mail, "BAD_DOMAIN") {
		t.Errorf("after expiry: connect %v mail %v, want NEW_NET only", r.connect.Rules, r.mail.Rules)
	}
}

// A store that fails, or none (offline): the facts are unknown — a
// comparison neither holds nor reads as 0, exists: false holds — the
// mail goes on, and the failed updates are counted.
func TestReputationStoreDownAndNoStore(t *testing.T) {
	store := embeddedStore(t, nil)
	h := newRepHarness(t, store, 0)
	store.Close()
	r := h.session(t, "192.0.2.1", "a@good.test", "hello")
	if r.stage != inspect.StageData || r.final.Action != inspect.Accept {
		t.Errorf("store down: %s %v, want accepted at data", r.stage, r.final.Action)
	}
	if hit(r.connect, "NEW_NET") || hit(r.connect, "BAD_NET") || !hit(r.connect, "NET_UNKNOWN") || hit(r.mail, "BAD_DOMAIN") {
		t.Errorf("store down: connect %v mail %v, want NET_UNKNOWN only", r.connect.Rules, r.mail.Rules)
	}
	if n := h.updates("store_error"); n != 2 {
		t.Errorf("store_error %v, want 2 (network and domain)", n)
	}
	if n := h.updates("ok"); n != 0 {
		t.Errorf("ok %v, want 0", n)
	}

	off := newRepHarness(t, nil, 0)
	r = off.session(t, "192.0.2.1", "b@bad.test", "reject-me")
	if r.final.Action != inspect.Reject {
		t.Errorf("no store: %v, want the rules' reject", r.final.Action)
	}
	if hit(r.connect, "NEW_NET") || !hit(r.connect, "NET_UNKNOWN") {
		t.Errorf("no store: connect %v, want NET_UNKNOWN only", r.connect.Rules)
	}
}

// On a real redis-server: the same counts and facts, and a Redis that
// goes away leaves the facts unknown and counts store errors.
func TestReputationRedis(t *testing.T) {
	store, srv := redisStore(t)
	h := newRepHarness(t, store, 0)
	repFeed(t, h, "192.0.2.1")
	checkRepCounts(t, h, "192.0.2.200")
	srv.Kill()
	r := h.session(t, "192.0.2.1", "a@good.test", "hello")
	if r.final.Action != inspect.Accept || hit(r.connect, "BAD_NET") || !hit(r.connect, "NET_UNKNOWN") {
		t.Errorf("redis down: %v, connect %v, want accepted, NET_UNKNOWN", r.final.Action, r.connect.Rules)
	}
	if n := h.updates("store_error"); n != 2 {
		t.Errorf("store_error %v, want 2", n)
	}
}

// A stage judged again for the same transaction (a re-run of the data
// stage) does not count it again; a new transaction in the session does.
func TestReputationOncePerTransaction(t *testing.T) {
	h := newRepHarness(t, embeddedStore(t, nil), 0)
	ctx := context.Background()
	s := &inspect.Session{ID: "once", Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), 4000), HeloVerb: "EHLO", Helo: "mail.sender.test"}
	defer h.e.End(s)
	h.e.Connect(ctx, s)
	h.e.Helo(ctx, s)
	body := []byte("Subject: reject-me\r\n\r\nbody\r\n")
	for range 2 {
		tx := &inspect.Transaction{From: path("a@once.test")}
		h.e.Mail(ctx, s, tx)
		rc := inspect.Recipient{Path: path("user@rcpt.test")}
		h.e.Rcpt(ctx, s, tx, rc)
		tx.Rcpts = append(tx.Rcpts, rc)
		for range 2 {
			if v := h.e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(body)), Body: bytes.NewReader(body)}); v.Action != inspect.Reject {
				t.Fatalf("data: %v, want reject", v.Action)
			}
		}
	}
	if got, want := h.net(t, "192.0.2.9"), (reputation.Counts{Rejected: 2}); got != want {
		t.Errorf("network: %+v, want %+v (two transactions, each judged twice)", got, want)
	}
	if got, want := h.domain(t, "once.test"), (reputation.Counts{Rejected: 2}); got != want {
		t.Errorf("domain: %+v, want %+v", got, want)
	}
}
