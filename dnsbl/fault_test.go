package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// oneList is a config with one ip list on the fake server.
func oneList(addr, extra string) string {
	return fmt.Sprintf(`
dnsbl:
  resolver: %q
  timeout: 400ms
  lists:
    - name: bl
      zone: bl.test
%s`, addr, extra)
}

func lookup1(t *testing.T, c *Checker, kind Kind, key string) Result {
	t.Helper()
	rs := c.Lookup(t.Context(), kind, key).Wait(t.Context())
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1", len(rs))
	}
	return rs[0]
}

// Failures are errors with a kind, never listings; on_error is carried.
func TestFaults(t *testing.T) {
	for _, c := range []struct {
		name    string
		extra   string
		handler func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg)
		kind    string
		err     error
		closed  bool
	}{
		{"timeout", "", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			f.sleep(2 * time.Second)
			w.WriteMsg(answer(r, 60, "127.0.0.2"))
		}, ErrKindTimeout, context.DeadlineExceeded, false},
		{"dropped", "      on_error: closed\n", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {}, ErrKindTimeout, nil, true},
		{"servfail", "      on_error: closed\n", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(rcode(r, dns.RcodeServerFailure))
		}, ErrKindServfail, ErrServfail, true},
		{"refused", "", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(rcode(r, dns.RcodeRefused))
		}, ErrKindRefused, ErrRefused, false},
		{"notimp", "", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(rcode(r, dns.RcodeNotImplemented))
		}, ErrKindBadAnswer, ErrBadAnswer, false},
		// A resolver that rewrites NXDOMAIN to an ad server's address.
		{"hijacked NXDOMAIN", "", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(answer(r, 60, "198.51.100.7"))
		}, ErrKindBadAnswer, ErrBadAnswer, false},
		// Spamhaus's "query via public/open resolver": never a listing.
		{"spamhaus public resolver", "      profile: spamhaus-zen\n", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(answer(r, 60, "127.255.255.254"))
		}, ErrKindBlockedResolver, ErrBlocked, false},
		{"spamhaus over quota", "      profile: spamhaus-zen\n", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(answer(r, 60, "127.0.0.2", "127.255.255.255"))
		}, ErrKindBlockedResolver, ErrBlocked, false},
		{"uribl refused", "      profile: uribl\n      kind: ip\n", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			w.WriteMsg(answer(r, 60, "127.0.0.1"))
		}, ErrKindBlockedResolver, ErrBlocked, false},
		{"truncated, no TCP", "", func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
			m := answer(r, 60)
			m.Truncated = true
			w.WriteMsg(m)
		}, ErrKindTruncated, ErrTruncated, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t, false, c.handler)
			chk, reg := newChecker(t, oneList(f.Addr, c.extra))
			start := time.Now()
			r := lookup1(t, chk, KindIP, "192.0.2.1")
			if r.Listed || r.Weight != 0 || r.Err == nil || r.ErrKind != c.kind || r.OnErrorClosed != c.closed {
				t.Errorf("result %+v\nwant not listed, ErrKind %s, OnErrorClosed %v", r, c.kind, c.closed)
			}
			if c.err != nil && !errors.Is(r.Err, c.err) {
				t.Errorf("Err = %v, want %v", r.Err, c.err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("the lookup took %v, past its 400ms timeout", d)
			}
			if got := metric(t, reg, "moat_dnsbl_errors_total", "list", "bl", "kind", c.kind); got != 1 {
				t.Errorf("moat_dnsbl_errors_total{kind=%s} = %v, want 1", c.kind, got)
			}
			if !strings.HasPrefix(r.Describe(), "lookup failed (") {
				t.Errorf("Describe() = %q", r.Describe())
			}
			// Failures are not cached: the next lookup asks again.
			before := f.udpQueries.Load()
			lookup1(t, chk, KindIP, "192.0.2.1")
			if f.udpQueries.Load() == before {
				t.Error("a failure was served from the cache")
			}
		})
	}
}

// A truncated UDP answer is asked again over TCP (RFC 7766 §5), and the
// TCP answer counts.
func TestTruncatedRetriesOverTCP(t *testing.T) {
	f := startFake(t, true, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		if w.RemoteAddr().Network() == "udp" {
			m := answer(r, 60)
			m.Truncated = true
			w.WriteMsg(m)
			return
		}
		w.WriteMsg(answer(r, 60, "127.0.0.2"))
	})
	c, _ := newChecker(t, oneList(f.Addr, ""))
	r := lookup1(t, c, KindIP, "192.0.2.1")
	if !r.Listed || r.Err != nil {
		t.Fatalf("result %+v, want listed", r)
	}
	if f.udpQueries.Load() != 1 || f.tcpQueries.Load() != 1 {
		t.Errorf("%d UDP and %d TCP queries, want 1 and 1", f.udpQueries.Load(), f.tcpQueries.Load())
	}
}

