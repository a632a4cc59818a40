package inspect

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// partFacts is the part of a Part a structure test compares.
type partFacts struct {
	Path, ContentType string
	Depth             int
	Multipart         bool
	Body              string // the part's bytes, from Offset and Size
}

func TestMIMEStructure(t *testing.T) {
	tests := []struct {
		name      string
		msg       string
		parts     []partFacts
		maxDepth  int
		text      string
		malformed []string
	}{
		{
			name:  "single part",
			msg:   "Subject: x\r\n\r\nhello\r\n",
			parts: []partFacts{{"1", "text/plain", 0, false, "hello\r\n"}},
			text:  "hello\n",
		},
		{
			name: "multipart with preamble and epilogue whitespace",
			msg: "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\nThis is a preamble.\r\n" +
				"--b\r\nContent-Type: text/plain\r\n\r\none\r\n" +
				"--b \t\r\n\r\ntwo\r\n\r\n" + // trailing whitespace on the delimiter is allowed (RFC 2046 §5.1.1)
				"--b--\r\n\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, "This is a preamble.\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b \t\r\n\r\ntwo\r\n\r\n--b--\r\n\r\n"},
				{"1.1", "text/plain", 1, false, "one"},
				{"1.2", "text/plain", 1, false, "two\r\n"},
			},
			maxDepth: 1,
			text:     "one\ntwo\n",
		},
		{
			name: "nested, boundaries that are prefixes of each other",
			msg: "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
				"--b\r\nContent-Type: multipart/alternative; boundary=b_alt\r\n\r\n" +
				"--b_alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n" +
				"--b_alt\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n" +
				"--b_alt--\r\n" +
				"--b\r\nContent-Type: application/pdf; name=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n" +
				"--b--\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "multipart/alternative", 1, true, "--b_alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b_alt\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--b_alt--"},
				{"1.1.1", "text/plain", 2, false, "plain"},
				{"1.1.2", "text/html", 2, false, "<b>html</b>"},
				{"1.2", "application/pdf", 1, false, "JVBERi0="},
			},
			maxDepth: 2,
			text:     "plain",
		},
		{
			name: "inner multipart closed by the outer delimiter",
			msg: "Content-Type: multipart/mixed; boundary=outer\r\n\r\n" +
				"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n" +
				"--inner\r\n\r\nfirst\r\n" +
				"--outer\r\n\r\nsecond\r\n--outer--\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "multipart/alternative", 1, true, "--inner\r\n\r\nfirst"},
				{"1.1.1", "text/plain", 2, false, "first"},
				{"1.2", "text/plain", 1, false, "second"},
			},
			maxDepth:  2,
			text:      "first\nsecond",
			malformed: []string{MalformedFinalBoundary},
		},
		{
			name: "message/rfc822 descends one level",
			msg: "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
				"--b\r\n\r\nsee attached\r\n" +
				"--b\r\nContent-Type: message/rfc822\r\n\r\n" +
				"Subject: inner\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n" +
				"--c\r\n\r\ninner text\r\n--c--\r\n" +
				"--b--\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "text/plain", 1, false, "see attached"},
				{"1.2", "message/rfc822", 1, false, "Subject: inner\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\ninner text\r\n--c--"},
				{"1.2.1", "multipart/alternative", 2, true, "--c\r\n\r\ninner text\r\n--c--"},
				{"1.2.1.1", "text/plain", 3, false, "inner text"},
			},
			maxDepth: 3,
			text:     "see attached\ninner text",
		},
		{
			name: "multipart/digest defaults to message/rfc822 (RFC 2046 §5.1.5)",
			msg: "Content-Type: multipart/digest; boundary=d\r\n\r\n" +
				"--d\r\n\r\nSubject: one\r\n\r\nfirst message\r\n" +
				"--d--\r\n",
			parts: []partFacts{
				{"1", "multipart/digest", 0, true, ""},
				{"1.1", "message/rfc822", 1, false, "Subject: one\r\n\r\nfirst message"},
				{"1.1.1", "text/plain", 2, false, "first message"},
			},
			maxDepth: 2,
			text:     "first message",
		},
		{
			name: "part that is all header",
			msg: "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
				"--b\r\nContent-Type: text/plain\r\n" +
				"--b\r\n\r\nbody\r\n--b--\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "text/plain", 1, false, ""},
				{"1.2", "text/plain", 1, false, "body"},
			},
			maxDepth: 1,
			text:     "body",
		},
		{
			name:      "multipart without boundary is text",
			msg:       "Content-Type: multipart/mixed\r\n\r\n--x\r\nhello\r\n",
			parts:     []partFacts{{"1", "multipart/mixed", 0, false, "--x\r\nhello\r\n"}},
			text:      "--x\nhello\n",
			malformed: []string{MalformedBoundaryMissing},
		},
		{
			name: "closing delimiter with junk after it, then text",
			msg: "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
				"--b\r\n\r\nvisible\r\n--b-->\r\nhidden text\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "text/plain", 1, false, "visible"},
			},
			maxDepth:  1,
			text:      "visible",
			malformed: []string{MalformedEpilogueText},
		},
		{
			name: "a line that only starts like a delimiter",
			msg: "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
				"--b\r\n\r\n--bx is not a delimiter\r\n--b--\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "text/plain", 1, false, "--bx is not a delimiter"},
			},
			maxDepth: 1,
			text:     "--bx is not a delimiter",
		},
		{
			name: "bare LF line endings",
			msg:  "Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n--b--\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "text/plain", 1, false, "one"},
				{"1.2", "text/plain", 1, false, "two"},
			},
			maxDepth: 1,
			text:     "one\ntwo",
		},
		{
			name: "text attachment is not Text",
			msg: "Content-Type: multipart/mixed; boundary=b\r\n\r\n" +
				"--b\r\n\r\nbody\r\n" +
				"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\nattached\r\n--b--\r\n",
			parts: []partFacts{
				{"1", "multipart/mixed", 0, true, ""},
				{"1.1", "text/plain", 1, false, "body"},
				{"1.2", "text/plain", 1, false, "attached"},
			},
			maxDepth: 1,
			text:     "body",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parse(tt.msg, DepthText)
			checkContent(t, c, int64(len(tt.msg)), DepthText)
			var got []partFacts
			for i, p := range c.Parts {
				body := tt.msg[p.Offset : p.Offset+p.Size]
				if i == 0 && len(c.Parts) > 1 {
					body = tt.parts[0].Body // the whole body; checked below
				}
				got = append(got, partFacts{p.Path, p.ContentType, p.Depth, p.Multipart, body})
			}
			if !slices.Equal(got, tt.parts) {
				t.Errorf("parts:\n got %+v\nwant %+v", got, tt.parts)
			}
			if top := c.Parts[0]; top.Offset+top.Size != int64(len(tt.msg)) {
				t.Errorf("top-level part ends at %d, want %d", top.Offset+top.Size, len(tt.msg))
			}
			if c.MaxDepth != tt.maxDepth {
				t.Errorf("MaxDepth = %d, want %d", c.MaxDepth, tt.maxDepth)
			}
			if c.Text != tt.text {
				t.Errorf("Text = %q, want %q", c.Text, tt.text)
			}
			if !slices.Equal(c.Malformed, tt.malformed) {
				t.Errorf("Malformed = %q, want %q", c.Malformed, tt.malformed)
			}
		})
	}
}

