package capture

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// TestScanEODChunks checks the chunked end-of-data scanner against the
// byte-by-byte one it replaced, on random bytes made of the characters
// that matter, fed whole, in one-byte reads and in half reads.
func TestScanEODChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 2025))
	const alphabet = "\r\n.\r\n.xy"
	for i := range 20000 {
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		want := scanEODByteByByte(bytes.NewReader(b))
		if got := scanEODBytes(b); got != want {
			t.Fatalf("%d: scanEODBytes(%q) = %+v, want %+v", i, b, got, want)
		}
		if got := scanEOD(iotest.OneByteReader(bytes.NewReader(b))); got != want {
			t.Fatalf("%d: scanEOD(one byte at a time %q) = %+v, want %+v", i, b, got, want)
		}
		if got := scanEOD(iotest.HalfReader(bytes.NewReader(b))); got != want {
			t.Fatalf("%d: scanEOD(halves of %q) = %+v, want %+v", i, b, got, want)
		}
	}
}

// scanEODByteByByte is the reference: the first scanner, one byte at a
// time through a bufio.Reader.
func scanEODByteByByte(r io.Reader) EOD {
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
