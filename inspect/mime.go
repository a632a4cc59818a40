package inspect

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The MIME walk (RFC 2046). A multipart body is a sequence of body parts
// separated by delimiter lines "--boundary" and closed by "--boundary--";
// parts nest, each multipart with its own boundary. The walk reads the
// message once, line by line, with a stack of the open multiparts: a line
// that starts with "--" is checked against their boundaries, innermost
// first. A delimiter of an outer multipart also ends every part inside it
// — the inner multipart was never closed — which is how mail clients
// recover from a missing final boundary. Nothing recurses, so 10,000
// nested multiparts cost a loop, not a stack; past MaxNesting a multipart
// is read as a plain leaf.

// mode is what the lines being read belong to.
type mode uint8

const (
	modeHeader   mode = iota // the header section of an entity
	modeBody                 // the body of a leaf part
	modePreamble             // a multipart's preamble, ignored (RFC 2046 §5.1.1)
	modeEpilogue             // after a closing delimiter, ignored but recorded
)

// frame is one open multipart.
type frame struct {
	delim    []byte // "--" + boundary
	path     string // the multipart's Path
	depth    int    // Depth of its children
	children int
	digest   bool // multipart/digest: children default to message/rfc822 (RFC 2046 §5.1.5)
}

// openPart is a part whose end is not known yet.
type openPart struct {
	idx   int // in Content.Parts
	level int // number of frames it is inside
}

// entity is the MIME entity whose header is being read.
type entity struct {
	top         bool
	path        string
	depth       int
	defaultType string
}

// parser holds the state of one ParseContent call.
type parser struct {
	c     *Content
	lim   ContentLimits
	depth Depth
	size  int64
	r     ReaderAt
	lr    *lineReader
	flaws flaws

	mode    mode
	hdr     headerReader
	ent     entity
	frames  []frame
	open    []openPart
	prevEOL int  // line break length of the last line read
	done    bool // nothing more to learn from the rest of the input
	stopped bool // a limit stopped the walk; unclosed parts are not malformed
	charset string

	sink     *textSink
	sinkPart int
	text     joinedText
	html     joinedText
	htmlText joinedText
	urls     urlSet
}

func newParser(c *Content, r ReaderAt, size int64, depth Depth, lim ContentLimits) *parser {
	p := &parser{c: c, lim: lim, depth: depth, size: size, r: r}
	p.urls = urlSet{max: lim.MaxURLs, flaws: &p.flaws}
	return p
}

// run reads the message to its end, or as far as depth needs.
func (p *parser) run() {
	bufSize := bodyBufSize
	if p.depth == DepthHeaders {
		bufSize = headerBufSize
	}
	p.lr = newLineReader(p.r, p.size, bufSize)
	p.hdr.reset(true, p.lim, &p.flaws)
	p.ent = entity{top: true, path: "1", defaultType: "text/plain"}
	p.mode = modeHeader
	for !p.done {
		frag, eol, start, ok := p.lr.next()
		if !ok {
			break
		}
		lineStart := p.lr.off - int64(len(frag))
		if start && len(p.frames) > 0 && len(frag) >= 2 && frag[0] == '-' && frag[1] == '-' {
			if k, closing := p.matchDelimiter(frag[:len(frag)-eol]); k >= 0 {
				p.delimiter(k, closing, lineStart)
				p.prevEOL = eol
				continue
			}
		}
		switch p.mode {
		case modeHeader:
			if p.hdr.line(frag, eol, start) {
				p.endHeader(lineStart, p.lr.off)
			}
		case modeBody:
			if p.sink != nil {
				p.sink.write(frag, eol)
			}
		case modeEpilogue:
			if len(bytes.TrimSpace(frag)) > 0 {
				p.flaws.add(MalformedEpilogueText)
				if len(p.frames) == 0 {
					// The message's own epilogue: no boundary can follow,
					// so the rest need not be read.
					p.done = true
				}
			}
		}
		p.prevEOL = eol
	}
	if p.lr.err != nil {
		p.flaws.add(MalformedReadError)
	}
	p.finish()
}

