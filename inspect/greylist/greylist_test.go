package greylist

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestOrigin(t *testing.T) {
	tests := []struct {
		client, spf, want string
	}{
		{"192.0.2.77", "", "net:192.0.2.0/24"},
		{"::ffff:192.0.2.77", "", "net:192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", "", "net:2001:db8:1:2::/64"},
		{"192.0.2.77", "Example.ORG.", "spf:example.org"},
		{"", "", "none"},
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.client != "" {
			a = netip.MustParseAddr(tt.client)
		}
		if got := Origin(Request{Client: a, SPFDomain: tt.spf}); got != tt.want {
			t.Errorf("Origin(%s, %q) = %q, want %q", tt.client, tt.spf, got, tt.want)
		}
	}
}

func TestTripletKey(t *testing.T) {
	if a, b := TripletKey("net:x", "Ana@Example.org", "BO@x.test"), TripletKey("net:x", "ana@example.org", "bo@x.test"); a != b {
		t.Errorf("keys differ by case: %s %s", a, b)
	}
	if k := TripletKey("net:192.0.2.0/24", "", "bo@x.test").String(); !strings.Contains(k, ":%3C%3E:") {
		t.Errorf("null sender key %s", k)
	}
	// A hostile sender cannot reach into another recipient's key.
	if k := TripletKey("o", "a:b", "c").String(); strings.Count(k, ":") != 5 {
		t.Errorf("separator in a part: %s", k)
	}
}

func TestConfig(t *testing.T) {
	var c Config
	c.Defaults()
	if c.Delay != 5*time.Minute || c.RetryWindow != 48*time.Hour || c.Lifetime != 840*time.Hour || c.AllowlistAfter != 5 || c.OnStoreError != OnErrorAccept {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Delay = -time.Second }, "greylist.delay"},
		{func(c *Config) { c.RetryWindow = time.Minute }, "greylist.retry_window"},
		{func(c *Config) { c.Lifetime = -1 }, "greylist.lifetime"},
		{func(c *Config) { c.OnStoreError = "reject" }, "greylist.on_store_error"},
	}
	for _, b := range bad {
		c := Config{}
		c.Defaults()
		b.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: %v", b.want, err)
		}
	}
	if _, err := New(c, nil, nil, nil); err == nil {
		t.Error("New without a store succeeded")
	}
}
