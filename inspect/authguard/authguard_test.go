package authguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"moat/internal/state"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fail records n failures of client as user and returns the last
// decision.
func fail(t *testing.T, g *Guard, client netip.Addr, user string, n int) Decision {
	t.Helper()
	var d Decision
	for range n {
		var err error
		if d, _, err = g.Failed(ctx(t), client, user); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func check(t *testing.T, g *Guard, client netip.Addr, user string) Decision {
	t.Helper()
	d, err := g.Check(ctx(t), client, user)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantLocked(t *testing.T, what string, d Decision, scope Scope, key string) {
	t.Helper()
	if !d.Locked || d.Scope != scope || d.Key != key {
		t.Errorf("%s: %+v, want locked by %s %s", what, d, scope, key)
	}
}

func wantOpen(t *testing.T, what string, d Decision) {
	t.Helper()
	if d.Locked {
		t.Errorf("%s: %+v, want not locked", what, d)
	}
}

// TestLockout: with the default limits, ten failures lock the address
// (the tenth failure's decision already says so, the eleventh attempt's
// Check too); its /26 neighbours are not locked until the /26 has had 30
// failures, and then all of the /26 is, but not the rest of the /21.
func TestLockout(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, m, _ := f.guard(t, Config{})
		a := addr("192.0.2.10")
		for i := 1; i <= 9; i++ {
			wantOpen(t, fmt.Sprintf("failure %d", i), fail(t, g, a, "", 1))
			wantOpen(t, fmt.Sprintf("check after failure %d", i), check(t, g, a, ""))
		}
		d := fail(t, g, a, "", 1)
		wantLocked(t, "10th failure", d, ScopeIP, "192.0.2.10/32")
		if d.RetryAfter != 15*time.Minute {
			t.Errorf("RetryAfter of a fresh lock = %v, want the cooldown", d.RetryAfter)
		}
		d = check(t, g, a, "")
		wantLocked(t, "11th check", d, ScopeIP, "192.0.2.10/32")
		if d.RetryAfter <= 14*time.Minute || d.RetryAfter > 15*time.Minute {
			t.Errorf("RetryAfter = %v", d.RetryAfter)
		}
		wantLocked(t, "11th check with a user", check(t, g, a, "alice"), ScopeIP, "192.0.2.10/32")
		wantOpen(t, "neighbour in the /26", check(t, g, addr("192.0.2.20"), ""))

		// 20 more failures in the /26, none reaching an address limit.
		fail(t, g, addr("192.0.2.11"), "", 9)
		fail(t, g, addr("192.0.2.12"), "", 9)
		wantOpen(t, "29 failures in the /26", fail(t, g, addr("192.0.2.13"), "", 1))
		wantLocked(t, "30th failure in the /26", fail(t, g, addr("192.0.2.13"), "", 1), ScopeNetNarrow, "192.0.2.0/26")
		wantLocked(t, "the /26", check(t, g, addr("192.0.2.63"), ""), ScopeNetNarrow, "192.0.2.0/26")
		wantLocked(t, "the first address, still by its own lock", check(t, g, a, ""), ScopeIP, "192.0.2.10/32")
		wantOpen(t, "another /26 of the /21", check(t, g, addr("192.0.2.64"), ""))

		if got := testutil.ToFloat64(m.lockouts.WithLabelValues("ip")); got != 1 {
			t.Errorf("lockouts{ip} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(m.lockouts.WithLabelValues("net_narrow")); got != 1 {
			t.Errorf("lockouts{net_narrow} = %v, want 1", got)
		}
	})
}

// TestCooldown: a lock ends after the cooldown; the next failure, still
// over the limit's window count, locks again.
func TestCooldown(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, m, _ := f.guard(t, Config{Cooldown: time.Second, Limits: []Limit{{ScopeIP, time.Hour, 3}}})
		a := addr("198.51.100.1")
		wantLocked(t, "3rd failure", fail(t, g, a, "", 3), ScopeIP, "198.51.100.1/32")
		f.advance(t, time.Second, "lock expired", func() bool { return !check(t, g, a, "").Locked })
		wantLocked(t, "4th failure", fail(t, g, a, "", 1), ScopeIP, "198.51.100.1/32")
		if got := testutil.ToFloat64(m.lockouts.WithLabelValues("ip")); got != 2 {
			t.Errorf("lockouts{ip} = %v, want 2", got)
		}
	})
}