// A lost UDP packet is sent again within the timeout.
func TestDroppedPacketRetransmitted(t *testing.T) {
	var n atomic.Int64
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		if n.Add(1) == 1 {
			return // lost
		}
		w.WriteMsg(answer(r, 60, "127.0.0.2"))
	})
	c, _ := newChecker(t, oneList(f.Addr, ""))
	if r := lookup1(t, c, KindIP, "192.0.2.1"); !r.Listed || r.Err != nil {
		t.Fatalf("result %+v, want listed after a retransmission", r)
	}
	if n.Load() != 2 {
		t.Errorf("%d queries, want 2", n.Load())
	}
}

// Answers with the wrong ID or to another question are ignored (RFC 5452
// §9.1): they are never listings, and the real answer still counts.
func TestMismatchedAnswersIgnored(t *testing.T) {
	for _, c := range []struct {
		name   string
		real   bool // the real answer follows the forged ones
		listed bool
	}{
		{"then the real answer", true, false},
		{"only forged answers", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
				wrongID := answer(r, 60, "127.0.0.2")
				wrongID.Id = r.Id + 1
				w.WriteMsg(wrongID)
				other := r.Copy()
				other.Question[0].Name = "2.0.0.127.bl.test."
				w.WriteMsg(answer(other, 60, "127.0.0.2"))
				wrongType := r.Copy()
				wrongType.Question[0].Qtype = dns.TypeAAAA
				w.WriteMsg(answer(wrongType, 60))
				notReply := answer(r, 60, "127.0.0.2")
				notReply.Response = false
				w.WriteMsg(notReply)
				if c.real {
					w.WriteMsg(nxdomain(r, 60, 60))
				}
			})
			chk, _ := newChecker(t, oneList(f.Addr, ""))
			r := lookup1(t, chk, KindIP, "192.0.2.1")
			if r.Listed {
				t.Fatalf("a forged answer made a listing: %+v", r)
			}
			if c.real && r.Err != nil {
				t.Errorf("the real answer was lost: %v", r.Err)
			}
			if !c.real && r.ErrKind != ErrKindTimeout {
				t.Errorf("ErrKind = %q, want timeout", r.ErrKind)
			}
		})
	}
}

// The second resolver answers when the first fails.
func TestResolverFailover(t *testing.T) {
	bad := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		w.WriteMsg(rcode(r, dns.RcodeServerFailure))
	})
	good := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		w.WriteMsg(answer(r, 60, "127.0.0.2"))
	})
	c, _ := newChecker(t, fmt.Sprintf(`
dnsbl:
  resolver: [%q, %q]
  lists: [{name: bl, zone: bl.test}]
`, bad.Addr, good.Addr))
	for i := 0; i < 3; i++ { // whichever resolver the rotation starts with
		r := lookup1(t, c, KindIP, fmt.Sprintf("192.0.2.%d", i))
		if !r.Listed {
			t.Errorf("lookup %d: %+v", i, r)
		}
	}
}

// Several answers, each matched once; a CNAME chain (Spamhaus DQS) is
// followed.
func TestMultipleAnswersAndCNAME(t *testing.T) {
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0].Name
		target := "x" + q[:len(q)-len("bl.test.")] + "key.zen.dq.test."
		m := new(dns.Msg)
		m.SetReply(r)
		cname, _ := dns.NewRR(fmt.Sprintf("%s 3600 IN CNAME %s", q, target))
		m.Answer = append(m.Answer, cname)
		for _, a := range []string{"127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.10"} {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 30 IN A %s", target, a))
			m.Answer = append(m.Answer, rr)
		}
		other, _ := dns.NewRR("unrelated.test. 30 IN A 127.0.0.9")
		m.Answer = append(m.Answer, other)
		w.WriteMsg(m)
	})
	c, _ := newChecker(t, oneList(f.Addr, "      profile: spamhaus-zen\n"))
	r := lookup1(t, c, KindIP, "192.0.2.1")
	if !r.Listed || strings.Join(r.Reasons, ",") != "sbl,xbl,pbl" || r.Weight != 4+6+2 || len(r.Answers) != 4 {
		t.Fatalf("result %+v, want sbl,xbl,pbl weight 12", r)
	}
	if d := r.Describe(); d != "listed on bl.test (sbl, xbl, pbl)" {
		t.Errorf("Describe() = %q", d)
	}
}

