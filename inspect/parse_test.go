package inspect

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// corpusDir holds the third-party test mail (origin, commit and licence of
// every file in testdata/SOURCES.md).
const corpusDir = "testdata/mail"

// corpusFiles lists every file of the mail corpus.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(corpusDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("mail corpus: %v", err)
	}
	if len(files) < 150 {
		t.Fatalf("mail corpus: only %d files under %s", len(files), corpusDir)
	}
	return files
}

// parse parses msg at depth with the default limits.
func parse(msg string, depth Depth) *Content {
	return ParseContent(strings.NewReader(msg), int64(len(msg)), depth, DefaultContentLimits())
}

// checkContent asserts the properties every parse must have, whatever the
// input: the depth asked for, parts inside the input, URLs with hosts,
// valid UTF-8 everywhere text is exposed, no recovered panic.
func checkContent(t testing.TB, c *Content, size int64, depth Depth) {
	t.Helper()
	if c.Depth != depth {
		t.Errorf("Depth = %v, want %v", c.Depth, depth)
	}
	if slices.Contains(c.Malformed, MalformedParserPanic) {
		t.Errorf("parser panicked: %v", c.Malformed)
	}
	if c.HeaderBytes < 0 || c.HeaderBytes > size {
		t.Errorf("HeaderBytes = %d outside [0, %d]", c.HeaderBytes, size)
	}
	for _, p := range c.Parts {
		if p.Size < 0 || p.Offset < 0 || p.Offset+p.Size > size {
			t.Errorf("part %s: offset %d size %d outside input of %d bytes", p.Path, p.Offset, p.Size, size)
		}
		if !utf8.ValidString(p.Filename) {
			t.Errorf("part %s: filename %q is not UTF-8", p.Path, p.Filename)
		}
	}
	for _, u := range c.URLs {
		if u.Host == "" {
			t.Errorf("URL %q without host", u.Raw)
		}
	}
	for name, s := range map[string]string{"Text": c.Text, "HTML": c.HTML, "HTMLText": c.HTMLText, "Subject": c.Subject} {
		if !utf8.ValidString(s) {
			t.Errorf("%s is not valid UTF-8", name)
		}
	}
	for _, h := range c.Header {
		if !utf8.ValidString(h.Decoded) {
			t.Errorf("header %s: decoded value is not UTF-8", h.Name)
		}
	}
	for _, list := range [][]Address{c.From, c.Sender, c.ReplyTo, c.To, c.Cc} {
		for _, a := range list {
			if !utf8.ValidString(a.Name) || !utf8.ValidString(a.Addr) {
				t.Errorf("address %q <%q> is not UTF-8", a.Name, a.Addr)
			}
		}
	}
	if depth < DepthMIME && (len(c.Parts) > 0 || c.Text != "" || c.HTML != "") {
		t.Errorf("depth %v: parts or text parsed", depth)
	}
	if depth < DepthText && (c.Text != "" || c.HTML != "" || len(c.URLs) > 0) {
		t.Errorf("depth %v: text parsed", depth)
	}
}

func TestCorpusParsesAtEveryDepth(t *testing.T) {
	for _, file := range corpusFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, depth := range []Depth{DepthNone, DepthHeaders, DepthMIME, DepthText} {
			c := ParseContent(bytes.NewReader(b), int64(len(b)), depth, DefaultContentLimits())
			checkContent(t, c, int64(len(b)), depth)
		}
	}
}

