package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

var readReplyTests = []struct {
	name string
	in   string
	want Reply
	rest string // left in the reader after the reply
	err  error
}{
	{"single", "250 OK\r\n", Reply{Code: 250, Lines: []string{"OK"}}, "", nil},
	{"bare lf", "250 OK\n", Reply{Code: 250, Lines: []string{"OK"}}, "", nil},
	{"multi", "250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
		Reply{Code: 250, Lines: []string{"mx.example.com", "PIPELINING", "8BITMIME"}}, "", nil},
	{"enhanced", "250 2.1.0 Ok\r\n", Reply{Code: 250, Enhanced: "2.1.0", Lines: []string{"Ok"}}, "", nil},
	{"enhanced long parts", "550 5.123.456 no\r\n", Reply{Code: 550, Enhanced: "5.123.456", Lines: []string{"no"}}, "", nil},
	{"enhanced multi", "550-5.1.1 The email account\r\n550-5.1.1 does not exist\r\n550 5.1.1 here\r\n",
		Reply{Code: 550, Enhanced: "5.1.1", Lines: []string{"The email account", "does not exist", "here"}}, "", nil},
	{"enhanced first line only", "250-2.0.0 a\r\n250 b\r\n", Reply{Code: 250, Enhanced: "2.0.0", Lines: []string{"a", "b"}}, "", nil},
	{"enhanced other code later", "250-2.0.0 a\r\n250 2.1.5 b\r\n", Reply{Code: 250, Enhanced: "2.0.0", Lines: []string{"a", "2.1.5 b"}}, "", nil},
	{"enhanced only later", "250-a\r\n250 2.0.0 b\r\n", Reply{Code: 250, Lines: []string{"a", "2.0.0 b"}}, "", nil},
	{"enhanced no text", "250 2.0.0\r\n", Reply{Code: 250, Enhanced: "2.0.0", Lines: []string{""}}, "", nil},
	{"enhanced two spaces", "250 2.0.0  x\r\n", Reply{Code: 250, Enhanced: "2.0.0", Lines: []string{" x"}}, "", nil},
	{"enhanced class mismatch", "550 4.1.1 x\r\n", Reply{Code: 550, Lines: []string{"4.1.1 x"}}, "", nil},
	{"enhanced too many digits", "250 2.1234.0 x\r\n", Reply{Code: 250, Lines: []string{"2.1234.0 x"}}, "", nil},
	{"enhanced two-digit class", "250 22.1.0 x\r\n", Reply{Code: 250, Lines: []string{"22.1.0 x"}}, "", nil},
	{"enhanced glued", "250 2.0.0x\r\n", Reply{Code: 250, Lines: []string{"2.0.0x"}}, "", nil},
	{"enhanced tab", "250 2.0.0\tx\r\n", Reply{Code: 250, Lines: []string{"2.0.0\tx"}}, "", nil},
	{"enhanced missing detail", "250 2.0. x\r\n", Reply{Code: 250, Lines: []string{"2.0. x"}}, "", nil},
	{"bare code", "250\r\n", Reply{Code: 250, Lines: []string{""}}, "", nil},
	{"code and space", "250 \r\n", Reply{Code: 250, Lines: []string{""}}, "", nil},
	{"empty continuation", "250-\r\n250 ok\r\n", Reply{Code: 250, Lines: []string{"", "ok"}}, "", nil},
	{"354", "354 Start mail input; end with <CRLF>.<CRLF>\r\n", Reply{Code: 354, Lines: []string{"Start mail input; end with <CRLF>.<CRLF>"}}, "", nil},
	{"421", "421 4.7.0 mx closing connection\r\n", Reply{Code: 421, Enhanced: "4.7.0", Lines: []string{"mx closing connection"}}, "", nil},
	{"utf8 and tab", "250 h\xc3\xa9llo\tthere\r\n", Reply{Code: 250, Lines: []string{"h\xc3\xa9llo\tthere"}}, "", nil},
	{"pipelined", "250 ok\r\n354 go\r\n", Reply{Code: 250, Lines: []string{"ok"}}, "354 go\r\n", nil},
	{"128 lines", strings.Repeat("250-x\r\n", 127) + "250 y\r\n",
		Reply{Code: 250, Lines: append(slicesRepeat("x", 127), "y")}, "", nil},

	{"empty", "", Reply{}, "", io.EOF},
	{"truncated line", "250 ok", Reply{}, "", io.ErrUnexpectedEOF},
	{"truncated multi", "250-a\r\n", Reply{}, "", io.ErrUnexpectedEOF},
	{"too short", "25\r\n", Reply{}, "", ErrSyntax},
	{"letters", "abc ok\r\n", Reply{}, "", ErrSyntax},
	{"four digits", "2500 ok\r\n", Reply{}, "", ErrSyntax},
	{"bad separator", "250_ok\r\n", Reply{}, "", ErrSyntax},
	{"199", "199 x\r\n", Reply{}, "", ErrSyntax},
	{"600", "600 x\r\n", Reply{}, "", ErrSyntax},
	{"000", "000 x\r\n", Reply{}, "", ErrSyntax},
	{"mismatch", "250-a\r\n251 b\r\nNEXT\r\n", Reply{}, "NEXT\r\n", ErrSyntax},
	{"mismatch drained", "250-a\r\n251-b\r\n250 c\r\n220 next\r\n", Reply{}, "220 next\r\n", ErrSyntax},
	{"nul", "250 a\x00b\r\n", Reply{}, "", ErrSyntax},
	{"cr", "250 a\rb\r\n", Reply{}, "", ErrSyntax},
	{"escape", "250 \x1b[2J\r\n", Reply{}, "", ErrSyntax},
	{"http", "HTTP/1.1 400 Bad Request\r\n", Reply{}, "", ErrSyntax},
	{"leading space", " 250 ok\r\n", Reply{}, "", ErrSyntax},
	{"129 lines", strings.Repeat("250-x\r\n", 128) + "250 y\r\n", Reply{}, "", ErrSyntax},
	{"line too long", "250 " + strings.Repeat("x", 2045) + "\r\n250 ok\r\n", Reply{}, "250 ok\r\n", ErrLineTooLong},
	{"line at limit", "250 " + strings.Repeat("x", 2044) + "\r\n", Reply{Code: 250, Lines: []string{strings.Repeat("x", 2044)}}, "", nil},
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestReadReply(t *testing.T) {
	for _, tt := range readReplyTests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			if oneByte {
				name += "/onebyte"
			}
			t.Run(name, func(t *testing.T) {
				var src io.Reader = strings.NewReader(tt.in)
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				r := bufio.NewReaderSize(src, 16)
				got, err := ReadReply(r)
				if tt.err != nil {
					if !errors.Is(err, tt.err) {
						t.Fatalf("ReadReply(%q) = %+v, %v; want error %v", tt.in, got, err, tt.err)
					}
				} else {
					if err != nil {
						t.Fatalf("ReadReply(%q): %v", tt.in, err)
					}
					if !reflect.DeepEqual(got, tt.want) {
						t.Fatalf("ReadReply(%q) = %#v, want %#v", tt.in, got, tt.want)
					}
					var buf bytes.Buffer
					if _, err := got.WriteTo(&buf); err != nil {
						t.Fatal(err)
					}
					again, err := ReadReply(bufio.NewReader(&buf))
					if err != nil || !reflect.DeepEqual(again, got) {
						t.Fatalf("round trip via %q = %#v, %v", buf.String(), again, err)
					}
				}
				rest, _ := io.ReadAll(r)
				if string(rest) != tt.rest {
					t.Fatalf("left %q in the reader, want %q", rest, tt.rest)
				}
			})
		}
	}
}

