package capture

import (
	"bufio"
	"compress/gzip"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// MaxPacketLen bounds the captured length of one packet. Real frames are at
// most 64 KiB (plus offload artefacts); a record claiming more is a corrupt
// file, and trusting its length would allocate gigabytes.
const MaxPacketLen = 256 << 10

// maxBlockLen bounds a pcapng block: a packet of MaxPacketLen plus options.
const maxBlockLen = MaxPacketLen + 64<<10

// Packet is one captured frame.
type Packet struct {
	Data     []byte // the frame, owned by the receiver
	Info     gopacket.CaptureInfo
	LinkType layers.LinkType
}

// Source yields the packets of one capture or of several merged.
//
// Next returns io.EOF when every packet has been read. A *ReadError says
// one input is corrupt or truncated from that point on; the packets before
// it have been delivered, and Next may be called again for the packets of
// the other inputs. Sources are not safe for concurrent use.
type Source interface {
	Next() (Packet, error)
	Close() error
}

// ReadError is a capture file that could not be read to its end.
type ReadError struct {
	File   string
	Packet int // the number of the packet that could not be read (1-based)
	Err    error
}

func (e *ReadError) Error() string {
	what := "corrupt"
	if errors.Is(e.Err, io.ErrUnexpectedEOF) {
		what = "truncated"
	}
	return fmt.Sprintf("%s: %s at packet %d: %v", e.File, what, e.Packet, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// Truncated reports whether the file simply ended inside a packet.
func (e *ReadError) Truncated() bool { return errors.Is(e.Err, io.ErrUnexpectedEOF) }

// errCorrupt is what the format guards return for a record that cannot be
// right; the reader stops there rather than allocate what it claims.
var errCorrupt = errors.New("record length out of range")

// OpenFile opens a pcap or pcapng file, gzip-compressed or not; "-" is
// standard input.
func OpenFile(name string) (Source, error) {
	if name == "-" {
		return NewReader(os.Stdin, "-", nil)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	s, err := NewReader(f, name, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// NewReader reads a pcap or pcapng capture, gzip-compressed or not, from
// r. name is used in errors; closer, if not nil, is closed by Close.
func NewReader(r io.Reader, name string, closer io.Closer) (s Source, err error) {
	defer func() {
		if v := recover(); v != nil {
			s, err = nil, fmt.Errorf("%s: not a capture file (%v)", name, v)
		}
	}()
	br := bufio.NewReaderSize(r, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	magic, err := br.Peek(4)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: not a capture file: %w", name, err)
	}
	fs := &fileSource{name: name, closer: closer}
	switch binary.LittleEndian.Uint32(magic) {
	case 0x0a0d0d0a: // pcapng section header block
		ng, err := pcapgo.NewNgReader(&ngGuard{r: br}, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("%s: pcapng: %w", name, err)
		}
		fs.read, fs.zread = ng.ReadPacketData, ng.ZeroCopyReadPacketData
		fs.link = func(ci gopacket.CaptureInfo) layers.LinkType {
			if len(ci.AncillaryData) > 0 {
				if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
					return lt
				}
			}
			return ng.LinkType()
		}
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1: // pcap, µs or ns, either byte order
		hdr, err := clampPcapHeader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: pcap: %w", name, err)
		}
		pr, err := pcapgo.NewReader(io.MultiReader(hdr, br))
		if err != nil {
			return nil, fmt.Errorf("%s: pcap: %w", name, err)
		}
		fs.read, fs.zread = pr.ReadPacketData, pr.ZeroCopyReadPacketData
		lt := pr.LinkType()
		fs.link = func(gopacket.CaptureInfo) layers.LinkType { return lt }
	default:
		return nil, fmt.Errorf("%s: not a pcap or pcapng file (magic %x)", name, magic)
	}
	return fs, nil
}

// clampPcapHeader reads the 24-byte pcap file header and returns it with
// the snapshot length capped at MaxPacketLen: pcapgo refuses any record
// longer than the snapshot length, so a corrupt record length becomes an
// error instead of an allocation of up to 4 GiB.
func clampPcapHeader(br *bufio.Reader) (io.Reader, error) {
	var h [24]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	var order binary.ByteOrder = binary.LittleEndian
	if m := binary.LittleEndian.Uint32(h[:4]); m == 0xd4c3b2a1 || m == 0x4d3cb2a1 {
		order = binary.BigEndian
	}
	if snap := order.Uint32(h[16:20]); snap == 0 || snap > MaxPacketLen {
		order.PutUint32(h[16:20], MaxPacketLen)
	}
	return &byteReader{b: h[:]}, nil
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// ngGuard passes a pcapng stream through block by block and stops it,
// with errCorrupt, at a block whose lengths cannot be right: pcapgo's
// NgReader allocates whatever a packet block claims to hold.
type ngGuard struct {
	r         *bufio.Reader
	bigEndian bool
	left      int64 // bytes of the current block still to pass through
	err       error
}

func (g *ngGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.left == 0 {
		if err := g.nextBlock(); err != nil {
			g.err = err
			return 0, err
		}
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= int64(n)
	if err == io.EOF && g.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		g.err = err
	}
	return n, err
}

func (g *ngGuard) u32(b []byte) uint32 {
	if g.bigEndian {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

// nextBlock checks the header of the block that starts now.
func (g *ngGuard) nextBlock() error {
	h, err := g.r.Peek(12)
	if err != nil {
		if err == io.EOF && len(h) == 0 {
			return io.EOF
		}
		return io.ErrUnexpectedEOF
	}
	typ := binary.LittleEndian.Uint32(h[:4])
	if typ == 0x0a0d0d0a {
		switch {
		case binary.LittleEndian.Uint32(h[8:12]) == 0x1a2b3c4d:
			g.bigEndian = false
		case binary.BigEndian.Uint32(h[8:12]) == 0x1a2b3c4d:
			g.bigEndian = true
		default:
			return errCorrupt
		}
	} else {
		typ = g.u32(h[:4])
	}
	length := g.u32(h[4:8])
	if length < 12 || length%4 != 0 || length > maxBlockLen {
		return errCorrupt
	}
	switch typ {
	case 2, 6: // obsolete packet block, enhanced packet block
		b, err := g.r.Peek(24)
		if err != nil {
			return io.ErrUnexpectedEOF
		}
		if caplen := g.u32(b[20:24]); caplen > MaxPacketLen || int64(caplen) > int64(length)-32 {
			return errCorrupt
		}
	case 3: // simple packet block: pcapgo reads the original length
		if orig := g.u32(h[8:12]); orig > MaxPacketLen || int64(orig) > int64(length)-16 {
			return errCorrupt
		}
	}
	g.left = int64(length)
	return nil
}

// fileSource is one capture file.
type fileSource struct {
	name   string
	closer io.Closer
	read   func() ([]byte, gopacket.CaptureInfo, error)
	zread  func() ([]byte, gopacket.CaptureInfo, error) // into the reader's buffer
	link   func(gopacket.CaptureInfo) layers.LinkType
	n      int
	done   bool
}

func (s *fileSource) Next() (Packet, error) { return s.next(s.read) }

// nextShared is Next, but the packet's Data is the reader's buffer, valid
// only until the next call: no allocation per packet.
func (s *fileSource) nextShared() (Packet, error) { return s.next(s.zread) }

// sharedSource is a Source that can lend its packets' bytes.
type sharedSource interface {
	nextShared() (Packet, error)
}

func (s *fileSource) next(read func() ([]byte, gopacket.CaptureInfo, error)) (p Packet, err error) {
	if s.done {
		return p, io.EOF
	}
	defer func() {
		// pcapgo trusts its input in places (an interface's timestamp
		// resolution, option lengths): a corrupt file must end the file,
		// never the run.
		if v := recover(); v != nil {
			s.done = true
			p, err = Packet{}, &ReadError{File: s.name, Packet: s.n + 1, Err: fmt.Errorf("%w (%v)", errCorrupt, v)}
		}
	}()
	data, ci, err := read()
	if err != nil {
		s.done = true
		if err == io.EOF {
			return p, io.EOF
		}
		return p, &ReadError{File: s.name, Packet: s.n + 1, Err: err}
	}
	s.n++
	if len(data) > MaxPacketLen {
		data = data[:MaxPacketLen]
	}
	ci.CaptureLength = len(data)
	return Packet{Data: data, Info: ci, LinkType: s.link(ci)}, nil
}

func (s *fileSource) Close() error {
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// Merge reads several sources as one, in time order: the next packet is
// always the earliest of the sources' next packets (ties go to the source
// listed first). Within one source, packets keep their file order even
// where timestamps go backwards, as every capture tool does.
func Merge(srcs ...Source) Source {
	if len(srcs) == 1 {
		return srcs[0]
	}
	return &mergeSource{srcs: srcs}
}

type mergeSource struct {
	srcs    []Source
	started bool
	h       mergeHeap
	pending []error
}

type mergeHead struct {
	p   Packet
	idx int
}

type mergeHeap []mergeHead

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	ti, tj := h[i].p.Info.Timestamp, h[j].p.Info.Timestamp
	if !ti.Equal(tj) {
		return ti.Before(tj)
	}
	return h[i].idx < h[j].idx
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeHead)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// fill reads the next packet of source i into the heap.
func (m *mergeSource) fill(i int) {
	p, err := m.srcs[i].Next()
	switch {
	case err == nil:
		heap.Push(&m.h, mergeHead{p: p, idx: i})
	case err != io.EOF:
		m.pending = append(m.pending, err)
	}
}

func (m *mergeSource) Next() (Packet, error) {
	if !m.started {
		m.started = true
		for i := range m.srcs {
			m.fill(i)
		}
	}
	if len(m.pending) > 0 {
		err := m.pending[0]
		m.pending = m.pending[1:]
		return Packet{}, err
	}
	if m.h.Len() == 0 {
		return Packet{}, io.EOF
	}
	top := heap.Pop(&m.h).(mergeHead)
	m.fill(top.idx)
	return top.p, nil
}

func (m *mergeSource) Close() error {
	var errs []error
	for _, s := range m.srcs {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
