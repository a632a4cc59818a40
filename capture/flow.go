package capture

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/reassembly"
)

// TCP reassembly has two paths. A connection whose segments arrive in
// sequence — on loopback and on most links nearly all of them — is
// followed by a fast path in this file: each segment's payload goes
// straight into its direction's halfStream, with no copy, allocation or
// queue on the way. At the first segment that is not the next one
// expected (out of order, a retransmission, an overlap, a SYN with data),
// the connection is handed to gopacket/reassembly, seeded with where each
// direction stands, and stays there. A SYN on a 4-tuple whose
// connection has ended in that direction (FIN or RST) starts a new
// connection: Linux reuses a port in TIME_WAIT for a new connection to
// the same server (net.ipv4.tcp_tw_reuse, on for loopback by default).
//
// The slow path is gopacket/reassembly's: it puts each direction's
// segments in sequence order, drops retransmitted and overlapping bytes
// it has already delivered, waits a while (GapTimeout, in capture time)
// for missing segments and then skips them, telling the stream how many
// bytes it lost. Every connection is followed whether or not its
// handshake was captured: a capture that starts mid-session starts its
// streams at the first segment seen. Connections end at FIN or RST in
// both directions, after IdleTimeout of capture time without a packet, or
// at the end of the input — never by the wall clock, so a file is
// analysed the same however fast it is read.

// flow is one TCP connection. Its two directions are indexed as
// reassembly numbers them: 0 is the direction of the first packet seen.
type flow struct {
	sh        *shard
	addr      [2]netip.AddrPort // addr[0] sent the first packet
	first     time.Time
	ord       uint64
	half      [2]halfStream
	client    int  // the side that sent the SYN (or received the SYN-ACK); -1 unknown
	handshake bool // a SYN was seen
	state     flowState
	overlap   int
	done      bool

	key  flowKey     // direction 0
	fast [2]fastHalf // where each direction stands on the fast path
	slow bool        // handed to gopacket/reassembly
	last time.Time   // the latest packet, for idle flows on the fast path

	prev, next *flow // the shard's fast flows, least recently active first
}

// flowKey is a connection as seen in one direction.
type flowKey struct {
	net      gopacket.Flow
	src, dst layers.TCPPort
}

func (k flowKey) reverse() flowKey { return flowKey{net: k.net.Reverse(), src: k.dst, dst: k.src} }

// fastHalf is a direction on the fast path.
type fastHalf struct {
	next    uint32 // the sequence number of the next byte expected
	started bool
	closed  bool // FIN or RST seen
	rst     bool // closed by a RST
}

type flowState uint8

const (
	flowUndecided flowState = iota // not on an SMTP port; looking for a greeting
	flowSMTP                       // SMTP: keep everything
	flowOther                      // not SMTP: drop the bytes
)

// pktCtx is the AssemblerContext of one packet; reassembly keeps it with
// the packet's bytes while they wait out of order.
type pktCtx struct {
	ci  gopacket.CaptureInfo
	ord uint64
}

func (c *pktCtx) GetCaptureInfo() gopacket.CaptureInfo { return c.ci }

// shard reassembles and judges the connections hashed to it.
type shard struct {
	an        *Analyzer
	col       *collector
	pool      *reassembly.StreamPool
	asm       *reassembly.Assembler
	now       time.Time // the capture clock: the latest timestamp seen
	lastFlush time.Time
	open      int
	flows     int64

	conns      map[flowKey]*flow // every open connection, by direction 0
	head, tail *flow             // the fast flows, least recently active first
	adopt      *flow             // the flow New hands to gopacket/reassembly
}

func newShard(a *Analyzer, col *collector) *shard {
	s := &shard{an: a, col: col, conns: make(map[flowKey]*flow)}
	s.pool = reassembly.NewStreamPool(s)
	s.asm = reassembly.NewAssembler(s.pool)
	s.asm.MaxBufferedPagesPerConnection = a.cfg.MaxPagesPerFlow
	s.asm.MaxBufferedPagesTotal = a.cfg.MaxPages
	return s
}

