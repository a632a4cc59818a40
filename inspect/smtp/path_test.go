package smtp

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

type pathTest struct {
	in     string
	path   Path
	params []Param
	ok     bool
}

var (
	label63   = strings.Repeat("d", 63)
	domain255 = label63 + "." + label63 + "." + label63 + "." + label63 // 4*63+3
	local64   = strings.Repeat("l", 64)
	// A path of exactly 256 octets: 64 + "@" + 189 + "<>".
	domain189 = label63 + "." + label63 + "." + strings.Repeat("d", 61)
)

var mailArgTests = []pathTest{
	{"FROM:<>", Path{}, nil, true},
	{"from:<>", Path{}, nil, true},
	{"From:<> SIZE=1000 BODY=8BITMIME", Path{}, []Param{{"SIZE", "1000"}, {"BODY", "8BITMIME"}}, true},
	{"FROM:<user@example.com>", Path{"user", "example.com"}, nil, true},
	{"FROM: <user@example.com>", Path{"user", "example.com"}, nil, true},
	{"FROM:   <user@example.com>", Path{"user", "example.com"}, nil, true},
	{"FROM:<User.Name+tag@Example.COM>", Path{"User.Name+tag", "Example.COM"}, nil, true},
	{"FROM:<!#$%&'*+-/=?^_`{|}~@example.com>", Path{"!#$%&'*+-/=?^_`{|}~", "example.com"}, nil, true},
	{`FROM:<"john doe"@example.com>`, Path{`"john doe"`, "example.com"}, nil, true},
	{`FROM:<"a\"b\\c"@example.com>`, Path{`"a\"b\\c"`, "example.com"}, nil, true},
	{`FROM:<"a>b@c"@example.com>`, Path{`"a>b@c"`, "example.com"}, nil, true},
	{`FROM:<""@example.com>`, Path{`""`, "example.com"}, nil, true},
	{"FROM:<@a.example,@b.example:user@c.example>", Path{"user", "c.example"}, nil, true},
	{"FROM:<@a.example:user@c.example>", Path{"user", "c.example"}, nil, true},
	{"FROM:<user@[192.0.2.1]>", Path{"user", "[192.0.2.1]"}, nil, true},
	{"FROM:<user@[010.000.002.001]>", Path{"user", "[010.000.002.001]"}, nil, true},
	{"FROM:<user@[IPv6:2001:db8::1]>", Path{"user", "[IPv6:2001:db8::1]"}, nil, true},
	{"FROM:<user@[ipv6:::ffff:192.0.2.1]>", Path{"user", "[ipv6:::ffff:192.0.2.1]"}, nil, true},
	{"FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8", Path{"δοκιμή", "παράδειγμα.δοκιμή"}, []Param{{"SMTPUTF8", ""}}, true},
	{`FROM:<"δοκιμή x"@example.com>`, Path{`"δοκιμή x"`, "example.com"}, nil, true},
	{"FROM:<user@example.com> SIZE=12345 BODY=7bit RET=HDRS ENVID=QQ314159+2B AUTH=<>",
		Path{"user", "example.com"},
		[]Param{{"SIZE", "12345"}, {"BODY", "7bit"}, {"RET", "HDRS"}, {"ENVID", "QQ314159+2B"}, {"AUTH", "<>"}}, true},
	{"FROM:<user@example.com> AUTH=e+3Dmc2@example.com BODY=BINARYMIME", Path{"user", "example.com"},
		[]Param{{"AUTH", "e+3Dmc2@example.com"}, {"BODY", "BINARYMIME"}}, true},
	{"FROM:<user@example.com> X-CUSTOM=foo XFOO 1X", Path{"user", "example.com"},
		[]Param{{"X-CUSTOM", "foo"}, {"XFOO", ""}, {"1X", ""}}, true},
	{"FROM:<a@b> size=1", Path{"a", "b"}, []Param{{"SIZE", "1"}}, true},
	{"FROM:<a@b>  SIZE=1   BODY=8BITMIME", Path{"a", "b"}, []Param{{"SIZE", "1"}, {"BODY", "8BITMIME"}}, true},
	{"FROM:<a@b> ", Path{"a", "b"}, nil, true},
	{"FROM:<a@b> SIZE=99999999999999999999", Path{"a", "b"}, []Param{{"SIZE", "99999999999999999999"}}, true},
	{"FROM:<a@b> X=ü", Path{"a", "b"}, []Param{{"X", "ü"}}, true},
	{"FROM:<first..last.@docomo.ne.jp>", Path{"first..last.", "docomo.ne.jp"}, nil, true},
	{"FROM:<.x@example.com>", Path{".x", "example.com"}, nil, true},
	{"FROM:<user@a-b.example>", Path{"user", "a-b.example"}, nil, true},
	{"FROM:<user@123.example>", Path{"user", "123.example"}, nil, true},
	{"FROM:<user@localhost>", Path{"user", "localhost"}, nil, true},
	{"FROM:<" + local64 + "@example.com>", Path{local64, "example.com"}, nil, true},
	{"FROM:<" + local64 + "@" + domain189 + ">", Path{local64, domain189}, nil, true},
	{"FROM:<a@" + label63 + ".com>", Path{"a", label63 + ".com"}, nil, true},

	{"", Path{}, nil, false},
	{"FROM", Path{}, nil, false},
	{"FROM<a@b>", Path{}, nil, false},
	{"FROM :<a@b>", Path{}, nil, false},
	{"TO:<a@b>", Path{}, nil, false},
	{"FROM:", Path{}, nil, false},
	{"FROM:a@b", Path{}, nil, false},
	{"FROM:<a@b", Path{}, nil, false},
	{"FROM:a@b>", Path{}, nil, false},
	{"FROM:<a@b>x", Path{}, nil, false},
	{"FROM:<a@b>\tSIZE=1", Path{}, nil, false},
	{"FROM:<<a@b>>", Path{}, nil, false},
	{"FROM:<a>", Path{}, nil, false},
	{"FROM:<postmaster>", Path{}, nil, false},
	{"FROM:<@>", Path{}, nil, false},
	{"FROM:<@b>", Path{}, nil, false},
	{"FROM:<a@>", Path{}, nil, false},
	{"FROM:<a@@b>", Path{}, nil, false},
	{"FROM:<a@-b.com>", Path{}, nil, false},
	{"FROM:<a@b-.com>", Path{}, nil, false},
	{"FROM:<a@b..com>", Path{}, nil, false},
	{"FROM:<a@b.com.>", Path{}, nil, false},
	{"FROM:<a@.b>", Path{}, nil, false},
	{"FROM:<a@b_c.com>", Path{}, nil, false},
	{"FROM:<a b@c>", Path{}, nil, false},
	{"FROM:<a@b c>", Path{}, nil, false},
	{"FROM:<a(comment)@b>", Path{}, nil, false},
	{"FROM:<a,b@c>", Path{}, nil, false},
	{`FROM:<"a@b>`, Path{}, nil, false},
	{`FROM:<"a\`, Path{}, nil, false},
	{`FROM:<"a"b@c>`, Path{}, nil, false},
	{"FROM:<a\x00@b>", Path{}, nil, false},
	{"FROM:<\"a\x01\"@b>", Path{}, nil, false},
	{"FROM:<\"a\\\x01\"@b>", Path{}, nil, false},
	{"FROM:<a@b\x00>", Path{}, nil, false},
	{"FROM:<\xff@b>", Path{}, nil, false},
	{"FROM:<\"\xff\"@b>", Path{}, nil, false},
	{"FROM:<a@\xff.com>", Path{}, nil, false},
	{"FROM:<a@[1.2.3]>", Path{}, nil, false},
	{"FROM:<a@[1.2.3.256]>", Path{}, nil, false},
	{"FROM:<a@[1.2.3.4.5]>", Path{}, nil, false},
	{"FROM:<a@[1.2.3.0004]>", Path{}, nil, false},
	{"FROM:<a@[]>", Path{}, nil, false},
	{"FROM:<a@[IPv6:zz::1]>", Path{}, nil, false},
	{"FROM:<a@[IPv6:1.2.3.4]>", Path{}, nil, false},
	{"FROM:<a@[IPv6:fe80::1%eth0]>", Path{}, nil, false},
	{"FROM:<a@[2001:db8::1]>", Path{}, nil, false},
	{"FROM:<a@[foo:bar]>", Path{}, nil, false},
	{"FROM:<a@[1.2.3.4>", Path{}, nil, false},
	{"FROM:<a@[1.2.3.4]x>", Path{}, nil, false},
	{"FROM:<@a,b:c@d>", Path{}, nil, false},
	// Found by FuzzParseMailArg: a source route followed by a mailbox
	// with an empty local part.
	{"FROM:<@0:@\u06ab>", Path{}, nil, false},
	{"FROM:<@a:@b>", Path{}, nil, false},
	{"FROM:<@a user@c>", Path{}, nil, false},
	{"FROM:<@a,:user@c>", Path{}, nil, false},
	{"FROM:<@-a:user@c>", Path{}, nil, false},
	{"FROM:<" + local64 + "l@example.com>", Path{}, nil, false},
	{"FROM:<a@" + domain255 + "d>", Path{}, nil, false},
	{"FROM:<a@" + label63 + "d.com>", Path{}, nil, false},
	{"FROM:<" + local64 + "@" + domain189 + "d>", Path{}, nil, false},
	{"FROM:<a@b> SIZE=1 SIZE=2", Path{}, nil, false},
	{"FROM:<a@b> SIZE=1 size=2", Path{}, nil, false},
	{"FROM:<a@b> X X", Path{}, nil, false},
	{"FROM:<a@b> SIZE=abc", Path{}, nil, false},
	{"FROM:<a@b> SIZE=-1", Path{}, nil, false},
	{"FROM:<a@b> SIZE", Path{}, nil, false},
	{"FROM:<a@b> SIZE=", Path{}, nil, false},
	{"FROM:<a@b> SIZE=123456789012345678901", Path{}, nil, false},
	{"FROM:<a@b> X=", Path{}, nil, false},
	{"FROM:<a@b> =x", Path{}, nil, false},
	{"FROM:<a@b> -X=1", Path{}, nil, false},
	{"FROM:<a@b> X_Y=1", Path{}, nil, false},
	{"FROM:<a@b> X=a=b", Path{}, nil, false},
	{"FROM:<a@b> X=\x01", Path{}, nil, false},
	{"FROM:<a@b> X=\xff", Path{}, nil, false},
	{"FROM:<a@b> BODY=9BIT", Path{}, nil, false},
	{"FROM:<a@b> BODY", Path{}, nil, false},
	{"FROM:<a@b> SMTPUTF8=yes", Path{}, nil, false},
	{"FROM:<a@b> RET=ALL", Path{}, nil, false},
	{"FROM:<a@b> ENVID=a+zz", Path{}, nil, false},
	{"FROM:<a@b> ENVID=a+2b", Path{}, nil, false},
	{"FROM:<a@b> ENVID=" + strings.Repeat("e", 101), Path{}, nil, false},
	{"FROM:<a@b> AUTH", Path{}, nil, false},
	{"FROM:<a@b> AUTH=a+", Path{}, nil, false},
	{"FROM:<a@b>" + strings.Repeat(" X", 1) + manyParams(32), Path{}, nil, false},
}

// manyParams returns n distinct parameters " P0 P1 ...".
func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, " P%d", i)
	}
	return b.String()
}

var rcptArgTests = []pathTest{
	{"TO:<user@example.com>", Path{"user", "example.com"}, nil, true},
	{"to:<user@example.com>", Path{"user", "example.com"}, nil, true},
	{"TO: <user@example.com>", Path{"user", "example.com"}, nil, true},
	{"TO:<postmaster>", Path{"postmaster", ""}, nil, true},
	{"TO:<Postmaster>", Path{"Postmaster", ""}, nil, true},
	{"TO:<POSTMASTER@example.com>", Path{"POSTMASTER", "example.com"}, nil, true},
	{"TO:<@hosta.int,@jkl.org:userc@d.bar.org>", Path{"userc", "d.bar.org"}, nil, true},
	{"TO:<user@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user+2Bx@example.com",
		Path{"user", "example.com"}, []Param{{"NOTIFY", "SUCCESS,FAILURE"}, {"ORCPT", "rfc822;user+2Bx@example.com"}}, true},
	{"TO:<a@b> NOTIFY=never", Path{"a", "b"}, []Param{{"NOTIFY", "never"}}, true},
	{"TO:<a@b> NOTIFY=DELAY", Path{"a", "b"}, []Param{{"NOTIFY", "DELAY"}}, true},
	{"TO:<a@b> ORCPT=utf-8;ü@example.com", Path{"a", "b"}, []Param{{"ORCPT", "utf-8;ü@example.com"}}, true},
	{"TO:<postmaster> X", Path{"postmaster", ""}, []Param{{"X", ""}}, true},
	{"TO:<user@[IPv6:::1]>", Path{"user", "[IPv6:::1]"}, nil, true},

	{"TO:<>", Path{}, nil, false},
	{"TO:<> NOTIFY=NEVER", Path{}, nil, false},
	{"FROM:<a@b>", Path{}, nil, false},
	{"TO:a@b", Path{}, nil, false},
	{"TO:<postmasters>", Path{}, nil, false},
	{"TO:<post master>", Path{}, nil, false},
	{`TO:<"postmaster">`, Path{}, nil, false},
	{"TO:<a@b> NOTIFY=NEVER,SUCCESS", Path{}, nil, false},
	{"TO:<a@b> NOTIFY=SUCCESS,SUCCESS", Path{}, nil, false},
	{"TO:<a@b> NOTIFY=SUCCESS,", Path{}, nil, false},
	{"TO:<a@b> NOTIFY", Path{}, nil, false},
	{"TO:<a@b> ORCPT=rfc822", Path{}, nil, false},
	{"TO:<a@b> ORCPT=;x", Path{}, nil, false},
	{"TO:<a@b> ORCPT=rfc822;", Path{}, nil, false},
	{"TO:<a@b> ORCPT=rfc 822;x", Path{}, nil, false},
	{"TO:<a@b> ORCPT=rfc822;a+zz", Path{}, nil, false},
}

func testPathArgs(t *testing.T, prefix string, parse func(string) (Path, []Param, error), tests []pathTest) {
	t.Helper()
	for _, tt := range tests {
		name := tt.in
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) {
			p, params, err := parse(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("parse(%q) = %+v, %+v, want error", tt.in, p, params)
				}
				if !errors.Is(err, ErrSyntax) {
					t.Fatalf("parse(%q) error %v does not wrap ErrSyntax", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tt.in, err)
			}
			if p != tt.path || !reflect.DeepEqual(params, tt.params) {
				t.Fatalf("parse(%q) = %+v, %+v, want %+v, %+v", tt.in, p, params, tt.path, tt.params)
			}
			formatted := prefix + FormatPathArg(p, params)
			p2, params2, err := parse(formatted)
			if err != nil || p2 != p || !reflect.DeepEqual(params2, params) {
				t.Fatalf("round trip via %q = %+v, %+v, %v", formatted, p2, params2, err)
			}
		})
	}
}

func TestParseMailArg(t *testing.T) { testPathArgs(t, "FROM:", ParseMailArg, mailArgTests) }

func TestParseRcptArg(t *testing.T) { testPathArgs(t, "TO:", ParseRcptArg, rcptArgTests) }

func TestPathString(t *testing.T) {
	for _, tt := range []struct {
		p    Path
		null bool
		want string
	}{
		{Path{}, true, ""},
		{Path{"user", "example.com"}, false, "user@example.com"},
		{Path{"postmaster", ""}, false, "postmaster"},
		{Path{`""`, "example.com"}, false, `""@example.com`},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.p, got, tt.want)
		}
		if got := tt.p.IsNull(); got != tt.null {
			t.Errorf("%+v.IsNull() = %v, want %v", tt.p, got, tt.null)
		}
	}
}

func TestFormatPathArg(t *testing.T) {
	for _, tt := range []struct {
		p      Path
		params []Param
		want   string
	}{
		{Path{}, nil, "<>"},
		{Path{}, []Param{{"SIZE", "10"}}, "<> SIZE=10"},
		{Path{"a", "b"}, []Param{{"SMTPUTF8", ""}, {"BODY", "8BITMIME"}}, "<a@b> SMTPUTF8 BODY=8BITMIME"},
		{Path{"postmaster", ""}, nil, "<postmaster>"},
	} {
		if got := FormatPathArg(tt.p, tt.params); got != tt.want {
			t.Errorf("FormatPathArg(%+v, %+v) = %q, want %q", tt.p, tt.params, got, tt.want)
		}
	}
}

func TestLookupParam(t *testing.T) {
	params := []Param{{"SIZE", "10"}, {"SMTPUTF8", ""}}
	if v, ok := LookupParam(params, "size"); !ok || v != "10" {
		t.Errorf("LookupParam(size) = %q, %v", v, ok)
	}
	if v, ok := LookupParam(params, "SMTPUTF8"); !ok || v != "" {
		t.Errorf("LookupParam(SMTPUTF8) = %q, %v", v, ok)
	}
	if _, ok := LookupParam(params, "BODY"); ok {
		t.Error("LookupParam(BODY) found a parameter that is not there")
	}
}

func TestParseSizeValue(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"12345", 12345, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"9223372036854775808", math.MaxInt64, true},
		{"99999999999999999999", math.MaxInt64, true},
		{"", 0, false},
		{"123456789012345678901", 0, false},
		{"12a", 0, false},
		{"+1", 0, false},
		{"-1", 0, false},
	} {
		got, err := ParseSizeValue(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSizeValue(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestDecodeXtext(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"QQ314159", "QQ314159", true},
		{"a+2Bb+3Dc", "a+b=c", true},
		{"+00", "\x00", true},
		{"a+2b", "", false},
		{"a+2", "", false},
		{"a+", "", false},
		{"a=b", "", false},
		{"a b", "", false},
		{"ü", "", false},
	} {
		got, err := DecodeXtext(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestEncodeXtext(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"QQ314159", "QQ314159"},
		{"a+b=c", "a+2Bb+3Dc"},
		{"mail.example.org", "mail.example.org"},
		{"[UNAVAILABLE]", "[UNAVAILABLE]"},
		{"two words", "two+20words"},
		{"\x00\x7f\xff", "+00+7F+FF"},
		{"ü", "+C3+BC"},
	} {
		if got := EncodeXtext(tt.in); got != tt.want {
			t.Errorf("EncodeXtext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// checkXtextRoundTrip holds EncodeXtext to RFC 3461 §4: its output is
// valid xtext that decodes to the input, and a string of xchars only is
// its own encoding.
func checkXtextRoundTrip(t *testing.T, s string) {
	t.Helper()
	enc := EncodeXtext(s)
	if err := checkXtext(enc); err != nil {
		t.Fatalf("EncodeXtext(%q) = %q, not xtext: %v", s, enc, err)
	}
	if dec, err := DecodeXtext(enc); err != nil || dec != s {
		t.Fatalf("DecodeXtext(EncodeXtext(%q)) = %q, %v", s, dec, err)
	}
	plain := true
	for i := range len(s) {
		plain = plain && isXchar(s[i])
	}
	if plain != (enc == s) {
		t.Fatalf("EncodeXtext(%q) = %q: only xchars may stand for themselves", s, enc)
	}
}

// A seeded, bounded run of the round trip over strings drawn mostly from
// the bytes that need encoding.
func TestXtextRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3461, 4))
	pool := []byte("+= \t\r\n\x00\x7f\x80\xffaZ09!~.@[]")
	for range 2000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			if r.IntN(2) == 0 {
				b[i] = pool[r.IntN(len(pool))]
			} else {
				b[i] = byte(r.IntN(256))
			}
		}
		checkXtextRoundTrip(t, string(b))
	}
}
