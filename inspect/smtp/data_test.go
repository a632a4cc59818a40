package smtp

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

const eod = "\r\n.\r\n"

// readMode is one way of feeding a DataReader and reading from it.
type readMode struct {
	name string
	src  func(io.Reader) *bufio.Reader
	read func(*DataReader) ([]byte, error)
}

func readWithCopy(d *DataReader) ([]byte, error) {
	var out bytes.Buffer
	_, err := io.Copy(&out, d)
	if err == nil {
		err = io.EOF // io.Copy reports the clean end as nil
	}
	return out.Bytes(), err
}

func readOneByte(d *DataReader) ([]byte, error) {
	var out []byte
	var b [1]byte
	for {
		n, err := d.Read(b[:])
		out = append(out, b[:n]...)
		if err != nil {
			return out, err
		}
	}
}

var readModes = []readMode{
	{"copy", func(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }, readWithCopy},
	{"onebyte-source", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.OneByteReader(r), 16) }, readWithCopy},
	{"onebyte-both", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.OneByteReader(r), 16) }, readOneByte},
	{"buffer16-onebyte-reads", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 16) }, readOneByte},
}

type dataResult struct {
	out            []byte
	err            error // io.EOF for a clean end
	rest           []byte
	bareLF, bareCR bool // what LineEndings records of out
}

// readData runs in through a DataReader in the given mode.
func readData(t *testing.T, in []byte, m readMode) dataResult {
	t.Helper()
	br := m.src(bytes.NewReader(in))
	d := NewDataReader(br)
	out, err := m.read(d)
	rest, rerr := io.ReadAll(br)
	if rerr != nil {
		t.Fatalf("reading the rest: %v", rerr)
	}
	if n, err2 := d.Read(make([]byte, 10)); n != 0 || err2 != err {
		t.Fatalf("Read after the end = %d, %v; want 0, %v", n, err2, err)
	}
	lf, cr := lineFacts(t, out)
	return dataResult{out, err, rest, lf, cr}
}

// lineFacts is what production records of a message a DataReader read:
// LineEndings over the output, as the proxy's sink watches it stream past.
// Fed whole and fed byte by byte, it must say the same.
func lineFacts(t testing.TB, out []byte) (bareLF, bareCR bool) {
	t.Helper()
	var whole, bytewise LineEndings
	whole.Write(out)
	for i := range out {
		bytewise.Write(out[i : i+1])
	}
	if whole != bytewise {
		t.Fatalf("LineEndings over %q: %+v whole, %+v byte by byte", out, whole, bytewise)
	}
	return whole.BareLF, whole.BareCR
}

// refDecode is a slow, obviously correct DataReader: it finds the first
// CRLF.CRLF (counting the DATA line's CRLF) and unstuffs the body.
func refDecode(in []byte) (out []byte, consumed int, done bool) {
	s := append([]byte("\r\n"), in...)
	end := bytes.Index(s, []byte(eod))
	if end < 0 {
		return nil, 0, false
	}
	body := s[2 : end+2] // the content with its final CRLF
	lineStart := true
	for i, c := range body {
		if lineStart && c == '.' {
			lineStart = false
			continue
		}
		out = append(out, c)
		lineStart = c == '\n' && i > 0 && body[i-1] == '\r'
	}
	return out, end + 3, true
}

