package capture

import (
	"bytes"
	"io"
	"sync"
)

// SMTP smuggling (SEC Consult, 2023) exploits servers that disagree about
// where a message ends. RFC 5321 §4.1.1.4 ends DATA only at CR LF "." CR
// LF; a server that also accepts LF "." LF, or CR "." CR, sees the end of
// the message earlier, and reads what follows — chosen by the sender —
// as new commands: a second, forged message. moat's DataReader is strict,
// so the proxy never splits a message; offline, capture tells where each
// kind of parser would have ended every DATA body, and flags the
// transactions where they disagree, which is what an attempt looks like
// on the wire.

// checkSmuggling scans the raw DATA bytes the client sent between start
// and end (offsets in the client's stream) and flags the record when a
// lenient parser would have ended the message before the strict one.
func (c *conversation) checkSmuggling(start, end int64) {
	if end <= start {
		return
	}
	var e EOD
	if c.ch.file == nil && end <= int64(len(c.ch.mem)) {
		e = scanEODBytes(c.ch.mem[start:end])
	} else {
		e = scanEOD(io.NewSectionReader(c.ch, start, end-start))
	}
	if e.Strict < 0 {
		return
	}
	if e.LF >= 0 && e.LF < e.Strict || e.CR >= 0 && e.CR < e.Strict {
		c.rec.Smuggling = true
		c.rec.EOD = &e
		c.out.Smuggling = true
	}
}

// scanEOD returns where each parser sees the end of the data in r, the
// raw bytes after the DATA command line (whose CR LF counts as the line
// break before the first byte).
func scanEOD(r io.Reader) EOD {
	s := newEODScanner()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 && s.feed(buf[:n]) {
			break
		}
		if err != nil {
			break
		}
	}
	return s.e
}

// scanEODBytes is scanEOD of bytes in memory.
func scanEODBytes(b []byte) EOD {
	s := newEODScanner()
	s.feed(b)
	return s.e
}

// eodScanner finds the ends of DATA chunk by chunk. Only a "." can start
// an end, so the bytes between dots are skipped with bytes.IndexByte; the
// two bytes before a dot and the two after it are looked at one by one.
type eodScanner struct {
	e      EOD
	p2, p1 byte  // the two bytes before the current one
	off    int64 // the current byte's offset

	pending        bool  // a "." at a line start for some parser
	at             int64 // its offset
	afterDot       int   // bytes seen after it
	strictBol      bool
	lfBol, crBol   bool
	strictCR, lfCR bool // the byte after the dot was a CR
}

func newEODScanner() eodScanner {
	// The DATA line's CR LF comes before the first byte.
	return eodScanner{e: EOD{Strict: -1, LF: -1, CR: -1}, p2: '\r', p1: '\n'}
}

// feed scans the next bytes; it reports true once the strict end is
// found, after which nothing more needs feeding.
func (s *eodScanner) feed(b []byte) bool {
	for i := 0; i < len(b); {
		if !s.pending {
			j := bytes.IndexByte(b[i:], '.')
			if j < 0 {
				s.skip(b[i:])
				return false
			}
			s.skip(b[i : i+j])
			i += j
		}
		if s.step(b[i]) {
			return true
		}
		i++
	}
	return false
}

// skip passes over bytes that hold no dot while nothing is pending.
func (s *eodScanner) skip(b []byte) {
	switch n := len(b); {
	case n >= 2:
		s.p2, s.p1 = b[n-2], b[n-1]
	case n == 1:
		s.p2, s.p1 = s.p1, b[0]
	}
	s.off += int64(len(b))
}

// step looks at one byte; true when the strict end is found.
func (s *eodScanner) step(b byte) bool {
	e := &s.e
	off := s.off
	if s.pending {
		if s.afterDot == 0 {
			if s.crBol && (b == '\r' || b == '\n') && e.CR < 0 {
				e.CR = s.at
			}
			if s.lfBol && b == '\n' && e.LF < 0 {
				e.LF = s.at
			}
			s.strictCR, s.lfCR = s.strictBol && b == '\r', s.lfBol && b == '\r'
			s.afterDot = 1
			if !s.strictCR && !s.lfCR {
				s.pending = false
			}
		} else {
			if b == '\n' {
				if s.lfCR && e.LF < 0 {
					e.LF = s.at
				}
				if s.strictCR {
					e.Strict = s.at
					return true
				}
			}
			s.pending = false
		}
	}
	if b == '.' && !s.pending {
		s.strictBol = s.p2 == '\r' && s.p1 == '\n'
		s.lfBol = s.p1 == '\n'
		s.crBol = s.p1 == '\n' || s.p1 == '\r'
		if s.strictBol || s.lfBol || s.crBol {
			s.pending, s.at, s.afterDot = true, off, 0
		}
	}
	s.p2, s.p1 = s.p1, b
	s.off++
	return false
}

// copyBufs are the buffers DATA bodies and scans are copied through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