// TestSucceeded: a success resets the address's own counters, not the
// network's, and lifts no lock.
func TestSucceeded(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, _, _ := f.guard(t, Config{Limits: []Limit{
			{ScopeIP, time.Minute, 3}, {ScopeIP, time.Hour, 5}, {ScopeNetNarrow, time.Minute, 5},
		}})
		a, b := addr("192.0.2.1"), addr("192.0.2.2")
		fail(t, g, a, "alice", 2)
		if err := g.Succeeded(ctx(t), a, "alice"); err != nil {
			t.Fatal(err)
		}
		wantOpen(t, "2 failures after the success", fail(t, g, a, "alice", 2))
		wantLocked(t, "the /26's 5th failure", fail(t, g, b, "", 1), ScopeNetNarrow, "192.0.2.0/26")
		wantLocked(t, "a after the network lock", check(t, g, a, "alice"), ScopeNetNarrow, "192.0.2.0/26")
		if err := g.Succeeded(ctx(t), a, "alice"); err != nil {
			t.Fatal(err)
		}
		wantLocked(t, "a success lifts no lock", check(t, g, a, "alice"), ScopeNetNarrow, "192.0.2.0/26")
		// Without a user only the counters reset.
		if err := g.Succeeded(ctx(t), addr("203.0.113.1"), ""); err != nil {
			t.Fatal(err)
		}
	})
}

// TestKnownClient: spraying one username locks it, but not for the
// clients (/32, IPv6 /64) its owner logged in from.
func TestKnownClient(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, m, _ := f.guard(t, Config{Limits: []Limit{{ScopeUser, time.Hour, 3}}})
		owner, owner6 := addr("198.51.100.7"), addr("2001:db8:1:2::10")
		for _, c := range []netip.Addr{owner, owner6} {
			if err := g.Succeeded(ctx(t), c, "Alice"); err != nil {
				t.Fatal(err)
			}
		}
		fail(t, g, addr("203.0.113.1"), "alice", 1)
		fail(t, g, addr("203.0.114.1"), "ALICE", 1)
		wantLocked(t, "3rd failure of the username", fail(t, g, addr("203.0.115.1"), "alice", 1), ScopeUser, "alice")
		wantLocked(t, "an attacker", check(t, g, addr("203.0.116.1"), "aLiCe"), ScopeUser, "alice")
		wantOpen(t, "an attacker before the username", check(t, g, addr("203.0.116.1"), ""))
		wantOpen(t, "the owner", check(t, g, owner, "alice"))
		wantOpen(t, "the owner's /64", check(t, g, addr("2001:db8:1:2::99"), "alice"))
		wantLocked(t, "the owner's neighbour", check(t, g, addr("198.51.100.8"), "alice"), ScopeUser, "alice")
		wantOpen(t, "another username", check(t, g, addr("203.0.116.1"), "bob"))
		// The owner mistyping counts, but does not lock the owner out.
		wantOpen(t, "the owner's failure", fail(t, g, owner, "alice", 1))
		if got := testutil.ToFloat64(m.lockouts.WithLabelValues("user")); got != 1 {
			t.Errorf("lockouts{user} = %v, want 1", got)
		}
	})
}