var dataReaderTests = []struct {
	name           string
	in             string
	out            string
	err            error
	rest           string
	bareLF, bareCR bool // LineEndings' facts about out
}{
	{name: "empty", in: ".\r\n", out: "", err: io.EOF},
	{name: "empty then pipelined", in: ".\r\nQUIT\r\n", out: "", err: io.EOF, rest: "QUIT\r\n"},
	{name: "one empty line", in: "\r\n.\r\n", out: "\r\n", err: io.EOF},
	{name: "simple", in: "Subject: x\r\n\r\nhello\r\n.\r\n", out: "Subject: x\r\n\r\nhello\r\n", err: io.EOF},
	{name: "pipelined after", in: "hi\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\n", out: "hi\r\n", err: io.EOF, rest: "MAIL FROM:<>\r\nRCPT TO:<a@b>\r\n"},
	{name: "dot stuffed", in: "..\r\n...x\r\n.\r\n", out: ".\r\n..x\r\n", err: io.EOF},
	{name: "dots mid line", in: "a.b.\r\nc..\r\n.\r\n", out: "a.b.\r\nc..\r\n", err: io.EOF},
	{name: "stuffed line with text", in: "hi\r\n.hidden\r\n.\r\n", out: "hi\r\nhidden\r\n", err: io.EOF},
	{name: "998 char line", in: strings.Repeat("x", 998) + "\r\n.\r\n", out: strings.Repeat("x", 998) + "\r\n", err: io.EOF},
	{name: "long stuffed line", in: "." + strings.Repeat(".", 1200) + "\r\n.\r\n", out: strings.Repeat(".", 1200) + "\r\n", err: io.EOF},
	{name: "8-bit", in: "\xe9\xff\x80\x00\x7f\r\n.\r\n", out: "\xe9\xff\x80\x00\x7f\r\n", err: io.EOF},
	{name: "LF.LF", in: "a\n.\nb\r\n.\r\n", out: "a\n.\nb\r\n", err: io.EOF, bareLF: true},
	{name: "LF.CRLF", in: "a\n.\r\nb\r\n.\r\n", out: "a\n.\r\nb\r\n", err: io.EOF, bareLF: true},
	{name: "CRLF.LF", in: "a\r\n.\nb\r\n.\r\n", out: "a\r\n\nb\r\n", err: io.EOF, bareLF: true},
	{name: "CR.CR", in: "a\r.\rb\r\n.\r\n", out: "a\r.\rb\r\n", err: io.EOF, bareCR: true},
	{name: "CR.LF", in: "a\r.\nb\r\n.\r\n", out: "a\r.\nb\r\n", err: io.EOF, bareCR: true, bareLF: true},
	{name: "CRLF.CR", in: "a\r\n.\rb\r\n.\r\n", out: "a\r\n\rb\r\n", err: io.EOF, bareCR: true},
	{name: "CRLF.CRCRLF", in: "a\r\n.\r\r\nb\r\n.\r\n", out: "a\r\n\r\r\nb\r\n", err: io.EOF, bareCR: true},
	{name: "NUL before dot", in: "a\r\n\x00.\r\nb\r\n.\r\n", out: "a\r\n\x00.\r\nb\r\n", err: io.EOF},
	{name: "NUL after dot", in: "a\r\n.\x00\r\nb\r\n.\r\n", out: "a\r\n\x00\r\nb\r\n", err: io.EOF},
	{name: "dot CR at start", in: ".\rx\r\n.\r\n", out: "\rx\r\n", err: io.EOF, bareCR: true},
	{name: "dot CR CR LF at start", in: ".\r\r\n.\r\n", out: "\r\r\n", err: io.EOF, bareCR: true},
	{name: "CR CR LF", in: "a\r\r\n.\r\n", out: "a\r\r\n", err: io.EOF, bareCR: true},
	{name: "LF at line start", in: "a\r\n\n\r\n.\r\n", out: "a\r\n\n\r\n", err: io.EOF, bareLF: true},
	{name: "dot after bare LF", in: "a\r\n\n.\r\n", out: "a\r\n\n.\r\n", err: io.ErrUnexpectedEOF, bareLF: true},

	{name: "truncated empty", in: "", err: io.ErrUnexpectedEOF},
	{name: "truncated text", in: "abc", out: "abc", err: io.ErrUnexpectedEOF},
	{name: "truncated after CRLF", in: "abc\r\n", out: "abc\r\n", err: io.ErrUnexpectedEOF},
	{name: "truncated after dot", in: "abc\r\n.", out: "abc\r\n", err: io.ErrUnexpectedEOF},
	{name: "truncated after dot CR", in: "abc\r\n.\r", out: "abc\r\n", err: io.ErrUnexpectedEOF},
	{name: "no line start before dot", in: "abc.\r\n", out: "abc.\r\n", err: io.ErrUnexpectedEOF},
	{name: "LF.LF only", in: "a\n.\n", out: "a\n.\n", err: io.ErrUnexpectedEOF, bareLF: true},
}