// A handful of corpus messages, with what they say about themselves.
func TestCorpusFacts(t *testing.T) {
	type part struct{ path, contentType, charset, disposition, filename string }
	tests := []struct {
		file      string
		subject   string
		from      []string // Name <Addr> of each From address
		parts     []part   // checked when set: a prefix of Parts
		text      string   // substring of Text
		htmlText  string   // substring of HTMLText
		malformed []string // exactly, in order
	}{
		{
			file:    "enmime/mail/qp-utf8-header.raw",
			subject: "MIME UTF8 Test \u00a2 More Text",
			from:    []string{"James Hillyerd <jamehi03@jamehi03lx.noa.com>", "André Pirard <PIRARD@vm1.ulg.ac.be>"},
			parts: []part{
				{"1", "multipart/alternative", "", "", ""},
				{"1.1", "text/plain", "iso-8859-1", "", ""},
				{"1.2", "text/html", "iso-8859-1", "", ""},
			},
			text:      "Lorem ipsum dolor sit amet",
			malformed: []string{},
		},
		{
			file:    "enmime/mail/attachment.raw",
			subject: "Attachment",
			parts: []part{
				{"1", "multipart/mixed", "", "", ""},
				{"1.1", "text/plain", "us-ascii", "", ""},
				{"1.2", "text/html", "", "attachment", "test.html"},
			},
			text:      "A text section",
			malformed: []string{},
		},
		{
			file:      "enmime/mail/mime-unquoted-tspecials-param.raw",
			parts:     []part{{"1", "multipart/mixed", "", "", ""}, {"1.1", "text/plain", "", "", ""}, {"1.2", "application/pdf", "", "attachment", "Invoice_(302232133150612).pdf"}},
			malformed: []string{MalformedParamSyntax},
		},
		{
			file:      "enmime/mail/mime-bad-8bit-filename.raw",
			parts:     []part{{"1", "multipart/mixed", "", "", ""}, {"1.1", "text/plain", "us-ascii", "", ""}, {"1.2", "application/msword", "", "attachment", "管理.doc"}},
			malformed: []string{MalformedParamSyntax},
		},
		{
			file:      "enmime/mail/multipart-wo-boundary.raw",
			subject:   "Delivery Status Notification (Failure)",
			parts:     []part{{"1", "multipart/report", "", "", ""}},
			text:      "multipart message without boundary",
			malformed: []string{MalformedBoundaryMissing},
		},
		{
			file:      "enmime/low-quality/bad-header-wrap.raw",
			parts:     []part{{"1", "multipart/mixed", "", "", ""}, {"1.1", "text/plain", "us-ascii", "", ""}, {"1.2", "application/x-zip-compressed", "", "attachment", "7DDA4_foo_9E5D72.zip"}},
			malformed: []string{MalformedHeaderSyntax},
		},
		{
			file:      "enmime/low-quality/bad-header-start.raw",
			subject:   "plain text",
			from:      []string{"James Hillyerd <james@makita.skynet>"},
			text:      "A text section",
			malformed: []string{MalformedHeaderSyntax},
		},
		{
			file:      "enmime/low-quality/unk-charset-part.raw",
			parts:     []part{{"1", "multipart/mixed", "", "", ""}, {"1.1", "text/plain", "fakescii", "", ""}},
			text:      "A text section",
			malformed: []string{MalformedCharsetUnknown},
		},
		{
			file:      "enmime/mail/epilogue-sample.raw",
			parts:     []part{{"1", "multipart/mixed", "", "", ""}, {"1.1", "text/plain", "us-ascii", "", ""}, {"1.2", "text/html", "", "attachment", "test.html"}},
			malformed: []string{MalformedEpilogueText},
		},
		{
			file:      "enmime/parts/multimixed-no-closing-boundary.raw",
			htmlText:  "Hello,",
			malformed: []string{MalformedFinalBoundary},
		},
		{
			file:      "enmime/parts/extra-base64-character.raw",
			text:      "Hello World!",
			malformed: []string{MalformedBase64},
		},
		{
			file:      "enmime/parts/quoted-printable-invalid.raw",
			text:      "Stuffs’s Weekly Summary",
			malformed: []string{MalformedQuotedPrintable},
		},
		{
			file:      "enmime/parts/ctype-invalid-characters.raw",
			parts:     []part{{"1", "text/plain", "", "", ""}},
			text:      "Test of text/plain section with invalid content type",
			malformed: []string{MalformedContentType},
		},
		{
			file:      "enmime/mail/html-mime-inline.raw",
			parts:     []part{{"1", "multipart/alternative", "", "", ""}, {"1.1", "text/plain", "us-ascii", "", ""}, {"1.2", "multipart/related", "", "", ""}, {"1.2.1", "text/html", "us-ascii", "", ""}, {"1.2.2", "image/png", "", "inline", "favicon.png"}},
			htmlText:  "Test of HTML section",
			malformed: []string{},
		},
		{
			file:    "spamassassin/nice/cjk/gb2312.1",
			subject: "全新原装进口，送货上门，货到付款－台湾鑫龙商贸集团公司向您拜年!",
			from:    []string{"台湾鑫龙商贸集团公司 <1234@e34.com>"},
			text:    "本公司长期经销电脑配件",
			// The From display name is raw GB2312, which net/mail refuses.
			malformed: []string{MalformedHeader8bit, MalformedAddressSyntax},
		},
		{
			file:    "spamassassin/nice/cjk/big5-base64.1",
			subject: "[SLAT-talk] 鉅靡6月17日新片又到.如有重複寄發.敬請原諒!",
		},
		{
			file:      "spamassassin/spam/utf16.eml",
			subject:   "Design and manufacturing",
			parts:     []part{{"1", "multipart/related", "", "", ""}, {"1.1", "multipart/alternative", "", "", ""}, {"1.1.1", "text/plain", "utf-16", "", ""}},
			text:      "Dear potencial partner,",
			htmlText:  "We are professional in engineering",
			malformed: []string{MalformedParamSyntax},
		},
		{
			file:      "spamassassin/spam/badmime3.txt",
			parts:     []part{{"1", "multipart/alternative", "", "", ""}},
			malformed: []string{MalformedBoundaryNotFound},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(corpusDir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			c := ParseContent(bytes.NewReader(b), int64(len(b)), DepthText, DefaultContentLimits())
			checkContent(t, c, int64(len(b)), DepthText)
			if tt.subject != "" && !strings.HasPrefix(c.Subject, tt.subject) {
				t.Errorf("Subject = %q, want %q", c.Subject, tt.subject)
			}
			if tt.from != nil {
				var got []string
				for _, a := range c.From {
					got = append(got, a.Name+" <"+a.Addr+">")
				}
				if !slices.Equal(got, tt.from) {
					t.Errorf("From = %q, want %q", got, tt.from)
				}
			}
			if len(c.Parts) < len(tt.parts) {
				t.Fatalf("%d parts, want at least %d: %+v", len(c.Parts), len(tt.parts), c.Parts)
			}
			for i, want := range tt.parts {
				p := c.Parts[i]
				got := part{p.Path, p.ContentType, p.Charset, p.Disposition, p.Filename}
				if got != want {
					t.Errorf("part %d = %+v, want %+v", i, got, want)
				}
			}
			if !strings.Contains(c.Text, tt.text) {
				t.Errorf("Text = %q, want it to contain %q", c.Text, tt.text)
			}
			if !strings.Contains(c.HTMLText, tt.htmlText) {
				t.Errorf("HTMLText = %q, want it to contain %q", c.HTMLText, tt.htmlText)
			}
			if tt.malformed != nil && !slices.Equal(c.Malformed, tt.malformed) && !(len(c.Malformed) == 0 && len(tt.malformed) == 0) {
				t.Errorf("Malformed = %q, want %q", c.Malformed, tt.malformed)
			}
		})
	}
}

