package inspect

import (
	"slices"
	"testing"
	"time"
)

func TestHeaderSection(t *testing.T) {
	type field struct{ name, value string }
	tests := []struct {
		name      string
		msg       string
		fields    []field
		malformed []string
	}{
		{
			name:   "folded field is unfolded keeping the whitespace (RFC 5322 §2.2.3)",
			msg:    "Subject: one\r\n two\r\n\tthree\r\nTo: a@b.c\r\n\r\nbody",
			fields: []field{{"Subject", "one two\tthree"}, {"To", "a@b.c"}},
		},
		{
			name:   "bare LF line endings",
			msg:    "Subject: one\n two\nTo: a@b.c\n\nbody",
			fields: []field{{"Subject", "one two"}, {"To", "a@b.c"}},
		},
		{
			name:   "obsolete whitespace before the colon (RFC 5322 §4.5)",
			msg:    "Subject : hello\r\nX-Empty:\r\n\r\n",
			fields: []field{{"Subject", "hello"}, {"X-Empty", ""}},
		},
		{
			name:   "value without space after the colon",
			msg:    "Subject:hello\r\n\r\n",
			fields: []field{{"Subject", "hello"}},
		},
		{
			name:      "header section starting with whitespace",
			msg:       " From: a@b.c\r\nSubject: x\r\n\r\n",
			fields:    []field{{"From", "a@b.c"}, {"Subject", "x"}},
			malformed: []string{MalformedHeaderSyntax},
		},
		{
			name:      "line without colon continues the field before it",
			msg:       "Content-Type: application/zip;\r\nname=\"a.zip\"\r\nSubject: x\r\n\r\n",
			fields:    []field{{"Content-Type", "application/zip; name=\"a.zip\""}, {"Subject", "x"}},
			malformed: []string{MalformedHeaderSyntax},
		},
		{
			name:      "mbox From_ line is dropped",
			msg:       "From someone@example.com Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n\r\n",
			fields:    []field{{"Subject", "x"}},
			malformed: []string{MalformedHeaderSyntax},
		},
		{
			name:      "field name with a space",
			msg:       "Subject: x\r\nBad Name: y\r\n\r\n",
			fields:    []field{{"Subject", "x Bad Name: y"}},
			malformed: []string{MalformedHeaderSyntax},
		},
		{
			name:   "whitespace-only line is a continuation, not the end",
			msg:    "Subject: x\r\n   \r\nTo: a@b.c\r\n\r\n",
			fields: []field{{"Subject", "x"}, {"To", "a@b.c"}},
		},
		{
			name:   "no body, no empty line",
			msg:    "Subject: x\r\nTo: a@b.c",
			fields: []field{{"Subject", "x"}, {"To", "a@b.c"}},
		},
		{
			name:      "duplicate Subject",
			msg:       "Subject: one\r\nSubject: two\r\n\r\n",
			fields:    []field{{"Subject", "one"}, {"Subject", "two"}},
			malformed: []string{MalformedHeaderDuplicate},
		},
		{
			name:   "Received may repeat",
			msg:    "Received: a\r\nReceived: b\r\n\r\n",
			fields: []field{{"Received", "a"}, {"Received", "b"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parse(tt.msg, DepthHeaders)
			checkContent(t, c, int64(len(tt.msg)), DepthHeaders)
			var got []field
			for _, h := range c.Header {
				got = append(got, field{h.Name, h.Value})
			}
			if !slices.Equal(got, tt.fields) {
				t.Errorf("fields = %q, want %q", got, tt.fields)
			}
			if !slices.Equal(c.Malformed, tt.malformed) {
				t.Errorf("Malformed = %q, want %q", c.Malformed, tt.malformed)
			}
		})
	}
}

func TestHeaderFacts(t *testing.T) {
	msg := "Received: from c by b; Mon, 1 Jan 2024 10:00:02 +0000\r\n" +
		"Received: from d by c; Mon, 1 Jan 2024 10:00:01 +0000\r\n" +
		"Received: from e by d; Mon, 1 Jan 2024 10:00:00 +0000\r\n" +
		"Message-ID: <abc.123@example.com>\r\n" +
		"In-Reply-To: <parent@example.org> (comment)\r\n" +
		"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?Q?K=F6ln?=\r\n" +
		"From: =?KOI8-R?B?8NLJ18XU?= <Ivan@Example.RU>\r\n" +
		"Sender: list@lists.example.com\r\n" +
		"Reply-To: \"Support\" <help@Example.net>\r\n" +
		"To: a@x.example, \"B, Person\" <b@y.example>\r\n" +
		"Cc: undisclosed-recipients:;\r\n" +
		"Date: Mon, 1 Jan 2024 09:59:59 -0500\r\n" +
		"\r\nbody\r\n"
	c := parse(msg, DepthHeaders)
	checkContent(t, c, int64(len(msg)), DepthHeaders)
	if want := []string{"from c by b; Mon, 1 Jan 2024 10:00:02 +0000", "from d by c; Mon, 1 Jan 2024 10:00:01 +0000", "from e by d; Mon, 1 Jan 2024 10:00:00 +0000"}; !slices.Equal(c.Received, want) {
		t.Errorf("Received = %q, want newest (top) first %q", c.Received, want)
	}
	if c.MessageID != "abc.123@example.com" || c.InReplyTo != "parent@example.org" {
		t.Errorf("MessageID %q, InReplyTo %q", c.MessageID, c.InReplyTo)
	}
	if c.Subject != "Grüße aus Köln" {
		t.Errorf("Subject = %q", c.Subject)
	}
	if v, ok := c.HeaderValue("subject"); !ok || v != c.Subject {
		t.Errorf("HeaderValue(subject) = %q, %v", v, ok)
	}
	wantAddr := func(name string, got []Address, want ...Address) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s = %+v, want %+v", name, got, want)
		}
	}
	wantAddr("From", c.From, Address{Name: "Привет", Addr: "Ivan@Example.RU", Domain: "example.ru"})
	wantAddr("Sender", c.Sender, Address{Addr: "list@lists.example.com", Domain: "lists.example.com"})
	wantAddr("Reply-To", c.ReplyTo, Address{Name: "Support", Addr: "help@Example.net", Domain: "example.net"})
	wantAddr("To", c.To, Address{Addr: "a@x.example", Domain: "x.example"}, Address{Name: "B, Person", Addr: "b@y.example", Domain: "y.example"})
	wantAddr("Cc", c.Cc)
	if want := time.Date(2024, 1, 1, 14, 59, 59, 0, time.UTC); !c.Date.Equal(want) || c.DateRaw != "Mon, 1 Jan 2024 09:59:59 -0500" {
		t.Errorf("Date = %v (%q), want %v", c.Date, c.DateRaw, want)
	}
	if len(c.Malformed) != 0 {
		t.Errorf("Malformed = %q", c.Malformed)
	}
}

