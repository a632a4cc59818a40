package capture

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"moat/inspect"
	"moat/inspect/sequencer"
)

// Deps are what an Analyzer needs from the rest of moat.
type Deps struct {
	// Engine judges each session; nil reconstructs without judging.
	Engine *inspect.Engine
	// Session is the policy the proxy applies to a session (limits,
	// early talkers, bare line endings: proxy.Config.SequencerConfig),
	// so that a recorded session is judged as moat would judge it live.
	// The zero value sets no limits.
	Session sequencer.Config
	// Logger gets read errors and recovered panics; nil discards.
	Logger *slog.Logger
	// Metrics, when set, counts sessions, transactions and verdicts.
	Metrics *Metrics
	// Extract, when set, is called with every message received; what it
	// returns (a file name) goes into the record's "extracted" field.
	Extract func(s *Session, rec *Record, body io.ReaderAt, size int64) string
	// Stream hands sessions to the callback as they end instead of in
	// capture order at the end of the run: for live capture, where the
	// run never ends.
	Stream bool
	// DNS, when set, collects the DNS answers the capture holds, for
	// --dnsbl recorded.
	DNS *DNSAnswers
	// Keep, when set, sees each SMTP session once it is reconstructed,
	// with its two directions, before their bytes are freed: what moat
	// replay sends again. Shards call it concurrently; the Streams are
	// valid only during the call.
	Keep func(s *Session, client, server *Stream)
}

// Analyzer reads captures and reconstructs and judges their SMTP
// sessions. It is safe for one Run at a time.
type Analyzer struct {
	cfg     Config
	engine  *inspect.Engine
	session sequencer.Config
	log     *slog.Logger
	metrics *Metrics
	extract func(s *Session, rec *Record, body io.ReaderAt, size int64) string
	stream  bool
	dns     *DNSAnswers
	keep    func(s *Session, client, server *Stream)
	ports   [65536 / 64]uint64
	budget  memBudget

	panics atomic.Int64 // recovered in session processing; tests check it is 0
}

// Stats count what a run read.
type Stats struct {
	Packets     int64     `json:"packets"`
	Bytes       int64     `json:"bytes"`
	TCP         int64     `json:"tcp_packets"`
	NotIP       int64     `json:"skipped_packets"` // unsupported link type, no IP, not TCP/UDP
	Fragments   int64     `json:"ip_fragments"`    // IPv4 fragments, not reassembled
	Connections int64     `json:"tcp_connections"`
	Sessions    int64     `json:"smtp_sessions"`
	ReadErrors  []string  `json:"read_errors,omitempty"`
	Panics      int64     `json:"panics,omitempty"`
	First, Last time.Time `json:"-"`
}

// New builds an Analyzer. cfg is completed with Defaults and validated.
func New(cfg Config, deps Deps) (*Analyzer, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// A recorded AUTH is readable only because it went in clear, and
	// the recorded server's answer to it stands for the upstream's: a
	// session is judged as authenticated when that server said 235,
	// whatever the port (moat live offers AUTH on submission listeners
	// under TLS only, where a capture sees nothing).
	deps.Session.FollowAuth = true
	a := &Analyzer{cfg: cfg, engine: deps.Engine, session: deps.Session, log: deps.Logger, metrics: deps.Metrics,
		extract: deps.Extract, stream: deps.Stream, dns: deps.DNS, keep: deps.Keep}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.Ports {
		a.ports[p/64] |= 1 << (p % 64)
	}
	a.budget.limit = cfg.Memory
	return a, nil
}

func (a *Analyzer) serverPort(p uint16) bool { return a.ports[p/64]&(1<<(p%64)) != 0 }

// Panics returns how many sessions were lost to a recovered panic.
func (a *Analyzer) Panics() int64 { return a.panics.Load() }

