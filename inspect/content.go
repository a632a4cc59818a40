package inspect

import "time"

// Depth says how far into a message the rules need to look. Parsing
// stops at the depth the loaded rules need, so a rule set about envelopes
// never pays for MIME decoding.
type Depth uint8

// The depths, each including the ones before it.
const (
	DepthNone    Depth = iota
	DepthHeaders       // the header section: fields, addresses, Date, Subject...
	DepthMIME          // the MIME tree: content types, charsets, attachment names
	DepthText          // decoded text of text/plain and text/html parts, URLs
)

// Content is what a message says about itself: its header section and,
// as deep as asked, its MIME structure, text and URLs. Everything here is
// parsed from untrusted bytes; what could not be parsed is recorded in
// Malformed, never a panic and never an error that loses the message.
type Content struct {
	Depth Depth // how far this Content was parsed

	// Header section (DepthHeaders).
	Header      []HeaderField // every field, in order, unfolded
	HeaderBytes int64         // size of the header section
	Subject     string        // decoded (RFC 2047), UTF-8
	From        []Address
	Sender      []Address
	ReplyTo     []Address
	To, Cc      []Address
	Date        time.Time // zero when missing or unparsable
	DateRaw     string
	MessageID   string // without angle brackets; "" when missing
	InReplyTo   string
	Received    []string // the Received fields' values, top (newest) first

	// MIME (DepthMIME).
	Parts    []Part // every MIME part in document order, the top-level entity first
	MaxDepth int    // deepest multipart nesting; 0 for a single-part message

	// Text (DepthText): decoded to UTF-8 from base64/quoted-printable
	// and the declared charset, parts joined with "\n". HTML is the raw
	// (decoded) HTML; HTMLText its visible text.
	Text     string
	HTML     string
	HTMLText string
	URLs     []URL

	// Malformed lists what was wrong with the message, as short stable
	// reason constants ("header_syntax", "mime_boundary_missing",
	// "base64_invalid", "charset_unknown", ...). Rules can score them;
	// the fact "mime_malformed" is len(Malformed) > 0.
	Malformed []string
}

// HeaderField is one header field. Value is unfolded (RFC 5322 §2.2.3)
// raw text; Decoded has RFC 2047 encoded words decoded to UTF-8.
type HeaderField struct {
	Name    string // as sent; compare case-insensitively
	Value   string
	Decoded string
}

// Address is a mailbox from an address header (RFC 5322 §3.4).
type Address struct {
	Name   string // display name, decoded to UTF-8
	Addr   string // local@domain as written
	Domain string // lower-cased domain part; "" when none
}

// Part is one MIME entity (RFC 2045/2046).
type Part struct {
	Path        string // "1", "1.2", ...: position in the tree
	Depth       int    // multipart nesting of this part
	ContentType string // lower-cased media type, "text/plain" when absent (RFC 2045 §5.2)
	Charset     string // lower-cased charset parameter
	Encoding    string // lower-cased Content-Transfer-Encoding
	Disposition string // "inline", "attachment" or ""
	Filename    string // from Content-Disposition filename or Content-Type name, decoded (RFC 2231/2047)
	Offset      int64  // where the body starts in the message, so it can be read again
	Size        int64  // encoded body size in bytes
	Multipart   bool
}

// URL is a link found in the text or HTML of a message.
type URL struct {
	Raw  string // as found
	Host string // lower-cased host name or IP, without port
}

// Header returns the decoded value of the first field named name (case
// insensitive), and whether there was one.
func (c *Content) HeaderValue(name string) (string, bool) {
	for i := range c.Header {
		if equalFold(c.Header[i].Name, name) {
			return c.Header[i].Decoded, true
		}
	}
	return "", false
}

// equalFold compares ASCII header names case-insensitively without
// allocating.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
