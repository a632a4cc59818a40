package auth

import (
	"strings"
	"testing"
)

// spfSyntaxValid are records the grammar of RFC 7208 §12 takes.
var spfSyntaxValid = []string{
	// record = version terms *SP; terms = *( 1*SP ( directive / modifier ) )
	"v=spf1",
	"V=SPF1",
	"v=spf1 ",
	"v=spf1  -all  ",
	"v=spf1 +all",
	"v=spf1 ?all ~all -all all ALL",
	// a and mx: [ ":" domain-spec ] [ dual-cidr-length ]
	"v=spf1 a mx -all",
	"v=spf1 a:example.com mx:example.com",
	"v=spf1 a/24 a//64 a/24//64 a/0 a//0 a/32//128",
	"v=spf1 a:example.com/24 mx:example.com//64 a:example.com/0//128",
	"v=spf1 MX:Example.COM/24 A:%{d}/24",
	"v=spf1 a:mail.example.com. mx:example.com.",
	"v=spf1 a:_spf.example.com a:foo_bar.example.com",
	// §7.1: any visible character but "%" before the top label.
	"v=spf1 a:foo:bar/baz.example.com mx:a=b.example.com",
	// ptr, include, exists
	"v=spf1 ptr ptr:example.com PTR:%{d}",
	"v=spf1 include:_spf.example.com include:%{o} -all",
	"v=spf1 exists:%{i}.%{l2r-}.user.%{d2}",
	"v=spf1 exists:%{ir}.%{v}._spf.%{d} exists:%{L}.%{O}.example.com",
	// ip4 and ip6
	"v=spf1 ip4:192.0.2.0/24 ip4:0.0.0.0/0 ip4:255.255.255.255/32 ip4:10.0.0.1",
	"v=spf1 ip6:::1 ip6:2001:db8::/32 ip6:::ffff:192.0.2.1/128 IP6:2001:DB8::CD30/0 ip6:::/0",
	"v=spf1 ip6:1:2:3:4:5:6:7:8/99",
	// Macros: every letter, transformers, delimiters, the three escapes.
	"v=spf1 exists:%{s}%{l}%{o}%{d}%{i}%{p}%{h}%{v}.example.com",
	"v=spf1 exists:%{d2r.-+,/_=}.example.com exists:%{d128}.example.com exists:%{dR}.x.com",
	"v=spf1 exists:%{d01}.example.com", // the value is 1, not 0
	"v=spf1 exists:a%%b%_c%-d.example.com exists:x.%%",
	// toplabel = ( *alphanum ALPHA *alphanum ) /
	//            ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
	"v=spf1 a:example.co-uk a:x.1-2 a:x.1a a:x.a1 a:x.1--2 a:x.Z",
	"v=spf1 a:.com", // an empty macro-string, then "." toplabel
	// Modifiers: redirect, exp, unknown ones (name "=" macro-string).
	"v=spf1 redirect=_spf.example.com",
	"v=spf1 -all exp=explain.%{d}",
	"v=spf1 redirect=example.com exp=x.example.com",
	"v=spf1 foo=bar foo=baz foo= a-b_c.d=%{c}%{r}%{t} x=%%%_%-",
	"v=spf1 v=spf1 include=example.com default=deny",
	"v=spf1 moo.cow-far_out=man:dog/cat ~all",
}