func TestDataReader(t *testing.T) {
	for _, tt := range dataReaderTests {
		for _, m := range readModes {
			t.Run(tt.name+"/"+m.name, func(t *testing.T) {
				got := readData(t, []byte(tt.in), m)
				if string(got.out) != tt.out || got.err != tt.err || string(got.rest) != tt.rest {
					t.Fatalf("got %q, %v, rest %q; want %q, %v, rest %q", got.out, got.err, got.rest, tt.out, tt.err, tt.rest)
				}
				if got.bareLF != tt.bareLF || got.bareCR != tt.bareCR {
					t.Fatalf("facts bareLF %v bareCR %v; want %v %v", got.bareLF, got.bareCR, tt.bareLF, tt.bareCR)
				}
				if ref, consumed, done := refDecode([]byte(tt.in)); done != (tt.err == io.EOF) ||
					done && (string(ref) != tt.out || consumed != len(tt.in)-len(tt.rest)) {
					t.Fatalf("test table disagrees with the reference decoder: %q, %d, %v", ref, consumed, done)
				}
			})
		}
	}
}

// errReader returns data, then err.
type errReader struct {
	data []byte
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestDataReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	d := NewDataReader(bufio.NewReader(&errReader{[]byte("abc\r\n"), boom}))
	out, err := io.ReadAll(d)
	if string(out) != "abc\r\n" || err != boom {
		t.Fatalf("ReadAll = %q, %v; want the data and the read error", out, err)
	}
	if _, err := d.Read(make([]byte, 1)); err != boom {
		t.Fatalf("error is not sticky: %v", err)
	}
}

func TestDataReaderZeroLengthRead(t *testing.T) {
	d := NewDataReader(bufio.NewReader(strings.NewReader("a\r\n.\r\n")))
	if n, err := d.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
}

// eodRow is one line of testdata/smuggling/eod-sequences.tsv (origin and
// licence in testdata/SOURCES.md).
type eodRow struct {
	source, set, id string
	seq             []byte
}

func loadEODSequences(t *testing.T) []eodRow {
	t.Helper()
	data, err := os.ReadFile("testdata/smuggling/eod-sequences.tsv")
	if err != nil {
		t.Skipf("smuggling test data not available: %v", err)
	}
	var rows []eodRow
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) < 5 {
			t.Fatalf("short row %q", line)
		}
		seq, err := hex.DecodeString(f[4])
		if err != nil {
			t.Fatalf("row %q: %v", line, err)
		}
		if strings.Contains(f[3], `\x`) && !strings.Contains(string(seq), "\x00") {
			t.Fatalf("row %q: escaped and hex columns disagree", line)
		}
		rows = append(rows, eodRow{f[0], f[1], f[2], seq})
	}
	if len(rows) < 29 {
		t.Fatalf("only %d rows in eod-sequences.tsv", len(rows))
	}
	return rows
}

// TestDataReaderSmugglingSequences embeds every end-of-data sequence that
// SMTP smuggling research has tried in a message, followed by a smuggled
// second transaction, and checks that only the canonical CRLF.CRLF ends the
// message.
func TestDataReaderSmugglingSequences(t *testing.T) {
	const (
		head     = "From: a@example.com\r\nSubject: hi\r\n\r\nbody"
		smuggled = "MAIL FROM:<admin@victim.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\nFrom: admin@victim.example\r\n\r\nsmuggled"
		after    = "QUIT\r\n"
	)
	for _, row := range loadEODSequences(t) {
		in := []byte(head + string(row.seq) + smuggled + eod + after)
		canonical := bytes.Contains([]byte("\r\nbody"+string(row.seq)), []byte(eod))
		for _, m := range readModes {
			t.Run(row.source+"/"+row.id+"/"+m.name, func(t *testing.T) {
				got := readData(t, in, m)
				if got.err != io.EOF {
					t.Fatalf("err = %v, want io.EOF", got.err)
				}
				ref, consumed, _ := refDecode(in)
				if !bytes.Equal(got.out, ref) || len(in)-len(got.rest) != consumed {
					t.Fatalf("out %q consumed %d; reference %q consumed %d", got.out, len(in)-len(got.rest), ref, consumed)
				}
				if canonical {
					// The sequence holds CRLF.CRLF itself: the message
					// really ends there, and the rest is commands.
					if !bytes.HasPrefix(got.rest, []byte(strings.SplitN(string(row.seq), eod, 2)[1])) {
						t.Fatalf("rest %q does not follow the sequence's CRLF.CRLF", got.rest)
					}
					return
				}
				if string(got.rest) != after {
					t.Fatalf("%q ended the message early: rest %q", row.seq, got.rest)
				}
				if !bytes.Contains(got.out, []byte("smuggled\r\n")) {
					t.Fatalf("smuggled text missing from the content: %q", got.out)
				}
				// Relayed through DataWriter, the sequence cannot end the
				// message for the next server either.
				var relay bytes.Buffer
				w := NewDataWriter(&relay)
				if _, err := w.Write(got.out); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				checkSingleTerminator(t, relay.Bytes())
			})
		}
	}
}