// New implements reassembly.StreamFactory: it hands gopacket the flow
// that leaves the fast path. Every flow starts on the fast path, so there
// always is one.
func (s *shard) New(netFlow, tcpFlow gopacket.Flow, tcp *layers.TCP, ac reassembly.AssemblerContext) reassembly.Stream {
	if f := s.adopt; f != nil {
		s.adopt = nil
		return f
	}
	// Not reached; a flow gopacket alone knows would still be followed.
	f := s.newFlow(flowKey{net: netFlow, src: tcp.SrcPort, dst: tcp.DstPort}, time.Time{}, 0)
	f.slow = true
	s.lruRemove(f)
	if c, ok := ac.(*pktCtx); ok {
		f.first, f.ord = c.ci.Timestamp, c.ord
	}
	return f
}

// newFlow starts following a connection whose first packet went k's way.
func (s *shard) newFlow(k flowKey, ts time.Time, ord uint64) *flow {
	f := &flow{sh: s, client: -1, key: k, first: ts, ord: ord, last: ts}
	src, dst := k.net.Endpoints()
	f.addr[0] = addrPort(src, k.src)
	f.addr[1] = addrPort(dst, k.dst)
	if s.an.serverPort(uint16(k.src)) || s.an.serverPort(uint16(k.dst)) {
		f.state = flowSMTP
	} else if !*s.an.cfg.Detect {
		f.state = flowOther
	}
	s.open++
	s.flows++
	s.conns[k] = f
	s.lruPush(f)
	return f
}

// lookup finds the connection of a packet going k's way, and the
// packet's direction in it.
func (s *shard) lookup(k flowKey) (*flow, int) {
	if f := s.conns[k]; f != nil {
		return f, 0
	}
	if f := s.conns[k.reverse()]; f != nil {
		return f, 1
	}
	return nil, 0
}

func (s *shard) lruPush(f *flow) {
	f.prev, f.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = f
	} else {
		s.head = f
	}
	s.tail = f
}

func (s *shard) lruRemove(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else if s.head == f {
		s.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else if s.tail == f {
		s.tail = f.prev
	}
	f.prev, f.next = nil, nil
}

func addrPort(e gopacket.Endpoint, port layers.TCPPort) netip.AddrPort {
	a, _ := netip.AddrFromSlice(e.Raw())
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// packet feeds one segment to reassembly.
func (s *shard) packet(j *tcpJob) {
	ts := j.ci.Timestamp
	if ts.After(s.now) {
		s.now = ts
	}
	t := &j.tcp
	k := flowKey{net: j.net, src: t.SrcPort, dst: t.DstPort}
	f, d := s.lookup(k)
	if f != nil && f.reused(d, t) {
		// The 4-tuple is reused for a new connection: the old one is over.
		s.end(f)
		f = nil
	}
	if f == nil {
		f, d = s.newFlow(k, ts, j.ord), 0
	}
	switch {
	case f.slow:
		s.asm.AssembleWithContext(j.net, t, &pktCtx{ci: j.ci, ord: j.ord})
	case f.inOrder(d, t):
		f.last = ts
		if s.tail != f {
			s.lruRemove(f)
			s.lruPush(f)
		}
		f.fastPacket(d, t, ts)
	default:
		s.toSlow(f, j)
	}
	if s.open > s.an.cfg.MaxFlows {
		// Too many connections at once: end the quietest early rather
		// than grow without bound.
		s.endIdle(s.now.Add(-time.Second))
		s.asm.FlushCloseOlderThan(s.now.Add(-time.Second))
		s.lastFlush = s.now
	}
}

// reused reports whether a segment going in direction d opens a new
// connection on the flow's 4-tuple: a SYN on the fast path where that
// direction is closed, or started at another sequence number, or where
// the flow has carried nothing and seen no SYN (a stray ACK after the
// last connection's FINs). A flow on gopacket's path is not ended so:
// gopacket/reassembly keeps a connection per 4-tuple until it times out.
func (f *flow) reused(d int, t *layers.TCP) bool {
	if f.slow || !t.SYN || t.ACK {
		return false
	}
	h := &f.fast[d]
	return h.closed || h.started && uint32(t.Seq)+1 != h.next ||
		!f.handshake && f.half[0].size == 0 && f.half[1].size == 0
}

// inOrder reports whether the fast path can take a segment going in
// direction d: it is the next one expected, or the first of its
// direction, and not a SYN carrying data or ending the connection.
func (f *flow) inOrder(d int, t *layers.TCP) bool {
	h := &f.fast[d]
	switch {
	case h.closed:
		return true // ignored, as gopacket/reassembly does
	case !h.started:
		return !t.SYN || len(t.Payload) == 0 && !t.FIN && !t.RST
	case t.SYN:
		return false
	}
	return uint32(t.Seq) == h.next
}

// fastPacket takes a segment that inOrder accepted.
func (f *flow) fastPacket(d int, t *layers.TCP, ts time.Time) {
	f.saw(d, t)
	h := &f.fast[d]
	if h.closed {
		return
	}
	if !h.started {
		h.started = true
		h.next = t.Seq
		if t.SYN {
			h.next++
			return
		}
	}
	if len(t.Payload) > 0 {
		f.deliver(d, t.Payload, ts, 0)
		h.next += uint32(len(t.Payload))
	}
	if t.FIN || t.RST {
		if t.FIN {
			h.next++
		}
		h.closed, h.rst = true, t.RST && !t.FIN
		if f.fast[1-d].closed {
			f.sh.end(f)
		}
	}
}

// toSlow hands a flow and its segment j to gopacket/reassembly. Each
// direction already started is seeded with an empty segment at the
// sequence number expected next (a FIN or RST for one that is closed),
// direction 0 first, so that gopacket numbers the directions as the flow
// does.
func (s *shard) toSlow(f *flow, j *tcpJob) {
	s.lruRemove(f)
	f.slow = true
	s.adopt = f
	for d, k := range [2]flowKey{f.key, f.key.reverse()} {
		h := f.fast[d]
		if !h.started {
			continue
		}
		seq, flags := h.next, byte(0)
		switch {
		case h.closed && h.rst:
			flags = tcpRST
		case h.closed:
			seq, flags = seq-1, tcpFIN
		}
		s.asm.AssembleWithContext(k.net, seedSegment(k, seq, flags), &pktCtx{ci: j.ci, ord: j.ord})
	}
	s.asm.AssembleWithContext(j.net, &j.tcp, &pktCtx{ci: j.ci, ord: j.ord})
	s.adopt = nil
}

const (
	tcpFIN = 0x01
	tcpRST = 0x04
)

// seedSegment is an empty TCP segment going k's way.
func seedSegment(k flowKey, seq uint32, flags byte) *layers.TCP {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], uint16(k.src))
	binary.BigEndian.PutUint16(b[2:], uint16(k.dst))
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4 // header length
	b[13] = flags
	t := &layers.TCP{}
	t.DecodeFromBytes(b, gopacket.NilDecodeFeedback)
	return t
}