// Positive answers are cached for their TTL, negative ones for the SOA's
// TTL or MINIMUM, whichever is less (RFC 2308 §5), and not at all without
// an SOA.
func TestCacheTTL(t *testing.T) {
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		switch r.Question[0].Name {
		case "1.2.0.192.bl.test.":
			w.WriteMsg(answer(r, 300, "127.0.0.2"))
		case "2.2.0.192.bl.test.":
			w.WriteMsg(nxdomain(r, 3600, 120)) // MINIMUM 120 < TTL
		case "3.2.0.192.bl.test.":
			w.WriteMsg(nxdomain(r, 30, 3600)) // TTL 30 < MINIMUM
		default:
			w.WriteMsg(nxdomain(r, 0, 0)) // no SOA
		}
	})
	c, reg := newChecker(t, oneList(f.Addr, ""))
	clk := useFakeClock(c)
	for _, k := range []struct {
		ip  string
		ttl time.Duration
	}{
		{"192.0.2.1", 300 * time.Second},
		{"192.0.2.2", 120 * time.Second},
		{"192.0.2.3", 30 * time.Second},
		{"192.0.2.4", 0},
	} {
		name := queryName(queryKey{addr: mustKey(t, k.ip)}, "bl.test.")
		base := f.queries(name)
		r := lookup1(t, c, KindIP, k.ip)
		if r.Cached {
			t.Errorf("%s: first lookup cached", k.ip)
		}
		r = lookup1(t, c, KindIP, k.ip)
		if got := f.queries(name) - base; (k.ttl > 0) != (got == 1) {
			t.Errorf("%s: %d queries for two lookups, TTL %v", k.ip, got, k.ttl)
		}
		if r.Cached != (k.ttl > 0) {
			t.Errorf("%s: second lookup Cached = %v", k.ip, r.Cached)
		}
		if k.ttl == 0 {
			continue
		}
		clk.advance(k.ttl - time.Second)
		if !lookup1(t, c, KindIP, k.ip).Cached {
			t.Errorf("%s: expired a second before its TTL", k.ip)
		}
		clk.advance(time.Second)
		if lookup1(t, c, KindIP, k.ip).Cached {
			t.Errorf("%s: still cached after its TTL", k.ip)
		}
	}
	if hits := metric(t, reg, "moat_dnsbl_cache_hits_total", "list", "bl"); hits != 6 {
		t.Errorf("cache hits = %v, want 6", hits)
	}
}

// Fifty concurrent lookups of one key make one query (single flight).
func TestSingleFlight(t *testing.T) {
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		f.sleep(100 * time.Millisecond)
		w.WriteMsg(answer(r, 60, "127.0.0.2"))
	})
	c, reg := newChecker(t, oneList(f.Addr, ""))
	var wg sync.WaitGroup
	var listed atomic.Int64
	for i := 0; i < 50; i++ {
		wg.Go(func() {
			if r := lookup1(t, c, KindIP, "192.0.2.1"); r.Listed {
				listed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := f.udpQueries.Load(); n != 1 {
		t.Errorf("%d queries at the server, want 1", n)
	}
	if listed.Load() != 50 {
		t.Errorf("%d of 50 lookups listed", listed.Load())
	}
	if q := metric(t, reg, "moat_dnsbl_queries_total", "list", "bl"); q != 1 {
		t.Errorf("moat_dnsbl_queries_total = %v, want 1", q)
	}
}

// Ten lists whose server answers after 200 ms each: one Lookup and Wait
// over all ten takes about 200 ms, not 2 s, and the results come in
// configuration order.
func TestParallelLatency(t *testing.T) {
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		f.sleep(200 * time.Millisecond)
		w.WriteMsg(answer(r, 60, "127.0.0.2"))
	})
	var lists strings.Builder
	for i := 9; i >= 0; i-- { // configuration order is not name order
		fmt.Fprintf(&lists, "    - {name: l%d, zone: l%d.test}\n", i, i)
	}
	c, _ := newChecker(t, fmt.Sprintf("dnsbl:\n  resolver: %q\n  timeout: 1500ms\n  lists:\n%s", f.Addr, lists.String()))
	start := time.Now()
	rs := c.Lookup(t.Context(), KindIP, "192.0.2.1").Wait(t.Context())
	d := time.Since(start)
	t.Logf("ten lists at 200 ms each: Lookup+Wait took %v", d)
	if d >= time.Second || d < 200*time.Millisecond {
		t.Errorf("took %v, want about 200ms", d)
	}
	if len(rs) != 10 {
		t.Fatalf("%d results", len(rs))
	}
	for i, r := range rs {
		if want := fmt.Sprintf("l%d", 9-i); r.List != want || !r.Listed {
			t.Errorf("result %d: %s listed=%v, want %s listed", i, r.List, r.Listed, want)
		}
	}
}

// A caller whose context ends stops waiting; the query it alone waited
// for is stopped and not cached, so the next lookup asks again.
func TestCancel(t *testing.T) {
	release := make(chan struct{})
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		select {
		case <-release:
		case <-f.stop:
		}
		w.WriteMsg(answer(r, 60, "127.0.0.2"))
	})
	c, reg := newChecker(t, oneList(f.Addr, ""))
	ctx, cancel := context.WithCancel(t.Context())
	p := c.Lookup(ctx, KindIP, "192.0.2.1")
	cancel()
	r := p.Wait(ctx)[0]
	if r.ErrKind != ErrKindCanceled || r.Listed || r.OnErrorClosed {
		t.Errorf("result %+v, want canceled", r)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		c.mu.Lock()
		n := len(c.cache)
		c.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the abandoned query stayed in the cache")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if r := lookup1(t, c, KindIP, "192.0.2.1"); !r.Listed || r.Cached {
		t.Errorf("after cancel: %+v, want a fresh listing", r)
	}
	if e := metric(t, reg, "moat_dnsbl_errors_total", "list", "bl"); e != 0 {
		t.Errorf("a cancellation counted as a list error")
	}
}

