package dnsbl

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"moat/internal/nsdtest"
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
	_, err = c.DNS().LookupPTR(ctx, netip.MustParseAddr("192.0.2.7"))
	if !errors.Is(err, ErrNoResolver) {
		t.Fatalf("LookupPTR with no resolver: err = %v, want ErrNoResolver", err)
	}
	if _, err := c.DNS().LookupAddr(ctx, "mx.example.org"); !errors.Is(err, ErrNoResolver) {
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
		names, err := c.DNS().LookupPTR(ctx, netip.MustParseAddr(ip))
		if err != nil || len(names) != 1 || names[0] != "localhost." {
			t.Errorf("LookupPTR(%s) = %v, %v; want [localhost.]", ip, names, err)
		}
	}
	addrs, err := c.DNS().LookupAddr(ctx, "LocalHost")
	if err != nil || len(addrs) == 0 || addrs[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("LookupAddr(localhost) = %v, %v", addrs, err)
	}
}

// The records of sender authentication come from a real authoritative
// server: a DKIM key longer than a UDP answer (asked again over TCP),
// split into character-strings that must be joined, MX records, and the
// two ways a record can be missing (NXDOMAIN and NODATA), which are
// "not found", never a failure.
func TestDNSRecordsOfSenderAuthentication(t *testing.T) {
	key := strings.Repeat("A", 1500)
	s := nsdtest.Start(t, map[string][]string{"example.test": {
		`@ TXT "v=spf1 mx -all"`,
		`@ MX 10 mx1`,
		`@ MX 20 mx2`,
		`mx1 A 127.0.0.2`,
		`sel._domainkey TXT ` + nsdtest.TXT("v=DKIM1; k=rsa; p="+key),
	}})
	c, _ := newChecker(t, "dnsbl:\n  resolver: "+s.Addr+"\n")
	r := c.DNS()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	txt, err := r.LookupTXT(ctx, "Example.TEST")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 mx -all" {
		t.Errorf("LookupTXT(example.test) = %q, %v", txt, err)
	}
	txt, err = r.LookupTXT(ctx, "sel._domainkey.example.test.")
	if err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; k=rsa; p="+key {
		t.Errorf("LookupTXT(the long key): %d records, %v", len(txt), err)
	}
	mx, err := r.LookupMX(ctx, "example.test")
	if err != nil || len(mx) != 2 {
		t.Fatalf("LookupMX = %v, %v", mx, err)
	}
	prefs := map[string]uint16{mx[0].Host: mx[0].Pref, mx[1].Host: mx[1].Pref}
	if prefs["mx1.example.test."] != 10 || prefs["mx2.example.test."] != 20 {
		t.Errorf("LookupMX = %v", prefs)
	}
	ips, err := r.LookupIP(ctx, "mx1.example.test")
	if err != nil || len(ips) != 1 || ips[0] != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("LookupIP = %v, %v", ips, err)
	}
	for _, name := range []string{"nope.example.test", "mx1.example.test"} { // NXDOMAIN, NODATA
		_, err := r.LookupTXT(ctx, name)
		var nf interface{ IsNotFound() bool }
		if !errors.As(err, &nf) || !nf.IsNotFound() {
			t.Errorf("LookupTXT(%s): err = %v, want not found", name, err)
		}
	}
	if _, err := r.LookupMX(ctx, "mx2.example.test"); err == nil {
		t.Errorf("LookupMX of a missing name: no error")
	}
}
