package ratelimit

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"moat/internal/state"
)

func TestParseRate(t *testing.T) {
	good := []struct {
		in   string
		want state.Rate
	}{
		{"100/1h", state.Rate{Events: 100, Period: time.Hour}},
		{"5/30s", state.Rate{Events: 5, Period: 30 * time.Second}},
		{"1000/24h", state.Rate{Events: 1000, Period: 24 * time.Hour}},
		{"1/1m30s", state.Rate{Events: 1, Period: 90 * time.Second}},
	}
	for _, g := range good {
		if r, err := ParseRate(g.in); err != nil || r != g.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", g.in, r, err, g.want)
		}
	}
	bad := []struct{ in, want string }{
		{"", "EVENTS/PERIOD"},
		{"100", "EVENTS/PERIOD"},
		{"100/h", "period"},
		{"100/1d", "period"},
		{"0/1h", "events"},
		{"-5/1h", "events"},
		{"1.5/1h", "events"},
		{" 5/1h", "events"},
		{"5/-1h", "period"},
		{"5/0s", "period"},
		{"5/100ms", "shorter than a second"},
		{"5/1h/2", "period"},
	}
	for _, b := range bad {
		if _, err := ParseRate(b.in); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("ParseRate(%q) = %v, want an error about %s", b.in, err, b.want)
		}
	}
}

func TestConfig(t *testing.T) {
	c := Config{{Name: "per-ip", Key: KeyClientIP, Count: CountMessages, Rate: "100/1h"}}
	c.Defaults()
	if c[0].Burst != 100 || c[0].Action != ActionNone || c[0].OnStoreError != OnErrorAccept {
		t.Errorf("defaults: %+v", c[0])
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		mod  func(*Limit)
		want string
	}{
		{func(l *Limit) { l.Name = "Per IP" }, "rate_limits[0].name"},
		{func(l *Limit) { l.Key = "helo" }, "rate_limits.per-ip.key"},
		{func(l *Limit) { l.Count = "commands" }, "rate_limits.per-ip.count"},
		{func(l *Limit) { l.Count, l.Key = CountConnections, KeyMailFrom }, "rate_limits.per-ip.key: connections"},
		{func(l *Limit) { l.Key = KeyRcpt }, "rate_limits.per-ip.key: a message"},
		{func(l *Limit) { l.Rate = "100 per hour" }, "rate_limits.per-ip.rate"},
		{func(l *Limit) { l.Burst = -1 }, "rate_limits.per-ip.burst"},
		{func(l *Limit) { l.Action = "reject" }, "rate_limits.per-ip.action"},
		{func(l *Limit) { l.OnStoreError = "reject" }, "rate_limits.per-ip.on_store_error"},
	}
	for _, b := range bad {
		c := Config{{Name: "per-ip", Key: KeyClientIP, Count: CountMessages, Rate: "100/1h"}}
		c.Defaults()
		b.mod(&c[0])
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: %v", b.want, err)
		}
	}
	dup := Config{{Name: "a", Key: KeyClientIP, Count: CountMessages, Rate: "1/1h", Burst: 1, Action: ActionNone, OnStoreError: OnErrorAccept},
		{Name: "a", Key: KeyRcpt, Count: CountRecipients, Rate: "1/1h", Burst: 1, Action: ActionNone, OnStoreError: OnErrorAccept}}
	if err := dup.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate name: %v", err)
	}
	if _, err := New(c, nil, nil, nil); err == nil {
		t.Error("New without a store succeeded")
	}
}

func TestKeyOf(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.77")
	rule := func(key string) Rule { return Rule{Limit: Limit{Name: "l", Key: key}} }
	tests := []struct {
		key  string
		s    Subject
		want string // "" : no key
	}{
		{KeyClientIP, Subject{Client: ip}, "192.0.2.77"},
		{KeyClientIP, Subject{Client: netip.MustParseAddr("::ffff:192.0.2.77")}, "192.0.2.77"},
		{KeyClientNetwork, Subject{Client: ip}, "192.0.2.0/24"},
		{KeyClientNetwork, Subject{Client: netip.MustParseAddr("2001:db8:1:2::9")}, "2001:db8:1:2::/64"},
		{KeyMailFrom, Subject{Client: ip, Sender: "Ana@Example.ORG"}, "ana@example.org"},
		{KeyMailFromDomain, Subject{Client: ip, Sender: "Ana@Example.ORG"}, "example.org"},
		{KeyMailFrom, Subject{Client: ip, NullSender: true}, "<>@192.0.2.0/24"},
		{KeyMailFromDomain, Subject{Client: ip, NullSender: true}, "<>@192.0.2.0/24"},
		{KeyMailFrom, Subject{Client: ip}, ""},
		{KeyRcpt, Subject{Rcpt: "Bo@X.test"}, "bo@x.test"},
		{KeyAuthUser, Subject{}, ""},
		{KeyAuthUser, Subject{AuthUser: "ana"}, "ana"},
	}
	for _, tt := range tests {
		k, ok := KeyOf(rule(tt.key), tt.s)
		if tt.want == "" {
			if ok {
				t.Errorf("%s %+v: key %s, want none", tt.key, tt.s, k)
			}
			continue
		}
		if want := state.NewKey("rate", "l", tt.want); !ok || k != want {
			t.Errorf("%s %+v: %s, want %s", tt.key, tt.s, k, want)
		}
	}
}

func TestIsPostmaster(t *testing.T) {
	for _, r := range []string{"postmaster", "Postmaster", "postmaster@example.org", "POSTMASTER@x.test"} {
		if !IsPostmaster(r) {
			t.Errorf("%q is postmaster", r)
		}
	}
	for _, r := range []string{"", "post@x.test", "postmaster2@x.test", "abuse@x.test"} {
		if IsPostmaster(r) {
			t.Errorf("%q is not postmaster", r)
		}
	}
}
