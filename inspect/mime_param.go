package inspect

import (
	"mime"
	"sort"
	"strconv"
	"strings"
)

// parseContentType parses a Content-Type value (RFC 2045 §5.1). An invalid
// or empty media type is returned as "" with mime_content_type recorded;
// the caller then assumes the default (RFC 2045 §5.2).
func parseContentType(v string, f *flaws) (mediaType string, params map[string]string) {
	value, params := parseMIMEValue(v, f)
	mt, clean := cleanMediaType(value)
	if !clean {
		f.add(MalformedContentType)
	}
	return mt, params
}

// cleanMediaType validates "type/subtype". Trailing junk after a valid
// type ("text/plain>") is cut off, as mail clients do; clean is false
// whenever something had to be cut or nothing valid was found.
func cleanMediaType(v string) (mt string, clean bool) {
	i := 0
	for i < len(v) && (isTokenChar(v[i]) || v[i] == '/') {
		i++
	}
	mt = v[:i]
	slash := strings.IndexByte(mt, '/')
	if slash <= 0 || slash == len(mt)-1 || strings.Count(mt, "/") != 1 {
		return "", false
	}
	return mt, i == len(v)
}

// parseMIMEValue parses a value with parameters, as in Content-Type and
// Content-Disposition: the value proper, lower-cased, and the parameters
// with lower-cased names and decoded values. mime.ParseMediaType does the
// well-formed ones; it refuses real-world breakage (unquoted tspecials,
// duplicate parameters, an unclosed quote, a missing ";") and decodes RFC
// 2231 values only in UTF-8 and ASCII, so those go to a lenient parser
// that records what it had to forgive.
func parseMIMEValue(v string, f *flaws) (string, map[string]string) {
	if !strings.Contains(v, "*") {
		if mt, params, err := mime.ParseMediaType(v); err == nil {
			if strings.Count(v, "=") > len(params) {
				// mime.ParseMediaType lets a parameter repeat with the
				// same value; a fact all the same. (Or an "=" is quoted:
				// the lenient reading tells which.)
				var g flaws
				lenientMIMEValue(v, &g)
				if g.has(MalformedParamDuplicate) {
					f.add(MalformedParamDuplicate)
				}
			}
			return mt, params
		}
		before := len(f.list)
		value, params := lenientMIMEValue(v, f)
		if len(f.list) == before {
			// mime.ParseMediaType saw a problem the lenient reading
			// forgave silently. If the value itself is fine the problem
			// was in the parameters; a bad media type is the caller's
			// to record.
			if _, clean := cleanMediaType(value); clean || isToken(value) {
				f.add(MalformedParamSyntax)
			}
		}
		return value, params
	}
	return lenientMIMEValue(v, f)
}

// A segment is one piece of an RFC 2231 parameter: name*N or name*N*.
type segment struct {
	index   int
	value   string
	encoded bool // percent-encoded, the first one with charset'language'
}

// maxSegments bounds the RFC 2231 continuations of one parameter.
const maxSegments = 1000

