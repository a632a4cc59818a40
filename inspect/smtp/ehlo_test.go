package smtp

import (
	"reflect"
	"strings"
	"testing"
)

var parseEHLOTests = []struct {
	name string
	in   string // the reply on the wire
	want Extensions
}{
	{"postfix", "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n" +
		"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
		Extensions{"PIPELINING": {}, "SIZE": {"10240000"}, "VRFY": {}, "ETRN": {}, "STARTTLS": {},
			"ENHANCEDSTATUSCODES": {}, "8BITMIME": {}, "DSN": {}, "SMTPUTF8": {}, "CHUNKING": {}}},
	{"greeting only", "250 mx.example.net at your service\r\n", Extensions{}},
	{"keywords any case, first line skipped", "250-PIPELINING is not a keyword here\r\n250-pipelining\r\n250 Size\r\n",
		Extensions{"PIPELINING": {}, "SIZE": {}}},
	{"AUTH mechanisms", "250-mx\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n250 AUTH=PLAIN LOGIN\r\n",
		Extensions{"AUTH": {"PLAIN", "LOGIN", "CRAM-MD5"}}},
	{"pre-standard AUTH= alone is no keyword", "250-mx\r\n250 AUTH=LOGIN PLAIN\r\n", Extensions{}},
	{"XCLIENT attributes", "250-mx\r\n250 XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n",
		Extensions{"XCLIENT": {"NAME", "ADDR", "PROTO", "HELO", "REVERSE_NAME", "PORT", "LOGIN", "DESTADDR", "DESTPORT"}}},
	{"extra spaces and tabs", "250-mx\r\n250-SIZE   52428800 \r\n250 AUTH\tPLAIN  LOGIN\r\n",
		Extensions{"SIZE": {"52428800"}, "AUTH": {"PLAIN", "LOGIN"}}},
	{"first of a repeated keyword", "250-mx\r\n250-SIZE 1000\r\n250 size 2000\r\n", Extensions{"SIZE": {"1000"}}},
	{"bad keywords ignored", "250-mx\r\n250--DASH\r\n250-X_UNDERSCORE\r\n250-\r\n250-ÜTF8\r\n250 X-OK\r\n",
		Extensions{"X-OK": {}}},
	{"non-ASCII parameter dropped", "250-mx\r\n250 AUTH PLAIN L\u00d6GIN LOGIN\r\n", Extensions{"AUTH": {"PLAIN", "LOGIN"}}},
	{"refusal advertises nothing", "550 5.7.1 go away\r\n", nil},
}

func TestParseEHLO(t *testing.T) {
	for _, tt := range parseEHLOTests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseReply(tt.in)
			if err != nil {
				t.Fatalf("ParseReply: %v", err)
			}
			if got := ParseEHLO(r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseEHLO(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestExtensionsLookup(t *testing.T) {
	e := ParseEHLO(Reply{Code: 250, Lines: []string{"mx", "PIPELINING", "SIZE 35882577", "AUTH PLAIN LOGIN"}})
	if !e.Has("pipelining") || !e.Has("PIPELINING") || e.Has("CHUNKING") {
		t.Errorf("Has: %#v", e)
	}
	if got := e.Params("auth"); !reflect.DeepEqual(got, []string{"PLAIN", "LOGIN"}) {
		t.Errorf("Params(auth) = %q", got)
	}
	if got := e.Params("XCLIENT"); got != nil {
		t.Errorf("Params of an absent keyword = %q, want nil", got)
	}
	for _, tt := range []struct {
		line string
		max  int64
		ok   bool
	}{
		{"SIZE 35882577", 35882577, true},
		{"SIZE", 0, true},   // RFC 1870 §4: no number, no fixed maximum
		{"SIZE 0", 0, true}, // nor with 0
		{"SIZE lots", 0, true},
		{"SIZE -5", 0, true},
		{"PIPELINING", 0, false},
	} {
		max, ok := ParseEHLO(Reply{Code: 250, Lines: []string{"mx", tt.line}}).Size()
		if max != tt.max || ok != tt.ok {
			t.Errorf("%q: Size() = %d, %v; want %d, %v", tt.line, max, ok, tt.max, tt.ok)
		}
	}
	var none Extensions // a refused EHLO
	if none.Has("SIZE") || none.Params("AUTH") != nil {
		t.Error("nil Extensions should advertise nothing")
	}
	if _, ok := none.Size(); ok {
		t.Error("nil Extensions advertise SIZE")
	}
}

// formatEHLO writes extensions back as the lines of a 250 reply.
func formatEHLO(e Extensions) Reply {
	r := Reply{Code: 250, Lines: []string{"mx.example.net"}}
	for kw, params := range e {
		r.Lines = append(r.Lines, strings.Join(append([]string{kw}, params...), " "))
	}
	return r
}