// matchDelimiter checks a line against the open boundaries, innermost
// first: "--boundary" or "--boundary--", then only whitespace (RFC 2046
// §5.1.1). Failing that, a closing delimiter with junk after it
// ("--boundary-->") still closes, as it does in Thunderbird; only the
// closing form is read that loosely, so a boundary that is a prefix of
// another cannot split the wrong multipart. It returns the frame index,
// or -1.
func (p *parser) matchDelimiter(line []byte) (k int, closing bool) {
	for k = len(p.frames) - 1; k >= 0; k-- {
		d := p.frames[k].delim
		if !bytes.HasPrefix(line, d) {
			continue
		}
		rest := line[len(d):]
		closing = bytes.HasPrefix(rest, []byte("--"))
		if closing {
			rest = rest[2:]
		}
		if len(bytes.Trim(rest, " \t\r")) == 0 {
			return k, closing
		}
	}
	for k = len(p.frames) - 1; k >= 0; k-- {
		d := p.frames[k].delim
		if bytes.HasPrefix(line, d) && bytes.HasPrefix(line[len(d):], []byte("--")) {
			return k, true
		}
	}
	return -1, false
}

// delimiter handles a delimiter line of frame k starting at offset at.
func (p *parser) delimiter(k int, closing bool, at int64) {
	if p.mode == modeHeader {
		// A part that is all header: its body is empty.
		p.endHeader(at, at)
		if p.done {
			return
		}
	}
	// The line break before a delimiter belongs to it (RFC 2046 §5.1.1).
	p.closeParts(k+1, at-int64(p.prevEOL))
	for len(p.frames) > k+1 {
		p.popUnclosed()
	}
	f := &p.frames[k]
	if closing {
		if f.children == 0 {
			p.flaws.add(MalformedBoundaryNotFound)
		}
		p.frames = p.frames[:k]
		p.mode = modeEpilogue
		return
	}
	if len(p.c.Parts) >= p.lim.MaxParts {
		p.flaws.add(MalformedPartsLimit)
		p.done, p.stopped = true, true
		return
	}
	f.children++
	def := "text/plain"
	if f.digest {
		def = "message/rfc822"
	}
	p.ent = entity{path: f.path + "." + strconv.Itoa(f.children), depth: f.depth, defaultType: def}
	p.hdr.reset(false, p.lim, &p.flaws)
	p.mode = modeHeader
}

// popUnclosed drops the innermost frame, which was never closed.
func (p *parser) popUnclosed() {
	f := p.frames[len(p.frames)-1]
	if f.children == 0 {
		p.flaws.add(MalformedBoundaryNotFound)
	} else {
		p.flaws.add(MalformedFinalBoundary)
	}
	p.frames = p.frames[:len(p.frames)-1]
}

// closeParts ends the open parts inside at least minLevel frames at
// offset end.
func (p *parser) closeParts(minLevel int, end int64) {
	for len(p.open) > 0 && p.open[len(p.open)-1].level >= minLevel {
		op := p.open[len(p.open)-1]
		p.open = p.open[:len(p.open)-1]
		part := &p.c.Parts[op.idx]
		part.Size = max(end-part.Offset, 0)
		if p.sink != nil && p.sinkPart == op.idx {
			p.finishText()
		}
	}
}

// endHeader ends the header section of the current entity: headerEnd is
// where its empty line starts (or the body would), bodyStart where the
// body starts.
func (p *parser) endHeader(headerEnd, bodyStart int64) {
	p.hdr.flush()
	fields := p.hdr.fields
	if p.ent.top {
		p.c.Header = fields
		// Content owns these fields now: the next header section (a MIME
		// part's) must not reuse their array.
		p.hdr.fields = nil
		p.c.HeaderBytes = headerEnd
		m := mimeFieldsOf(fields, &p.flaws)
		if m.hasType {
			// The message's charset is the best guess for raw 8-bit
			// bytes in its header.
			var f flaws
			if _, params := parseContentType(m.contentType, &f); params != nil {
				p.charset = normalizeCharset(params["charset"])
			}
		}
		headerFacts(p.c, p.charset, &p.flaws)
		if p.depth < DepthMIME {
			p.done = true
			return
		}
		p.beginEntity(m, bodyStart)
		return
	}
	p.beginEntity(mimeFieldsOf(fields, &p.flaws), bodyStart)
}

