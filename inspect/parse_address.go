package inspect

import (
	"io"
	"mime"
	"net/mail"
	"strings"
)

// parseAddressList parses an address header (RFC 5322 §3.4) leniently:
// net/mail first, and when it refuses the list, a tolerant scan that still
// finds every addr-spec and display name, recording address_syntax. Groups
// contribute their members. charset decodes raw 8-bit display names.
func parseAddressList(v, charset string, f *flaws) []Address {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(label string, r io.Reader) (io.Reader, error) {
			b, err := io.ReadAll(r)
			if err != nil {
				return nil, err
			}
			s, _ := decodeCharset(b, label, f)
			return strings.NewReader(s), nil
		},
	}}
	if len(v) <= maxStrictList {
		if list, err := p.ParseList(v); err == nil {
			out := make([]Address, 0, len(list))
			for _, a := range list {
				out = append(out, newAddress(a.Name, a.Address, charset, f))
			}
			return out
		}
		f.add(MalformedAddressSyntax)
		return lenientAddressList(v, charset, f)
	}
	// net/mail's phrase parsing grows faster than linearly with a
	// hostile phrase, so a long list is split here and net/mail sees one
	// address at a time; an address too long to be real is read
	// leniently.
	var out []Address
	for _, piece := range splitAddressList(v) {
		if strings.TrimSpace(piece) == "" {
			continue
		}
		if len(out) >= maxAddresses {
			f.add(MalformedAddressesTruncated)
			break
		}
		if len(piece) <= maxStrictAddress {
			if a, err := p.Parse(piece); err == nil {
				out = append(out, newAddress(a.Name, a.Address, charset, f))
				continue
			}
		}
		f.add(MalformedAddressSyntax)
		if a, ok := lenientAddress(piece, charset, f); ok {
			out = append(out, a)
		}
	}
	return out
}

// Bounds on what net/mail parses in one call, and on the addresses kept
// per kind of header (From, To...): a real list of 600 recipients exists,
// one of 5,000 is an attack on the parser.
const (
	maxStrictList    = 16 << 10
	maxStrictAddress = 2 << 10
	maxAddresses     = 5000
)

// appendAddresses adds the addresses of v to list, up to maxAddresses.
func appendAddresses(list []Address, v, charset string, f *flaws) []Address {
	if len(list) >= maxAddresses {
		f.add(MalformedAddressesTruncated)
		return list
	}
	more := parseAddressList(v, charset, f)
	if room := maxAddresses - len(list); len(more) > room {
		f.add(MalformedAddressesTruncated)
		more = more[:room]
	}
	return append(list, more...)
}

// newAddress builds an Address, its display name made valid UTF-8.
func newAddress(name, addr, charset string, f *flaws) Address {
	a := Address{Name: strings.TrimSpace(name), Addr: strings.TrimSpace(addr)}
	if strings.Contains(a.Name, "=?") || !validUTF8(a.Name) {
		a.Name = decodeHeaderText(a.Name, charset, f)
	}
	if !validUTF8(a.Addr) {
		a.Addr = strings.ToValidUTF8(a.Addr, "\uFFFD")
	}
	if i := strings.LastIndexByte(a.Addr, '@'); i >= 0 {
		a.Domain = strings.ToLower(strings.TrimRight(a.Addr[i+1:], ". \t"))
	}
	return a
}

// lenientAddressList splits v on the commas between addresses (outside
// quotes, comments and angle brackets) and reads each piece the way mail
// clients do: the text in <> is the address and what precedes it the
// name; without <>, the word with an "@" is the address and a comment the
// name. Pieces with no address at all are dropped.
func lenientAddressList(v, charset string, f *flaws) []Address {
	var out []Address
	for _, piece := range splitAddressList(v) {
		if a, ok := lenientAddress(piece, charset, f); ok {
			out = append(out, a)
		}
	}
	return out
}

// splitAddressList splits an address list at top-level commas and
// semicolons, dropping group names ("undisclosed-recipients:").
func splitAddressList(v string) []string {
	var pieces []string
	start, depth, angle, quoted := 0, 0, false, false
	for i := 0; i < len(v); i++ {
		switch ch := v[i]; {
		case ch == '\\' && (quoted || depth > 0):
			i++
		case quoted:
			if ch == '"' {
				quoted = false
			}
		case depth > 0:
			if ch == '(' {
				depth++
			} else if ch == ')' {
				depth--
			}
		case ch == '"':
			quoted = true
		case ch == '(':
			depth++
		case ch == '<':
			angle = true
		case ch == '>':
			angle = false
		case angle:
		case ch == ',' || ch == ';':
			pieces = append(pieces, v[start:i])
			start = i + 1
		case ch == ':':
			// A group name ends here (RFC 5322 §3.4); an address with a
			// colon outside <> is not something mail clients send.
			if !strings.ContainsAny(v[start:i], "@<") {
				start = i + 1
			}
		}
	}
	return append(pieces, v[start:])
}

// lenientAddress reads one piece of an address list.
func lenientAddress(piece, charset string, f *flaws) (Address, bool) {
	piece = strings.TrimSpace(piece)
	if piece == "" {
		return Address{}, false
	}
	if i := strings.IndexByte(piece, '<'); i >= 0 {
		name := piece[:i]
		addr := piece[i+1:]
		if j := strings.IndexByte(addr, '>'); j >= 0 {
			addr = addr[:j]
		}
		// An obsolete route ("<@relay:user@host>", RFC 5322 §4.4).
		if j := strings.LastIndexByte(addr, ':'); j >= 0 && strings.HasPrefix(strings.TrimSpace(addr), "@") {
			addr = addr[j+1:]
		}
		addr = strings.Trim(strings.TrimSpace(addr), "<>\"'")
		if addr == "" && strings.TrimSpace(name) == "" {
			return Address{}, false
		}
		return newAddress(unquotePhrase(stripComments(name)), addr, charset, f), true
	}
	// No angle brackets: an addr-spec, perhaps with a comment for a name.
	var name string
	if i := strings.IndexByte(piece, '('); i >= 0 {
		if j := strings.LastIndexByte(piece, ')'); j > i {
			name = piece[i+1 : j]
		} else {
			name = piece[i+1:]
		}
	}
	for _, w := range strings.Fields(stripComments(piece)) {
		if strings.Contains(w, "@") {
			return newAddress(unquotePhrase(name), strings.Trim(w, "\"'<>,;"), charset, f), true
		}
	}
	return Address{}, false
}

// unquotePhrase turns a display name as written into its text: quotes and
// backslash escapes removed, whitespace collapsed.
func unquotePhrase(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\"\\") {
		return strings.Join(strings.Fields(s), " ")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(s[i])
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
