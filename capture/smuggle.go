package capture

import (
	"bufio"
	"io"
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
	e := scanEOD(io.NewSectionReader(c.ch, start, end-start))
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
	e := EOD{Strict: -1, LF: -1, CR: -1}
	br := bufio.NewReaderSize(r, 32<<10)
	p2, p1 := byte('\r'), byte('\n') // the DATA line's CR LF
	var (
		pending        bool  // a "." at a line start for some parser
		at             int64 // its offset
		afterDot       int   // bytes seen after it
		strictBol      bool
		lfBol, crBol   bool
		strictCR, lfCR bool // the byte after the dot was a CR
	)
	for off := int64(0); ; off++ {
		b, err := br.ReadByte()
		if err != nil {
			return e
		}
		if pending {
			if afterDot == 0 {
				if crBol && (b == '\r' || b == '\n') && e.CR < 0 {
					e.CR = at
				}
				if lfBol && b == '\n' && e.LF < 0 {
					e.LF = at
				}
				strictCR, lfCR = strictBol && b == '\r', lfBol && b == '\r'
				afterDot = 1
				if !strictCR && !lfCR {
					pending = false
				}
			} else {
				if b == '\n' {
					if lfCR && e.LF < 0 {
						e.LF = at
					}
					if strictCR {
						e.Strict = at
						return e
					}
				}
				pending = false
			}
		}
		if b == '.' && !pending {
			strictBol = p2 == '\r' && p1 == '\n'
			lfBol = p1 == '\n'
			crBol = p1 == '\n' || p1 == '\r'
			if strictBol || lfBol || crBol {
				pending, at, afterDot = true, off, 0
			}
		}
		p2, p1 = p1, b
	}
}