// beginEntity records the part whose header was just read and decides how
// to read its body.
func (p *parser) beginEntity(m mimeFields, bodyStart int64) {
	ent := p.ent
	mediaType, params := ent.defaultType, map[string]string(nil)
	if m.hasType {
		var mt string
		mt, params = parseContentType(m.contentType, &p.flaws)
		if mt != "" {
			mediaType = mt
		} else {
			mediaType = "text/plain" // RFC 2045 §5.2
		}
	}
	charset := normalizeCharset(params["charset"])
	disposition, dparams := dispositionOf(m.disposition, &p.flaws)
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	if name != "" {
		cs := charset
		if cs == "" {
			cs = p.charset
		}
		name = decodeHeaderText(name, cs, &p.flaws)
	}
	enc := transferEncoding(m.encoding, &p.flaws)
	idx := len(p.c.Parts)
	p.c.Parts = append(p.c.Parts, Part{
		Path:        ent.path,
		Depth:       ent.depth,
		ContentType: mediaType,
		Charset:     charset,
		Encoding:    strings.ToLower(strings.TrimSpace(m.encoding)),
		Disposition: disposition,
		Filename:    name,
		Offset:      bodyStart,
	})
	p.open = append(p.open, openPart{idx: idx, level: len(p.frames)})
	p.c.MaxDepth = max(p.c.MaxDepth, ent.depth)

	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		boundary := params["boundary"]
		switch {
		case boundary == "":
			// Nothing can split it; mail clients show it as text.
			p.flaws.add(MalformedBoundaryMissing)
			p.beginLeaf(idx, "text/plain", charset, enc, disposition)
			return
		case ent.depth >= p.lim.MaxNesting:
			p.flaws.add(MalformedNestingLimit)
			p.beginLeaf(idx, mediaType, charset, enc, disposition)
			return
		}
		p.c.Parts[idx].Multipart = true
		p.frames = append(p.frames, frame{
			delim:  append([]byte("--"), boundary...),
			path:   ent.path,
			depth:  ent.depth + 1,
			digest: mediaType == "multipart/digest",
		})
		p.mode = modePreamble
	case (mediaType == "message/rfc822" || mediaType == "message/global") && enc == encIdentity:
		// An attached message: its header and body follow as one more
		// level of nesting (RFC 2046 §5.2.1).
		switch {
		case ent.depth >= p.lim.MaxNesting:
			p.flaws.add(MalformedNestingLimit)
			p.beginLeaf(idx, mediaType, charset, enc, disposition)
			return
		case len(p.c.Parts) >= p.lim.MaxParts:
			p.flaws.add(MalformedPartsLimit)
			p.done, p.stopped = true, true
			return
		}
		p.ent = entity{path: ent.path + ".1", depth: ent.depth + 1, defaultType: "text/plain"}
		p.hdr.reset(false, p.lim, &p.flaws)
		p.mode = modeHeader
	default:
		p.beginLeaf(idx, mediaType, charset, enc, disposition)
	}
}

// beginLeaf starts reading the body of a leaf part, decoding it when it is
// text the rules look at: text/plain and text/html parts that are not
// attachments.
func (p *parser) beginLeaf(idx int, mediaType, charset string, enc uint8, disposition string) {
	p.mode = modeBody
	if p.depth < DepthText || disposition == "attachment" || (mediaType != "text/plain" && mediaType != "text/html") {
		return
	}
	room := p.lim.MaxTextBytes - int64(p.text.Len()+p.html.Len())
	if room <= 0 {
		p.flaws.add(MalformedTextTruncated)
		return
	}
	p.sink = &textSink{html: mediaType == "text/html", enc: enc, charset: charset, max: int(min(room, 1<<30))}
	// The rest of the message bounds the part's text; a single-part
	// message's body is all of it, so its buffer is sized once. A part
	// of a multipart may be followed by much else: start smaller.
	hint := min(room, p.size-p.lr.off+1)
	if len(p.frames) > 0 {
		hint = min(hint, 16<<10)
	}
	if hint > 0 {
		p.sink.out = make([]byte, 0, hint)
	}
	p.sinkPart = idx
}