func TestContentType(t *testing.T) {
	tests := []struct {
		in        string
		mediaType string
		params    map[string]string
		malformed []string
	}{
		{"text/plain", "text/plain", map[string]string{}, nil},
		{"Text/HTML; Charset=\"UTF-8\"", "text/html", map[string]string{"charset": "UTF-8"}, nil},
		{"multipart/mixed;\r\n\tboundary=\"----=_Part_1\"", "multipart/mixed", map[string]string{"boundary": "----=_Part_1"}, nil},
		{"multipart/related; boundary =bar; other=foo", "multipart/related", map[string]string{"boundary": "bar", "other": "foo"}, nil},
		{"text/plain; charset=us-ascii;", "text/plain", map[string]string{"charset": "us-ascii"}, nil},
		// RFC 2231 continuations and charsets.
		{"application/x-stuff; title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A", "application/x-stuff", map[string]string{"title": "This is ***fun***"}, nil},
		{"application/pdf; name*0=\"long\"; name*1=\"-name\"; name*2*=%2Epdf", "application/pdf", map[string]string{"name": "long-name.pdf"}, nil},
		{"application/pdf; name*=iso-8859-1''caf%E9.pdf", "application/pdf", map[string]string{"name": "café.pdf"}, nil},
		{"application/pdf; name*0*=koi8-r''%F0%D2; name*1*=%C9%D7%C5%D4.pdf", "application/pdf", map[string]string{"name": "Привет.pdf"}, nil},
		{"application/pdf; name*1=\"b\"; name*0=\"a\"", "application/pdf", map[string]string{"name": "ab"}, nil},
		// Real-world breakage, recovered and recorded.
		{"application/pdf; name=Invoice_(3021).pdf", "application/pdf", map[string]string{"name": "Invoice_(3021).pdf"}, []string{MalformedParamSyntax}},
		{"text/calendar; method=text/calendar", "text/calendar", map[string]string{"method": "text/calendar"}, []string{MalformedParamSyntax}},
		{"application/pdf name=\"x.pdf\"", "application/pdf", map[string]string{"name": "x.pdf"}, []string{MalformedParamSyntax}},
		{"application/pdf; name=\"a.pdf\"; name=\"b.pdf\"", "application/pdf", map[string]string{"name": "a.pdf"}, []string{MalformedParamDuplicate}},
		{"application/pdf; name=\"a.pdf\"; name=\"a.pdf\"", "application/pdf", map[string]string{"name": "a.pdf"}, []string{MalformedParamDuplicate}},
		{"text/html; charset=\"UTF-8", "text/html", map[string]string{"charset": "UTF-8"}, []string{MalformedParamSyntax}},
		{"text/html;iso-8859-1", "text/html", map[string]string{"charset": "iso-8859-1"}, []string{MalformedParamSyntax}},
		{"text/plain; name=my file.txt", "text/plain", map[string]string{"name": "my file.txt"}, []string{MalformedParamSyntax}},
		{"text/plain; =x", "text/plain", map[string]string{}, []string{MalformedParamSyntax}},
		{"text/plain>", "text/plain", map[string]string{}, []string{MalformedContentType}},
		{"text plain", "", map[string]string{}, []string{MalformedParamSyntax, MalformedContentType}},
		{"<html>", "", map[string]string{}, []string{MalformedContentType}},
		{";\r\n\tname=\"\"", "", map[string]string{"name": ""}, []string{MalformedContentType}},
		{"", "", map[string]string{}, []string{MalformedContentType}},
		{"text/", "", map[string]string{}, []string{MalformedContentType}},
		{"a/b/c", "", map[string]string{}, []string{MalformedContentType}},
	}
	for _, tt := range tests {
		var f flaws
		mt, params := parseContentType(strings.ReplaceAll(tt.in, "\r\n", ""), &f)
		if params == nil {
			params = map[string]string{}
		}
		if mt != tt.mediaType || !maps.Equal(params, tt.params) {
			t.Errorf("parseContentType(%q) = %q %q, want %q %q", tt.in, mt, params, tt.mediaType, tt.params)
		}
		if !slices.Equal(f.list, tt.malformed) {
			t.Errorf("parseContentType(%q): flaws %q, want %q", tt.in, f.list, tt.malformed)
		}
	}
}

