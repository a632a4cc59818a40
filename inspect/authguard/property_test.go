package authguard

import (
	"flag"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var seed = flag.Uint64("authguard.seed", 0, "run TestProperty with this seed only (0: seeds from the clock)")

// A client of the property test with its scope values, written out by
// hand so that the model does not reuse the code under test's grouping.
type propClient struct {
	addr             netip.Addr
	ip, narrow, wide string
}

var propClients = []propClient{
	{addr("10.0.0.1"), "10.0.0.1/32", "10.0.0.0/26", "10.0.0.0/21"},
	{addr("10.0.0.2"), "10.0.0.2/32", "10.0.0.0/26", "10.0.0.0/21"},
	{addr("10.0.0.70"), "10.0.0.70/32", "10.0.0.64/26", "10.0.0.0/21"},
	{addr("10.0.8.1"), "10.0.8.1/32", "10.0.8.0/26", "10.0.8.0/21"},
	{addr("2001:db8::1"), "2001:db8::/64", "2001:db8::/48", "2001:db8::/32"},
	{addr("2001:db8::2"), "2001:db8::/64", "2001:db8::/48", "2001:db8::/32"},
	{addr("2001:db8:0:1::1"), "2001:db8:0:1::/64", "2001:db8::/48", "2001:db8::/32"},
}

// "A" is "a" folded.
var propUsers = []string{"", "a", "b", "A"}

// propLimits: small, so that sequences reach them. No time passes in a
// sequence, so the address's hour limit only matters when it is the
// smaller one (it is not: 3 < 5, a check that a second window does not
// change the first one's lock).
var propLimits = []Limit{
	{ScopeIP, time.Minute, 3}, {ScopeIP, time.Hour, 5},
	{ScopeNetNarrow, time.Minute, 5}, {ScopeNetWide, time.Minute, 8},
	{ScopeUser, time.Hour, 4},
}

// model is what the guard should do, in plain maps.
type model struct {
	count  map[string]int  // scope/value → failures (address counters reset by success)
	locked map[string]bool // scope/value → locked (no time passes: locks hold)
	known  map[string]bool // user/ip
}

func (m *model) values(c propClient, user string) []struct{ scope, v string } {
	out := []struct{ scope, v string }{{"ip", c.ip}, {"net_narrow", c.narrow}, {"net_wide", c.wide}}
	if user != "" {
		out = append(out, struct{ scope, v string }{"user", strings.ToLower(user)})
	}
	return out
}

func (m *model) max(scope string) int {
	return map[string]int{"ip": 3, "net_narrow": 5, "net_wide": 8, "user": 4}[scope]
}

func (m *model) fail(c propClient, user string) {
	for _, sv := range m.values(c, user) {
		k := sv.scope + "/" + sv.v
		m.count[k]++
		if m.count[k] >= m.max(sv.scope) {
			m.locked[k] = true
		}
	}
}

func (m *model) succeed(c propClient, user string) {
	m.count["ip/"+c.ip] = 0
	if user != "" {
		m.known[strings.ToLower(user)+"/"+c.ip] = true
	}
}

// failed is the expected decision of Failed: the most specific scope
// whose count the failure made reach its limit, known clients excepted.
func (m *model) failed(c propClient, user string) (bool, string) {
	for _, sv := range m.values(c, user) {
		if m.count[sv.scope+"/"+sv.v] < m.max(sv.scope) {
			continue
		}
		if sv.scope == "user" && m.known[sv.v+"/"+c.ip] {
			continue
		}
		return true, sv.scope
	}
	return false, ""
}

// check is the expected (locked, scope).
func (m *model) check(c propClient, user string) (bool, string) {
	for _, sv := range m.values(c, user) {
		if !m.locked[sv.scope+"/"+sv.v] {
			continue
		}
		if sv.scope == "user" && m.known[sv.v+"/"+c.ip] {
			continue
		}
		return true, sv.scope
	}
	return false, ""
}

// TestProperty: for random sequences of failures, successes and checks
// from a set of clients and usernames, Check is locked exactly when the
// model says so, by the scope it says; and so is Failed's decision, by
// what the failure reached.
func TestProperty(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, _, _ := f.guard(t, Config{Limits: propLimits, Spray: SprayConfig{Users: -1, Networks: -1}})
		runs := 30
		if f.clock == nil {
			runs = 10 // real Redis: keep the sequences well inside a minute
		}
		base := *seed
		if base == 0 {
			base = uint64(time.Now().UnixNano())
		} else {
			runs = 1
		}
		for run := range runs {
			s := base + uint64(run)
			if n, _, err := f.store.Delete(ctx(t), "auth*", 100000); err != nil {
				t.Fatalf("clearing after %d entries: %v", n, err)
			}
			if !propRun(t, g, s) {
				t.Fatalf("failed with seed %d: rerun with -authguard.seed=%d", s, s)
			}
		}
	})
}

func propRun(t *testing.T, g *Guard, s uint64) bool {
	t.Helper()
	r := rand.New(rand.NewPCG(s, s))
	m := &model{count: map[string]int{}, locked: map[string]bool{}, known: map[string]bool{}}
	for step := range 60 {
		c := propClients[r.IntN(len(propClients))]
		user := propUsers[r.IntN(len(propUsers))]
		var d Decision
		var err error
		op := r.IntN(10)
		switch {
		case op < 5:
			m.fail(c, user)
			d, _, err = g.Failed(ctx(t), c.addr, user)
		case op < 6:
			m.succeed(c, user)
			err = g.Succeeded(ctx(t), c.addr, user)
		default:
			d, err = g.Check(ctx(t), c.addr, user)
		}
		if err != nil {
			t.Errorf("step %d: %v", step, err)
			return false
		}
		if op >= 5 && op < 6 {
			continue
		}
		locked, scope := m.check(c, user)
		if op < 5 {
			locked, scope = m.failed(c, user)
		}
		if d.Locked != locked || string(d.Scope) != scope {
			t.Errorf("step %d, op %d, %s %q: %+v; the model says locked %v by %q", step, op, c.addr, user, d, locked, scope)
			return false
		}
	}
	return true
}
