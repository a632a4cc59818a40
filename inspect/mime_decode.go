package inspect

import (
	"bytes"
	"slices"
	"strings"
)

// Content-Transfer-Encodings (RFC 2045 §6).
const (
	encIdentity uint8 = iota // 7bit, 8bit, binary or unknown
	encBase64
	encQuotedPrintable
)

// transferEncoding classifies a Content-Transfer-Encoding value. An
// unknown one is read as identity, as mail clients do, and recorded.
func transferEncoding(v string, f *flaws) uint8 {
	switch strings.ToLower(strings.Trim(v, " \t\"")) {
	case "", "7bit", "8bit", "binary":
		return encIdentity
	case "base64":
		return encBase64
	case "quoted-printable":
		return encQuotedPrintable
	}
	f.add(MalformedEncodingUnknown)
	return encIdentity
}

// b64 maps a byte to its base64 value, 0xFE for whitespace, 0xFF for
// anything else.
var b64 = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	for _, c := range []byte(" \t\r\n\f\v") {
		t[c] = 0xFE
	}
	return t
}()

// base64Decoder decodes base64 (RFC 2045 §6.8) incrementally and
// tolerantly, as mail clients do: whitespace is skipped, padding is
// optional, characters outside the alphabet are skipped and recorded, and
// data after padding starts a new group (concatenated encodings).
// encoding/base64 stops at the first of these, losing the rest of a text
// that every mail client would show.
type base64Decoder struct {
	q       [4]byte
	n       int
	invalid bool
}

// decode appends the bytes decoded from src to dst.
func (d *base64Decoder) decode(dst, src []byte) []byte {
	dst = slices.Grow(dst, len(src)*3/4+3)
	for _, c := range src {
		v := b64[c]
		switch {
		case v < 64:
			d.q[d.n] = v
			d.n++
			if d.n == 4 {
				dst = append(dst, d.q[0]<<2|d.q[1]>>4, d.q[1]<<4|d.q[2]>>2, d.q[2]<<6|d.q[3])
				d.n = 0
			}
		case c == '=':
			dst = d.finish(dst)
		case v == 0xFE:
		default:
			d.invalid = true
		}
	}
	return dst
}

// finish ends a group: two or three sextets still make whole bytes (the
// padding was missing); a single one cannot and is invalid.
func (d *base64Decoder) finish(dst []byte) []byte {
	switch d.n {
	case 1:
		d.invalid = true
	case 2:
		dst = append(dst, d.q[0]<<2|d.q[1]>>4)
	case 3:
		dst = append(dst, d.q[0]<<2|d.q[1]>>4, d.q[1]<<4|d.q[2]>>2)
	}
	d.n = 0
	return dst
}

// qpDecodeLine appends one quoted-printable line (RFC 2045 §6.7), without
// its line break, decoded to dst. soft reports a soft line break ("=" at the
// end). Trailing whitespace is dropped (rule 3); "=" not followed by two
// hex digits is kept as it is, as mail clients do, and reported in bad.
// Lower-case hex is accepted. mime/quotedprintable is not used because it
// reads whole streams and stops at the first such error; this one decodes
// line by line as the MIME walk streams them.
func qpDecodeLine(dst, line []byte, bad *bool) (out []byte, soft bool) {
	line = bytes.TrimRight(line, " \t\r")
	if n := len(line); n > 0 && line[n-1] == '=' {
		soft = true
		line = line[:n-1]
	}
	dst = slices.Grow(dst, len(line))
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c == '=' {
			if i+2 < len(line) && isHex(line[i+1]) && isHex(line[i+2]) {
				dst = append(dst, unhex(line[i+1])<<4|unhex(line[i+2]))
				i += 2
				continue
			}
			*bad = true
		}
		dst = append(dst, c)
	}
	return dst, soft
}

