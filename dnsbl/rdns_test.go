package dnsbl

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// A checker with no resolver at all (no lists, and nothing in
// resolv.conf) used to divide by zero on the first rDNS lookup and take
// the whole process down with it. It must answer with an error.
func TestReverseLookupWithoutResolver(t *testing.T) {
	c, err := New(Config{}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	c.resolvers = nil // as on a machine with no resolv.conf servers
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Resolver().LookupPTR(ctx, netip.MustParseAddr("192.0.2.7"))
	if !errors.Is(err, ErrNoResolver) {
		t.Fatalf("LookupPTR with no resolver: err = %v, want ErrNoResolver", err)
	}
	if _, err := c.Resolver().LookupAddr(ctx, "mx.example.org"); !errors.Is(err, ErrNoResolver) {
		t.Fatalf("LookupAddr with no resolver: err = %v, want ErrNoResolver", err)
	}
}

// Loopback's reverse zone is served by the resolver itself (RFC 6303):
// moat answers it without a query, so a local client never waits on DNS.
func TestReverseLookupLoopbackLocal(t *testing.T) {
	c, err := New(Config{}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	c.resolvers = nil // any query would fail
	ctx := context.Background()
	for _, ip := range []string{"127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"} {
		names, err := c.Resolver().LookupPTR(ctx, netip.MustParseAddr(ip))
		if err != nil || len(names) != 1 || names[0] != "localhost." {
			t.Errorf("LookupPTR(%s) = %v, %v; want [localhost.]", ip, names, err)
		}
	}
	addrs, err := c.Resolver().LookupAddr(ctx, "LocalHost")
	if err != nil || len(addrs) == 0 || addrs[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("LookupAddr(localhost) = %v, %v", addrs, err)
	}
}
