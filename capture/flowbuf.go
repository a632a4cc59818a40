package capture

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// A direction of a TCP connection is kept, as reassembly delivers it, in a
// halfStream: the bytes in order, where bytes went missing (gaps) and when
// each part arrived. Small streams stay in memory; past a per-stream
// threshold, or when the analyzer's memory budget is spent, a stream moves
// to an unlinked temporary file, so a capture of any size runs in bounded
// memory. Nothing is parsed while packets arrive: the SMTP conversation is
// reconstructed once the connection is over, from both directions at
// once, which makes pairing pipelined commands with their replies a simple
// walk in order.

// memBudget is the memory all in-memory streams of an analyzer may hold.
type memBudget struct {
	limit int64
	used  atomic.Int64
}

func (b *memBudget) take(n int64) bool {
	if b == nil {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *memBudget) give(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}

// gap is a run of bytes the capture does not have.
type gap struct {
	off int64 // where in the stream the missing bytes would have been
	n   int64 // how many; -1 when unknown
}

// mark says that the byte at off arrived at ts.
type mark struct {
	off int64
	ts  time.Time
}

// maxMarks bounds the timestamps kept per stream; past it, every other
// one is dropped, which keeps times accurate to a few packets.
const maxMarks = 4096

// halfStream is one direction's bytes.
type halfStream struct {
	mem    []byte
	file   *os.File
	size   int64
	gaps   []gap
	marks  []mark
	budget *memBudget
	memMax int64
	dir    string
	err    error // the spool failed: the rest of the stream is lost
	lost   int64 // bytes dropped because the spool failed
}

// add appends data that arrived at ts after skip missing bytes (skip -1:
// an unknown number).
func (h *halfStream) add(data []byte, ts time.Time, skip int) {
	if skip != 0 && (h.size > 0 || skip > 0) {
		h.gaps = append(h.gaps, gap{off: h.size, n: int64(skip)})
	}
	if len(data) == 0 {
		return
	}
	h.addMark(ts)
	if h.err != nil {
		h.lost += int64(len(data))
		h.gaps = append(h.gaps, gap{off: h.size, n: int64(len(data))})
		return
	}
	if h.file == nil && int64(len(h.mem)+len(data)) <= h.memMax && h.budget.take(int64(len(data))) {
		if len(h.mem)+len(data) > cap(h.mem) {
			h.mem = growBuf(h.mem, len(h.mem)+len(data))
		}
		h.mem = append(h.mem, data...)
		h.size += int64(len(data))
		return
	}
	if h.file == nil {
		if err := h.spill(); err != nil {
			h.err = err
			h.lost += int64(len(data))
			h.gaps = append(h.gaps, gap{off: h.size, n: int64(len(data))})
			return
		}
	}
	if _, err := h.file.WriteAt(data, h.size); err != nil {
		h.err = err
		h.lost += int64(len(data))
		h.gaps = append(h.gaps, gap{off: h.size, n: int64(len(data))})
		return
	}
	h.size += int64(len(data))
}

func (h *halfStream) addMark(ts time.Time) {
	if n := len(h.marks); n > 0 && h.marks[n-1].ts.Equal(ts) {
		return
	}
	if len(h.marks) >= maxMarks {
		kept := h.marks[:0]
		for i, m := range h.marks {
			if i%2 == 0 {
				kept = append(kept, m)
			}
		}
		h.marks = kept
	}
	h.marks = append(h.marks, mark{off: h.size, ts: ts})
}

// spill moves the stream to a temporary file, unlinked at once so that it
// lives only as long as the stream.
func (h *halfStream) spill() error {
	f, err := os.CreateTemp(h.dir, "moat-capture-*")
	if err != nil {
		return fmt.Errorf("capture spool: %w", err)
	}
	os.Remove(f.Name())
	if _, err := f.WriteAt(h.mem, 0); err != nil {
		f.Close()
		return fmt.Errorf("capture spool: %w", err)
	}
	h.budget.give(int64(len(h.mem)))
	freeBuf(h.mem)
	h.mem = nil
	h.file = f
	return nil
}

// Stream memory is recycled by size class, so that the streams of one
// session after another reuse the same buffers instead of growing new
// ones from nothing.
var (
	bufClasses = [...]int{1 << 10, 4 << 10, 16 << 10, 64 << 10}
	bufPools   [len(bufClasses)]sync.Pool
)

// growBuf returns a buffer holding b with room for need bytes; b is
// recycled.
func growBuf(b []byte, need int) []byte {
	for i, c := range bufClasses {
		if need <= c {
			var nb []byte
			if p, _ := bufPools[i].Get().(*[]byte); p != nil {
				nb = (*p)[:0]
			} else {
				nb = make([]byte, 0, c)
			}
			nb = append(nb, b...)
			freeBuf(b)
			return nb
		}
	}
	nb := make([]byte, len(b), max(need, 2*cap(b)))
	copy(nb, b)
	freeBuf(b)
	return nb
}

// freeBuf recycles a buffer of a size class; no one may use it after.
func freeBuf(b []byte) {
	for i, c := range bufClasses {
		if cap(b) == c {
			b = b[:0]
			bufPools[i].Put(&b)
			return
		}
	}
}

// release frees the stream's memory and file.
func (h *halfStream) release() {
	h.budget.give(int64(len(h.mem)))
	freeBuf(h.mem)
	h.mem = nil
	if h.file != nil {
		h.file.Close()
		h.file = nil
	}
}

// ReadAt reads stream bytes at off; missing bytes read as whatever the
// spool holds (zeros), gaps are reported by the streamReader instead.
func (h *halfStream) ReadAt(p []byte, off int64) (int, error) {
	if off >= h.size {
		return 0, io.EOF
	}
	if rest := h.size - off; int64(len(p)) > rest {
		p = p[:rest]
		n, err := h.readAt(p, off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return h.readAt(p, off)
}

func (h *halfStream) readAt(p []byte, off int64) (int, error) {
	if h.file != nil {
		return h.file.ReadAt(p, off)
	}
	return copy(p, h.mem[off:]), nil
}

// timeAt returns when the byte at off arrived (the zero time if never).
func (h *halfStream) timeAt(off int64) time.Time { return Timeline{marks: h.marks}.At(off) }

// GapError is returned by a stream reader where bytes are missing from
// the capture. Reading may go on after it, with the bytes after the gap.
type GapError struct {
	Size int64 // missing bytes; -1 when unknown
}

func (e *GapError) Error() string {
	if e.Size < 0 {
		return "capture: bytes missing from the stream"
	}
	return fmt.Sprintf("capture: %d bytes missing from the stream", e.Size)
}

// isGap reports whether err is a *GapError, returning it.
func isGap(err error) (*GapError, bool) {
	var g *GapError
	ok := errors.As(err, &g)
	return g, ok
}

// streamReader reads a halfStream from the start. At each gap it returns
// the bytes before it, then (0, *GapError) once, then goes on.
type streamReader struct {
	h    *halfStream
	off  int64
	next int // index of the next gap in h.gaps
}

func (r *streamReader) Read(p []byte) (int, error) {
	for r.next < len(r.h.gaps) && r.h.gaps[r.next].off < r.off {
		r.next++ // a gap at an offset already passed (cannot happen in order)
	}
	if r.next < len(r.h.gaps) {
		g := r.h.gaps[r.next]
		if g.off == r.off {
			r.next++
			return 0, &GapError{Size: g.n}
		}
		if lim := g.off - r.off; int64(len(p)) > lim {
			p = p[:lim]
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.h.ReadAt(p, r.off)
	r.off += int64(n)
	if n > 0 {
		err = nil
	}
	return n, err
}