// TestSpray: the failure that makes the threshold of distinct usernames
// per network, or networks per username, reports spraying, once.
func TestSpray(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, m, _ := f.guard(t, Config{
			Limits: []Limit{{ScopeIP, time.Minute, 1000}},
			Spray:  SprayConfig{Users: 3, Networks: 3},
		})
		spray := func(client, user string) Spray {
			t.Helper()
			_, sp, err := g.Failed(ctx(t), addr(client), user)
			if err != nil {
				t.Fatal(err)
			}
			return sp
		}
		steps := []struct {
			client, user string
			want         Spray
		}{
			{"192.0.2.1", "u1", Spray{}},
			{"192.0.2.2", "u2", Spray{}},
			{"192.0.2.1", "U1", Spray{}}, // the same username, folded
			{"192.0.2.3", "u3", Spray{UsersPerNetwork: true}},
			{"192.0.2.4", "u4", Spray{}}, // reported already
			{"192.0.2.1", "u1", Spray{}},
			{"10.0.1.1", "bob", Spray{}},
			{"10.0.1.2", "bob", Spray{}}, // the same /24
			{"10.0.2.1", "bob", Spray{}},
			{"2001:db8::1", "bob", Spray{NetworksPerUser: true}},
			{"10.0.3.1", "bob", Spray{}},
			{"198.51.100.1", "", Spray{}}, // no username: nothing to spray
		}
		for i, s := range steps {
			if got := spray(s.client, s.user); got != s.want {
				t.Errorf("step %d (%s %q): %+v, want %+v", i, s.client, s.user, got, s.want)
			}
		}
		for kind, want := range map[string]float64{KindUsersPerNetwork: 1, KindNetworksPerUser: 1} {
			if got := testutil.ToFloat64(m.spraying.WithLabelValues(kind)); got != want {
				t.Errorf("spraying{%s} = %v, want %v", kind, got, want)
			}
		}
	})
}

// TestIPv6: an IPv6 client is an address's /64, and a network's /48 and
// /32; an IPv4-mapped address is its IPv4 address.
func TestIPv6(t *testing.T) {
	for _, c := range []struct {
		addr                 string
		ip, narrow, wide, sp string
	}{
		{"2001:db8:1:2:3::1", "2001:db8:1:2::/64", "2001:db8:1::/48", "2001:db8::/32", "2001:db8:1:2::/64"},
		{"192.0.2.77", "192.0.2.77/32", "192.0.2.64/26", "192.0.0.0/21", "192.0.2.0/24"},
		{"::ffff:192.0.2.77", "192.0.2.77/32", "192.0.2.64/26", "192.0.0.0/21", "192.0.2.0/24"},
	} {
		a := addr(c.addr).Unmap()
		got := []string{value(ScopeIP, a, ""), value(ScopeNetNarrow, a, ""), value(ScopeNetWide, a, ""), sprayNetwork(a)}
		want := []string{c.ip, c.narrow, c.wide, c.sp}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: %v, want %v", c.addr, got, want)
		}
	}
	both(t, func(t *testing.T, f *fixture) {
		g, _, _ := f.guard(t, Config{Limits: []Limit{{ScopeIP, time.Minute, 3}}})
		fail(t, g, addr("2001:db8::1"), "", 1)
		fail(t, g, addr("2001:db8::2"), "", 1)
		wantLocked(t, "3rd failure in the /64", fail(t, g, addr("2001:db8::ffff:3"), "", 1), ScopeIP, "2001:db8::/64")
		wantLocked(t, "the /64", check(t, g, addr("2001:db8::4"), ""), ScopeIP, "2001:db8::/64")
		wantOpen(t, "the next /64", check(t, g, addr("2001:db8:0:1::1"), ""))
		// The mapped form is the same client as the IPv4 one.
		fail(t, g, addr("::ffff:192.0.2.1"), "", 3)
		wantLocked(t, "mapped", check(t, g, addr("192.0.2.1"), ""), ScopeIP, "192.0.2.1/32")
	})
}