// end ends a flow on the fast path: both directions are over.
func (s *shard) end(f *flow) {
	s.lruRemove(f)
	f.ReassemblyComplete(nil)
}

// endIdle ends the fast flows with no packet since before t.
func (s *shard) endIdle(t time.Time) {
	for s.head != nil && s.head.last.Before(t) {
		s.end(s.head)
	}
}

// tick flushes by capture time: out-of-order data waiting longer than
// GapTimeout is given up on, connections idle longer than IdleTimeout end.
func (s *shard) tick(now time.Time) {
	if now.After(s.now) {
		s.now = now
	}
	if s.now.Sub(s.lastFlush) < time.Second {
		return
	}
	s.lastFlush = s.now
	s.endIdle(s.now.Add(-s.an.cfg.IdleTimeout))
	s.asm.FlushWithOptions(reassembly.FlushOptions{
		T:  s.now.Add(-s.an.cfg.GapTimeout),
		TC: s.now.Add(-s.an.cfg.IdleTimeout),
	})
}

// close ends every connection still open: the input is over.
func (s *shard) close() {
	for s.head != nil {
		s.end(s.head)
	}
	s.asm.FlushAll()
}

// Accept implements reassembly.Stream: every segment is taken, and a
// direction whose SYN was not captured starts at its first segment.
func (f *flow) Accept(tcp *layers.TCP, ci gopacket.CaptureInfo, dir reassembly.TCPFlowDirection, nextSeq reassembly.Sequence, start *bool, ac reassembly.AssemblerContext) bool {
	f.saw(dirIndex(dir), tcp)
	*start = true
	return true
}

// saw notes a segment's SYN: the handshake was captured, and who opened
// the connection.
func (f *flow) saw(d int, tcp *layers.TCP) {
	if tcp.SYN {
		f.handshake = true
		if f.client < 0 {
			if tcp.ACK {
				f.client = 1 - d
			} else {
				f.client = d
			}
		}
	}
}

func dirIndex(dir reassembly.TCPFlowDirection) int {
	if dir == reassembly.TCPDirClientToServer {
		return 0
	}
	return 1
}