// Run reads src to its end (or until ctx ends), and calls emit with every
// SMTP session: in order of first packet, then 4-tuple, at the end of the
// run; or, with Deps.Stream, as each session ends. emit is never called
// concurrently. Read errors of a file end that file only; they are in
// the Stats. An error from emit stops the run.
func (a *Analyzer) Run(ctx context.Context, src Source, emit func(*Session) error) (*Stats, error) {
	st := &Stats{}
	col := &collector{emit: emit, stream: a.stream}
	n := a.cfg.Shards
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	shards := make([]*shard, n)
	for i := range shards {
		shards[i] = newShard(a, col)
	}
	var wg sync.WaitGroup
	var chans []chan *batch
	if n > 1 {
		chans = make([]chan *batch, n)
		for i := range chans {
			chans[i] = make(chan *batch, 4)
			wg.Add(1)
			go func(sh *shard, ch chan *batch) {
				defer wg.Done()
				for b := range ch {
					for j := range b.pkts {
						sh.packet(&b.pkts[j])
					}
					sh.tick(b.now)
					b.pkts = b.pkts[:0]
					batchPool.Put(b)
				}
				sh.close()
			}(shards[i], chans[i])
		}
	}
	pending := make([]*batch, n)
	flush := func(i int, now time.Time) {
		if b := pending[i]; b != nil {
			b.now = now
			chans[i] <- b
			pending[i] = nil
		}
	}
	// One shard takes each packet before the next is read: it may lend
	// the reader's buffer, and one job serves every packet. Batches for
	// several shards need packets of their own.
	next := src.Next
	if ss, ok := src.(sharedSource); ok && n == 1 {
		next = ss.nextShared
	}
	one := &tcpJob{}
	dec := newDecoder()
	var ord uint64
	var clock time.Time
	var err error
	for {
		if ord%1024 == 0 && ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		p, rerr := next()
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			var re *ReadError
			if !errors.As(rerr, &re) {
				err = rerr
				break
			}
			st.ReadErrors = append(st.ReadErrors, re.Error())
			a.log.Warn("capture read error", "err", re)
			continue
		}
		ord++
		st.Packets++
		st.Bytes += int64(len(p.Data))
		ts := p.Info.Timestamp
		if st.First.IsZero() || ts.Before(st.First) {
			st.First = ts
		}
		if ts.After(st.Last) {
			st.Last = ts
		}
		if ts.After(clock) {
			clock = ts
		}
		seg, ok := dec.decode(p)
		if !ok {
			if seg.fragment {
				st.Fragments++
			} else {
				st.NotIP++
			}
			continue
		}
		if !seg.tcp {
			if a.dns != nil && (dec.udp.SrcPort == 53 || dec.udp.DstPort == 53) {
				a.dns.add(ts, dec.udp.Payload)
			}
			continue
		}
		st.TCP++
		if a.dns != nil && (dec.tcp.SrcPort == 53 || dec.tcp.DstPort == 53) {
			a.dns.addTCP(ts, dec.tcp.Payload)
			continue
		}
		if n == 1 {
			*one = tcpJob{net: seg.net, tcp: dec.tcp, ci: p.Info, ord: ord}
			one.ci.AncillaryData = nil
			shards[0].packet(one)
			if ord%4096 == 0 {
				shards[0].tick(clock)
			}
			continue
		}
		job := tcpJob{net: seg.net, tcp: dec.tcp, ci: p.Info, ord: ord}
		job.tcp.Options = nil // shares the decoder's array
		job.tcp.Padding = nil
		i := int(flowHash(seg.net, dec.tcp.SrcPort, dec.tcp.DstPort) % uint64(n))
		b := pending[i]
		if b == nil {
			b = batchPool.Get().(*batch)
			pending[i] = b
		}
		b.pkts = append(b.pkts, job)
		if len(b.pkts) >= batchSize {
			flush(i, clock)
		}
		if ord%65536 == 0 {
			// Let quiet shards see the capture clock move, so their idle
			// connections end in capture time too.
			for j := range pending {
				if pending[j] == nil {
					pending[j] = batchPool.Get().(*batch)
				}
				flush(j, clock)
			}
		}
	}
	if n == 1 {
		shards[0].close()
	} else {
		for i := range chans {
			flush(i, clock)
			close(chans[i])
		}
		wg.Wait()
	}
	for _, sh := range shards {
		st.Connections += sh.flows
	}
	st.Panics = a.panics.Load()
	cerr := col.finish()
	st.Sessions = col.sessions
	if err == nil {
		err = cerr
	}
	return st, err
}

// batchSize is how many packets go to a shard at once.
const batchSize = 256

type batch struct {
	pkts []tcpJob
	now  time.Time
}

var batchPool = sync.Pool{New: func() any { return &batch{pkts: make([]tcpJob, 0, batchSize)} }}

// tcpJob is one TCP segment for a shard.
type tcpJob struct {
	net gopacket.Flow
	tcp layers.TCP
	ci  gopacket.CaptureInfo
	ord uint64
}

// flowHash hashes a connection the same whichever way a packet goes, so
// both directions land in one shard.
func flowHash(net gopacket.Flow, sp, dp layers.TCPPort) uint64 {
	h := net.FastHash()
	if sp > dp {
		sp, dp = dp, sp
	}
	return h ^ (uint64(sp)<<16|uint64(dp))*0x9e3779b97f4a7c15
}

