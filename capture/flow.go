package capture

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/reassembly"
)

// TCP reassembly is gopacket/reassembly's: it puts each direction's
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
}

func newShard(a *Analyzer, col *collector) *shard {
	s := &shard{an: a, col: col}
	s.pool = reassembly.NewStreamPool(s)
	s.asm = reassembly.NewAssembler(s.pool)
	s.asm.MaxBufferedPagesPerConnection = a.cfg.MaxPagesPerFlow
	s.asm.MaxBufferedPagesTotal = a.cfg.MaxPages
	return s
}

// New implements reassembly.StreamFactory.
func (s *shard) New(netFlow, tcpFlow gopacket.Flow, tcp *layers.TCP, ac reassembly.AssemblerContext) reassembly.Stream {
	f := &flow{sh: s, client: -1}
	src, dst := netFlow.Endpoints()
	f.addr[0] = addrPort(src, tcp.SrcPort)
	f.addr[1] = addrPort(dst, tcp.DstPort)
	if c, ok := ac.(*pktCtx); ok {
		f.first, f.ord = c.ci.Timestamp, c.ord
	}
	if s.an.serverPort(uint16(tcp.SrcPort)) || s.an.serverPort(uint16(tcp.DstPort)) {
		f.state = flowSMTP
	} else if !*s.an.cfg.Detect {
		f.state = flowOther
	}
	s.open++
	s.flows++
	return f
}

func addrPort(e gopacket.Endpoint, port layers.TCPPort) netip.AddrPort {
	a, _ := netip.AddrFromSlice(e.Raw())
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// packet feeds one segment to reassembly.
func (s *shard) packet(j *tcpJob) {
	if j.ci.Timestamp.After(s.now) {
		s.now = j.ci.Timestamp
	}
	s.asm.AssembleWithContext(j.net, &j.tcp, &pktCtx{ci: j.ci, ord: j.ord})
	if s.open > s.an.cfg.MaxFlows {
		// Too many connections at once: end the quietest early rather
		// than grow without bound.
		s.asm.FlushCloseOlderThan(s.now.Add(-time.Second))
		s.lastFlush = s.now
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
	s.asm.FlushWithOptions(reassembly.FlushOptions{
		T:  s.now.Add(-s.an.cfg.GapTimeout),
		TC: s.now.Add(-s.an.cfg.IdleTimeout),
	})
}

// close ends every connection still open: the input is over.
func (s *shard) close() {
	s.asm.FlushAll()
}

// Accept implements reassembly.Stream: every segment is taken, and a
// direction whose SYN was not captured starts at its first segment.
func (f *flow) Accept(tcp *layers.TCP, ci gopacket.CaptureInfo, dir reassembly.TCPFlowDirection, nextSeq reassembly.Sequence, start *bool, ac reassembly.AssemblerContext) bool {
	d := dirIndex(dir)
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
	*start = true
	return true
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
	d := dirIndex(dir)
	var ts time.Time
	if length > 0 {
		ts = sg.CaptureInfo(0).Timestamp
	}
	h := &f.half[d]
	if h.budget == nil {
		h.budget = &f.sh.an.budget
		h.memMax = f.sh.an.cfg.FlowMemory
		h.dir = f.sh.an.cfg.SpoolDir
	}
	h.add(sg.Fetch(length), ts, skip)
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