func TestReplyWire(t *testing.T) {
	errCause := errors.New("dial tcp: connection refused")
	for _, tt := range []struct {
		name  string
		r     Reply
		wire  string
		str   string
		error string
	}{
		{"replyf", Replyf(451, "4.4.2", "upstream %s", "down"), "451 4.4.2 upstream down\r\n", "451 4.4.2 upstream down", "451 4.4.2 upstream down"},
		{"no enhanced", Replyf(250, "", "ok"), "250 ok\r\n", "250 ok", "250 ok"},
		{"no lines", Reply{Code: 250}, "250\r\n", "250", "250"},
		{"no lines enhanced", Reply{Code: 250, Enhanced: "2.0.0"}, "250 2.0.0\r\n", "250 2.0.0", "250 2.0.0"},
		{"empty line", Reply{Code: 354, Lines: []string{""}}, "354\r\n", "354", "354"},
		{"multi", Reply{Code: 250, Lines: []string{"mx", "", "SIZE 100"}}, "250-mx\r\n250-\r\n250 SIZE 100\r\n", "250-mx\r\n250-\r\n250 SIZE 100", "250-mx\r\n250-\r\n250 SIZE 100"},
		{"multi enhanced", Reply{Code: 550, Enhanced: "5.7.1", Lines: []string{"no", ""}}, "550-5.7.1 no\r\n550 5.7.1\r\n", "550-5.7.1 no\r\n550 5.7.1", "550-5.7.1 no\r\n550 5.7.1"},
		{"with cause", Reply{Code: 451, Enhanced: "4.4.1", Lines: []string{"try later"}, Err: errCause},
			"451 4.4.1 try later\r\n", "451 4.4.1 try later", "451 4.4.1 try later: dial tcp: connection refused"},
		{"injection", Replyf(550, "5.7.1", "bad %s", "x\r\n250 ok\x00"), "550 5.7.1 bad x  250 ok \r\n", "550 5.7.1 bad x  250 ok ", "550 5.7.1 bad x  250 ok "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.r.Bytes()); got != tt.wire {
				t.Errorf("Bytes() = %q, want %q", got, tt.wire)
			}
			var buf bytes.Buffer
			n, err := tt.r.WriteTo(&buf)
			if err != nil || buf.String() != tt.wire || n != int64(len(tt.wire)) {
				t.Errorf("WriteTo() = %d, %v, wrote %q; want %q", n, err, buf.String(), tt.wire)
			}
			if got := tt.r.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := tt.r.Error(); got != tt.error {
				t.Errorf("Error() = %q, want %q", got, tt.error)
			}
		})
	}
}