func TestAddressList(t *testing.T) {
	tests := []struct {
		in     string
		want   []Address
		strict bool // net/mail accepts it
	}{
		{"a@b.c", []Address{{Addr: "a@b.c", Domain: "b.c"}}, true},
		{"Joe <joe@EXAMPLE.com>", []Address{{Name: "Joe", Addr: "joe@EXAMPLE.com", Domain: "example.com"}}, true},
		{"joe@example.com (Joe Q)", []Address{{Name: "Joe Q", Addr: "joe@example.com", Domain: "example.com"}}, true},
		{"=?ISO-8859-2?Q?=A3=F3d=BC?= <l@pl.example>", []Address{{Name: "Łódź", Addr: "l@pl.example", Domain: "pl.example"}}, true},
		{"=?windows-1251?B?z/Do4uXy?= <p@ru.example>", []Address{{Name: "Привет", Addr: "p@ru.example", Domain: "ru.example"}}, true},
		{"Group: a@b.c, d@e.f;", []Address{{Addr: "a@b.c", Domain: "b.c"}, {Addr: "d@e.f", Domain: "e.f"}}, true},
		{"", nil, true},
		// What net/mail refuses, recovered.
		{"Joe <joe@example.com", []Address{{Name: "Joe", Addr: "joe@example.com", Domain: "example.com"}}, false},
		{"Joe Smith joe@example.com", []Address{{Name: "", Addr: "joe@example.com", Domain: "example.com"}}, false},
		{"john..doe@example.com, Mary <mary@example.com>", []Address{{Addr: "john..doe@example.com", Domain: "example.com"}, {Name: "Mary", Addr: "mary@example.com", Domain: "example.com"}}, false},
		{"\"Unclosed <u@example.com>", []Address{{Name: "Unclosed", Addr: "u@example.com", Domain: "example.com"}}, false},
		{"<@relay.example:user@host.example>", []Address{{Addr: "user@host.example", Domain: "host.example"}}, false},
		{"Doe, John <jd@example.com>", []Address{{Name: "John", Addr: "jd@example.com", Domain: "example.com"}}, false},
		{"undisclosed recipients", nil, false},
		{"a@b.c,,;; d@e.f.", []Address{{Addr: "a@b.c", Domain: "b.c"}, {Addr: "d@e.f.", Domain: "e.f"}}, false},
		{"\xc0\xc1 <raw@8bit.example>", []Address{{Name: "ÀÁ", Addr: "raw@8bit.example", Domain: "8bit.example"}}, false},
	}
	for _, tt := range tests {
		var f flaws
		got := parseAddressList(tt.in, "", &f)
		if !slices.Equal(got, tt.want) {
			t.Errorf("parseAddressList(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if strict := !f.has(MalformedAddressSyntax); strict != tt.strict {
			t.Errorf("parseAddressList(%q): strict = %v (flaws %q), want %v", tt.in, strict, f.list, tt.strict)
		}
	}
}

func TestParseDate(t *testing.T) {
	est := time.FixedZone("", -5*3600)
	tests := []struct {
		in     string
		want   time.Time // zero: unparsable
		strict bool
	}{
		{"Thu, 18 Oct 2012 22:48:39 -0700", time.Date(2012, 10, 19, 5, 48, 39, 0, time.UTC), true},
		{"18 Oct 2012 22:48:39 +0000", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), true},
		{"Thu, 18 Oct 2012 22:48 -0700", time.Date(2012, 10, 19, 5, 48, 0, 0, time.UTC), true},
		{"Thu, 18 Oct 2012 22:48:39 +0000 (UTC)", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), true},
		// Obsolete named zones get their offsets (RFC 5322 §4.3).
		{"Thu, 18 Oct 2012 22:48:39 EST", time.Date(2012, 10, 18, 22, 48, 39, 0, est), true},
		{"Thu, 18 Oct 2012 22:48:39 PDT", time.Date(2012, 10, 19, 5, 48, 39, 0, time.UTC), true},
		{"Thu, 18 Oct 2012 22:48:39 GMT", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), true},
		{"18 Oct 12 22:48:39 GMT", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), true},
		// Tolerated: not RFC 5322, understood anyway.
		{"Thu,18 Oct 2012 22:48:39 +0000", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), false},
		{"Thu Oct 18 22:48:39 2012", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), false},
		{"Thu, 18 Oct 2012 22:48:39", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), false},
		{"18-Oct-2012 22:48:39 +0200", time.Date(2012, 10, 18, 20, 48, 39, 0, time.UTC), false},
		{"Thursday, October 18, 2012 10:48:39 GMT+0200", time.Date(2012, 10, 18, 8, 48, 39, 0, time.UTC), false},
		{"2012-10-18T22:48:39Z", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), false},
		{"2012-10-18 22:48:39", time.Date(2012, 10, 18, 22, 48, 39, 0, time.UTC), false},
		{"Thu, 18 Oct 99 22:48:39 Z", time.Date(1999, 10, 18, 22, 48, 39, 0, time.UTC), false},
		{"Thu, 18 Oct 2012 22:48:60 +0000", time.Date(2012, 10, 18, 22, 48, 59, 0, time.UTC), false},
		// Garbage.
		{"", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"Thu, 31 Feb 2012 22:48:39 +0000", time.Time{}, false},
		{"Thu, 18 Oct 2012 25:48:39 +0000", time.Time{}, false},
		{"18 Foo 2012 22:48:39", time.Time{}, false},
		{"99:99:99 1 2 3", time.Time{}, false},
	}
	for _, tt := range tests {
		got, strict := parseDate(tt.in)
		if !got.Equal(tt.want) || got.IsZero() != tt.want.IsZero() {
			t.Errorf("parseDate(%q) = %v, want %v", tt.in, got, tt.want)
		}
		if strict != tt.strict {
			t.Errorf("parseDate(%q): strict = %v, want %v", tt.in, strict, tt.strict)
		}
	}
}