// The cache stays within cache_size.
func TestCacheBounded(t *testing.T) {
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		w.WriteMsg(answer(r, 3600, "127.0.0.2"))
	})
	c, _ := newChecker(t, fmt.Sprintf("dnsbl:\n  resolver: %q\n  cache_size: 5\n  lists: [{name: bl, zone: bl.test}]\n", f.Addr))
	for i := 0; i < 20; i++ {
		lookup1(t, c, KindIP, fmt.Sprintf("192.0.2.%d", i))
	}
	c.mu.Lock()
	n := len(c.cache)
	c.mu.Unlock()
	if n > 5 {
		t.Errorf("%d entries cached, cache_size 5", n)
	}
	if !lookup1(t, c, KindIP, "192.0.2.19").Cached {
		t.Error("the newest entry was evicted")
	}
}

// A list that lists everything is marked unhealthy, logged at Error level
// and exported as 0; its lookups are not sent until a probe passes again.
func TestHealthRecovers(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		if broken.Load() || r.Question[0].Name != "1.0.0.127.bl.test." {
			w.WriteMsg(answer(r, 60, "127.0.0.2"))
			return
		}
		w.WriteMsg(nxdomain(r, 60, 60))
	})
	c, reg, log := newCheckerLog(t, oneList(f.Addr, ""))
	h := c.CheckHealth(t.Context())
	if len(h) != 1 || h[0].Healthy || !strings.Contains(h[0].Problem, "lists everything") {
		t.Fatalf("health %+v, want unhealthy: lists everything", h)
	}
	if g := metric(t, reg, "moat_dnsbl_list_healthy", "list", "bl"); g != 0 {
		t.Errorf("moat_dnsbl_list_healthy = %v, want 0", g)
	}
	if !strings.Contains(log.String(), "level=ERROR") {
		t.Errorf("not logged at Error level:\n%s", log)
	}
	before := f.udpQueries.Load()
	r := lookup1(t, c, KindIP, "192.0.2.1")
	if r.Listed || r.ErrKind != ErrKindUnhealthy || !errors.Is(r.Err, ErrUnhealthy) {
		t.Errorf("lookup on an unhealthy list: %+v", r)
	}
	if f.udpQueries.Load() != before {
		t.Error("an unhealthy list was asked")
	}
	broken.Store(false)
	if h := c.CheckHealth(t.Context()); !h[0].Healthy {
		t.Fatalf("health after the fix: %+v", h)
	}
	if g := metric(t, reg, "moat_dnsbl_list_healthy", "list", "bl"); g != 1 {
		t.Errorf("moat_dnsbl_list_healthy = %v, want 1", g)
	}
	if r := lookup1(t, c, KindIP, "192.0.2.1"); !r.Listed {
		t.Errorf("lookup after recovery: %+v", r)
	}
	// Probes count neither as queries nor as listings.
	if q := metric(t, reg, "moat_dnsbl_queries_total", "list", "bl"); q != 1 {
		t.Errorf("moat_dnsbl_queries_total = %v, want 1", q)
	}
}

// Start probes at once and then every health_interval, until its context
// ends.
func TestStart(t *testing.T) {
	var probes atomic.Int64
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "2.0.0.127.bl.test." {
			probes.Add(1)
			w.WriteMsg(answer(r, 60, "127.0.0.2"))
			return
		}
		w.WriteMsg(nxdomain(r, 60, 60))
	})
	c, _ := newChecker(t, oneList(f.Addr, "")+"  health_interval: 50ms\n")
	ctx, cancel := context.WithCancel(t.Context())
	c.Start(ctx)
	deadline := time.Now().Add(3 * time.Second)
	for probes.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d probes in 3s with a 50ms interval", probes.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
}

func mustKey(t *testing.T, s string) netip.Addr {
	t.Helper()
	k, ok := parseKey(KindIP, s)
	if !ok {
		t.Fatalf("bad key %q", s)
	}
	return k.addr
}