// collector hands sessions to emit, in order or as they come.
type collector struct {
	mu       sync.Mutex
	emit     func(*Session) error
	stream   bool
	held     []*Session
	err      error
	sessions int64
}

func (c *collector) add(s *Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessions++
	if !c.stream {
		c.held = append(c.held, s)
		return
	}
	if c.err == nil {
		c.err = c.emit(s)
	}
}

func (c *collector) finish() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	slices.SortFunc(c.held, func(x, y *Session) int {
		if c := x.Start.Compare(y.Start); c != 0 {
			return c
		}
		if x.order != y.order {
			if x.order < y.order {
				return -1
			}
			return 1
		}
		if c := x.Client.Compare(y.Client); c != 0 {
			return c
		}
		return x.Server.Compare(y.Server)
	})
	for _, s := range c.held {
		if c.err != nil {
			break
		}
		c.err = c.emit(s)
	}
	c.held = nil
	return c.err
}

// uid derives a Zeek-style connection ID from the first packet's time and
// the 4-tuple, so the same capture always gives the same IDs.
func uid(start time.Time, client, server netip.AddrPort) string {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(start.UnixNano()))
	h.Write(b[:])
	cb, _ := client.MarshalBinary()
	sb, _ := server.MarshalBinary()
	h.Write(cb)
	h.Write(sb)
	return "C" + uidEncoding.EncodeToString(h.Sum(nil))[:17]
}

var uidEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// process reconstructs and judges one finished connection.
func (a *Analyzer) process(f *flow) (s *Session) {
	var c *conversation
	defer func() {
		if v := recover(); v != nil {
			// One connection's bug must not cost the others their
			// analysis, nor this one its record: it comes out with
			// the problem internal_error. The count makes tests fail.
			a.panics.Add(1)
			panicsRecovered.Add(1)
			s = panicked(f, s, c)
			a.log.Error("capture: session panic", "panic", fmt.Sprint(v), "session", s.UID,
				"client", s.Client.String(), "server", s.Server.String(), "stack", string(debug.Stack()))
		}
	}()
	ci, si, ok := f.roles()
	if !ok {
		return nil
	}
	s = &Session{Start: f.first, Client: f.addr[ci], Server: f.addr[si], order: f.ord}
	s.UID = uid(s.Start, s.Client, s.Server)
	if !f.handshake {
		s.problem("mid_stream")
	}
	c = &conversation{an: a, ctx: context.Background(), out: s,
		ch: &f.half[ci], sh: &f.half[si]}
	c.cs = &streamReader{h: c.ch}
	c.ss = &streamReader{h: c.sh}
	if a.engine != nil {
		c.q = sequencer.New(c.ctx, a.session, a.engine, inspect.Session{ID: s.UID, Start: s.Start,
			Client: s.Client, Server: s.Server,
			// Rules judge recorded mail at its capture time (date skew).
			Clock: func() time.Time { return s.Start }})
	}
	c.run()
	if a.keep != nil {
		a.keep(s, &Stream{c.ch}, &Stream{c.sh})
	}
	if a.metrics != nil {
		a.metrics.session(s)
	}
	return s
}

// panicked turns the session whose analysis panicked into a problem
// record: what was reconstructed so far, plus one record for the
// transaction in progress (or the session, if it had none) carrying the
// problem internal_error. It touches no conversation state that the
// panic may have left half-written beyond copying the current record.
func panicked(f *flow, s *Session, c *conversation) *Session {
	if s == nil {
		s = &Session{Start: f.first, Client: f.addr[0], Server: f.addr[1], order: f.ord}
		s.UID = uid(s.Start, s.Client, s.Server)
	}
	s.problem("internal_error")
	var rec Record
	if c != nil && c.rec != nil && (c.active || len(s.Records) == 0) {
		rec = *c.rec
	} else if len(s.Records) > 0 {
		// The panic came between transactions: mark the last one.
		s.Records[len(s.Records)-1].Problems = append([]string(nil), s.Problems...)
		return s
	} else {
		rec = Record{UID: s.UID, OrigH: s.Client.Addr().String(), OrigP: s.Client.Port(),
			RespH: s.Server.Addr().String(), RespP: s.Server.Port(), TransDepth: 1,
			Helo: s.Helo, TLS: s.TLS, TS: Epoch(s.Start),
			Path: []string{s.Server.Addr().String(), s.Client.Addr().String()}}
	}
	rec.Problems = append([]string(nil), s.Problems...)
	s.Records = append(s.Records, rec)
	return s
}

// panicsRecovered counts panics recovered in any Analyzer of the process;
// the package's tests fail when it is not zero.
var panicsRecovered atomic.Int64
