package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseBDATArg(t *testing.T) {
	tests := []struct {
		arg  string
		size int64
		last bool
		ok   bool
	}{
		{"0", 0, false, true},
		{"1000", 1000, false, true},
		{"42 LAST", 42, true, true},
		{"42 last", 42, true, true},
		{"0 LAST", 0, true, true},
		{"", 0, false, false},
		{"LAST", 0, false, false},
		{"-1", 0, false, false},
		{"+5", 0, false, false},
		{"5 LAST extra", 0, false, false},
		{"5  LAST", 0, false, false},
		{"5 FIRST", 0, false, false},
		{"99999999999999", 0, false, false},
		{"0x10", 0, false, false},
	}
	for _, tt := range tests {
		size, last, err := ParseBDATArg(tt.arg)
		if (err == nil) != tt.ok || size != tt.size || last != tt.last {
			t.Errorf("ParseBDATArg(%q) = %d, %v, %v; want %d, %v, ok=%v", tt.arg, size, last, err, tt.size, tt.last, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseBDATArg(%q): error %v does not wrap ErrSyntax", tt.arg, err)
		}
	}
}

func TestLineEndings(t *testing.T) {
	tests := []struct {
		chunks         []string
		bareLF, bareCR bool
	}{
		{[]string{"a\r\nb\r\n"}, false, false},
		{[]string{"a\r", "\nb\r\n"}, false, false}, // CRLF split across chunks
		{[]string{"a\nb"}, true, false},
		{[]string{"a\rb"}, false, true},
		{[]string{"a\r"}, false, true}, // CR at the very end
		{[]string{"\r\n.\n"}, true, false},
		{[]string{"\r\n.\r"}, false, true},
		{[]string{"\r\r\n"}, false, true},
		{[]string{""}, false, false},
	}
	for _, tt := range tests {
		var l LineEndings
		for _, c := range tt.chunks {
			l.Write([]byte(c))
		}
		l.Close()
		if l.BareLF != tt.bareLF || l.BareCR != tt.bareCR {
			t.Errorf("%q: BareLF=%v BareCR=%v, want %v %v", tt.chunks, l.BareLF, l.BareCR, tt.bareLF, tt.bareCR)
		}
	}
}

// readBDATStream is how both front ends read a BDAT transfer: command line,
// then exactly the announced octets, until LAST. It returns the message.
func readBDATStream(r *bufio.Reader, ends *LineEndings) ([]byte, error) {
	var msg bytes.Buffer
	var scratch []byte
	w := io.MultiWriter(&msg, ends)
	for {
		line, _, err := ReadLine(r, &scratch, 512)
		if err != nil {
			return nil, err
		}
		cmd, err := ParseCommand(line)
		if err != nil {
			return nil, err
		}
		if cmd.Verb != VerbBDAT {
			return nil, errors.New("not BDAT")
		}
		size, last, err := ParseBDATArg(cmd.Arg)
		if err != nil {
			return nil, err
		}
		if size > 1<<20 {
			return nil, errors.New("chunk too large for the test")
		}
		if _, err := io.CopyN(w, r, size); err != nil {
			return nil, io.ErrUnexpectedEOF
		}
		if last {
			ends.Close()
			return msg.Bytes(), nil
		}
	}
}

// FuzzBDATReader feeds arbitrary client bytes to the BDAT reading path and
// checks properties: consumption is bounded by the input, the line-ending
// facts match a direct computation, and the message re-serialised for an
// upstream without CHUNKING has exactly one end-of-data.
func FuzzBDATReader(f *testing.F) {
	for _, s := range []string{
		"BDAT 5 LAST\r\nhello",
		"BDAT 3\r\na\r\nBDAT 2 LAST\r\n\r\n",
		"BDAT 12 LAST\r\n\r\n.\r\nMAIL FR",
		"BDAT 4\r\n\n.\n\rBDAT 0 LAST\r\n",
		"BDAT 0 LAST\r\n",
		"BDAT x\r\n",
		"BDAT 10 LAST\r\nshort",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		src := bytes.NewReader(in)
		r := bufio.NewReaderSize(src, 16)
		var ends LineEndings
		msg, err := readBDATStream(r, &ends)
		consumed := len(in) - src.Len() - r.Buffered()
		if consumed < 0 || consumed > len(in) {
			t.Fatalf("consumed %d of %d bytes", consumed, len(in))
		}
		if err != nil {
			return
		}
		if len(msg) > len(in) {
			t.Fatalf("message of %d bytes from %d input bytes", len(msg), len(in))
		}
		var want LineEndings
		for i, b := range msg {
			if b == '\n' && (i == 0 || msg[i-1] != '\r') {
				want.BareLF = true
			}
			if b == '\r' && (i+1 == len(msg) || msg[i+1] != '\n') {
				want.BareCR = true
			}
		}
		if ends.BareLF != want.BareLF || ends.BareCR != want.BareCR {
			t.Fatalf("LineEndings %+v, want %+v for %q", ends, want, msg)
		}
		var out bytes.Buffer
		dw := NewDataWriter(&out)
		dw.Write(msg)
		dw.Close()
		if n := strings.Count(out.String(), "\r\n.\r\n"); n != 1 && !(n == 0 && out.String() == ".\r\n") {
			t.Fatalf("DATA conversion has %d end-of-data sequences: %q", n, out.String())
		}
	})
}
