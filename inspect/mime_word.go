package inspect

import (
	"strings"
	"unicode/utf8"
)

// decodeHeaderText decodes the RFC 2047 encoded words in a header value to
// UTF-8. It is its own decoder rather than mime.WordDecoder because real
// mail needs three things that one does not do:
//
//   - Adjacent encoded words in the same charset are joined as bytes
//     before charset conversion. RFC 2047 §5 forbids splitting a character
//     across words, but mailers split UTF-8 and Shift_JIS sequences
//     anyway, and mail clients join them back.
//   - A malformed word is left as it was and recorded
//     (encoded_word_invalid), instead of failing the whole value.
//   - Any charset goes through decodeCharset, and raw 8-bit text outside
//     the words is taken as UTF-8 when valid (RFC 6532), else in the
//     message's charset (header_8bit).
//
// Whitespace between two adjacent encoded words is dropped (RFC 2047
// §6.2); words are recognised anywhere, not only as whole atoms, as mail
// clients do.
func decodeHeaderText(s, charset string, f *flaws) string {
	if !strings.Contains(s, "=?") {
		if utf8.ValidString(s) {
			return s
		}
		return rawHeaderText(s, charset, f)
	}
	var (
		b       strings.Builder
		pending []byte // decoded bytes of adjacent words in pendCS
		pendCS  string
		gap     string // raw text since the last word, all whitespace so far
		inWords bool   // the last thing seen was an encoded word
	)
	flush := func() {
		if pending != nil {
			text, _ := decodeCharset(pending, pendCS, f)
			b.WriteString(text)
			pending, pendCS = nil, ""
		}
	}
	raw := func(t string) {
		flush()
		if utf8.ValidString(t) {
			b.WriteString(t)
		} else {
			b.WriteString(rawHeaderText(t, charset, f))
		}
	}
	for s != "" {
		i := strings.Index(s, "=?")
		if i < 0 {
			break
		}
		// Text before the candidate word.
		before := s[:i]
		cs, data, n, ok := encodedWord(s[i:], f)
		if !ok {
			raw(gap + s[:i+2])
			gap, inWords = "", false
			s = s[i+2:]
			continue
		}
		if inWords && isBlank(gap+before) {
			// Linear whitespace between adjacent encoded words is not
			// displayed (RFC 2047 §6.2).
		} else {
			raw(gap + before)
		}
		gap = ""
		key := normalizeCharset(cs)
		if pending != nil && key != pendCS {
			flush()
		}
		if pending == nil {
			pending = make([]byte, 0, len(data))
		}
		pending = append(pending, data...)
		pendCS = key
		inWords = true
		s = s[i+n:]
		// Hold following whitespace until we know whether another word
		// comes.
		j := 0
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		gap, s = s[:j], s[j:]
	}
	if s != "" || gap != "" {
		raw(gap + s)
	}
	flush()
	return b.String()
}

// rawHeaderText converts header bytes that are not UTF-8 from the
// message's charset (windows-1252 when it has none), recording header_8bit.
func rawHeaderText(s, charset string, f *flaws) string {
	f.add(MalformedHeader8bit)
	if _, kind := lookupCharset(charset); kind == charsetKnown {
		if t, ok := decodeCharset([]byte(s), charset, &flaws{}); ok {
			return t
		}
	}
	return latin1([]byte(s))
}

// encodedWord reads one "=?charset?encoding?text?=" at the start of s
// (RFC 2047 §2) and returns its charset, decoded bytes and length. A word
// that is not well-formed is not one: ok is false and
// encoded_word_invalid recorded. Spaces inside the text are tolerated,
// since broken mailers emit them and clients accept them.
func encodedWord(s string, f *flaws) (charset string, data []byte, n int, ok bool) {
	// s starts with "=?".
	rest := s[2:]
	q := strings.IndexByte(rest, '?')
	if q <= 0 || q > 75 || strings.ContainsAny(rest[:q], " \t\"()<>@,;:") {
		f.add(MalformedEncodedWord)
		return "", nil, 0, false
	}
	charset = rest[:q]
	rest = rest[q+1:]
	if len(rest) < 2 || rest[1] != '?' {
		f.add(MalformedEncodedWord)
		return "", nil, 0, false
	}
	enc := rest[0] | 0x20
	rest = rest[2:]
	// The text cannot contain "?", so the first one must start "?=";
	// looking no further keeps a value full of "=?" linear.
	end := strings.IndexByte(rest, '?')
	if end < 0 || end+1 >= len(rest) || rest[end+1] != '=' {
		f.add(MalformedEncodedWord)
		return "", nil, 0, false
	}
	text := rest[:end]
	n = 2 + q + 1 + 2 + end + 2
	switch enc {
	case 'b':
		var d base64Decoder
		data = d.decode(nil, []byte(text))
		data = d.finish(data)
		if d.invalid {
			f.add(MalformedEncodedWord)
			return "", nil, 0, false
		}
	case 'q':
		data = make([]byte, 0, len(text))
		for i := 0; i < len(text); i++ {
			switch c := text[i]; {
			case c == '_':
				data = append(data, ' ') // RFC 2047 §4.2 (2)
			case c == '=' && i+2 < len(text) && isHex(text[i+1]) && isHex(text[i+2]):
				data = append(data, unhex(text[i+1])<<4|unhex(text[i+2]))
				i += 2
			case c == '=':
				f.add(MalformedEncodedWord)
				data = append(data, c)
			default:
				data = append(data, c)
			}
		}
	default:
		f.add(MalformedEncodedWord)
		return "", nil, 0, false
	}
	return charset, data, n, true
}

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && s[i] != '\t' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
