package inspect

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// HTML parts are read with the tokenizer of golang.org/x/net/html (the Go
// team's HTML5 tokenizer, already in moat's module graph), not its tree
// builder. The tokenizer knows what a hand-written tag stripper gets
// wrong and spam exploits: raw-text elements (a "<" inside <script> or
// <style> is not a tag), comments including the abrupt and bogus forms,
// unquoted and entity-encoded attribute values, and the full HTML5 entity
// table. It streams and allocates little; the tree builder would add the
// adoption-agency work and a DOM that moat does not need.

// htmlText returns the visible text of an HTML document — text outside
// <script>, <style>, <title>, <template>, <iframe> and comments, entities decoded,
// whitespace collapsed, a line break for each block element — at most
// limit bytes, and feeds the links of its href, src, action and background
// attributes to urls.
func htmlText(doc string, urls *urlSet, limit int) (text string, truncated bool) {
	z := html.NewTokenizer(strings.NewReader(doc))
	var w textWriter
	w.b.Grow(min(len(doc)/2, limit))
	hidden := 0 // inside <script>, <style>, <title>, <template> or <iframe>
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return w.String(), w.truncated
		case html.TextToken:
			if hidden == 0 {
				w.write(z.Text(), limit)
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			tag := atom.Lookup(name) // no allocation per tag
			for hasAttr {
				var key, val []byte
				key, val, hasAttr = z.TagAttr()
				switch string(key) {
				case "href", "src", "action", "background":
					urls.addLink(string(val))
				}
			}
			switch tag {
			case atom.Script, atom.Style, atom.Title, atom.Template, atom.Iframe:
				if tt == html.StartTagToken {
					hidden++
				}
			case atom.Noscript, atom.Noembed, atom.Noframes:
				// Mail clients run no scripts and embed nothing, so the
				// fallback content is what the reader sees: tokenize it
				// as markup, not raw text.
				z.NextIsNotRawText()
			}
			if blockElement(tag) {
				w.newline()
			} else if tag == atom.Td || tag == atom.Th || tag == atom.Img {
				w.space = true
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			switch tag := atom.Lookup(name); tag {
			case atom.Script, atom.Style, atom.Title, atom.Template, atom.Iframe:
				if hidden > 0 {
					hidden--
				}
			default:
				if blockElement(tag) {
					w.newline()
				}
			}
		}
	}
}

// blockElement reports whether a tag breaks the line in rendered text.
func blockElement(tag atom.Atom) bool {
	switch tag {
	case atom.Br, atom.P, atom.Div, atom.Tr, atom.Li, atom.Ul, atom.Ol, atom.Table,
		atom.Blockquote, atom.Hr, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6,
		atom.Pre, atom.Dd, atom.Dt, atom.Dl, atom.Center, atom.Section, atom.Article,
		atom.Header, atom.Footer, atom.Address, atom.Form, atom.Body, atom.Html:
		return true
	}
	return false
}

// textWriter accumulates rendered text, collapsing whitespace the way a
// browser does: runs of spaces become one space, line breaks from block
// elements one newline.
type textWriter struct {
	b         strings.Builder
	space     bool // a space is owed before the next word
	nl        bool // a newline is owed before the next word
	truncated bool
}

func (w *textWriter) write(p []byte, limit int) {
	for len(p) > 0 {
		// A word: everything up to the next whitespace.
		n := 0
		for n < len(p) && !htmlSpace(p[n:]) {
			if p[n] < utf8.RuneSelf {
				n++
			} else {
				_, size := utf8.DecodeRune(p[n:])
				n += size
			}
		}
		if n > 0 {
			sep := 0
			if w.b.Len() > 0 && (w.nl || w.space) {
				sep = 1
			}
			if w.b.Len()+sep+n > limit {
				w.truncated = true
				return
			}
			if sep > 0 {
				if w.nl {
					w.b.WriteByte('\n')
				} else {
					w.b.WriteByte(' ')
				}
			}
			w.nl, w.space = false, false
			w.b.Write(p[:n])
			p = p[n:]
		}
		// The whitespace after it.
		for len(p) > 0 && htmlSpace(p) {
			w.space = true
			if p[0] < utf8.RuneSelf {
				p = p[1:]
			} else {
				p = p[2:] // U+00A0 is two bytes
			}
		}
	}
}

// htmlSpace reports whether p starts with whitespace as a browser
// renders it, counting the no-break space (&nbsp;) in: it separates words
// all the same.
func htmlSpace(p []byte) bool {
	switch p[0] {
	case ' ', '\t', '\n', '\r', '\f':
		return true
	case 0xC2:
		return len(p) > 1 && p[1] == 0xA0
	}
	return false
}

func (w *textWriter) newline() { w.nl = true }

func (w *textWriter) String() string { return w.b.String() }
