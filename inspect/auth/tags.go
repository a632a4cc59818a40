package auth

import (
	"errors"
	"strings"
)

// Tag is one tag=value pair of a tag list.
type Tag struct {
	Name  string
	Value string // folding whitespace at either end removed
}

// Tags is a parsed tag list, in the order written.
type Tags []Tag

// Get returns the value of the tag name and whether it is present. Tag
// names are case-sensitive (RFC 6376 §3.2).
func (t Tags) Get(name string) (string, bool) {
	for _, tg := range t {
		if tg.Name == name {
			return tg.Value, true
		}
	}
	return "", false
}

// Errors of ParseTags.
var (
	errTagSyntax    = errors.New("malformed tag list")
	errTagDuplicate = errors.New("duplicate tag in tag list")
	errTagTooMany   = errors.New("too many tags in tag list")
)

// maxTags bounds a tag list: DKIM-Signature, ARC-Seal and DMARC records
// define fewer than twenty tags each, so anything far beyond is hostile.
const maxTags = 64

// ParseTags parses a tag list (RFC 6376 §3.2), the syntax of
// DKIM-Signature, ARC-Seal, ARC-Message-Signature and DKIM key records:
//
//	tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
//	tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//
// A tag name that occurs twice makes the whole list invalid (§3.2). The
// value keeps its inner whitespace (b= and h= values are unfolded by
// their users); a value of other than VALCHAR and whitespace is refused.
func ParseTags(s string) (Tags, error) {
	var out Tags
	for len(s) > 0 {
		var spec string
		if i := strings.IndexByte(s, ';'); i >= 0 {
			spec, s = s[:i], s[i+1:]
		} else {
			spec, s = s, ""
		}
		if isFWSOnly(spec) {
			if len(s) == 0 {
				break // a trailing ";" is allowed
			}
			return nil, errTagSyntax
		}
		eq := strings.IndexByte(spec, '=')
		if eq < 0 {
			return nil, errTagSyntax
		}
		name := trimFWS(spec[:eq])
		if !validTagName(name) {
			return nil, errTagSyntax
		}
		value := trimFWS(spec[eq+1:])
		if !validTagValue(value) {
			return nil, errTagSyntax
		}
		if _, dup := out.Get(name); dup {
			return nil, errTagDuplicate
		}
		if len(out) == maxTags {
			return nil, errTagTooMany
		}
		out = append(out, Tag{Name: name, Value: value})
	}
	return out, nil
}

func isFWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func isFWSOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isFWS(s[i]) {
			return false
		}
	}
	return true
}

func trimFWS(s string) string {
	for len(s) > 0 && isFWS(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isFWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// validTagName: ALPHA *ALNUMPUNC, where ALNUMPUNC is ALPHA / DIGIT / "_".
func validTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !('0' <= c && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'A' <= c&^0x20 && c&^0x20 <= 'Z' }

// validTagValue: VALCHAR (%x21-3A / %x3C-7E) separated by whitespace.
func validTagValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isFWS(c) {
			continue
		}
		if c < 0x21 || c > 0x7e || c == ';' {
			return false
		}
	}
	return true
}

// StripFWS removes all folding whitespace from a tag value: the form in
// which base64 values (b=, bh=, p=) and colon lists (h=) are used.
func StripFWS(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x80 && isFWS(byte(r)) }) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if !isFWS(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
