package dnsbl

import (
	"fmt"
	"log/slog"
	"moat/internal/promtest"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"moat/internal/strictyaml"
)

// newChecker builds a Checker from the dnsbl section of a config file,
// with its metrics on a registry of its own.
func newChecker(t testing.TB, text string) (*Checker, *prometheus.Registry) {
	t.Helper()
	c, reg, _ := newCheckerLog(t, text)
	return c, reg
}

// newCheckerLog is newChecker that also returns the Checker's log.
func newCheckerLog(t testing.TB, text string) (*Checker, *prometheus.Registry, *logBuffer) {
	t.Helper()
	var fc fileConfig
	if err := strictyaml.Decode("test.yaml", []byte(text), &fc); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	log, buf := testLogger(t)
	c, err := New(fc.DNSBL, Deps{Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return c, reg, buf
}

// metric returns the value of the counter or gauge name whose labels
// include labels ("list", "zen", "kind", "timeout" ...), 0 if absent.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			if v := promtest.Value(m); v >= 0 {
				return v
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// fakeDNS is an in-process DNS server on 127.0.0.1 for fault injection,
// with its own handler (never miekg/dns's global mux).
type fakeDNS struct {
	Addr string
	// stop is closed when the test ends, so that handlers that hold an
	// answer back return.
	stop       chan struct{}
	udpQueries atomic.Int64
	tcpQueries atomic.Int64
	mu         sync.Mutex
	names      map[string]int
}

// startFake serves handler on UDP, and on TCP on the same port when tcp is
// set. The handler answers with w.WriteMsg, or drops the query by not
// answering.
func startFake(t testing.TB, tcp bool, handler func(f *fakeDNS, w dns.ResponseWriter, r *dns.Msg)) *fakeDNS {
	t.Helper()
	f := &fakeDNS{stop: make(chan struct{}), names: map[string]int{}}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			f.tcpQueries.Add(1)
		} else {
			f.udpQueries.Add(1)
		}
		f.mu.Lock()
		f.names[strings.ToLower(r.Question[0].Name)]++
		f.mu.Unlock()
		handler(f, w, r)
	})
	var servers []*dns.Server
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.Addr = pc.LocalAddr().String()
		servers = []*dns.Server{{PacketConn: pc, Handler: h}}
		if tcp {
			l, err := net.Listen("tcp", f.Addr)
			if err != nil {
				pc.Close()
				if attempt < 5 {
					continue // the port is taken for TCP: another one
				}
				t.Fatal(err)
			}
			servers = append(servers, &dns.Server{Listener: l, Handler: h})
		}
		break
	}
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
	}
	t.Cleanup(func() {
		close(f.stop)
		for _, s := range servers {
			s.Shutdown()
		}
	})
	return f
}

// queries returns how many times name was asked, over UDP and TCP.
func (f *fakeDNS) queries(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.names[strings.ToLower(dns.Fqdn(name))]
}

// sleep holds an answer back for d, or until the test ends.
func (f *fakeDNS) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-f.stop:
	}
}

// answer is a NOERROR reply to r with one A record per address.
func answer(r *dns.Msg, ttl uint32, addrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	for _, a := range addrs {
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN A %s", r.Question[0].Name, ttl, a))
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

// nxdomain is an NXDOMAIN reply to r, with an SOA of the given TTL and
// MINIMUM unless both are 0.
func nxdomain(r *dns.Msg, ttl, minttl uint32) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeNameError)
	if ttl > 0 || minttl > 0 {
		m.Ns = append(m.Ns, &dns.SOA{
			Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns:  "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 600, Retry: 600, Expire: 86400, Minttl: minttl,
		})
	}
	return m
}

// rcode is an empty reply to r with rcode.
func rcode(r *dns.Msg, code int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(r, code)
	return m
}

// fakeClock is a settable clock for cache expiry.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func useFakeClock(c *Checker) *fakeClock {
	clk := &fakeClock{}
	clk.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	c.now = clk.now
	return clk
}

// logBuffer collects a Checker's log for a test to read.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testLogger logs into a buffer that is printed if the test fails (not
// to t.Log directly: health probes may log after the test ended).
func testLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("checker log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
