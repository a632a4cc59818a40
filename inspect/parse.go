package inspect

import (
	"bufio"
	"io"
	"sync"
)

// A message's content is parsed in one forward pass over its bytes, as deep
// as the loaded rules need (Depth): first the header section (RFC 5322
// §2.2), then the MIME tree (RFC 2045/2046), decoding the text parts on the
// way. The message is read through an io.SectionReader line by line, so a
// 200 MB message costs one read buffer, not 200 MB: only the header
// section, the decoded text (up to ContentLimits.MaxTextBytes) and one MIME
// part header at a time are held in memory.
//
// Parsing never fails. Mail in the wild is full of broken MIME, and a spam
// filter that gives up on a message it cannot parse is trivially evaded.
// Everything the parser has to work around is recorded as one of the
// Malformed* reasons below, which rules can score, and parsing goes on the
// way mail clients would.

// The reasons recorded in Content.Malformed. They are stable: rules and
// dashboards refer to them.
const (
	// Header section.
	MalformedHeaderSyntax       = "header_syntax"        // a line with no colon, a field name with spaces, a section starting with whitespace
	MalformedHeaderTooLong      = "header_too_long"      // the header section went past ContentLimits.MaxHeaderBytes; the rest was skipped
	MalformedHeaderFieldsLimit  = "header_fields_limit"  // more fields than ContentLimits.MaxHeaderFields; the rest were skipped
	MalformedHeaderDuplicate    = "header_duplicate"     // a field RFC 5322 §3.6 allows once (From, Subject, Date...) appears twice
	MalformedHeader8bit         = "header_8bit"          // raw bytes in a field that are not UTF-8 (RFC 6532 allows only UTF-8)
	MalformedEncodedWord        = "encoded_word_invalid" // an RFC 2047 encoded word that does not decode; left as it was
	MalformedAddressSyntax      = "address_syntax"       // an address list net/mail refuses; addresses recovered leniently
	MalformedAddressesTruncated = "addresses_truncated"  // more than 5,000 addresses in From, To or another address header
	MalformedDateSyntax         = "date_syntax"          // a Date that is not RFC 5322 (it may still have been understood)
	MalformedMessageIDSyntax    = "message_id_syntax"    // a Message-ID without <> or without @

	// MIME structure.
	MalformedContentType      = "mime_content_type"           // a Content-Type with no valid type/subtype; text/plain assumed (RFC 2045 §5.2)
	MalformedParamSyntax      = "mime_param_syntax"           // a parameter without a value, unquoted tspecials, an unclosed quote
	MalformedParamDuplicate   = "mime_param_duplicate"        // a parameter given twice; the first one is used
	MalformedBoundaryMissing  = "mime_boundary_missing"       // a multipart without a boundary parameter; read as text/plain
	MalformedBoundaryNotFound = "mime_boundary_not_found"     // a multipart whose boundary never occurs in its body
	MalformedFinalBoundary    = "mime_final_boundary_missing" // a multipart never closed with --boundary--
	MalformedEpilogueText     = "mime_epilogue_text"          // text after a closing boundary, invisible to mail clients
	MalformedNestingLimit     = "mime_nesting_limit"          // nesting deeper than ContentLimits.MaxNesting; the rest is one leaf
	MalformedPartsLimit       = "mime_parts_limit"            // more parts than ContentLimits.MaxParts; parsing stopped there
	MalformedEncodingUnknown  = "mime_encoding_unknown"       // a Content-Transfer-Encoding other than 7bit/8bit/binary/base64/quoted-printable

	// Text.
	MalformedBase64          = "base64_invalid"  // characters outside the base64 alphabet or a dangling sextet
	MalformedQuotedPrintable = "qp_invalid"      // "=" not followed by two hex digits
	MalformedCharsetUnknown  = "charset_unknown" // a charset moat does not know; UTF-8 or Latin-1 assumed
	MalformedCharsetInvalid  = "charset_invalid" // bytes not valid in the declared charset; replaced by U+FFFD
	MalformedTextTruncated   = "text_truncated"  // decoded text past ContentLimits.MaxTextBytes was dropped
	MalformedURLsTruncated   = "urls_truncated"  // more URLs than ContentLimits.MaxURLs

	// The parse itself.
	MalformedReadError   = "read_error"   // the message could not be read to its end
	MalformedParserPanic = "parser_panic" // a bug in this parser; what was parsed before is kept
)

// ContentLimits bound the work ParseContent does on hostile input. A zero
// or negative field means the default from DefaultContentLimits.
type ContentLimits struct {
	MaxParts        int   // MIME parts recorded; parsing stops at the limit
	MaxNesting      int   // multipart and message/rfc822 nesting depth
	MaxHeaderFields int   // header fields kept from the message header
	MaxURLs         int   // distinct URLs kept
	MaxTextBytes    int64 // decoded text kept, Text and HTML together
	MaxHeaderBytes  int64 // bytes kept of one header section (the message's or a part's)
}