func TestReplyError(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	var err error = Reply{Code: 451, Enhanced: "4.4.2", Lines: []string{"lost"}, Err: cause}
	if !errors.Is(err, cause) {
		t.Error("errors.Is does not find the cause")
	}
	var r Reply
	if !errors.As(err, &r) || r.Code != 451 || r.Class() != 4 {
		t.Errorf("errors.As = %+v", r)
	}
	if (Reply{Code: 250}).Class() != 2 || (Reply{Code: 599}).Class() != 5 {
		t.Error("Class is wrong")
	}
}

func TestParseReply(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Reply
		ok   bool
	}{
		{"550 5.7.1 Executable attachments are not accepted", Reply{Code: 550, Enhanced: "5.7.1", Lines: []string{"Executable attachments are not accepted"}}, true},
		{"451 try again\r\n", Reply{Code: 451, Lines: []string{"try again"}}, true},
		{"550-a\n550 b", Reply{Code: 550, Lines: []string{"a", "b"}}, true},
		{"", Reply{}, false},
		{"550 a\n550 b", Reply{}, false},
		{"550-a", Reply{}, false},
		{"hello", Reply{}, false},
	} {
		got, err := ParseReply(tt.in)
		if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseReply(%q) = %#v, %v; want %#v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestIsEnhancedCode(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"2.0.0", true}, {"5.7.1", true}, {"4.123.999", true},
		{"", false}, {"3.0.0", false}, {"5.7", false}, {"5.7.", false}, {"5.1234.1", false},
		{"5.7.1 ", false}, {"55.7.1", false}, {"5-7-1", false},
	} {
		if got := IsEnhancedCode(tt.in); got != tt.ok {
			t.Errorf("IsEnhancedCode(%q) = %v, want %v", tt.in, got, tt.ok)
		}
	}
}