// textSink decodes the body of one text part as the MIME walk streams its
// lines, keeping at most max bytes.
type textSink struct {
	html    bool
	enc     uint8
	charset string
	out     []byte
	max     int
	full    bool // max was reached; the rest is dropped
	owedEOL bool // a line ended; its break is written only if another line follows (the last one belongs to the boundary, RFC 2046 §5.1.1)
	b64     base64Decoder
	qpLine  []byte // a quoted-printable line longer than the read buffer, so far
	qpBad   bool
}

// write feeds one fragment of the body (with eol bytes of line break at
// its end).
func (s *textSink) write(frag []byte, eol int) {
	if s.full {
		return
	}
	switch s.enc {
	case encBase64:
		s.out = s.b64.decode(s.out, frag)
	case encQuotedPrintable:
		if eol == 0 {
			// Part of a line longer than the read buffer: decode it
			// when the line is complete. Bounded by max: past it the
			// text is dropped anyway.
			if len(s.qpLine) < s.max+3 {
				s.qpLine = append(s.qpLine, frag[:min(len(frag), s.max+3-len(s.qpLine))]...)
			}
			return
		}
		line := frag[:len(frag)-eol]
		if len(s.qpLine) > 0 {
			s.qpLine = append(s.qpLine, line...)
			line = s.qpLine
		}
		s.qpWrite(line, true)
		s.qpLine = s.qpLine[:0]
	default:
		if s.owedEOL {
			s.out = append(s.out, '\n')
		}
		s.out = append(s.out, frag[:len(frag)-eol]...)
		s.owedEOL = eol > 0
	}
	if len(s.out) > s.max {
		s.out = s.out[:s.max]
		s.full = true
	}
}

func (s *textSink) qpWrite(line []byte, ended bool) {
	if s.owedEOL {
		s.out = append(s.out, '\n')
	}
	var soft bool
	s.out, soft = qpDecodeLine(s.out, line, &s.qpBad)
	s.owedEOL = ended && !soft
}

// endOfInput writes the line break of the last line, which no delimiter
// claimed.
func (s *textSink) endOfInput() {
	if s.owedEOL && !s.full && s.enc != encBase64 && len(s.qpLine) == 0 {
		s.out = append(s.out, '\n')
		s.owedEOL = false
	}
}

// finish ends the body and returns the decoded bytes, recording what was
// wrong with the encoding.
func (s *textSink) finish(f *flaws) []byte {
	switch s.enc {
	case encBase64:
		s.out = s.b64.finish(s.out)
		if s.b64.invalid {
			f.add(MalformedBase64)
		}
	case encQuotedPrintable:
		if len(s.qpLine) > 0 && !s.full {
			s.qpWrite(s.qpLine, false)
		}
		if s.qpBad {
			f.add(MalformedQuotedPrintable)
		}
	}
	if len(s.out) > s.max {
		s.out = s.out[:s.max]
		s.full = true
	}
	if s.full {
		f.add(MalformedTextTruncated)
	}
	return s.out
}

// sniffHTMLCharset finds the charset an HTML part declares in a <meta>
// tag, for parts whose Content-Type has none: "<meta charset=x>" or
// "<meta http-equiv=content-type content='text/html; charset=x'>". Only
// the start of the document is searched, as browsers do.
func sniffHTMLCharset(b []byte) string {
	b = b[:min(len(b), 4096)]
	for {
		i := indexFold(b, "charset")
		if i < 0 {
			return ""
		}
		b = b[i+len("charset"):]
		t := bytes.TrimLeft(b, " \t\r\n")
		if len(t) == 0 || t[0] != '=' {
			continue
		}
		t = bytes.TrimLeft(t[1:], " \t\r\n\"'")
		end := 0
		for end < len(t) && isTokenChar(t[end]) && t[end] != '\'' {
			end++
		}
		if end > 0 {
			return strings.ToLower(string(t[:end]))
		}
	}
}

// indexFold is bytes.Index for an ASCII lower-case needle, ignoring case.
func indexFold(b []byte, needle string) int {
	for i := 0; i+len(needle) <= len(b); i++ {
		j := 0
		for j < len(needle) && b[i+j]|0x20 == needle[j] {
			j++
		}
		if j == len(needle) {
			return i
		}
	}
	return -1
}
