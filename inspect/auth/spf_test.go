package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/nsdtest"
)

// spfZone is the SPF world of the tests against NSD: example.test and the
// reverse zone of 127.0.0.1.
func spfZone() map[string][]string {
	z := []string{
		`@ TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`a TXT "v=spf1 a -all"`,
		`a A 127.0.0.1`,
		`mx TXT "v=spf1 mx -all"`,
		`mx MX 10 mail.example.test.`,
		`mail A 127.0.0.1`,
		`inc TXT "v=spf1 include:example.test -all"`,
		`soft TXT "v=spf1 ~all"`,
		`neutral TXT "v=spf1 ?all"`,
		`norecord A 127.0.0.1`,
		`norecord TXT "google-site-verification=abc"`,
		`two TXT "v=spf1 +all"`,
		`two TXT "v=spf1 ip4:127.0.0.1 -all"`,
		`typo TXT "v=spf1 ipv4:127.0.0.1 -all"`,
		// Three lookups of names that do not exist: one more than
		// RFC 7208 §4.6.4 allows, even though ip4: would match.
		`void TXT "v=spf1 a:nx1.example.test a:nx2.example.test a:nx3.example.test ip4:127.0.0.1 -all"`,
		`void2 TXT "v=spf1 a:nx1.example.test a:nx2.example.test ip4:127.0.0.1 -all"`,
		`helo TXT "v=spf1 a -all"`,
		`helo A 127.0.0.1`,
		// A policy per local-part (%{l}, RFC 7208 §7.3).
		`pm TXT "v=spf1 exists:%{l}.allow.example.test -all"`,
		`postmaster.allow A 127.0.0.2`,
		`six TXT "v=spf1 ip6:::1 -all"`,
		`six-a TXT "v=spf1 a -all"`,
		`six-a AAAA ::1`,
		`ptr TXT "v=spf1 ptr:example.test -all"`,
		`broken TXT "v=spf1 a:host.broken.test -all"`,
	}
	// An include chain of 11 include: terms, one more than the ten DNS
	// lookups RFC 7208 §4.6.4 allows; deep1 starts one below, with ten.
	for i := 0; i <= 10; i++ {
		z = append(z, fmt.Sprintf(`deep%d TXT "v=spf1 include:deep%d.example.test -all"`, i, i+1))
	}
	z = append(z, `deep11 TXT "v=spf1 ip4:127.0.0.1 -all"`)
	// A record longer than a UDP answer with EDNS0 can carry: the
	// resolver must retry over TCP, and the strings be joined.
	var big strings.Builder
	big.WriteString("v=spf1")
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&big, " ip4:10.%d.%d.0/24", i/250, i%250)
	}
	big.WriteString(" ip4:127.0.0.1 -all")
	z = append(z, "big TXT "+nsdtest.TXT(big.String()))
	return map[string][]string{
		"example.test":           z,
		"1.0.0.127.in-addr.arpa": {`@ PTR mail.example.test.`},
	}
}

func TestSPFAgainstNSD(t *testing.T) {
	ns := nsdtest.Start(t, spfZone())
	r := wireDNS{addr: ns.Addr, zones: map[string]string{"broken.test": faultServer(t, dns.RcodeServerFailure)}}
	lo, lo2, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")
	for _, c := range []struct {
		name     string
		ip       netip.Addr
		helo     string
		mailFrom string // "-" checks the HELO identity
		want     Result
		domain   string
		reason   string // a part of the Reason
	}{
		{"pass ip4", lo, "client.test", "bob@example.test", Pass, "example.test", "matched ip4:127.0.0.1"},
		{"fail -all", lo2, "client.test", "bob@example.test", Fail, "example.test", "matched -all"},
		{"pass a", lo, "client.test", "bob@a.example.test", Pass, "a.example.test", "matched a"},
		{"pass mx", lo, "client.test", "bob@mx.example.test", Pass, "mx.example.test", "matched mx"},
		{"pass include", lo, "client.test", "bob@inc.example.test", Pass, "inc.example.test",
			"matched ip4:127.0.0.1 via include:example.test"},
		{"fail include", lo2, "client.test", "bob@inc.example.test", Fail, "inc.example.test", "matched -all"},
		{"softfail", lo, "client.test", "bob@soft.example.test", SoftFail, "soft.example.test", "matched ~all"},
		{"neutral", lo, "client.test", "bob@neutral.example.test", Neutral, "neutral.example.test", "matched ?all"},
		{"none, other TXT", lo, "client.test", "bob@norecord.example.test", None, "norecord.example.test", "no SPF record"},
		{"none, no name", lo, "client.test", "bob@nx.example.test", None, "nx.example.test", "no SPF record"},
		{"permerror, two records", lo, "client.test", "bob@two.example.test", PermError, "two.example.test",
			"more than one SPF record"},
		{"permerror, syntax", lo, "client.test", "bob@typo.example.test", PermError, "typo.example.test",
			`unknown mechanism "ipv4"`},
		{"permerror, 11 includes", lo, "client.test", "bob@deep0.example.test", PermError, "deep0.example.test",
			"lookup limit reached"},
		{"pass, 10 includes", lo, "client.test", "bob@deep1.example.test", Pass, "deep1.example.test",
			"matched ip4:127.0.0.1 via include:deep2.example.test"},
		{"permerror, 3 void lookups", lo, "client.test", "bob@void.example.test", PermError, "void.example.test",
			"void lookup limit reached"},
		{"pass, 2 void lookups", lo, "client.test", "bob@void2.example.test", Pass, "void2.example.test",
			"matched ip4:127.0.0.1"},
		{"helo pass", lo, "helo.example.test", "-", Pass, "helo.example.test", "matched a"},
		{"helo fail", lo2, "helo.example.test", "-", Fail, "helo.example.test", "matched -all"},
		{"helo none, literal", lo, "[127.0.0.1]", "-", None, "[127.0.0.1]", "address literal"},
		{"helo none, not FQDN", lo, "localhost", "-", None, "localhost", "not a fully qualified"},
		{"null sender is postmaster@helo", lo2, "pm.example.test", "", Pass, "pm.example.test",
			"matched exists:%{l}.allow.example.test"},
		{"named sender is not postmaster", lo2, "pm.example.test", "bob@pm.example.test", Fail, "pm.example.test",
			"matched -all"},
		{"empty local-part is postmaster", lo2, "client.test", "@pm.example.test", Pass, "pm.example.test", "matched exists"},
		{"ipv6 ip6", lo6, "client.test", "bob@six.example.test", Pass, "six.example.test", "matched ip6:::1"},
		{"ipv6 client, ip4 policy", lo6, "client.test", "bob@example.test", Fail, "example.test", "matched -all"},
		{"ipv6 a (AAAA)", lo6, "client.test", "bob@six-a.example.test", Pass, "six-a.example.test", "matched a"},
		{"ipv4 client, AAAA only", lo, "client.test", "bob@six-a.example.test", Fail, "six-a.example.test", "matched -all"},
		{"ptr", lo, "client.test", "bob@ptr.example.test", Pass, "ptr.example.test", "matched ptr:example.test"},
		{"ptr, no PTR record", lo2, "client.test", "bob@ptr.example.test", Fail, "ptr.example.test", "matched -all"},
		{"record over TCP", lo, "client.test", "bob@big.example.test", Pass, "big.example.test", "matched ip4:127.0.0.1"},
		{"case and trailing dot", lo, "client.test", "Bob@Example.TEST.", Pass, "example.test", "matched ip4"},
		{"temperror, SERVFAIL", lo, "client.test", "bob@host.broken.test", TempError, "host.broken.test", "SERVFAIL"},
		{"temperror, SERVFAIL in a:", lo, "client.test", "bob@broken.example.test", TempError, "broken.example.test",
			"a:host.broken.test: lookup host.broken.test"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got SPFResult
			wantID := "mailfrom"
			if c.mailFrom == "-" {
				wantID = "helo"
				got = CheckSPFHelo(ctx, r, c.ip, c.helo)
			} else {
				got = CheckSPFMailFrom(ctx, r, c.ip, c.helo, c.mailFrom)
			}
			if got.Result != c.want || got.Domain != c.domain || got.Identity != wantID || !strings.Contains(got.Reason, c.reason) {
				t.Errorf("got %s %s %s (%q), want %s %s %s (reason with %q)\nlookups: %+v",
					got.Identity, got.Domain, got.Result, got.Reason, wantID, c.domain, c.want, c.reason, got.Lookups)
			}
			if c.want != None || c.reason == "no SPF record" {
				if len(got.Lookups) == 0 {
					t.Errorf("no lookups recorded")
				}
			}
		})
	}
}

// TestSPFTimeout: a server that never answers; the check ends by the
// caller's deadline with temperror (RFC 7208 §4.6.4).
func TestSPFTimeout(t *testing.T) {
	r := wireDNS{addr: faultServer(t, -1)}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	got := CheckSPFMailFrom(ctx, r, netip.MustParseAddr("192.0.2.1"), "client.test", "bob@example.test")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("check took %v", took)
	}
	if got.Result != TempError || got.Reason != "time limit exceeded" {
		t.Errorf("got %s (%s), want temperror (time limit exceeded)", got.Result, got.Reason)
	}
	if len(got.Lookups) != 1 || got.Lookups[0].Err == "" {
		t.Errorf("lookups %+v, want the one that timed out", got.Lookups)
	}

	// Cancelled rather than timed out.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	got = CheckSPFMailFrom(ctx, r, netip.MustParseAddr("192.0.2.1"), "client.test", "bob@example.test")
	if got.Result != TempError || got.Reason != "check cancelled" {
		t.Errorf("cancelled: got %s (%s), want temperror (check cancelled)", got.Result, got.Reason)
	}
}

// deadlineDNS records the deadline of the contexts it is asked with.
type deadlineDNS struct {
	*memDNS
	deadlines []time.Time
}

func (d *deadlineDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	dl, _ := ctx.Deadline()
	d.deadlines = append(d.deadlines, dl)
	return d.memDNS.LookupTXT(ctx, name)
}

// TestSPFDefaultDeadline: without a deadline from the caller, a check gets
// one of 20 s (RFC 7208 §4.6.4: at least 20 s); with one, it keeps it.
func TestSPFDefaultDeadline(t *testing.T) {
	r := &deadlineDNS{memDNS: &memDNS{txt: map[string][]string{"example.test": {"v=spf1 -all"}}}}
	start := time.Now()
	CheckSPFMailFrom(context.Background(), r, netip.MustParseAddr("192.0.2.1"), "h.test", "a@example.test")
	if len(r.deadlines) != 1 {
		t.Fatalf("%d lookups", len(r.deadlines))
	}
	if d := r.deadlines[0].Sub(start); d < 19*time.Second || d > 21*time.Second {
		t.Errorf("default deadline %v from the start, want 20s", d)
	}
	want := time.Now().Add(time.Hour)
	ctx, cancel := context.WithDeadline(context.Background(), want)
	defer cancel()
	CheckSPFMailFrom(ctx, r, netip.MustParseAddr("192.0.2.1"), "h.test", "a@example.test")
	if !r.deadlines[1].Equal(want) {
		t.Errorf("deadline %v, want the caller's %v", r.deadlines[1], want)
	}
}

// TestSPFReason: the Reason names the deciding term, and the include: or
// redirect= that led to it — not a term of an include: that did not
// decide.
func TestSPFReason(t *testing.T) {
	r := &memDNS{
		txt: map[string][]string{
			"ip.test":       {"v=spf1 ip4:192.0.2.1 -all"},
			"inc.test":      {"v=spf1 -include:ip.test ~all"},
			"stale.test":    {"v=spf1 include:failing.test ip4:192.0.2.9 ~all"},
			"failing.test":  {"v=spf1 -all"},
			"redirect.test": {"v=spf1 redirect=ip.test"},
			"none.test":     {"not spf"},
			"fallback.test": {"v=spf1 ip4:10.0.0.1"},
			"incnx.test":    {"v=spf1 include:nx.test -all"},
			"two.test":      {"v=spf1 -all", "v=spf1 +all"},
			"unknown.test":  {"v=spf1 frob -all"},
			"temp.test":     {"v=spf1 a:down.test -all"},
			"ctl.test":      {"v=spf1 include:\x01\x02.test -all"},
			"bad.test":      {"v=spf1 ip4:192.0.2.1/032 -all"},
			"incbad.test":   {"v=spf1 include:bad.test -all"},
			"redirbad.test": {"v=spf1 redirect=bad.test"},
			"late.test":     {"v=spf1 ip4:192.0.2.1 -all moo"},
			"other.test":    {"v=spf1x moo", "\x96 %", "v=spf1 ip4:192.0.2.1 -all", "V=SPF10 moo"},
			"twobad.test":   {"v=spf1 -all moo", "v=spf1 +all"},
			"early.test":    {"v=spf1 ip4:192.0.2.1 include:bad.test -all"},
		},
		fail: map[string]error{"down.test": errors.New("server failure")},
	}
	// Eleven nested includes: the last one is refused.
	for i := 0; i <= 10; i++ {
		r.txt[fmt.Sprintf("l%d.test", i)] = []string{fmt.Sprintf("v=spf1 include:l%d.test", i+1)}
	}
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for _, c := range []struct {
		domain string
		ip     netip.Addr
		want   Result
		reason string
	}{
		{"ip.test", ip, Pass, "matched ip4:192.0.2.1"},
		{"ip.test", other, Fail, "matched -all"},
		{"inc.test", ip, Fail, "matched ip4:192.0.2.1 via -include:ip.test"},
		{"inc.test", other, SoftFail, "matched ~all"},
		{"stale.test", ip, SoftFail, "matched ~all"},
		{"redirect.test", ip, Pass, "matched ip4:192.0.2.1 via redirect=ip.test"},
		{"redirect.test", other, Fail, "matched -all via redirect=ip.test"},
		{"none.test", ip, None, "no SPF record"},
		{"nx.test", ip, None, "no SPF record"},
		{"fallback.test", ip, Neutral, "no term matched"},
		{"incnx.test", ip, PermError, "include:nx.test: no SPF record"},
		{"two.test", ip, PermError, "more than one SPF record"},
		{"unknown.test", ip, PermError, `invalid SPF record of unknown.test: unknown mechanism "frob" in "frob"`},
		{"temp.test", ip, TempError, "a:down.test: lookup down.test: server failure"},
		{"down.test", ip, TempError, "lookup down.test: server failure"},
		{"l0.test", ip, PermError, "include:l11.test via include:l1.test: lookup limit reached"},
		{"ctl.test", ip, PermError, "invalid SPF record of ctl.test: control character 0x01 at offset 15: " +
			"terms are separated by spaces only"},
		// An invalid record reached through include: or redirect= is a
		// permerror too (RFC 7208 §5.2, §6.1), even when an earlier term
		// of it would have matched (§4.6).
		{"incbad.test", ip, PermError, "include:bad.test: invalid SPF record of bad.test: " +
			`ip4: cidr length with a leading zero in "ip4:192.0.2.1/032"`},
		{"redirbad.test", ip, PermError, "redirect=bad.test: invalid SPF record of bad.test: " +
			`ip4: cidr length with a leading zero in "ip4:192.0.2.1/032"`},
		{"late.test", ip, PermError, `invalid SPF record of late.test: unknown mechanism "moo" in "moo"`},
		// TXT records that are not SPF records are not read (§4.5).
		{"other.test", ip, Pass, "matched ip4:192.0.2.1"},
		// Two SPF records, one of them invalid: the library's permerror
		// for two records (§4.5).
		{"twobad.test", ip, PermError, "more than one SPF record"},
		// An include: after the deciding term is not fetched, so its
		// record's errors do not count.
		{"early.test", ip, Pass, "matched ip4:192.0.2.1"},
	} {
		got := CheckSPFMailFrom(context.Background(), r, c.ip, "h.test", "a@"+c.domain)
		if got.Result != c.want || got.Reason != c.reason {
			t.Errorf("%s from %s: got %s (%q), want %s (%q)", c.domain, c.ip, got.Result, got.Reason, c.want, c.reason)
		}
	}
}

// TestSPFHostileInput: whatever the client sends, and whatever the DNS
// answers, the checks return a result and never panic; names that are not
// domain names are not looked up.
func TestSPFHostileInput(t *testing.T) {
	r := &countingDNS{r: &memDNS{txt: map[string][]string{"example.test": {"v=spf1 a mx ptr exists:%{l}.%{h}.x.test include:%{o} -all"}}}}
	ips := []netip.Addr{
		{},
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("::ffff:192.0.2.1"),
		netip.MustParseAddr("fe80::1%eth0"),
	}
	strs := []string{
		"", "@", "@@", "a@", "@b", "a@b@c", `"a@b"@example.test`, "<>", "<a@example.test>",
		"noat", ".", "..", "a..b", ".example.test", "example.test..", "[", "]", "[1.2.3.4]",
		"a@[1.2.3.4]", "a@[IPv6:::1]", "192.0.2.1", "a@192.0.2.1",
		strings.Repeat("a", 64) + ".test", strings.Repeat("a.", 200) + "test",
		"a@" + strings.Repeat("x", 100000), "\x00", "a@exa\x00mple.test", "a@exa mple.test",
		"a@ex\\065mple.test", "a@\xff\xfe.test", "a@bücher.example", "a@xn--.test", "a@%{l}.test",
		"%{l}@example.test", "a%-b@example.test", strings.Repeat("%{l}", 100) + "@example.test",
	}
	for _, ip := range ips {
		for _, helo := range strs {
			for _, from := range strs {
				r.asked = nil
				for _, got := range []SPFResult{
					CheckSPFMailFrom(context.Background(), r, ip, helo, from),
					CheckSPFHelo(context.Background(), r, ip, helo),
				} {
					switch got.Result {
					case None, Neutral, Pass, Fail, SoftFail, TempError, PermError:
					default:
						t.Fatalf("ip %v helo %q from %q: result %q", ip, helo, from, got.Result)
					}
					if got.Reason == "" {
						t.Fatalf("ip %v helo %q from %q: %s without a reason", ip, helo, from, got.Result)
					}
				}
				for _, name := range r.asked {
					if !spfQueryable(name) {
						t.Fatalf("ip %v helo %q from %q: asked for %q", ip, helo, from, name)
					}
				}
			}
		}
	}

	// The domain is the one after the last "@", even when the local-part
	// holds one; such a sender is checked as postmaster.
	r.asked = nil
	got := CheckSPFMailFrom(context.Background(), r, ips[1], "h.test", `"a@b.test"@example.test`)
	if got.Domain != "example.test" || !slices.Contains(r.asked, "postmaster.h.test.x.test") {
		t.Errorf("quoted local-part: checked %s, asked %q", got.Domain, r.asked)
	}
	// Internationalized domains are checked as A-labels (RFC 7208 §4.3).
	got = CheckSPFMailFrom(context.Background(), r, ips[1], "h.test", "a@Bücher.example")
	if got.Domain != "xn--bcher-kva.example" {
		t.Errorf("U-label domain checked as %q", got.Domain)
	}
}

// countingDNS records the names asked and answers with what a broken
// resolver might: nil MX entries, invalid addresses, wrapped errors.
type countingDNS struct {
	r     Resolver
	asked []string
}

func (c *countingDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	c.asked = append(c.asked, name)
	return c.r.LookupTXT(ctx, name)
}

func (c *countingDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	c.asked = append(c.asked, name)
	return []*net.MX{nil, {Host: ""}, {Host: "."}, {Host: "\\000.test"}}, nil
}

func (c *countingDNS) LookupIP(ctx context.Context, name string) ([]netip.Addr, error) {
	c.asked = append(c.asked, name)
	if strings.HasPrefix(name, "a") {
		return nil, fmt.Errorf("wrapped: %w", NotFound{Name: name})
	}
	return []netip.Addr{{}, netip.MustParseAddr("::ffff:192.0.2.7")}, nil
}

func (c *countingDNS) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	return []string{"", ".", "\x00", strings.Repeat("x", 300)}, nil
}