// lenientMIMEValue reads a parameterised value the way mail clients do:
// parameters may lack the ";" before them or a closing quote, carry
// tspecials unquoted, or repeat (the first wins). RFC 2231 continuations
// and charsets are decoded (§3, §4).
func lenientMIMEValue(v string, f *flaws) (string, map[string]string) {
	v = strings.TrimSpace(v)
	end := strings.IndexAny(v, "; \t")
	if end < 0 {
		end = len(v)
	}
	value := strings.ToLower(v[:end])
	s := v[end:]
	params := make(map[string]string)
	var ext map[string][]segment
	var bare []string
	first := true
	for {
		t := strings.TrimLeft(s, " \t")
		if t == "" {
			break
		}
		if t[0] != ';' && !first {
			f.add(MalformedParamSyntax) // "application/pdf name=x": no ";"
		}
		first = false
		s = strings.TrimLeft(t, " \t;")
		if s == "" {
			break
		}
		i := strings.IndexAny(s, "=; \t")
		if i < 0 {
			i = len(s)
		}
		name := strings.ToLower(s[:i])
		s = strings.TrimLeft(s[i:], " \t")
		if s == "" || s[0] != '=' {
			// A parameter without a value ("text/html;iso-8859-1").
			f.add(MalformedParamSyntax)
			bare = append(bare, name)
			continue
		}
		s = strings.TrimLeft(s[1:], " \t")
		var val string
		if s != "" && s[0] == '"' {
			var ok bool
			val, s, ok = quotedString(s)
			if !ok {
				f.add(MalformedParamSyntax)
			}
		} else {
			j := strings.IndexByte(s, ';')
			if j < 0 {
				j = len(s)
			}
			val = strings.TrimSpace(s[:j])
			s = s[j:]
			if !isToken(val) {
				// tspecials or spaces in an unquoted value
				// (RFC 2045 §5.1 says quote them).
				f.add(MalformedParamSyntax)
			}
		}
		if name == "" || !isToken(strings.ReplaceAll(name, "*", "")) {
			f.add(MalformedParamSyntax)
			continue
		}
		if star := strings.IndexByte(name, '*'); star >= 0 {
			if ext == nil {
				ext = make(map[string][]segment)
			}
			base, sect := name[:star], name[star+1:]
			seg := segment{value: val, encoded: strings.HasSuffix(sect, "*") || sect == ""}
			if n := strings.TrimSuffix(sect, "*"); n != "" {
				idx, err := strconv.Atoi(n)
				if err != nil || idx < 0 || idx >= maxSegments {
					f.add(MalformedParamSyntax)
					continue
				}
				seg.index = idx
			}
			if len(ext[base]) >= maxSegments {
				continue
			}
			ext[base] = append(ext[base], seg)
			continue
		}
		if _, dup := params[name]; dup {
			f.add(MalformedParamDuplicate)
			continue
		}
		params[name] = val
	}
	for base, segs := range ext {
		params[base] = joinSegments(segs, f)
	}
	// "text/html; iso-8859-1": a bare charset name is what was meant.
	if _, ok := params["charset"]; !ok {
		for _, b := range bare {
			if _, kind := lookupCharset(b); kind == charsetKnown {
				params["charset"] = b
				break
			}
		}
	}
	return value, params
}

// joinSegments assembles an RFC 2231 parameter from its pieces in index
// order and decodes it from its charset.
func joinSegments(segs []segment, f *flaws) string {
	sort.SliceStable(segs, func(i, j int) bool { return segs[i].index < segs[j].index })
	var raw []byte
	charset := ""
	for i, seg := range segs {
		if i > 0 && seg.index == segs[i-1].index {
			f.add(MalformedParamDuplicate)
			continue
		}
		val := seg.value
		if seg.encoded {
			if i == 0 {
				// charset'language'value (RFC 2231 §4)
				if parts := strings.SplitN(val, "'", 3); len(parts) == 3 {
					charset, val = parts[0], parts[2]
				}
			}
			raw = append(raw, percentDecode(val, f)...)
		} else {
			raw = append(raw, val...)
		}
	}
	s, _ := decodeCharset(raw, charset, f)
	return s
}

// percentDecode decodes %XX escapes; a "%" without two hex digits stays.
func percentDecode(s string, f *flaws) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
				i += 2
				continue
			}
			f.add(MalformedParamSyntax)
		}
		out = append(out, s[i])
	}
	return out
}

// quotedString reads a quoted-string at the start of s (RFC 5322 §3.2.4),
// returning its content unescaped and what follows. An unclosed quote runs
// to the end and ok is false.
func quotedString(s string) (val, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(s[i])
		}
	}
	return strings.TrimSpace(b.String()), "", false
}

// isTokenChar reports whether c may appear in an RFC 2045 token: printable
// ASCII except space and tspecials.
func isTokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// dispositionOf parses a Content-Disposition (RFC 2183): "inline",
// "attachment" or "" when absent. Unknown types count as attachment
// (RFC 2183 §2.8).
func dispositionOf(v string, f *flaws) (disposition string, params map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "", nil
	}
	value, params := parseMIMEValue(v, f)
	switch value {
	case "inline", "attachment":
		return value, params
	case "":
		return "", params
	}
	return "attachment", params
}