// finishText converts the text of the part just ended to UTF-8 and adds it
// to Text or HTML, and its links to URLs.
func (p *parser) finishText() {
	s := p.sink
	p.sink = nil
	raw := s.finish(&p.flaws)
	charset := s.charset
	if s.html && charset == "" {
		charset = sniffHTMLCharset(raw)
	}
	if s.full {
		if _, kind := lookupCharset(charset); kind == charsetUTF8 {
			// The cut may have split a character; that is the limit's
			// doing, not the sender's.
			raw = trimPartialRune(raw)
		}
	}
	text, _ := decodeCharsetBuf(raw, charset, &p.flaws, true) // the sink is done with raw
	if strings.Contains(text, "\r\n") {
		// Line breaks inside base64 are the sender's CRLFs; Text uses
		// "\n" throughout, so rules match the same text however it was
		// encoded.
		text = strings.ReplaceAll(text, "\r\n", "\n")
	}
	room := int(p.lim.MaxTextBytes) - p.text.Len() - p.html.Len() - 1
	if len(text) > room {
		text = truncateUTF8(text, max(room, 0))
		p.flaws.add(MalformedTextTruncated)
	}
	if text == "" {
		return
	}
	if !s.html {
		appendJoined(&p.text, text)
		p.urls.scanText(text)
		return
	}
	appendJoined(&p.html, text)
	room = int(p.lim.MaxTextBytes) - p.htmlText.Len() - 1
	visible, truncated := htmlText(text, &p.urls, max(room, 0))
	if truncated {
		p.flaws.add(MalformedTextTruncated)
	}
	p.urls.scanText(visible)
	appendJoined(&p.htmlText, visible)
}

// appendJoined adds a part's text, joining parts with "\n".
func appendJoined(b *joinedText, s string) {
	switch {
	case s == "":
	case b.Len() == 0:
		b.one = s
	default:
		if b.buf == nil {
			b.buf = make([]byte, 0, len(b.one)+1+len(s))
			b.buf = append(b.buf, b.one...)
			b.one = ""
		}
		b.buf = append(b.buf, '\n')
		b.buf = append(b.buf, s...)
	}
}

// joinedText is the text of a message's parts, joined by appendJoined.
// Most messages have one text part: it is kept as it is, not copied.
type joinedText struct {
	one string // the only part so far
	buf []byte // two or more parts
}

func (b *joinedText) Len() int { return len(b.one) + len(b.buf) }

func (b *joinedText) String() string {
	if b.buf != nil {
		return string(b.buf)
	}
	return b.one
}

// trimPartialRune drops an incomplete UTF-8 sequence at the end of b.
func trimPartialRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// finish ends the walk at the end of the input (or where a limit stopped
// it): the entity being read ends there, with every part and multipart
// still open.
func (p *parser) finish() {
	if p.mode == modeHeader && !p.done {
		p.endHeader(p.size, p.size)
	}
	if p.sink != nil && !p.stopped {
		// No delimiter follows the last line: its break is content.
		p.sink.endOfInput()
	}
	p.closeParts(0, p.size)
	if p.sink != nil {
		p.finishText()
	}
	for len(p.frames) > 0 {
		if p.stopped {
			p.frames = p.frames[:0]
			break
		}
		p.popUnclosed()
	}
	p.c.Text = p.text.String()
	p.c.HTML = p.html.String()
	p.c.HTMLText = p.htmlText.String()
	p.c.URLs = p.urls.list
}