// checkSingleTerminator fails unless CRLF.CRLF (counting the DATA line's
// CRLF) occurs in out only as its final five bytes, and no bare CR or LF
// occurs at all.
func checkSingleTerminator(t *testing.T, out []byte) {
	t.Helper()
	s := append([]byte("\r\n"), out...)
	if i := bytes.Index(s, []byte(eod)); i != len(s)-len(eod) {
		t.Fatalf("DataWriter output %q has CRLF.CRLF at %d, want only at the end", out, i-2)
	}
	for i, c := range out {
		if c == '\r' && (i+1 >= len(out) || out[i+1] != '\n') || c == '\n' && (i == 0 || out[i-1] != '\r') {
			t.Fatalf("DataWriter output %q has a bare CR or LF at %d", out, i)
		}
	}
}

// canonicalLines rewrites every line ending (CRLF, bare LF, bare CR) to
// CRLF and adds a final CRLF to non-empty content without one: what
// DataWriter followed by DataReader gives back.
func canonicalLines(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			out = append(out, '\r', '\n')
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

func TestDataWriter(t *testing.T) {
	big := strings.Repeat(".line of text\n", 3000) // over dataWriterChunk
	for _, tt := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"empty", nil, ".\r\n"},
		{"empty write", []string{""}, ".\r\n"},
		{"no final CRLF", []string{"abc"}, "abc\r\n.\r\n"},
		{"final CRLF", []string{"abc\r\n"}, "abc\r\n.\r\n"},
		{"only CRLF", []string{"\r\n"}, "\r\n.\r\n"},
		{"line endings", []string{"a\nb\rc\r\nd"}, "a\r\nb\r\nc\r\nd\r\n.\r\n"},
		{"stuffing after every ending", []string{".a\n.b\r.c\r\n.d"}, "..a\r\n..b\r\n..c\r\n..d\r\n.\r\n"},
		{"lone dot", []string{"."}, "..\r\n.\r\n"},
		{"dot line", []string{"a\r\n.\r\nb"}, "a\r\n..\r\nb\r\n.\r\n"},
		{"LF.LF", []string{"a\n.\nb"}, "a\r\n..\r\nb\r\n.\r\n"},
		{"CR.CR", []string{"a\r.\rb"}, "a\r\n..\r\nb\r\n.\r\n"},
		{"CRLF.CRCRLF", []string{"a\r\n.\r\r\n"}, "a\r\n..\r\n\r\n.\r\n"},
		{"dots mid line", []string{"a.b\r\n"}, "a.b\r\n.\r\n"},
		{"CR CR", []string{"\r\r"}, "\r\n\r\n.\r\n"},
		{"CRLF split", []string{"a\r", "\nb"}, "a\r\nb\r\n.\r\n"},
		{"CR then CRLF", []string{"a\r", "\r\n"}, "a\r\n\r\n.\r\n"},
		{"CR at end", []string{"a\r"}, "a\r\n.\r\n"},
		{"CR then dot", []string{"a\r", ".b"}, "a\r\n..b\r\n.\r\n"},
		{"LF then dot", []string{"a\n", "", ".b"}, "a\r\n..b\r\n.\r\n"},
		{"dot split from line start", []string{"a\r\n", ".", "."}, "a\r\n...\r\n.\r\n"},
		{"byte by byte", strings.Split("x\r\n.\r\n.y\n", ""), "x\r\n..\r\n..y\r\n.\r\n"},
		{"8-bit and NUL", []string{"\xff\x00\x80"}, "\xff\x00\x80\r\n.\r\n"},
		{"big", []string{big}, strings.ReplaceAll(strings.ReplaceAll(big, "\n", "\r\n"), ".line", "..line") + ".\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewDataWriter(&out)
			var content []byte
			for _, s := range tt.writes {
				n, err := w.Write([]byte(s))
				if err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
				content = append(content, s...)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Fatalf("wrote %q, want %q", out.String(), tt.want)
			}
			checkSingleTerminator(t, out.Bytes())
			if err := w.Close(); err != nil || out.String() != tt.want {
				t.Fatalf("second Close wrote more or failed: %v", err)
			}
			if _, err := w.Write([]byte("x")); err == nil {
				t.Fatal("Write after Close succeeded")
			}
			// Reading the output back gives the content with canonical
			// line endings.
			for _, m := range readModes {
				got := readData(t, out.Bytes(), m)
				if got.err != io.EOF || len(got.rest) != 0 || !bytes.Equal(got.out, canonicalLines(content)) {
					t.Fatalf("%s: read back %q, %v, rest %q; want %q", m.name, got.out, got.err, got.rest, canonicalLines(content))
				}
				if got.bareCR || got.bareLF {
					t.Fatalf("%s: DataWriter output has bare line endings", m.name)
				}
			}
		})
	}
}

