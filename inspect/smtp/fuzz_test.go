package smtp

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func FuzzParseCommand(f *testing.F) {
	for _, tt := range commandTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseCommand(line)
		if err != nil {
			return
		}
		again, err := ParseCommand([]byte(c.String()))
		if err != nil || again != c {
			t.Fatalf("ParseCommand(%q) = %+v; reparsing %q gives %+v, %v", line, c, c.String(), again, err)
		}
	})
}

func FuzzParseMailArg(f *testing.F) {
	for _, tt := range mailArgTests {
		f.Add(tt.in, false)
	}
	for _, tt := range rcptArgTests {
		f.Add(tt.in, true)
	}
	f.Fuzz(func(t *testing.T, arg string, rcpt bool) {
		parse, prefix := ParseMailArg, "FROM:"
		if rcpt {
			parse, prefix = ParseRcptArg, "TO:"
		}
		p, params, err := parse(arg)
		if err != nil {
			return
		}
		if len(p.Local) > MaxLocalPartLen || len(p.Domain) > MaxDomainLen || len(p.String())+2 > MaxPathLen {
			t.Fatalf("parse(%q) = %+v exceeds the RFC 5321 §4.5.3.1 limits", arg, p)
		}
		if p.IsNull() && rcpt {
			t.Fatalf("ParseRcptArg(%q) accepted the null path", arg)
		}
		formatted := prefix + FormatPathArg(p, params)
		p2, params2, err := parse(formatted)
		if err != nil || p2 != p || !reflect.DeepEqual(params2, params) {
			t.Fatalf("parse(%q) = %+v, %+v; reparsing %q gives %+v, %+v, %v", arg, p, params, formatted, p2, params2, err)
		}
	})
}

func FuzzReadReply(f *testing.F) {
	for _, tt := range readReplyTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16)
		rep, err := ReadReply(r)
		if err != nil {
			return
		}
		if rep.Code < 200 || rep.Code > 599 || len(rep.Lines) == 0 || len(rep.Lines) > MaxReplyLines {
			t.Fatalf("ReadReply(%q) = %#v breaks its limits", data, rep)
		}
		if e := rep.Enhanced; e != "" && (e[0] != byte('0'+rep.Class()) || enhancedLen([]byte(e), e[0]) != len(e)) {
			t.Fatalf("ReadReply(%q) = %#v has a bad enhanced code", data, rep)
		}
		wire := rep.Bytes()
		again, err := ReadReply(bufio.NewReader(bytes.NewReader(wire)))
		if err != nil || !reflect.DeepEqual(again, rep) {
			t.Fatalf("ReadReply(%q) = %#v; reading its wire form %q gives %#v, %v", data, rep, wire, again, err)
		}
	})
}