// countingReaderAt counts the bytes read and the furthest offset reached.
type countingReaderAt struct {
	r     io.ReaderAt
	bytes atomic.Int64
	end   atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	if e := off + int64(n); e > c.end.Load() {
		c.end.Store(e)
	}
	return n, err
}

func TestDepthHonoured(t *testing.T) {
	header := "From: a@example.com\r\nSubject: depth\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	body := "--b\r\nContent-Type: text/plain\r\n\r\nhello http://example.com/\r\n--b\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n", 200_000) + "--b--\r\n"
	msg := header + body
	tests := []struct {
		depth    Depth
		maxRead  int64 // bytes the parse may read
		parts    int
		wantText bool
	}{
		{DepthNone, 0, 0, false},
		{DepthHeaders, int64(len(header)) + 2*headerBufSize, 0, false},
		{DepthMIME, int64(len(msg)), 3, false},
		{DepthText, int64(len(msg)), 3, true},
	}
	for _, tt := range tests {
		r := &countingReaderAt{r: strings.NewReader(msg)}
		c := ParseContent(r, int64(len(msg)), tt.depth, DefaultContentLimits())
		checkContent(t, c, int64(len(msg)), tt.depth)
		if got := r.bytes.Load(); got > tt.maxRead {
			t.Errorf("depth %v: read %d bytes, want at most %d", tt.depth, got, tt.maxRead)
		}
		if len(c.Parts) != tt.parts {
			t.Errorf("depth %v: %d parts, want %d", tt.depth, len(c.Parts), tt.parts)
		}
		if got := c.Text != ""; got != tt.wantText {
			t.Errorf("depth %v: Text = %q", tt.depth, c.Text)
		}
		if tt.depth >= DepthHeaders && c.Subject != "depth" {
			t.Errorf("depth %v: Subject = %q", tt.depth, c.Subject)
		}
		if tt.depth >= DepthHeaders && c.HeaderBytes != int64(len(header))-2 {
			t.Errorf("depth %v: HeaderBytes = %d, want %d", tt.depth, c.HeaderBytes, len(header)-2)
		}
	}
}

