package dnsbl

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// A cached Lookup+Wait costs well under a microsecond and allocates only
// the Pending that holds the results (for up to eight lists of a kind).
func BenchmarkCachedLookup(b *testing.B) {
	f := startFake(b, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		w.WriteMsg(answer(r, 3600, "127.0.0.2"))
	})
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("lists=%d", n), func(b *testing.B) {
			var lists strings.Builder
			for i := 0; i < n; i++ {
				fmt.Fprintf(&lists, "    - {name: l%d, zone: l%d.test}\n", i, i)
			}
			c, _ := newChecker(b, fmt.Sprintf("dnsbl:\n  resolver: %q\n  lists:\n%s", f.Addr, lists.String()))
			ctx := context.Background()
			if rs := c.Lookup(ctx, KindIP, "192.0.2.1").Wait(ctx); !rs[0].Listed {
				b.Fatalf("warm-up: %+v", rs[0])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rs := c.Lookup(ctx, KindIP, "192.0.2.1").Wait(ctx)
				if !rs[n-1].Cached {
					b.Fatal("not cached")
				}
			}
		})
	}
}

// The cached path allocates the Pending and nothing else.
func TestCachedLookupAllocs(t *testing.T) {
	f := startFake(t, false, func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg) {
		w.WriteMsg(answer(r, 3600, "127.0.0.2"))
	})
	c, _ := newChecker(t, oneList(f.Addr, ""))
	ctx := context.Background()
	for _, key := range []string{"192.0.2.1", "2001:db8::1"} {
		c.Lookup(ctx, KindIP, key).Wait(ctx)
		if n := testing.AllocsPerRun(100, func() { c.Lookup(ctx, KindIP, key).Wait(ctx) }); n > 1 {
			t.Errorf("cached lookup of %s: %v allocations, want 1", key, n)
		}
	}
}