func TestDisposition(t *testing.T) {
	tests := []struct {
		in, disposition, filename string
	}{
		{"", "", ""},
		{"inline", "inline", ""},
		{"Attachment; filename=\"a.pdf\"", "attachment", "a.pdf"},
		{"attachment; filename*=UTF-8''%E2%82%AC.txt", "attachment", "€.txt"},
		{"attachement; filename=x.exe", "attachment", "x.exe"}, // unknown type counts as attachment (RFC 2183 §2.8)
		{"; filename=x", "", "x"},
	}
	for _, tt := range tests {
		var f flaws
		d, params := dispositionOf(tt.in, &f)
		if d != tt.disposition || params["filename"] != tt.filename {
			t.Errorf("dispositionOf(%q) = %q %q, want %q %q", tt.in, d, params["filename"], tt.disposition, tt.filename)
		}
	}
}

func TestFilenames(t *testing.T) {
	tests := []struct {
		name, headers, want string
	}{
		{"from Content-Disposition", "Content-Type: application/pdf; name=\"type.pdf\"\r\nContent-Disposition: attachment; filename=\"disp.pdf\"", "disp.pdf"},
		{"from Content-Type name", "Content-Type: application/pdf; name=\"type.pdf\"\r\nContent-Disposition: attachment", "type.pdf"},
		{"RFC 2047 in a quoted filename", "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"=?UTF-8?B?0YTQsNC50Lsu?= =?UTF-8?Q?exe?=\"", "файл.exe"},
		{"RFC 2231 in Windows-1251", "Content-Type: application/octet-stream; name*=windows-1251''%CF%F0%E8%E2%E5%F2.zip", "Привет.zip"},
		{"raw UTF-8", "Content-Type: application/octet-stream; name=\"報告.docx\"", "報告.docx"},
		{"raw 8-bit in the part charset", "Content-Type: text/plain; charset=koi8-r; name=\"\xf0\xd2\xc9\xd7\xc5\xd4.txt\"", "Привет.txt"},
		{"double extension", "Content-Type: application/octet-stream; name=invoice.pdf.exe", "invoice.pdf.exe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + tt.headers + "\r\n\r\ndata\r\n--b--\r\n"
			c := parse(msg, DepthMIME)
			checkContent(t, c, int64(len(msg)), DepthMIME)
			if len(c.Parts) != 2 || c.Parts[1].Filename != tt.want {
				t.Errorf("parts %+v, want filename %q", c.Parts, tt.want)
			}
		})
	}
}