func TestWithDefaultEnhanced(t *testing.T) {
	tests := []struct {
		verb string
		in   string // the reply as the upstream sent it
		want string // as relayed
	}{
		// Exim's legacy replies get a code; the text stays.
		{"MAIL", "250 OK", "250 2.1.0 OK"},
		{"mail", "250 OK", "250 2.1.0 OK"},
		{"RCPT", "250 Accepted", "250 2.1.5 Accepted"},
		{"RCPT", "251 User not local; will forward", "251 2.1.5 User not local; will forward"},
		{"DATA", "250 OK id=1xaDxR-00038S-07", "250 2.0.0 OK id=1xaDxR-00038S-07"},
		{"BDAT", "250 OK", "250 2.0.0 OK"},
		{"RCPT", "550 Administrative prohibition", "550 5.0.0 Administrative prohibition"},
		{"RCPT", "451 Temporary local problem - please try later", "451 4.0.0 Temporary local problem - please try later"},
		{"RCPT", "452 Too many recipients", "452 4.0.0 Too many recipients"},
		{"DATA", "552 Message size exceeds maximum permitted", "552 5.0.0 Message size exceeds maximum permitted"},
		{"DATA", "554 Transaction failed", "554 5.0.0 Transaction failed"},
		{"MAIL", "421 closing connection", "421 4.0.0 closing connection"},
		{"MAIL", "500 unrecognized command", "500 5.5.2 unrecognized command"},
		{"MAIL", "501 bad address", "501 5.5.4 bad address"},
		{"MAIL", "502 not implemented", "502 5.5.1 not implemented"},
		{"RCPT", "503 sender not yet given", "503 5.5.1 sender not yet given"},
		{"MAIL", "504 parameter not implemented", "504 5.5.4 parameter not implemented"},
		{"MAIL", "555 SIZE not supported", "555 5.5.4 SIZE not supported"},
		{"MAIL", "530 Authentication required", "530 5.7.0 Authentication required"},
		// Every line of a multi-line reply carries the code (RFC 2034 §3).
		{"RCPT", "550-no such user\r\n550 here", "550-5.0.0 no such user\r\n550 5.0.0 here"},
		// No text at all.
		{"MAIL", "250", "250 2.1.0"},
		// A server's own code is kept as it is, even one moat would not
		// have chosen.
		{"MAIL", "250 2.1.0 Ok", "250 2.1.0 Ok"},
		{"RCPT", "250 2.0.0 Ok", "250 2.0.0 Ok"},
		{"RCPT", "550 5.1.1 <x@example.net>: Recipient address rejected", "550 5.1.1 <x@example.net>: Recipient address rejected"},
		{"DATA", "250 2.0.0 Ok: queued as 4Xyz", "250 2.0.0 Ok: queued as 4Xyz"},
		// 3xx replies carry no enhanced code.
		{"DATA", `354 Enter message, ending with "." on a line by itself`, `354 Enter message, ending with "." on a line by itself`},
	}
	for _, tt := range tests {
		in, err := ParseReply(tt.in)
		if err != nil {
			t.Fatalf("ParseReply(%q): %v", tt.in, err)
		}
		got := in.WithDefaultEnhanced(tt.verb)
		if got.String() != tt.want {
			t.Errorf("%s %q: got %q, want %q", tt.verb, tt.in, got.String(), tt.want)
		}
		if got.Enhanced != "" && !IsEnhancedCode(got.Enhanced) {
			t.Errorf("%s %q: %q is no enhanced code", tt.verb, tt.in, got.Enhanced)
		}
		if got.Enhanced != "" && got.Enhanced[0] != byte('0'+got.Class()) {
			t.Errorf("%s %q: class of %q differs from the reply's", tt.verb, tt.in, got.Enhanced)
		}
	}
}