func FuzzDataReader(f *testing.F) {
	for _, tt := range dataReaderTests {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte("a\r\n.\r\nQUIT\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		d := NewDataReader(br)
		out, err := io.ReadAll(d)
		if len(out) > len(in) {
			t.Fatalf("output %q longer than input %q", out, in)
		}
		consumed := len(in) - br.Buffered()
		switch err {
		case nil:
			s := append([]byte("\r\n"), in[:consumed]...)
			if bytes.Index(s, []byte(eod)) != len(s)-len(eod) {
				t.Fatalf("ended after %q, which does not end at its first CRLF.CRLF", in[:consumed])
			}
		case io.ErrUnexpectedEOF:
			if consumed != len(in) {
				t.Fatalf("unexpected EOF with %d bytes left", len(in)-consumed)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if ref, refConsumed, done := refDecode(in); done != (err == nil) || done && (!bytes.Equal(ref, out) || refConsumed != consumed) {
			t.Fatalf("disagrees with the reference decoder: %q, %d vs %q, %d", out, consumed, ref, refConsumed)
		}

		// One-byte reads from a one-byte source give the same.
		br1 := bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16)
		d1 := NewDataReader(br1)
		out1, err1 := readOneByte(d1)
		if err1 == io.EOF {
			err1 = nil
		}
		rest1, _ := io.ReadAll(br1)
		if !bytes.Equal(out1, out) || err1 != err || len(rest1) != len(in)-consumed {
			t.Fatalf("one-byte reads give %q, %v, %d left; bulk %q, %v, %d left", out1, err1, len(rest1), out, err, len(in)-consumed)
		}

		// LineEndings, watching the output stream past in any chunks,
		// finds the bare line endings the input had before the
		// terminator: the dots unstuffing removes change none.
		lf, cr := lineFacts(t, out)
		if done := err == nil; done {
			raw := append([]byte("\r\n"), in[:consumed-3]...) // the DATA line's CRLF, the content with its CRLF
			rawLF := bytes.Count(raw, lfBytes) > bytes.Count(raw, crlfBytes)
			rawCR := bytes.Count(raw, crBytes) > bytes.Count(raw, crlfBytes)
			if lf != rawLF || cr != rawCR {
				t.Fatalf("LineEndings over %q: bare LF %v, bare CR %v; the input %q has %v, %v", out, lf, cr, raw, rawLF, rawCR)
			}
		}

		// Relayed through DataWriter, the output reads back with canonical
		// line endings and has one terminator, at the end.
		var relay bytes.Buffer
		w := NewDataWriter(&relay)
		half := len(out) / 2
		if _, err := w.Write(out[:half]); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(out[half:]); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		checkSingleTerminator(t, relay.Bytes())
		back, err := io.ReadAll(NewDataReader(bufio.NewReader(&relay)))
		if err != nil || !bytes.Equal(back, canonicalLines(out)) {
			t.Fatalf("relay of %q reads back as %q, %v; want %q", out, back, err, canonicalLines(out))
		}
	})
}

// FuzzParseEHLO: every keyword found is an upper-case ehlo-keyword and
// every parameter an ehlo-param (RFC 5321 §4.1.1.1); written back as a
// reply, the extensions parse to themselves.
func FuzzParseEHLO(f *testing.F) {
	for _, tt := range parseEHLOTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := ReadReply(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		e := ParseEHLO(rep)
		if rep.Class() != 2 {
			if e != nil {
				t.Fatalf("ParseEHLO of a %d reply = %#v, want nil", rep.Code, e)
			}
			return
		}
		for kw, params := range e {
			if checkKeyword(kw) != nil || kw != strings.ToUpper(kw) || !e.Has(strings.ToLower(kw)) {
				t.Fatalf("ParseEHLO(%q): keyword %q", data, kw)
			}
			for _, p := range params {
				if !isEHLOParam(p) {
					t.Fatalf("ParseEHLO(%q): %s parameter %q", data, kw, p)
				}
			}
		}
		if again := ParseEHLO(formatEHLO(e)); !reflect.DeepEqual(again, e) {
			t.Fatalf("ParseEHLO(%q) = %#v; written back and parsed again: %#v", data, e, again)
		}
	})
}

// FuzzXtext: any string encodes to valid xtext that decodes back to it;
// valid xtext decodes to a string whose encoding is the canonical form of
// the input (hexchars only where needed) and decodes the same.
func FuzzXtext(f *testing.F) {
	for _, s := range []string{"", "a+b=c", "a+2Bb+3Dc", "+41", "two words", "\x00\xff", "+", "+4", "+4g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkXtextRoundTrip(t, s)
		dec, err := DecodeXtext(s)
		if err != nil {
			return
		}
		again, err := DecodeXtext(EncodeXtext(dec))
		if err != nil || again != dec {
			t.Fatalf("DecodeXtext(%q) = %q; encoded and decoded again: %q, %v", s, dec, again, err)
		}
	})
}

// FuzzSASL: AUTH arguments and SASL responses are attacker bytes. No
// panic; a user name is printable and bounded; and for a PLAIN response
// built from (authzid, user, password), the name found is the user's,
// never a piece of the password.
func FuzzSASL(f *testing.F) {
	f.Add("PLAIN AGFsaWNlAHNlY3JldA==", "", "alice", "secret")
	f.Add("LOGIN YWxpY2U=", "admin", "bob", "pw")
	f.Add("XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHgBAQ==", "", "", "")
	f.Fuzz(func(t *testing.T, arg, authz, user, pass string) {
		if mech, initial, err := ParseAuthArg(arg); err == nil {
			if u, ok := SASLUser(mech, 0, initial); ok && (len(u) > 256 || strings.ContainsAny(u, "\x00\r\n")) {
				t.Fatalf("SASLUser(%q, %q) = %q", mech, initial, u)
			}
		}
		if strings.Contains(authz+user, "\x00") {
			return // RFC 4616 §2: neither may contain NUL
		}
		resp := base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
		u, ok := SASLUser("PLAIN", 0, resp)
		if ok && u != user {
			t.Fatalf("PLAIN (%q, %q, %q): user %q", authz, user, pass, u)
		}
	})
}