func TestDateFacts(t *testing.T) {
	tests := []struct {
		header    string
		date      time.Time
		raw       string
		malformed []string
	}{
		{"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), "Mon, 1 Jan 2024 00:00:00 +0000", nil},
		{"Date: not a date\r\n", time.Time{}, "not a date", []string{MalformedDateSyntax}},
		{"Date: Mon Jan  1 00:00:00 2024\r\n", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), "Mon Jan  1 00:00:00 2024", []string{MalformedDateSyntax}},
		{"Subject: no date\r\n", time.Time{}, "", nil},
	}
	for _, tt := range tests {
		msg := tt.header + "\r\n"
		c := parse(msg, DepthHeaders)
		if !c.Date.Equal(tt.date) || c.DateRaw != tt.raw || !slices.Equal(c.Malformed, tt.malformed) {
			t.Errorf("%q: Date %v, DateRaw %q, Malformed %q; want %v, %q, %q", tt.header, c.Date, c.DateRaw, c.Malformed, tt.date, tt.raw, tt.malformed)
		}
	}
}

func TestMessageID(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"<a.b@example.com>", "a.b@example.com", true},
		{"  <a.b@example.com> (comment)", "a.b@example.com", true},
		{"(comment) <x@y>", "x@y", true},
		{"<a@b> <c@d>", "a@b", true},
		{"", "", true},
		{"a.b@example.com", "a.b@example.com", false},
		{"<no-at-sign>", "no-at-sign", false},
		{"<unclosed@example.com", "unclosed@example.com", false},
		{"<>", "", false},
	}
	for _, tt := range tests {
		got, ok := parseMsgID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseMsgID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestStripComments(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a (b) c", "a   c"},
		{"a (b (nested) c) d", "a   d"},
		{`"(not a comment)" x`, `"(not a comment)" x`},
		{`a (esc \) still) b`, "a   b"},
		{"a (unclosed", "a  "},
		{"plain", "plain"},
	}
	for _, tt := range tests {
		if got := stripComments(tt.in); got != tt.want {
			t.Errorf("stripComments(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