// TestDataWriterRoundTrip checks, for every DataReader test's content and
// every way of splitting it into writes, that DataWriter then DataReader
// gives the content back with canonical line endings.
func TestDataWriterRoundTrip(t *testing.T) {
	for _, tt := range dataReaderTests {
		content := []byte(tt.out)
		for split := range len(content) + 1 {
			var out bytes.Buffer
			w := NewDataWriter(&out)
			if _, err := w.Write(content[:split]); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(content[split:]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			checkSingleTerminator(t, out.Bytes())
			got, err := io.ReadAll(NewDataReader(bufio.NewReader(&out)))
			if err != nil || !bytes.Equal(got, canonicalLines(content)) {
				t.Fatalf("%s split at %d: read back %q, %v; want %q", tt.name, split, got, err, canonicalLines(content))
			}
		}
	}
}

// failWriter fails every write after the first n bytes.
type failWriter struct {
	n   int
	err error
}

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

func TestDataWriterError(t *testing.T) {
	boom := errors.New("boom")
	w := NewDataWriter(&failWriter{n: 4, err: boom})
	if _, err := w.Write([]byte("ab\r\n")); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if _, err := w.Write([]byte("cd\r\n")); err != boom {
		t.Fatalf("second write: %v, want boom", err)
	}
	if _, err := w.Write([]byte("ef")); err != boom {
		t.Fatalf("error not sticky: %v", err)
	}
	if err := w.Close(); err != boom {
		t.Fatalf("Close: %v, want boom", err)
	}
}

func TestDataWriterCloseError(t *testing.T) {
	boom := errors.New("boom")
	w := NewDataWriter(&failWriter{n: 0, err: boom})
	if err := w.Close(); err != boom {
		t.Fatalf("Close: %v, want boom", err)
	}
}

// benchMessage is a 1 MiB message of 78-character lines, some starting
// with a dot, dot-stuffed and terminated.
func benchMessage() []byte {
	var b bytes.Buffer
	line := strings.Repeat("abcdefghij", 8)[:76]
	for i := 0; b.Len() < 1<<20; i++ {
		if i%50 == 0 {
			b.WriteString("..")
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

func BenchmarkDataReader(b *testing.B) {
	msg := benchMessage()
	src := bytes.NewReader(msg)
	br := bufio.NewReaderSize(src, 64<<10)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(msg)
		br.Reset(src)
		d := NewDataReader(br)
		for {
			_, err := d.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkDataWriter(b *testing.B) {
	msg, err := io.ReadAll(NewDataReader(bufio.NewReader(bytes.NewReader(benchMessage()))))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		w := NewDataWriter(io.Discard)
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