// hostile builds a message from a header and a body generator.
func hostile(header string, body func(b *strings.Builder)) string {
	var b strings.Builder
	b.WriteString(header)
	body(&b)
	return b.String()
}

// TestHostileMIME feeds messages built to exhaust a parser. Each must
// finish quickly, within a memory budget, with sensible facts.
func TestHostileMIME(t *testing.T) {
	lim := DefaultContentLimits()
	tests := []struct {
		name      string
		msg       string
		limits    ContentLimits
		malformed []string // must all be present
		check     func(t *testing.T, c *Content)
	}{
		{
			name: "10,000 nested multiparts",
			msg: hostile("Subject: nest\r\n", func(b *strings.Builder) {
				for i := range 10_000 {
					b.WriteString("Content-Type: multipart/mixed; boundary=\"b" + strconv.Itoa(i) + "\"\r\n\r\n--b" + strconv.Itoa(i) + "\r\n")
				}
				b.WriteString("Content-Type: text/plain\r\n\r\ndeep\r\n")
			}),
			malformed: []string{MalformedNestingLimit, MalformedFinalBoundary},
			check: func(t *testing.T, c *Content) {
				if c.MaxDepth != lim.MaxNesting {
					t.Errorf("MaxDepth = %d, want %d", c.MaxDepth, lim.MaxNesting)
				}
				if len(c.Parts) != lim.MaxNesting+1 {
					t.Errorf("%d parts, want %d", len(c.Parts), lim.MaxNesting+1)
				}
			},
		},
		{
			name: "10,000 nested message/rfc822",
			msg: hostile("Subject: nest\r\n", func(b *strings.Builder) {
				for range 10_000 {
					b.WriteString("Content-Type: message/rfc822\r\n\r\n")
				}
				b.WriteString("\r\ndeep\r\n")
			}),
			malformed: []string{MalformedNestingLimit},
			check: func(t *testing.T, c *Content) {
				if c.MaxDepth != lim.MaxNesting {
					t.Errorf("MaxDepth = %d, want %d", c.MaxDepth, lim.MaxNesting)
				}
			},
		},
		{
			name: "a million tiny parts",
			msg: hostile("Content-Type: multipart/mixed; boundary=b\r\n\r\n", func(b *strings.Builder) {
				for range 1_000_000 {
					b.WriteString("--b\r\n\r\nx\r\n")
				}
				b.WriteString("--b--\r\n")
			}),
			malformed: []string{MalformedPartsLimit},
			check: func(t *testing.T, c *Content) {
				if len(c.Parts) != lim.MaxParts {
					t.Errorf("%d parts, want %d", len(c.Parts), lim.MaxParts)
				}
				if slices.Contains(c.Malformed, MalformedFinalBoundary) {
					t.Errorf("a limit stop reported as a missing boundary: %q", c.Malformed)
				}
			},
		},
		{
			name: "boundary never closed",
			msg: hostile("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nfirst\r\n--b\r\n\r\n", func(b *strings.Builder) {
				for range 100_000 {
					b.WriteString("no boundary here, just text\r\n")
				}
			}),
			malformed: []string{MalformedFinalBoundary},
			check: func(t *testing.T, c *Content) {
				if len(c.Parts) != 3 || !strings.HasPrefix(c.Text, "first\n") {
					t.Fatalf("%d parts, Text %.20q", len(c.Parts), c.Text)
				}
				// The unclosed parts run to the end of the message.
				for _, p := range []Part{c.Parts[0], c.Parts[2]} {
					if p.Offset+p.Size != c.Parts[0].Offset+c.Parts[0].Size || p.Size == 0 {
						t.Errorf("part %s: offset %d size %d", p.Path, p.Offset, p.Size)
					}
				}
			},
		},
		{
			name:      "boundary never used",
			msg:       "Content-Type: multipart/mixed; boundary=b\r\n\r\nonly a preamble\r\n",
			malformed: []string{MalformedBoundaryNotFound},
		},
		{
			name: "10 MB header line",
			msg: hostile("Subject: ", func(b *strings.Builder) {
				b.WriteString(strings.Repeat("A", 10<<20))
				b.WriteString("\r\nFrom: a@example.com\r\n\r\nbody\r\n")
			}),
			malformed: []string{MalformedHeaderTooLong},
			check: func(t *testing.T, c *Content) {
				if int64(len(c.Subject)) > lim.MaxHeaderBytes {
					t.Errorf("Subject of %d bytes kept", len(c.Subject))
				}
				if c.Text != "body\n" {
					t.Errorf("Text = %.20q", c.Text)
				}
			},
		},
		{
			name: "400 KB folded subject",
			msg: hostile("Subject: CVE-CANDIDATE", func(b *strings.Builder) {
				for range 200_000 {
					b.WriteString("\r\n x")
				}
				b.WriteString("\r\n\r\nbody\r\n")
			}),
			check: func(t *testing.T, c *Content) {
				if !strings.HasPrefix(c.Subject, "CVE-CANDIDATE x x") || c.Text != "body\n" {
					t.Errorf("Subject %.30q, Text %.20q", c.Subject, c.Text)
				}
			},
		},
		{
			name: "header fields past the limit",
			msg: hostile("", func(b *strings.Builder) {
				for i := range 5000 {
					b.WriteString("X-Junk-" + strconv.Itoa(i) + ": y\r\n")
				}
				b.WriteString("Subject: late\r\n\r\nbody\r\n")
			}),
			malformed: []string{MalformedHeaderFieldsLimit},
			check: func(t *testing.T, c *Content) {
				if len(c.Header) != lim.MaxHeaderFields {
					t.Errorf("%d fields kept", len(c.Header))
				}
			},
		},
		{
			name: "binary junk",
			msg: hostile("", func(b *strings.Builder) {
				r := rand.New(rand.NewPCG(1, 2))
				for range 1 << 20 {
					b.WriteByte(byte(r.Uint32()))
				}
			}),
		},
		{
			name: "binary junk in a multipart",
			msg: hostile("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html; charset=shift_jis\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", func(b *strings.Builder) {
				r := rand.New(rand.NewPCG(3, 4))
				for range 1 << 20 {
					b.WriteByte(byte(r.Uint32()))
				}
			}),
		},
		{
			name: "text past the limit",
			msg: hostile("Content-Type: multipart/mixed; boundary=b\r\n\r\n", func(b *strings.Builder) {
				for range 3 {
					b.WriteString("--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n")
					b.WriteString(strings.Repeat("aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQg\r\n", 30_000))
				}
				b.WriteString("--b--\r\n")
			}),
			limits:    ContentLimits{MaxTextBytes: 1 << 20},
			malformed: []string{MalformedTextTruncated},
			check: func(t *testing.T, c *Content) {
				if len(c.Text) > 1<<20 || len(c.Text) < 1<<19 {
					t.Errorf("Text of %d bytes", len(c.Text))
				}
			},
		},
		{
			name: "text limit inside a character",
			msg:  "Content-Type: text/plain; charset=utf-8\r\n\r\n" + strings.Repeat("é", 1000),
			// The limit falls in the middle of an "é": cut, not replaced.
			limits:    ContentLimits{MaxTextBytes: 1001},
			malformed: []string{MalformedTextTruncated},
			check: func(t *testing.T, c *Content) {
				if c.Text != strings.Repeat("é", 500) || slices.Contains(c.Malformed, MalformedCharsetInvalid) {
					t.Errorf("Text of %d bytes, %q", len(c.Text), c.Malformed)
				}
			},
		},
		{
			name: "URLs past the limit",
			msg: hostile("\r\n", func(b *strings.Builder) {
				for i := range 3000 {
					b.WriteString("http://host" + strconv.Itoa(i) + ".example/ ")
				}
			}),
			malformed: []string{MalformedURLsTruncated},
			check: func(t *testing.T, c *Content) {
				if len(c.URLs) != lim.MaxURLs {
					t.Errorf("%d URLs kept", len(c.URLs))
				}
			},
		},
		{
			name: "a line of 10 MB of dashes",
			msg: hostile("Content-Type: multipart/mixed; boundary=\"--\"\r\n\r\n", func(b *strings.Builder) {
				b.WriteString(strings.Repeat("-", 10<<20))
			}),
			malformed: []string{MalformedBoundaryNotFound},
		},
		{
			name: "URL ending in a million parentheses",
			msg: hostile("\r\n", func(b *strings.Builder) {
				b.WriteString("http://x.example/" + strings.Repeat(")", 1<<20))
			}),
			check: func(t *testing.T, c *Content) {
				if len(c.URLs) != 1 || c.URLs[0].Raw != "http://x.example/" {
					t.Errorf("URLs = %.40q", c.URLs)
				}
			},
		},
		{
			name: "address lists of 850 KB",
			msg: hostile("To: ", func(b *strings.Builder) {
				for range 50_000 {
					b.WriteString("a@b.example, ")
				}
				b.WriteString("\r\nFrom: " + strings.Repeat("\"x\" ", 50_000) + "<f@example.com>\r\n\r\n")
			}),
			malformed: []string{MalformedAddressesTruncated, MalformedAddressSyntax},
			check: func(t *testing.T, c *Content) {
				if len(c.To) != maxAddresses || len(c.From) != 1 || c.From[0].Addr != "f@example.com" {
					t.Errorf("%d To, From %.60q", len(c.To), c.From)
				}
			},
		},
		{
			name: "encoded words without end",
			msg: hostile("Subject: ", func(b *strings.Builder) {
				b.WriteString(strings.Repeat("=?utf-8?q?", 50_000))
				b.WriteString("\r\n\r\n")
			}),
			malformed: []string{MalformedEncodedWord},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := tt.limits
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			c := ParseContent(strings.NewReader(tt.msg), int64(len(tt.msg)), DepthText, limits)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			checkContent(t, c, int64(len(tt.msg)), DepthText)
			for _, m := range tt.malformed {
				if !slices.Contains(c.Malformed, m) {
					t.Errorf("Malformed = %q, want %q among them", c.Malformed, m)
				}
			}
			if tt.check != nil {
				tt.check(t, c)
			}
			// Generous bounds for a shared CI machine; the point is
			// linear, not quadratic. Memory beyond the input itself is
			// what the parser keeps: at most the header and text limits.
			if elapsed > 10*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("allocated %d MB", alloc>>20)
			}
			t.Logf("%d bytes in %v, %d KB allocated, malformed %q", len(tt.msg), elapsed, (after.TotalAlloc-before.TotalAlloc)>>10, c.Malformed)
		})
	}
}

