package inspect

import (
	"bytes"
	"strings"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/unicode"
)

// Charsets. Mail still arrives in the legacy charsets of every language —
// ISO-8859-x, windows-125x, KOI8-R, GB2312/GBK/GB18030, Big5, Shift_JIS,
// EUC-JP, ISO-2022-JP, EUC-KR — and a spam filter that cannot read them is
// blind to most of the world's spam. Those decoders are tables and state
// machines that must not be written by hand, so they come from
// golang.org/x/text, the Go team's own module. Labels are mapped the way
// browsers map them (the WHATWG Encoding Standard, htmlindex), which
// already knows the aliases mailers write ("latin1", "gb2312",
// "ks_c_5601-1987", "x-sjis"), with the IANA registry (ianaindex) as a
// second chance for names browsers dropped (IBM code pages, "cp850").

// charsetKind says how a charset label was understood.
type charsetKind uint8

const (
	charsetUTF8    charsetKind = iota // utf-8, us-ascii or none: check UTF-8, else Latin-1
	charsetKnown                      // decoded with enc
	charsetUnknown                    // a label moat cannot decode
)

// lookupCharset maps a charset label (any case, perhaps quoted, perhaps
// with an RFC 2231 language suffix) to a decoder.
func lookupCharset(label string) (encoding.Encoding, charsetKind) {
	label = normalizeCharset(label)
	switch label {
	case "", "utf-8", "utf8", "us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us", "7bit", "8bit", "unicode-1-1-utf-8":
		// us-ascii text with 8-bit bytes is nearly always undeclared
		// UTF-8 or Latin-1; WHATWG's windows-1252 for "us-ascii" would
		// turn the UTF-8 into mojibake.
		return nil, charsetUTF8
	case "utf-16", "unicode":
		// Byte order from the BOM; decodeCharset guesses it when there
		// is none.
		return unicode.UTF16(unicode.BigEndian, unicode.UseBOM), charsetKnown
	case "utf-16be":
		return unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM), charsetKnown
	case "utf-16le":
		return unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM), charsetKnown
	}
	if enc, err := htmlindex.Get(label); err == nil && enc != nil {
		if enc == encoding.Replacement {
			// WHATWG maps ISO-2022-KR and HZ to a decoder that turns the
			// whole text into one U+FFFD; better to guess.
			return nil, charsetUnknown
		}
		return enc, charsetKnown
	}
	for _, idx := range []*ianaindex.Index{ianaindex.MIME, ianaindex.IANA} {
		if enc, err := idx.Encoding(label); err == nil && enc != nil {
			return enc, charsetKnown
		}
	}
	return nil, charsetUnknown
}

// normalizeCharset lower-cases a label and strips quotes, whitespace and
// an RFC 2231 §5 language suffix ("utf-8*en").
func normalizeCharset(label string) string {
	label = strings.ToLower(strings.Trim(label, " \t\"'"))
	// 'charset="charset=us-ascii"' is a mailer bug seen in the wild.
	label = strings.TrimPrefix(label, "charset=")
	if i := strings.IndexByte(label, '*'); i >= 0 {
		label = label[:i]
	}
	return label
}

// decodeCharset converts b from charset label to valid UTF-8. Text in an
// unknown charset is taken as UTF-8 when it is valid UTF-8, else as
// Latin-1 (as windows-1252, its superset that mailers really mean), and
// charset_unknown recorded; bytes invalid in their charset become U+FFFD
// and charset_invalid is recorded. ok is false when the charset was not
// understood.
func decodeCharset(b []byte, label string, f *flaws) (s string, ok bool) {
	return decodeCharsetBuf(b, label, f, false)
}

// decodeCharsetBuf is decodeCharset; with owned, b is the caller's to
// give away (never written again), and text that needs no conversion is
// returned as a string over b instead of a copy of it.
func decodeCharsetBuf(b []byte, label string, f *flaws, owned bool) (s string, ok bool) {
	same := func() string {
		if owned {
			return unsafe.String(unsafe.SliceData(b), len(b))
		}
		return string(b)
	}
	enc, kind := lookupCharset(label)
	switch kind {
	case charsetUTF8:
		if utf8.Valid(b) {
			return same(), true
		}
		if l := normalizeCharset(label); l == "utf-8" || l == "utf8" {
			f.add(MalformedCharsetInvalid)
			return strings.ToValidUTF8(string(b), "\uFFFD"), true
		}
		return latin1(b), true
	case charsetUnknown:
		f.add(MalformedCharsetUnknown)
		if utf8.Valid(b) {
			return string(b), false
		}
		return latin1(b), false
	}
	if l := normalizeCharset(label); (l == "utf-16" || l == "unicode") && littleEndianUTF16(b) {
		enc = unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
	}
	if isASCII(b) && asciiCompatible(enc) {
		return same(), true
	}
	out, err := enc.NewDecoder().Bytes(b)
	if err != nil {
		f.add(MalformedCharsetInvalid)
		return latin1(b), true
	}
	if !utf8.Valid(out) {
		f.add(MalformedCharsetInvalid)
		return strings.ToValidUTF8(string(out), "\uFFFD"), true
	}
	if bytesContainReplacement(out) && !bytesContainReplacement(b) {
		f.add(MalformedCharsetInvalid)
	}
	return string(out), true
}

// latin1 decodes b as windows-1252, which cannot fail.
func latin1(b []byte) string {
	out, err := charmap.Windows1252.NewDecoder().Bytes(b)
	if err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return string(out)
}

// asciiCompatible reports whether enc decodes ASCII bytes to themselves,
// so pure-ASCII text needs no conversion. UTF-16 and the ISO-2022
// escape-based charsets are the exceptions that matter: ASCII bytes are
// not ASCII text in UTF-16, and ISO-2022-JP text is pure 7-bit.
func asciiCompatible(enc encoding.Encoding) bool {
	name, err := htmlindex.Name(enc)
	return err == nil && !strings.HasPrefix(name, "utf-16") && !strings.HasPrefix(name, "iso-2022")
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func bytesContainReplacement(b []byte) bool {
	return bytes.Contains(b, []byte("\uFFFD"))
}

func validUTF8(s string) bool { return utf8.ValidString(s) }

// littleEndianUTF16 guesses the byte order of UTF-16 text without a byte
// order mark. RFC 2781 §4.3 says big-endian, but Windows mailers send
// little-endian; in either, text in Latin scripts has its zero bytes on
// one side, which tells.
func littleEndianUTF16(b []byte) bool {
	if len(b) >= 2 && (b[0] == 0xFE && b[1] == 0xFF || b[0] == 0xFF && b[1] == 0xFE) {
		return false // the BOM decides
	}
	var even, odd int
	for i := 0; i+1 < len(b) && i < 4096; i += 2 {
		if b[i] == 0 {
			even++
		}
		if b[i+1] == 0 {
			odd++
		}
	}
	return odd > even
}
