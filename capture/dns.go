package capture

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// An MTA's own capture holds its DNS blocklist lookups next to its SMTP
// sessions. DNSAnswers keeps the answers found in a capture, so that
// `moat analyze --dnsbl recorded` can judge each session by what the
// lists said at the time, not by what they say today. Serve puts them
// behind a DNS server on the loopback address; pointed at it, package
// dnsbl builds its query names and maps the answers through each list's
// return codes exactly as it does live.

// Bounds on what is kept.
const (
	maxDNSAnswers   = 1 << 20
	maxDNSAnswerLen = 4096
)

// DNSAnswers holds the DNS responses of a capture, the last one per
// question name and type. It is safe for concurrent use.
type DNSAnswers struct {
	mu sync.RWMutex
	m  map[dnsQuestion][]byte
}

type dnsQuestion struct {
	name  string // lower case, fully qualified
	qtype uint16
}

// NewDNSAnswers returns an empty store.
func NewDNSAnswers() *DNSAnswers {
	return &DNSAnswers{m: make(map[dnsQuestion][]byte)}
}

// Len returns how many questions have an answer.
func (d *DNSAnswers) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.m)
}

// add records a DNS message from a UDP payload if it is an answer
// (NOERROR or NXDOMAIN) to one question.
func (d *DNSAnswers) add(_ time.Time, payload []byte) {
	if len(payload) < 12 || len(payload) > maxDNSAnswerLen || payload[2]&0x80 == 0 {
		return // not a response
	}
	var m dns.Msg
	if err := m.Unpack(payload); err != nil || !m.Response || len(m.Question) != 1 {
		return
	}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return // a failure then is not an answer now
	}
	q := dnsQuestion{name: strings.ToLower(dns.Fqdn(m.Question[0].Name)), qtype: m.Question[0].Qtype}
	d.mu.Lock()
	if _, ok := d.m[q]; ok || len(d.m) < maxDNSAnswers {
		d.m[q] = append([]byte(nil), payload...)
	}
	d.mu.Unlock()
}

// addTCP records the DNS messages of a TCP segment that holds whole
// length-prefixed messages (RFC 1035 §4.2.2); answers split across
// segments are not reassembled.
func (d *DNSAnswers) addTCP(ts time.Time, payload []byte) {
	for len(payload) >= 2 {
		n := int(payload[0])<<8 | int(payload[1])
		if n == 0 || len(payload)-2 < n {
			return
		}
		d.add(ts, payload[2:2+n])
		payload = payload[2+n:]
	}
}

// ServeDNS answers a query from the recorded answers; a question the
// capture has no answer to gets REFUSED, which package dnsbl reports as
// a failed lookup — never as "not listed".
func (d *DNSAnswers) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	if len(req.Question) == 1 {
		q := dnsQuestion{name: strings.ToLower(dns.Fqdn(req.Question[0].Name)), qtype: req.Question[0].Qtype}
		d.mu.RLock()
		raw := d.m[q]
		d.mu.RUnlock()
		if raw != nil && resp.Unpack(raw) == nil {
			resp.Id = req.Id
			resp.Question = req.Question
			resp.Extra = nil
			w.WriteMsg(resp)
			return
		}
	}
	resp.SetRcode(req, dns.RcodeRefused)
	w.WriteMsg(resp)
}

// Serve starts a DNS server on 127.0.0.1 (UDP and TCP, one free port)
// that answers from d until stop is called. It returns the server's
// address, for package dnsbl's resolver setting.
func (d *DNSAnswers) Serve(ctx context.Context) (addr string, stop func(), err error) {
	// One port for UDP and TCP (a truncated answer is asked again over
	// TCP at the same address). The UDP port the kernel picks may be taken
	// for TCP: try again, a bounded number of times.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		addr = pc.LocalAddr().String()
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			return "", nil, err
		}
	}
	mux := dns.NewServeMux()
	mux.Handle(".", d)
	udp := &dns.Server{PacketConn: pc, Handler: mux}
	tcp := &dns.Server{Listener: ln, Handler: mux}
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	for _, s := range []*dns.Server{udp, tcp} {
		wg.Add(1)
		go func(s *dns.Server) {
			defer wg.Done()
			s.ActivateAndServe()
		}(s)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			udp.Shutdown()
			tcp.Shutdown()
			wg.Wait()
		})
	}
	return addr, stop, nil
}