// errReaderAt fails after n bytes, like a spool file on a failing disk.
type errReaderAt struct {
	r io.ReaderAt
	n int64
}

func (e errReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= e.n {
		return 0, io.ErrUnexpectedEOF
	}
	if off+int64(len(p)) > e.n {
		n, _ := e.r.ReadAt(p[:e.n-off], off)
		return n, io.ErrUnexpectedEOF
	}
	return e.r.ReadAt(p, off)
}

func TestReadError(t *testing.T) {
	msg := "Subject: x\r\n\r\n" + strings.Repeat("body line\r\n", 100_000)
	c := ParseContent(errReaderAt{strings.NewReader(msg), 100_000}, int64(len(msg)), DepthText, DefaultContentLimits())
	checkContent(t, c, int64(len(msg)), DepthText)
	if !slices.Contains(c.Malformed, MalformedReadError) || c.Subject != "x" {
		t.Errorf("Malformed = %q, Subject = %q", c.Malformed, c.Subject)
	}
}

func TestParseContentEmpty(t *testing.T) {
	for _, msg := range []string{"", "\r\n", "\n", "\r\n\r\n", "x", "Subject: only"} {
		c := parse(msg, DepthText)
		checkContent(t, c, int64(len(msg)), DepthText)
	}
	c := ParseContent(nil, 10, DepthText, ContentLimits{})
	if c == nil || c.Depth != DepthText {
		t.Errorf("nil reader: %+v", c)
	}
}

// Regression: a MIME part's header section reused the array of the
// message's own header fields, overwriting From, Subject and Date with the
// part's Content-* fields.
func TestPartHeadersDoNotOverwriteMessageHeader(t *testing.T) {
	msg := "From: a@b.test\r\nSubject: hello\r\nDate: Thu, 18 Oct 2012 22:48:39 -0700\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"X\"\r\n\r\n--X\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n" +
		"Content-Disposition: inline\r\n\r\nbody\r\n--X--\r\n"
	c := ParseContent(strings.NewReader(msg), int64(len(msg)), DepthText, DefaultContentLimits())
	var names []string
	for _, h := range c.Header {
		names = append(names, h.Name)
	}
	if got := strings.Join(names, ","); got != "From,Subject,Date,MIME-Version,Content-Type" {
		t.Fatalf("message header fields: %s", got)
	}
	if v, ok := c.HeaderValue("Subject"); !ok || v != "hello" {
		t.Fatalf("Subject: %q %v", v, ok)
	}
}
