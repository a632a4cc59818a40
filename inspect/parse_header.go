package inspect

import (
	"bytes"
	"strings"
)

// headerReader unfolds the fields of one header section (RFC 5322 §2.2),
// fed line by line. The message's own header keeps every field; a MIME
// part's keeps only the Content-* fields the MIME walk needs, so a part
// header costs no memory however long it is.
type headerReader struct {
	top       bool          // the message header: keep every field
	fields    []HeaderField // kept fields, in order
	cur       []byte        // the field being unfolded: "name:value"
	have      bool          // cur holds a field
	lines     int           // lines seen
	kept      int64         // bytes kept
	maxBytes  int64
	maxFields int
	flaws     *flaws
}

// reset prepares h for a new header section, keeping its buffers.
func (h *headerReader) reset(top bool, lim ContentLimits, f *flaws) {
	*h = headerReader{
		top:       top,
		fields:    h.fields[:0],
		cur:       h.cur[:0],
		maxBytes:  lim.MaxHeaderBytes,
		maxFields: lim.MaxHeaderFields,
		flaws:     f,
	}
	if top {
		h.fields = nil // handed to Content; never reused
	}
}

// line feeds one fragment of the header section. It reports true at the
// empty line that ends the section.
func (h *headerReader) line(frag []byte, eol int, start bool) (end bool) {
	text := frag[:len(frag)-eol]
	if !start {
		h.appendCur(text)
		return false
	}
	h.lines++
	switch {
	case len(text) == 0 || (len(text) == 1 && text[0] == '\r'):
		// The empty line (RFC 5322 §2.1); a lone CR before a bare LF
		// counts too, as every mail client reads it.
		h.flush()
		return true
	case text[0] == ' ' || text[0] == '\t':
		if h.have {
			// Unfolding removes the line break and keeps the whitespace
			// (RFC 5322 §2.2.3).
			h.appendCur(text)
			return false
		}
		h.flaws.add(MalformedHeaderSyntax)
		if h.lines > 1 {
			return false // continues a dropped line
		}
		// A header section starting with whitespace: mail clients read
		// the first field as if the whitespace were not there.
		text = bytes.TrimLeft(text, " \t")
		if !validFieldLine(text) {
			return false
		}
		h.startField(text)
	case validFieldLine(text):
		h.flush()
		h.startField(text)
	default:
		// No colon, or a name with spaces. Some mailers break a long
		// parameter list without folding whitespace; like enmime and
		// Thunderbird, read the line as a continuation of the field
		// before it, which recovers the parameter. A leading mbox
		// "From " line has no field before it and is dropped.
		h.flaws.add(MalformedHeaderSyntax)
		if h.have {
			h.appendCur([]byte{' '})
			h.appendCur(text)
		}
	}
	return false
}

// validFieldLine reports whether line starts with a field name and a colon.
// Whitespace before the colon is obsolete syntax that must be accepted
// (RFC 5322 §4.5); the name itself is printable ASCII without spaces
// (RFC 5322 §2.2).
func validFieldLine(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, b := range name {
		if b < 33 || b > 126 {
			return false
		}
	}
	return true
}

func (h *headerReader) startField(text []byte) {
	h.cur = h.cur[:0]
	h.have = true
	h.appendCur(text)
}

// appendCur adds to the field being unfolded, within the byte limit.
func (h *headerReader) appendCur(b []byte) {
	if !h.have {
		return
	}
	if room := h.maxBytes - h.kept - int64(len(h.cur)); int64(len(b)) > room {
		h.flaws.add(MalformedHeaderTooLong)
		b = b[:max(room, 0)]
	}
	h.cur = append(h.cur, b...)
}

// flush ends the field being unfolded.
func (h *headerReader) flush() {
	if !h.have {
		return
	}
	h.have = false
	i := bytes.IndexByte(h.cur, ':')
	if i < 0 {
		return // cut off by the byte limit (header_too_long)
	}
	name := bytes.TrimRight(h.cur[:i], " \t")
	value := bytes.TrimSpace(h.cur[i+1:])
	if !h.top && !isMIMEField(name) {
		return
	}
	if len(h.fields) >= h.maxFields {
		h.flaws.add(MalformedHeaderFieldsLimit)
		return
	}
	h.kept += int64(len(h.cur))
	h.fields = append(h.fields, HeaderField{Name: string(name), Value: string(value)})
}

// isMIMEField reports whether a part header field matters to the MIME walk.
func isMIMEField(name []byte) bool {
	return bytes.EqualFold(name, []byte("Content-Type")) ||
		bytes.EqualFold(name, []byte("Content-Transfer-Encoding")) ||
		bytes.EqualFold(name, []byte("Content-Disposition"))
}

// mimeFields are the MIME fields of an entity's header.
type mimeFields struct {
	contentType, encoding, disposition string
	hasType                            bool
}