// ReassembledSG implements reassembly.Stream.
func (f *flow) ReassembledSG(sg reassembly.ScatterGather, ac reassembly.AssemblerContext) {
	dir, _, _, skip := sg.Info()
	length, _ := sg.Lengths()
	f.overlap += sg.Stats().OverlapBytes
	if f.state == flowOther {
		return
	}
	var ts time.Time
	if length > 0 {
		ts = sg.CaptureInfo(0).Timestamp
	}
	f.deliver(dirIndex(dir), sg.Fetch(length), ts, skip)
}

// deliver appends a direction's next bytes, which arrived at ts after
// skip missing ones.
func (f *flow) deliver(d int, data []byte, ts time.Time, skip int) {
	if f.state == flowOther {
		return
	}
	h := &f.half[d]
	if h.budget == nil {
		h.budget = &f.sh.an.budget
		h.memMax = f.sh.an.cfg.FlowMemory
		h.dir = f.sh.an.cfg.SpoolDir
	}
	h.add(data, ts, skip)
	if f.state == flowUndecided {
		f.detect(false)
	}
}

// ReassemblyComplete implements reassembly.Stream: both directions are
// over; the session is reconstructed and judged now.
func (f *flow) ReassemblyComplete(ac reassembly.AssemblerContext) bool {
	if f.done {
		return true
	}
	f.done = true
	f.sh.open--
	if f.sh.conns[f.key] == f {
		delete(f.sh.conns, f.key)
	}
	if f.state == flowUndecided {
		f.detect(true)
	}
	if f.state == flowSMTP && (f.half[0].size > 0 || f.half[1].size > 0) {
		if s := f.sh.an.process(f); s != nil {
			f.sh.col.add(s)
		}
	}
	f.half[0].release()
	f.half[1].release()
	return true
}

// detect decides whether a connection on a port not configured as SMTP
// carries SMTP, as Zeek's dynamic protocol detection does: the server's
// first lines include one starting with 220, and the client greets with
// HELO or EHLO, both within the first few kilobytes (an HTTP CONNECT
// exchange may come first). FTP servers greet with 220 too; their
// clients never say HELO.
func (f *flow) detect(final bool) {
	for s := 0; s < 2; s++ {
		srv, cli := &f.half[s], &f.half[1-s]
		if hasLine(srv.mem, func(l []byte) bool { return bytes.HasPrefix(l, []byte("220")) }) &&
			hasLine(cli.mem, isHeloLine) {
			f.state = flowSMTP
			if f.client < 0 {
				f.client = 1 - s
			}
			return
		}
	}
	if final || (f.half[0].size > detectWindow || f.half[0].file != nil) &&
		(f.half[1].size > detectWindow || f.half[1].file != nil) {
		f.state = flowOther
		f.half[0].release()
		f.half[1].release()
		f.half[0] = halfStream{}
		f.half[1] = halfStream{}
	}
}

func hasLine(b []byte, match func([]byte) bool) bool {
	if len(b) > detectWindow {
		b = b[:detectWindow]
	}
	return findLineStart(b, match) >= 0
}

// roles tells which side is the client: the side that opened the
// connection when the handshake was captured, else the side not on a
// configured SMTP port, else the side that did not send a reply first.
func (f *flow) roles() (client, server int, ok bool) {
	if f.client >= 0 {
		return f.client, 1 - f.client, true
	}
	p0, p1 := f.sh.an.serverPort(f.addr[0].Port()), f.sh.an.serverPort(f.addr[1].Port())
	switch {
	case p1 && !p0:
		return 0, 1, true
	case p0 && !p1:
		return 1, 0, true
	}
	r0, r1 := startsWithReply(f.half[0].mem), startsWithReply(f.half[1].mem)
	switch {
	case r1 && !r0:
		return 0, 1, true
	case r0 && !r1:
		return 1, 0, true
	case f.addr[1].Port() <= f.addr[0].Port():
		return 0, 1, true
	}
	return 1, 0, true
}

// startsWithReply reports bytes that begin like an SMTP reply: three
// digits and a space, a hyphen or a line end.
func startsWithReply(b []byte) bool {
	return len(b) >= 4 && isDigit(b[0]) && isDigit(b[1]) && isDigit(b[2]) &&
		(b[3] == ' ' || b[3] == '-' || b[3] == '\r' || b[3] == '\n')
}
