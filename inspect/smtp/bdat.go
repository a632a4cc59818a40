package smtp

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// MaxChunkSize bounds the size a BDAT command may announce; anything
// larger is a syntax error rather than a number to trust.
const MaxChunkSize = 1 << 40

// ParseBDATArg parses the argument of BDAT (RFC 3030 §3): a chunk size in
// octets, optionally followed by LAST. The chunk itself follows the
// command line on the wire, exactly size octets, with no dot-stuffing and
// no terminator (§2).
func ParseBDATArg(arg string) (size int64, last bool, err error) {
	n, rest, _ := strings.Cut(arg, " ")
	if n == "" || len(n) > 13 {
		return 0, false, fmt.Errorf("%w: BDAT needs a chunk size", ErrSyntax)
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return 0, false, fmt.Errorf("%w: BDAT chunk size %q is not a number", ErrSyntax, n)
		}
	}
	size, err = strconv.ParseInt(n, 10, 64)
	if err != nil || size > MaxChunkSize {
		return 0, false, fmt.Errorf("%w: BDAT chunk size %q out of range", ErrSyntax, n)
	}
	switch {
	case rest == "":
	case strings.EqualFold(rest, "LAST"):
		last = true
	default:
		return 0, false, fmt.Errorf("%w: BDAT: unexpected %q after the chunk size", ErrSyntax, rest)
	}
	return size, last, nil
}

// LineEndings watches a message's bytes as they stream past and records
// line endings other than CRLF: a LF not preceded by CR, a CR not followed
// by LF. It is the one place those facts are found, for DATA (watching
// what a DataReader reads out; unstuffing changes no line ending) and BDAT
// alike, and works across Write calls, so a CRLF split between two reads
// or chunks is still one CRLF.
type LineEndings struct {
	BareLF, BareCR bool
	cr             bool // the last byte seen was a CR
}

// Write scans p. It never fails. It counts instead of walking byte by
// byte (bytes.Count is vectorised): inside p, every LF after the first
// byte either ends a CRLF or is bare, and every CR before the last byte
// either starts a CRLF or is bare. The first and last bytes are judged
// with their neighbours in the previous and next Write.
func (l *LineEndings) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if l.cr {
		if p[0] != '\n' {
			l.BareCR = true
		}
	} else if p[0] == '\n' {
		l.BareLF = true
	}
	if !l.BareLF || !l.BareCR {
		crlf := bytes.Count(p, crlfBytes)
		if !l.BareLF {
			lf := bytes.Count(p, lfBytes)
			if p[0] == '\n' {
				lf--
			}
			l.BareLF = lf > crlf
		}
		if !l.BareCR {
			cr := bytes.Count(p, crBytes)
			if p[len(p)-1] == '\r' {
				cr--
			}
			l.BareCR = cr > crlf
		}
	}
	l.cr = p[len(p)-1] == '\r'
	return len(p), nil
}

var (
	crlfBytes = []byte("\r\n")
	lfBytes   = []byte("\n")
	crBytes   = []byte("\r")
)

// Close records a CR at the very end of the message as a bare CR.
func (l *LineEndings) Close() error {
	if l.cr {
		l.BareCR = true
		l.cr = false
	}
	return nil
}
