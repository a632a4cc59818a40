package classifier

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzUnmarshalModel: a stored model is bytes from the state store,
// which another process wrote. Anything malformed is an error, never a
// panic; what decodes encodes to a form that decodes to the same model
// (varints may come in longer forms than the encoder writes).
func FuzzUnmarshalModel(f *testing.F) {
	m := NewModel(10)
	m.Learn(&Doc{Subject: "cheap pills now", Text: "buy cheap pills"}, true, false)
	m.Learn(&Doc{Subject: "meeting notes", Text: "see you at the meeting"}, false, false)
	good, _ := m.MarshalBinary()
	f.Add(good)
	f.Add([]byte(magic))
	f.Add(append([]byte(magic), 10, 0, 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := UnmarshalModel(data)
		if err != nil {
			return
		}
		again, _ := m.MarshalBinary()
		m2, err := UnmarshalModel(again)
		if err != nil {
			t.Fatalf("the encoder's own output does not decode: %v", err)
		}
		if third, _ := m2.MarshalBinary(); !bytes.Equal(third, again) {
			t.Fatalf("encode/decode is not stable: %q, then %q", again, third)
		}
		if s1, h1 := m.Learned(); true {
			if s2, h2 := m2.Learned(); s1 != s2 || h1 != h2 {
				t.Fatalf("counts %d/%d became %d/%d", s1, h1, s2, h2)
			}
		}
	})
}

// FuzzTokens: message text is attacker bytes (decoded, but any UTF-8
// or not). No panic; every token is valid text of bounded length.
func FuzzTokens(f *testing.F) {
	f.Add("Subject", "Buy now!!! $$$ http://example.com", "From", "Joe <joe@example.com>")
	f.Add("", "\xff\xfe\x00", "Received", "from a.b.c (1.2.3.4)")
	f.Fuzz(func(t *testing.T, subject, text, hname, hvalue string) {
		d := &Doc{Subject: subject, Text: text, Headers: []Header{{hname, hvalue}}, URLHosts: []string{hvalue}, Parts: []Part{{"text/plain", hvalue}}}
		tokens(d, func(tok string) {
			if len(tok) > 4*len(subject+text+hname+hvalue)+64 {
				t.Fatalf("token %q longer than its input", tok)
			}
			if utf8.ValidString(subject+text+hvalue) && !utf8.ValidString(tok) {
				t.Fatalf("token %q is not valid UTF-8", tok)
			}
		})
		m := NewModel(10)
		m.Learn(d, true, false)
		m.Learn(d, true, true)
		if s, h := m.Learned(); s != 0 || h != 0 {
			t.Fatalf("learn then forget left %d/%d", s, h)
		}
		for i := range m.spam {
			if m.spam[i] != 0 {
				t.Fatalf("learn then forget left bucket %d at %d", i, m.spam[i])
			}
		}
	})
}
