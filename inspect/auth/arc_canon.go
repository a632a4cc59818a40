package auth

import (
	"errors"
	"hash"
	"strings"

	"moat/inspect/smtp"
)

// Canonicalization of header fields and body (RFC 6376 §3.4), as the
// ARC-Message-Signature (c=) and the ARC-Seal (always relaxed, RFC 8617
// §5.1.1) use it. A signer and a verifier must feed their hashes the very
// same bytes; canonicalization is what lets the "relaxed" forms survive
// the rewrapping and whitespace changes of mail systems on the way.

// arcCanon is one canonicalization algorithm.
type arcCanon uint8

const (
	arcSimple  arcCanon = iota // RFC 6376 §3.4.1, §3.4.3: tolerate nothing
	arcRelaxed                 // RFC 6376 §3.4.2, §3.4.4: tolerate whitespace changes
)

func (c arcCanon) String() string {
	if c == arcRelaxed {
		return "relaxed"
	}
	return "simple"
}

var errCanon = errors.New("unknown canonicalization")

// arcParseCanon parses a c= value, "header[/body]" (RFC 6376 §3.5): when
// only one algorithm is named it applies to the header and the body is
// simple. Algorithm names are ABNF literals, hence case-insensitive
// (RFC 5234 §2.3).
func arcParseCanon(v string) (header, body arcCanon, err error) {
	hs, bs, two := strings.Cut(v, "/")
	if header, err = arcCanonByName(hs); err != nil {
		return 0, 0, err
	}
	body = arcSimple
	if two {
		if body, err = arcCanonByName(bs); err != nil {
			return 0, 0, err
		}
	}
	return header, body, nil
}

func arcCanonByName(s string) (arcCanon, error) {
	switch {
	case strings.EqualFold(s, "simple"):
		return arcSimple, nil
	case strings.EqualFold(s, "relaxed"):
		return arcRelaxed, nil
	}
	return 0, errCanon
}

// arcCanonHeader returns the header field (raw, as received, with its
// folding and normally its final CRLF) in canonical form, ending in CRLF.
//
// simple (§3.4.1) leaves the field as it is. relaxed (§3.4.2) lowercases
// the name, unfolds the value, turns every run of WSP into one SP, and
// deletes WSP at the ends of the value and around the colon.
func arcCanonHeader(field string, c arcCanon) string {
	if c == arcSimple {
		if !strings.HasSuffix(field, "\r\n") {
			return field + "\r\n"
		}
		return field
	}
	name, value, ok := strings.Cut(field, ":")
	if !ok {
		name = strings.TrimSuffix(name, "\r\n")
	}
	var b strings.Builder
	b.Grow(len(field))
	b.WriteString(smtp.LowerASCII(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	wsp, started := false, false
	for i := 0; i < len(value); i++ {
		ch := value[i]
		switch {
		case ch == '\r' && i+1 < len(value) && value[i+1] == '\n':
			i++ // unfold: a CRLF followed by WSP is no line break (§3.4.2)
		case ch == ' ' || ch == '\t':
			wsp = true
		default:
			if wsp && started {
				b.WriteByte(' ')
			}
			wsp, started = false, true
			b.WriteByte(ch)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// arcStripB returns a signature header field without its final CRLF and
// with the value of its b= tag deleted, "treated as the empty string"
// (RFC 6376 §3.7 step 2; RFC 8617 §5.1.1 for the ARC-Seal): the form in
// which a signature field hashes itself. The field's tag list must have
// parsed (so b= occurs once, and no value holds a ";").
func arcStripB(field string) string {
	f := strings.TrimSuffix(field, "\r\n")
	colon := strings.IndexByte(f, ':')
	if colon < 0 {
		return f
	}
	start := colon + 1
	for start <= len(f) {
		end := strings.IndexByte(f[start:], ';')
		if end < 0 {
			end = len(f)
		} else {
			end += start
		}
		spec := f[start:end]
		if eq := strings.IndexByte(spec, '='); eq >= 0 && trimFWS(spec[:eq]) == "b" {
			return f[:start+eq+1] + f[end:]
		}
		start = end + 1
	}
	return f
}

// arcBodyCanon canonicalizes a body streamed through Write in pieces of
// any size, never holding more than a few bytes of it, and feeds the
// result to a hash, cut after limit bytes when the signature has l=.
//
// Both algorithms drop the empty lines at the end of the body and end it
// with exactly one CRLF; simple turns an empty body into one CRLF,
// relaxed leaves it empty (RFC 6376 §3.4.3, §3.4.4). relaxed also drops
// the WSP at the end of each line and turns every other run of WSP into
// one SP. Only CRLF ends a line: a bare CR or LF is an ordinary byte,
// as it was to the signer that saw the same bytes.
type arcBodyCanon struct {
	relaxed bool
	h       hash.Hash
	limit   int64 // bytes of canonical body to hash; <0: all
	n       int64 // canonical bytes produced (hashed or not)

	cr      bool // a CR was seen, its meaning waits for the next byte
	wsp     bool // relaxed: a run of WSP waits for a non-WSP on the line
	crlfs   int  // line ends since the last content, held back (trailing empty lines)
	content bool // the body has content (a non-empty line)

	buf  [512]byte // output batched into the hash
	nbuf int
}

func newARCBodyCanon(c arcCanon, h hash.Hash, limit int64) *arcBodyCanon {
	return &arcBodyCanon{relaxed: c == arcRelaxed, h: h, limit: limit}
}

func (c *arcBodyCanon) Write(p []byte) (int, error) {
	for _, ch := range p {
		if c.cr {
			c.cr = false
			if ch == '\n' {
				c.wsp = false // relaxed: WSP at the end of a line goes
				c.crlfs++
				continue
			}
			c.emitContent('\r')
		}
		switch {
		case ch == '\r':
			c.cr = true
		case c.relaxed && (ch == ' ' || ch == '\t'):
			c.wsp = true
		default:
			c.emitContent(ch)
		}
	}
	return len(p), nil
}

// emitContent writes the line ends held back (they were not trailing
// after all), a pending SP, then ch.
func (c *arcBodyCanon) emitContent(ch byte) {
	for ; c.crlfs > 0; c.crlfs-- {
		c.emit('\r')
		c.emit('\n')
	}
	if c.wsp {
		c.emit(' ')
		c.wsp = false
	}
	c.emit(ch)
	c.content = true
}

func (c *arcBodyCanon) emit(ch byte) {
	c.n++
	if c.limit >= 0 && c.n > c.limit {
		return
	}
	c.buf[c.nbuf] = ch
	c.nbuf++
	if c.nbuf == len(c.buf) {
		c.h.Write(c.buf[:])
		c.nbuf = 0
	}
}

// Close ends the body and returns how many bytes the canonical body has
// (all of them, also those past the limit).
func (c *arcBodyCanon) Close() int64 {
	if c.cr {
		c.cr = false
		c.emitContent('\r')
	}
	if c.content || !c.relaxed {
		// The one CRLF that ends the last line with content (whether
		// the body had it or not), or the CRLF of an empty simple body.
		c.crlfs, c.wsp = 0, false
		c.emit('\r')
		c.emit('\n')
	}
	c.h.Write(c.buf[:c.nbuf])
	c.nbuf = 0
	return c.n
}
