package smtp

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

type lineResult struct {
	line string
	bare bool
	err  error
}

// readLines calls ReadLine until it returns io.EOF or an error other than
// ErrLineTooLong, and returns every result.
func readLines(t *testing.T, r *bufio.Reader, max int) []lineResult {
	t.Helper()
	var scratch []byte
	var got []lineResult
	for range 100 {
		line, bare, err := ReadLine(r, &scratch, max)
		got = append(got, lineResult{string(line), bare, err})
		if err != nil && err != ErrLineTooLong {
			return got
		}
	}
	t.Fatal("ReadLine did not reach the end of the input")
	return nil
}

func TestReadLine(t *testing.T) {
	eof := lineResult{err: io.EOF}
	unexpected := lineResult{err: io.ErrUnexpectedEOF}
	tooLong := lineResult{err: ErrLineTooLong}
	long := strings.Repeat("x", 1000)
	tests := []struct {
		name string
		in   string
		max  int
		want []lineResult
	}{
		{"crlf", "HELO a\r\nNOOP\r\n", 100, []lineResult{{"HELO a", false, nil}, {"NOOP", false, nil}, eof}},
		{"bare lf", "HELO a\nNOOP\r\n", 100, []lineResult{{"HELO a", true, nil}, {"NOOP", false, nil}, eof}},
		{"cr inside line", "a\rb\r\n", 100, []lineResult{{"a\rb", false, nil}, eof}},
		{"cr before crlf", "a\r\r\n", 100, []lineResult{{"a\r", false, nil}, eof}},
		{"empty lines", "\r\n\n", 100, []lineResult{{"", false, nil}, {"", true, nil}, eof}},
		{"empty input", "", 100, []lineResult{eof}},
		{"exactly max crlf", "0123456789\r\nok\r\n", 10, []lineResult{{"0123456789", false, nil}, {"ok", false, nil}, eof}},
		{"exactly max lf", "0123456789\nok\r\n", 10, []lineResult{{"0123456789", true, nil}, {"ok", false, nil}, eof}},
		{"max plus one", "0123456789X\r\nNEXT\r\n", 10, []lineResult{tooLong, {"NEXT", false, nil}, eof}},
		{"max plus one lf", "0123456789X\nNEXT\r\n", 10, []lineResult{tooLong, {"NEXT", false, nil}, eof}},
		{"max plus stray cr", "0123456789\r\r\nNEXT\r\n", 10, []lineResult{tooLong, {"NEXT", false, nil}, eof}},
		{"spans buffer fills", strings.Repeat("a", 50) + "\r\nb\r\n", 100, []lineResult{{strings.Repeat("a", 50), false, nil}, {"b", false, nil}, eof}},
		{"crlf split across fills", strings.Repeat("a", 15) + "\r\n" + strings.Repeat("b", 15) + "\n", 15,
			[]lineResult{{strings.Repeat("a", 15), false, nil}, {strings.Repeat("b", 15), true, nil}, eof}},
		{"far too long then next", long + "\r\nQUIT\r\n", 100, []lineResult{tooLong, {"QUIT", false, nil}, eof}},
		{"two too long", long + "\n" + long + "\r\nQUIT\r\n", 100, []lineResult{tooLong, tooLong, {"QUIT", false, nil}, eof}},
		{"max zero", "\r\nx\r\n", 0, []lineResult{{"", false, nil}, tooLong, eof}},
		{"eof partial", "abc", 100, []lineResult{unexpected}},
		{"eof after cr", "abc\r", 100, []lineResult{unexpected}},
		{"eof after line then partial", "a\r\nbc", 100, []lineResult{{"a", false, nil}, unexpected}},
		{"eof while discarding", long, 100, []lineResult{unexpected}},
		{"eof partial spanning", strings.Repeat("a", 40), 100, []lineResult{unexpected}},
	}
	readers := []struct {
		name string
		make func(string) *bufio.Reader
	}{
		{"bulk", func(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }},
		{"16", func(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 16) }},
		{"onebyte16", func(s string) *bufio.Reader {
			return bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(s)), 16)
		}},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				got := readLines(t, rd.make(tt.in), tt.max)
				if len(got) != len(tt.want) {
					t.Fatalf("got %d results %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
				}
				for i := range got {
					g, w := got[i], tt.want[i]
					if g.line != w.line || g.bare != w.bare || !errors.Is(g.err, w.err) || (w.err == nil) != (g.err == nil) {
						t.Errorf("result %d = %+v, want %+v", i, g, w)
					}
				}
			})
		}
	}
}

func TestReadLineNilScratch(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader(strings.Repeat("a", 40)+"\r\n"), 16)
	line, _, err := ReadLine(r, nil, 100)
	if err != nil || string(line) != strings.Repeat("a", 40) {
		t.Fatalf("ReadLine = %q, %v", line, err)
	}
}

// loopReader returns its data over and over.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func TestReadLineNoAllocs(t *testing.T) {
	// Lines longer than the buffer take the scratch path; short ones alias
	// the reader's buffer. Neither may allocate once scratch has grown.
	in := "MAIL FROM:<someone@example.com> SIZE=12345 BODY=8BITMIME\r\nRCPT TO:<a@b>\r\nNOOP\n"
	for _, size := range []int{16, 4096} {
		r := bufio.NewReaderSize(&loopReader{data: []byte(in)}, size)
		var scratch []byte
		allocs := testing.AllocsPerRun(1000, func() {
			if _, _, err := ReadLine(r, &scratch, 512); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("buffer %d: ReadLine allocates %v times per line, want 0", size, allocs)
		}
	}
}