// DefaultContentLimits returns limits generous enough for any real message
// and small enough that a hostile one costs little: 1,000 parts, nesting 50,
// 1,000 header fields, 1,000 URLs, 2 MB of text, 1 MB of header.
func DefaultContentLimits() ContentLimits {
	return ContentLimits{
		MaxParts:        1000,
		MaxNesting:      50,
		MaxHeaderFields: 1000,
		MaxURLs:         1000,
		MaxTextBytes:    2 << 20,
		MaxHeaderBytes:  1 << 20,
	}
}

// withDefaults fills the zero fields of l from DefaultContentLimits.
func (l ContentLimits) withDefaults() ContentLimits {
	d := DefaultContentLimits()
	if l.MaxParts <= 0 {
		l.MaxParts = d.MaxParts
	}
	if l.MaxNesting <= 0 {
		l.MaxNesting = d.MaxNesting
	}
	if l.MaxHeaderFields <= 0 {
		l.MaxHeaderFields = d.MaxHeaderFields
	}
	if l.MaxURLs <= 0 {
		l.MaxURLs = d.MaxURLs
	}
	if l.MaxTextBytes <= 0 {
		l.MaxTextBytes = d.MaxTextBytes
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return l
}

// ParseContent parses the message in r (size bytes, as received after DATA:
// dot-unstuffed, CRLF or bare-LF line endings) as deep as depth asks.
//
// It never panics and never fails: what cannot be parsed is recorded in
// Content.Malformed and parsing continues. limits bound the work on hostile
// input. At DepthHeaders only the header section (and at most one read
// buffer beyond it) is read.
func ParseContent(r ReaderAt, size int64, depth Depth, limits ContentLimits) (c *Content) {
	c = &Content{Depth: depth}
	if depth == DepthNone || r == nil || size <= 0 {
		return c
	}
	p := newParser(c, r, size, depth, limits.withDefaults())
	defer func() {
		if v := recover(); v != nil {
			// A bug here must not cost the message its verdict, nor the
			// session its connection: keep what was parsed and say so.
			p.flaws.add(MalformedParserPanic)
		}
		c.Malformed = p.flaws.list
		if p.lr != nil {
			p.lr.release()
		}
	}()
	p.run()
	return c
}

// flaws is the ordered set of Malformed reasons found so far.
type flaws struct{ list []string }

// add records reason once.
func (f *flaws) add(reason string) {
	for _, r := range f.list {
		if r == reason {
			return
		}
	}
	f.list = append(f.list, reason)
}

// has reports whether reason was recorded.
func (f *flaws) has(reason string) bool {
	for _, r := range f.list {
		if r == reason {
			return true
		}
	}
	return false
}

// lineReader hands out a message line by line from a bounded buffer. A line
// longer than the buffer comes in fragments; only the first fragment of a
// line has start set, so boundary and header checks look at line starts
// only.
type lineReader struct {
	br   *bufio.Reader
	off  int64      // offset of the next byte to be returned
	mid  bool       // the last fragment did not end its line
	err  error      // the read error that ended the input, if not io.EOF
	pool *sync.Pool // where br goes back to, if it came from one
}

// Read buffer sizes: at DepthHeaders a small buffer keeps the read close
// to the header section; deeper, a larger one makes long base64 bodies
// cheap to skip.
const (
	headerBufSize = 4 << 10
	bodyBufSize   = 64 << 10
)

func newLineReader(r ReaderAt, size int64, bufSize int) *lineReader {
	src := io.NewSectionReader(r, 0, size)
	// Buffers are reused from message to message, whatever their size.
	pool := &headerBufs
	if bufSize == bodyBufSize {
		pool = &bodyBufs
	}
	br, _ := pool.Get().(*bufio.Reader)
	if br == nil || br.Size() != bufSize {
		br = bufio.NewReaderSize(src, bufSize)
	} else {
		br.Reset(src)
	}
	return &lineReader{br: br, pool: pool}
}

var headerBufs, bodyBufs sync.Pool

// release gives a pooled buffer back. Nothing read from it may be used
// afterwards: the parser copies what it keeps.
func (l *lineReader) release() {
	if l.pool != nil {
		l.br.Reset(nil)
		l.pool.Put(l.br)
		l.pool, l.br = nil, nil
	}
}

// next returns the next fragment of the input, valid until the following
// call: a whole line with its terminator, or a buffer-full piece of a longer
// one. eol is the length of the terminator at the fragment's end (0, 1 for
// a bare LF or 2 for CRLF); start says the fragment begins a line. ok is
// false at the end of the input.
func (l *lineReader) next() (frag []byte, eol int, start bool, ok bool) {
	start = !l.mid
	b, err := l.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		l.mid = true
	case err != nil && len(b) == 0:
		if err != io.EOF {
			l.err = err
		}
		return nil, 0, start, false
	default:
		l.mid = false
	}
	l.off += int64(len(b))
	if n := len(b); n > 0 && b[n-1] == '\n' {
		eol = 1
		if n > 1 && b[n-2] == '\r' {
			eol = 2
		}
	}
	return b, eol, start, true
}