// TestStoreDown: every call fails open with ErrUnavailable, counted.
func TestStoreDown(t *testing.T) {
	both(t, func(t *testing.T, f *fixture) {
		g, m, _ := f.guard(t, Config{})
		a := addr("192.0.2.1")
		fail(t, g, a, "alice", 10)
		f.store.Close()
		d, err := g.Check(ctx(t), a, "alice")
		if !errors.Is(err, state.ErrUnavailable) || d.Locked {
			t.Errorf("Check: %+v, %v; want not locked, ErrUnavailable", d, err)
		}
		d, sp, err := g.Failed(ctx(t), a, "alice")
		if !errors.Is(err, state.ErrUnavailable) || d.Locked || sp.Any() {
			t.Errorf("Failed: %+v %+v, %v; want nothing, ErrUnavailable", d, sp, err)
		}
		if err := g.Succeeded(ctx(t), a, "alice"); !errors.Is(err, state.ErrUnavailable) {
			t.Errorf("Succeeded: %v, want ErrUnavailable", err)
		}
		if got := testutil.ToFloat64(m.storeErrors); got != 3 {
			t.Errorf("store errors = %v, want 3", got)
		}
	})
}

// TestNoStore: without a store nothing is locked or counted.
func TestNoStore(t *testing.T) {
	g, _, _ := newGuard(t, nil, Config{})
	a := addr("192.0.2.1")
	for range 20 {
		if d, sp, err := g.Failed(ctx(t), a, "alice"); d.Locked || sp.Any() || err != nil {
			t.Fatalf("Failed: %+v %+v %v", d, sp, err)
		}
	}
	if d, err := g.Check(ctx(t), a, "alice"); d.Locked || err != nil {
		t.Errorf("Check: %+v %v", d, err)
	}
	if err := g.Succeeded(ctx(t), a, "alice"); err != nil {
		t.Error(err)
	}
}

// TestShared: two moat instances on one Redis count together and see
// each other's locks.
func TestShared(t *testing.T) {
	f := newRedis(t)
	g1, _, _ := f.guard(t, Config{})
	g2, _, _ := newGuard(t, f.another(t), Config{})
	a := addr("192.0.2.1")
	fail(t, g1, a, "", 5)
	wantOpen(t, "9 failures on two instances", fail(t, g2, a, "", 4))
	wantLocked(t, "the 10th, on the first", fail(t, g1, a, "", 1), ScopeIP, "192.0.2.1/32")
	wantLocked(t, "the second instance", check(t, g2, a, ""), ScopeIP, "192.0.2.1/32")
}

// TestUsernames: usernames are folded, bounded and escaped in keys.
func TestUsernames(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, c := range []struct{ in, want string }{
		{"Alice@Example.ORG", "alice@example.org"},
		{strings.Repeat("é", 128), strings.Repeat("é", 128)}, // 256 bytes
		{long, userKey(strings.ToUpper(long))},
	} {
		if got := userKey(c.in); got != c.want {
			t.Errorf("userKey(%.20q…) = %.40q, want %.40q", c.in, got, c.want)
		}
	}
	if k := userKey(long); !strings.HasPrefix(k, "#") || len(k) != 33 {
		t.Errorf("a long username: %q", k)
	}
	both(t, func(t *testing.T, f *fixture) {
		g, _, _ := f.guard(t, Config{Limits: []Limit{{ScopeUser, time.Minute, 2}}})
		hostile := "*:moat:v1:authlock:ip:\r\n\x00[a]" + long
		fail(t, g, addr("192.0.2.1"), hostile, 2)
		d := check(t, g, addr("192.0.2.2"), hostile)
		wantLocked(t, "a hostile username", d, ScopeUser, userKey(hostile))
		wantOpen(t, "a prefix of it", check(t, g, addr("192.0.2.2"), "*"))
		es, _, err := f.store.Scan(ctx(t), "auth*", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if len(e.Key) > 200 || strings.ContainsAny(e.Key, "*[]\r\n\x00") {
				t.Errorf("key %q", e.Key)
			}
		}
	})
}

func TestMetrics(t *testing.T) {
	_, _, reg := newGuard(t, nil, Config{})
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n != len(Scopes)+2+1 {
		t.Errorf("%d series at start, %v", n, err)
	}
	if lint, err := testutil.GatherAndLint(reg); err != nil || len(lint) > 0 {
		t.Errorf("metric lint: %v %v", lint, err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice: no error")
	}
	var none *Metrics
	none.lockout(ScopeIP) // a nil *Metrics counts nothing
}
