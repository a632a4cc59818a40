package reputation

import (
	"net/netip"
	"testing"
	"time"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	var c Config
	c.Defaults()
	if c.Window != 168*time.Hour {
		t.Errorf("default window %v, want 168h", c.Window)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("default: %v", err)
	}
	if err := (&Config{Window: -time.Hour}).Validate(); err == nil {
		t.Error("negative window accepted")
	}
}

func TestRejectRatio(t *testing.T) {
	for _, tc := range []struct {
		c    Counts
		want float64
		ok   bool
	}{
		{Counts{}, 0, false},
		{Counts{Accepted: 3}, 0, true},
		{Counts{Accepted: 1, Tagged: 1, Rejected: 2}, 0.5, true},
		{Counts{Rejected: 4}, 1, true},
	} {
		if got, ok := tc.c.RejectRatio(); got != tc.want || ok != tc.ok {
			t.Errorf("%+v: %v %v, want %v %v", tc.c, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSubjects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.77", "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
	} {
		if got := Network(netip.MustParseAddr(tc.in)); got != tc.want {
			t.Errorf("Network(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if Network(netip.Addr{}) != "" {
		t.Error("no address: want no network")
	}
	if got := Domain("Example.COM."); got != "example.com" {
		t.Errorf("Domain: %q", got)
	}
}