// mimeFieldsOf picks the MIME fields from fields, first occurrence wins
// (what mail clients show), duplicates recorded.
func mimeFieldsOf(fields []HeaderField, f *flaws) mimeFields {
	var m mimeFields
	var seenType, seenEnc, seenDisp bool
	for i := range fields {
		name, value := fields[i].Name, fields[i].Value
		switch {
		case equalFold(name, "Content-Type"):
			if seenType {
				f.add(MalformedHeaderDuplicate)
				continue
			}
			seenType, m.hasType, m.contentType = true, true, value
		case equalFold(name, "Content-Transfer-Encoding"):
			if seenEnc {
				f.add(MalformedHeaderDuplicate)
				continue
			}
			seenEnc, m.encoding = true, value
		case equalFold(name, "Content-Disposition"):
			if seenDisp {
				f.add(MalformedHeaderDuplicate)
				continue
			}
			seenDisp, m.disposition = true, value
		}
	}
	return m
}

// singletonFields may occur at most once (RFC 5322 §3.6).
var singletonFields = [...]string{
	"Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc",
	"Message-ID", "In-Reply-To", "References", "Subject",
}

// headerFacts fills the header facts of c from its fields. charset is the
// message's declared charset, the best guess for raw 8-bit bytes in the
// header.
func headerFacts(c *Content, charset string, f *flaws) {
	var seen [len(singletonFields)]bool
	var dateSeen, idSeen, replySeen bool
	for i := range c.Header {
		h := &c.Header[i]
		h.Decoded = decodeHeaderText(h.Value, charset, f)
		for j, name := range singletonFields {
			if equalFold(h.Name, name) {
				if seen[j] {
					f.add(MalformedHeaderDuplicate)
				}
				seen[j] = true
			}
		}
		switch {
		case equalFold(h.Name, "Subject"):
			if c.Subject == "" {
				c.Subject = h.Decoded
			}
		case equalFold(h.Name, "From"):
			c.From = appendAddresses(c.From, h.Value, charset, f)
		case equalFold(h.Name, "Sender"):
			c.Sender = appendAddresses(c.Sender, h.Value, charset, f)
		case equalFold(h.Name, "Reply-To"):
			c.ReplyTo = appendAddresses(c.ReplyTo, h.Value, charset, f)
		case equalFold(h.Name, "To"):
			c.To = appendAddresses(c.To, h.Value, charset, f)
		case equalFold(h.Name, "Cc"):
			c.Cc = appendAddresses(c.Cc, h.Value, charset, f)
		case equalFold(h.Name, "Date"):
			if dateSeen {
				continue
			}
			dateSeen = true
			c.DateRaw = h.Value
			t, strict := parseDate(h.Value)
			if !strict {
				f.add(MalformedDateSyntax)
			}
			c.Date = t
		case equalFold(h.Name, "Message-ID"):
			if idSeen {
				continue
			}
			idSeen = true
			id, ok := parseMsgID(h.Value)
			if !ok {
				f.add(MalformedMessageIDSyntax)
			}
			c.MessageID = id
		case equalFold(h.Name, "In-Reply-To"):
			if replySeen {
				continue
			}
			replySeen = true
			c.InReplyTo, _ = parseMsgID(h.Value)
		case equalFold(h.Name, "Received"):
			// Each relay prepends its Received field (RFC 5321 §4.4), so
			// document order is newest first.
			c.Received = append(c.Received, h.Value)
		}
	}
}

// parseMsgID returns the first msg-id in v without its angle brackets
// (RFC 5322 §3.6.4), and whether it had the id-left "@" id-right shape.
// Without brackets the first word is taken.
func parseMsgID(v string) (id string, ok bool) {
	v = strings.TrimSpace(stripComments(v))
	if v == "" {
		return "", true
	}
	if i := strings.IndexByte(v, '<'); i >= 0 {
		rest := v[i+1:]
		if j := strings.IndexByte(rest, '>'); j >= 0 {
			id = strings.TrimSpace(rest[:j])
			return id, strings.Contains(id, "@") && id != ""
		}
		return strings.TrimSpace(rest), false
	}
	if i := strings.IndexAny(v, " \t"); i >= 0 {
		v = v[:i]
	}
	return v, false
}

// stripComments removes RFC 5322 comments (parenthesised, nestable,
// backslash-quoted) outside quoted strings. An unclosed comment runs to
// the end.
func stripComments(s string) string {
	if strings.IndexByte(s, '(') < 0 {
		return s
	}
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && (quoted || depth > 0):
			if depth == 0 {
				b.WriteByte(ch)
				if i+1 < len(s) {
					b.WriteByte(s[i+1])
				}
			}
			i++
		case depth == 0 && ch == '"':
			quoted = !quoted
			b.WriteByte(ch)
		case !quoted && ch == '(':
			if depth == 0 {
				b.WriteByte(' ')
			}
			depth++
		case !quoted && depth > 0 && ch == ')':
			depth--
		case depth == 0:
			b.WriteByte(ch)
		}
	}
	return b.String()
}