// spfSyntaxInvalid are records the grammar refuses, and a part of the
// error each gives.
var spfSyntaxInvalid = []struct {
	record, err string
}{
	// §4.5: not an SPF record at all.
	{"", "not an SPF record"},
	{"v=spf", "not an SPF record"},
	{"v=spf1-all", "not an SPF record"},
	{"v=spf10 -all", "not an SPF record"},
	{"v=spf1\t-all", "not an SPF record"},
	{" v=spf1 -all", "not an SPF record"},
	{"spf1 -all", "not an SPF record"},

	// §3.1: 7-bit ASCII; §4.6.1: terms separated by SP only.
	{"v=spf1 a:\u00efgarbage.example.net -all", "octet 0xc3 at offset 9: not 7-bit ASCII"},
	{"v=spf1 \x80a:example.net -all", "not 7-bit ASCII"},
	{"v=spf1 a:ctrl.example.com\rptr -all", "control character 0x0d at offset 25"},
	{"v=spf1 ip4:192.0.2.5\n include:example.com", "control character 0x0a"},
	{"v=spf1 a:\x00example.com", "control character 0x00"},
	{"v=spf1 a:example.com\x7f", "control character 0x7f"},
	{"v=spf1 -all\t", "control character 0x09"},

	// §4.6: an error after the deciding term is still an error.
	{"v=spf1 ip4:1.2.3.4 -all moo", `unknown mechanism "moo" in "moo"`},
	{"v=spf1 -all ip6", `ip6: no ":" and network`},
	{"v=spf1 ipv4:1.2.3.4", `unknown mechanism "ipv4"`},

	// directive = [ qualifier ] mechanism
	{"v=spf1 +", "a qualifier without a mechanism"},
	{"v=spf1 -:example.com", "no mechanism name"},
	{"v=spf1 /24", "no mechanism name"},
	{"v=spf1 -redirect=example.com", "a modifier takes no qualifier"},
	{"v=spf1 ?foo=bar", "a modifier takes no qualifier"},
	{"v=spf1 --all", "unknown mechanism"},
	{"v=spf1 redirect:example.com", `unknown mechanism "redirect"`},
	{"v=spf1 exp:example.com", `unknown mechanism "exp"`},
	// name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
	{"v=spf1 1foo=bar", "a modifier name begins with a letter"},
	{"v=spf1 =bar", "a modifier name begins with a letter"},
	{"v=spf1 _a=b", "a modifier name begins with a letter"},
	{"v=spf1 a*b=c", "a modifier name begins with a letter"},

	// all = "all"
	{"v=spf1 all:example.com", "all: takes no argument"},
	{"v=spf1 -all/24", "all: takes no argument"},
	{"v=spf1 -all.", `unknown mechanism "all."`},

	// include and exists: ":" domain-spec
	{"v=spf1 include", `include: no ":" and domain-spec`},
	{"v=spf1 include:", "include: empty domain-spec"},
	{"v=spf1 include:example.com/24", `include: top label holds '/'`},
	{"v=spf1 exists", `exists: no ":" and domain-spec`},
	{"v=spf1 exists:", "exists: empty domain-spec"},
	{"v=spf1 exists:example.com/24", `exists: top label holds '/'`},

	// a and mx: dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
	{"v=spf1 a:", "a: empty domain-spec"},
	{"v=spf1 a:/24", "a: empty domain-spec"},
	{"v=spf1 a/", "a: ip4 cidr length is empty"},
	{"v=spf1 a//", "a: ip6 cidr length is empty"},
	{"v=spf1 a/33", "a: ip4 cidr length above 32"},
	{"v=spf1 a/100", "a: ip4 cidr length above 32"},
	{"v=spf1 a//129", "a: ip6 cidr length above 128"},
	{"v=spf1 a//1000", "a: ip6 cidr length above 128"},
	{"v=spf1 a/032", "a: ip4 cidr length with a leading zero"},
	{"v=spf1 a//064", "a: ip6 cidr length with a leading zero"},
	{"v=spf1 a/00", "a: ip4 cidr length with a leading zero"},
	{"v=spf1 a/24/", "a: malformed cidr length"},
	{"v=spf1 a/x", "a: malformed cidr length"},
	{"v=spf1 a:example.com/24/", "a: ip4 cidr length is empty"},
	{"v=spf1 a:example.com///64", "a: ip4 cidr length is empty"},
	{"v=spf1 mx:example.com/33", "mx: ip4 cidr length above 32"},
	{"v=spf1 mx/24//0129", "mx: ip6 cidr length with a leading zero"},
	{"v=spf1 mx:example.com:8080", "mx: top label holds ':'"},
	{"v=spf1 a:example.com:8080", "a: top label holds ':'"},

	// ptr = "ptr" [ ":" domain-spec ]
	{"v=spf1 ptr/24", "ptr: takes no cidr length"},
	{"v=spf1 ptr:", "ptr: empty domain-spec"},
	{"v=spf1 ptr:example.com/24", "ptr: top label holds '/'"},

	// ip4 = "ip4" ":" ip4-network [ ip4-cidr-length ]
	{"v=spf1 ip4", `ip4: no ":" and network`},
	{"v=spf1 ip4/24", `ip4: no ":" and network`},
	{"v=spf1 ip4:", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:1.2.3", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:1.2.3.4.5", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:01.2.3.4", "ip4: not a dotted-quad IPv4 network"}, // qnum: no leading zeros
	{"v=spf1 ip4:256.0.0.0", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:::1", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:::ffff:1.2.3.4", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:example.com", "ip4: not a dotted-quad IPv4 network"},
	{"v=spf1 ip4:1.2.3.4/", "ip4: cidr length is empty"},
	{"v=spf1 ip4:1.2.3.4/33", "ip4: cidr length above 32"},
	{"v=spf1 ip4:1.2.3.4/032", "ip4: cidr length with a leading zero"},
	{"v=spf1 ip4:1.2.3.4/3a", "ip4: cidr length is not a number"},
	{"v=spf1 ip4:1.2.3.4//24", "ip4: cidr length is not a number"},
	{"v=spf1 ip4:1.2.3.4/99999999999999999999", "ip4: cidr length above 32"},

	// ip6 = "ip6" ":" ip6-network [ ip6-cidr-length ]
	{"v=spf1 ip6:", "ip6: not an IPv6 network"},
	{"v=spf1 ip6:1.2.3.4", "ip6: not an IPv6 network"},
	{"v=spf1 ip6:::1::2", "ip6: not an IPv6 network"},
	{"v=spf1 ip6:fe80::1%eth0", "ip6: not an IPv6 network"},
	{"v=spf1 ip6:12345::", "ip6: not an IPv6 network"},
	{"v=spf1 ip6:::1/", "ip6: cidr length is empty"},
	{"v=spf1 ip6:::1/129", "ip6: cidr length above 128"},
	{"v=spf1 ip6:::1/0128", "ip6: cidr length with a leading zero"},
	{"v=spf1 ip6:::1//64", "ip6: cidr length is not a number"},

	// domain-end = ( "." toplabel [ "." ] ) / macro-expand
	{"v=spf1 a:museum", "a: a single-label domain"},
	{"v=spf1 a:museum.", "a: a single-label domain"},
	{"v=spf1 a:foo-bar", "a: a single-label domain"},
	{"v=spf1 a:.", "a: a single-label domain"},
	{"v=spf1 a:%{d}com", `a: no "." before the top label`},
	{"v=spf1 a:%{d}.", `a: no "." before the top label`},
	{"v=spf1 a:111.222.33.44", "a: top label is all digits"},
	{"v=spf1 a:abc.123", "a: top label is all digits"},
	{"v=spf1 a:abc.123.", "a: top label is all digits"},
	{"v=spf1 a:example.-com", "a: top label begins or ends with a hyphen"},
	{"v=spf1 a:example.com-", "a: top label begins or ends with a hyphen"},
	{"v=spf1 a:example.-", "a: top label begins or ends with a hyphen"},
	{"v=spf1 a:example.com..", "a: empty top label"},
	{"v=spf1 a:example.c_m", "a: top label holds '_'"},
	{"v=spf1 a:example.co%m", `a: "%" followed by 'm'`},

	// macro-expand = ( "%{" macro-letter transformers *delimiter "}" )
	//                / "%%" / "%_" / "%-"
	{"v=spf1 exists:%", `exists: a lone "%" at the end`},
	{"v=spf1 exists:x.com%", `exists: a lone "%" at the end`},
	{"v=spf1 exists:%a.example.com", `exists: "%" followed by 'a'`},
	{"v=spf1 exists:%{d", "exists: unterminated macro"},
	{"v=spf1 exists:%{d.example.com", "exists: unterminated macro"},
	{"v=spf1 exists:%{}.example.com", "exists: empty macro"},
	{"v=spf1 exists:%{x}.example.com", "exists: unknown macro letter 'x'"},
	{"v=spf1 exists:%{1}.example.com", "exists: unknown macro letter '1'"},
	{"v=spf1 exists:%{d0}.example.com", "exists: macro with a zero digit transformer"},
	{"v=spf1 exists:%{d00r}.example.com", "exists: macro with a zero digit transformer"},
	{"v=spf1 exists:%{dr2}.example.com", `exists: malformed macro "%{dr2}"`},
	{"v=spf1 exists:%{d2rr}.example.com", `exists: malformed macro "%{d2rr}"`},
	{"v=spf1 exists:%{d!}.example.com", `exists: malformed macro "%{d!}"`},
	{"v=spf1 exists:%{dd}.example.com", `exists: malformed macro "%{dd}"`},
	{"v=spf1 exists:%{d%}.example.com", `exists: malformed macro "%{d%}"`},
	// §7.2: c, r and t only in explanation text.
	{"v=spf1 exists:%{c}.example.com", "exists: macro letter c is allowed only in explanation text"},
	{"v=spf1 a:%{R}.example.com", "a: macro letter r is allowed only in explanation text"},
	{"v=spf1 include:%{t}.example.com", "include: macro letter t is allowed only in explanation text"},
	{"v=spf1 exp=%{r}.example.com", "exp: macro letter r is allowed only in explanation text"},

	// redirect = "redirect" "=" domain-spec; explanation likewise.
	{"v=spf1 redirect=", "redirect: empty domain-spec"},
	{"v=spf1 ?all redirect=", "redirect: empty domain-spec"},
	{"v=spf1 redirect=-all ?all", "redirect: a single-label domain"},
	{"v=spf1 redirect=%{d", "redirect: unterminated macro"},
	{"v=spf1 exp= -all", "exp: empty domain-spec"},
	{"v=spf1 exp=-all", "exp: a single-label domain"},
	{"v=spf1 -all exp=example.com:80", "exp: top label holds ':'"},
	// §6: each at most once.
	{"v=spf1 redirect=a.example.com redirect=b.example.com", "redirect= appears more than once"},
	{"v=spf1 REDIRECT=a.example.com Redirect=a.example.com", "redirect= appears more than once"},
	{"v=spf1 exp=a.example.com -all EXP=b.example.com", "exp= appears more than once"},

	// unknown-modifier = name "=" macro-string
	{"v=spf1 -all foo=%abc", `modifier "foo": "%" followed by 'a'`},
	{"v=spf1 foo=%", `modifier "foo": a lone "%" at the end`},
	{"v=spf1 foo=%{z}", `modifier "foo": unknown macro letter 'z'`},
	{"v=spf1 foo=%{d", `modifier "foo": unterminated macro`},
}

func TestSPFSyntax(t *testing.T) {
	for _, r := range spfSyntaxValid {
		if err := checkSPFSyntax(r); err != nil {
			t.Errorf("%q: %v, want valid", r, err)
		}
	}
	for _, c := range spfSyntaxInvalid {
		err := checkSPFSyntax(c.record)
		switch {
		case err == nil:
			t.Errorf("%q: valid, want an error with %q", c.record, c.err)
		case !strings.Contains(err.Error(), c.err):
			t.Errorf("%q: %v, want an error with %q", c.record, err, c.err)
		}
	}
}

// TestSPFSyntaxMessage: the error names the term, quoted in printable
// ASCII and cut short, because the record is the sender's text.
func TestSPFSyntaxMessage(t *testing.T) {
	for _, c := range []struct{ record, want string }{
		{"v=spf1 ip4:1.2.3.4/032 -all", `ip4: cidr length with a leading zero in "ip4:1.2.3.4/032"`},
		{"v=spf1 exp=a.test exp=b.test", `exp= appears more than once in "exp=b.test"`},
		{"v=spf1 a:\x01", "control character 0x01 at offset 9: terms are separated by spaces only"},
		{"v=spf1 a:" + strings.Repeat("x", 100), `a: a single-label domain in "a:` + strings.Repeat("x", 62) + `"...`},
		{"v=spf1 " + strings.Repeat("x", 100) + "=%", `modifier "` + strings.Repeat("x", 64) + `"...: a lone "%" at the end (a literal "%" is written "%%") in "` +
			strings.Repeat("x", 64) + `"...`},
		{"v=spf1 " + strings.Repeat("x", 100), `unknown mechanism "` + strings.Repeat("x", 64) + `"... in "` +
			strings.Repeat("x", 64) + `"...`},
		{"v=spf1 exists:%{d" + strings.Repeat(".", 100) + "!}.test", `exists: malformed macro "%{d` + strings.Repeat(".", 61) +
			`"... in "exists:%{d` + strings.Repeat(".", 54) + `"...`},
	} {
		if err := checkSPFSyntax(c.record); err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %s", c.record, err, c.want)
		}
	}
}

// TestIsSPFRecord: RFC 7208 §4.5, "v=spf1" in any case, then a space or
// the end.
func TestIsSPFRecord(t *testing.T) {
	for _, c := range []struct {
		txt  string
		want bool
	}{
		{"v=spf1", true},
		{"v=spf1 -all", true},
		{"V=Spf1 -all", true},
		{"v=spf1  ", true},
		{"v=spf10", false},
		{"v=spf1-all", false},
		{"v=spf1\t-all", false},
		{"v=spf", false},
		{" v=spf1", false},
		{"", false},
		{"v=\u017fpf1", false}, // U+017F folds to "s" in Unicode, not in ASCII
		{"spf2.0/pra -all", false},
	} {
		if got := isSPFRecord(c.txt); got != c.want {
			t.Errorf("isSPFRecord(%q) = %v, want %v", c.txt, got, c.want)
		}
	}
}

// FuzzSPFSyntax: checkSPFSyntax never panics, gives the same answer twice,
// and its answers hang together: a record it takes is an SPF record in
// printable ASCII whose every term it takes alone, in either case and
// however spaced; a record it refuses, it refuses in either case; its
// errors are short printable ASCII, fit for a log line.
func FuzzSPFSyntax(f *testing.F) {
	for _, r := range spfSyntaxValid {
		f.Add(r)
	}
	for _, c := range spfSyntaxInvalid {
		f.Add(c.record)
	}
	f.Fuzz(func(t *testing.T, record string) {
		err := checkSPFSyntax(record)
		again := checkSPFSyntax(record)
		if (err == nil) != (again == nil) || err != nil && err.Error() != again.Error() {
			t.Fatalf("%q: %v, then %v", record, err, again)
		}
		if err != nil {
			msg := err.Error()
			if len(msg) > 1024 {
				t.Fatalf("%q: error of %d bytes", record, len(msg))
			}
			for i := 0; i < len(msg); i++ {
				if msg[i] < ' ' || msg[i] > '~' {
					t.Fatalf("%q: error %q is not printable ASCII", record, msg)
				}
			}
			if isASCII(record) {
				for _, r := range []string{strings.ToUpper(record), strings.ToLower(record)} {
					if checkSPFSyntax(r) == nil {
						t.Fatalf("%q refused (%v), but %q taken", record, err, r)
					}
				}
			}
			return
		}
		if !isSPFRecord(record) {
			t.Fatalf("%q taken, but not an SPF record", record)
		}
		for i := 0; i < len(record); i++ {
			if record[i] < ' ' || record[i] > '~' {
				t.Fatalf("%q taken, with the octet 0x%02x", record, record[i])
			}
		}
		terms := strings.Fields(record[len(spfVersion):])
		for _, r := range []string{
			strings.ToUpper(record),
			strings.ToLower(record),
			spfVersion + " " + strings.Join(terms, "   ") + " ",
		} {
			if err := checkSPFSyntax(r); err != nil {
				t.Fatalf("%q taken, but %q refused: %v", record, r, err)
			}
		}
		for _, term := range terms {
			if err := checkSPFSyntax(spfVersion + " " + term); err != nil {
				t.Fatalf("%q taken, but its term %q alone refused: %v", record, term, err)
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
