package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// dataState is where a DataReader is relative to the CRLF "." CRLF
// terminator.
type dataState uint8

const (
	dataLineStart dataState = iota // just after CRLF (or the DATA command's CRLF)
	dataMid                        // inside a line
	dataCR                         // just after a CR, which has been passed on
	dataDot                        // after CRLF "."; the dot is held back
	dataDotCR                      // after CRLF "." CR; dot and CR are held back
	dataDone                       // the terminator has been consumed
)

// DataReader reads a message sent after DATA (RFC 5321 §4.1.1.4) from a
// client, with strict framing.
//
// Only CR LF "." CR LF ends the message. The CRLF that ended the DATA
// command line counts as the first CRLF, so a message consisting of just
// ".\r\n" is empty. A line that starts with "." right after a CRLF has that
// dot removed (RFC 5321 §4.5.2, dot-stuffing). Every other byte is passed
// through unchanged — including bare CR and bare LF, which are not line
// ends for framing or unstuffing. This is what defeats "SMTP smuggling":
// "\n.\n", "\r.\r", "\r\n.\n" and the like are message content here, and
// [DataWriter] will pass them on in a form the next server cannot mistake
// for the end of the message either. Reading goes on past bare line
// endings to the real end, so the conversation stays in step even when a
// message is refused for them; whoever stores the message records them as
// facts with [LineEndings] on the output, which the dot removed by
// unstuffing never changes (a bare CR or LF stays bare without it).
//
// Read returns io.EOF once the terminator has been consumed; it never
// consumes a byte of the underlying bufio.Reader past the terminator, so
// pipelined commands after it (RFC 2920) are still there to read. If the
// input ends first, Read returns io.ErrUnexpectedEOF. The result does not
// depend on the size of the buffers passed to Read.
type DataReader struct {
	r     *bufio.Reader
	state dataState
	err   error // sticky: io.EOF after the terminator, or the read error
}

// NewDataReader returns a DataReader that reads a message from r, which
// must be positioned just after the CRLF of the DATA command line.
func NewDataReader(r *bufio.Reader) *DataReader {
	return &DataReader{r: r}
}

// Read reads message content into p, dot-unstuffed. See [DataReader].
func (d *DataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n := 0
	for n < len(p) {
		if d.r.Buffered() == 0 {
			if n > 0 {
				// Do not block for more while holding data.
				return n, nil
			}
			if _, err := d.r.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				d.err = err
				return 0, err
			}
		}
		buf, _ := d.r.Peek(d.r.Buffered())
		k := 0 // bytes of buf consumed
		for k < len(buf) && n < len(p) && d.state != dataDone {
			c := buf[k]
			switch d.state {
			case dataMid:
				// The hot path: copy up to the next CR in one go.
				seg := buf[k:]
				if i := bytes.IndexByte(seg, '\r'); i >= 0 {
					seg = seg[:i]
				}
				if room := len(p) - n; len(seg) > room {
					seg = seg[:room]
				}
				n += copy(p[n:], seg)
				k += len(seg)
				if k < len(buf) && n < len(p) && buf[k] == '\r' {
					p[n] = '\r'
					n++
					k++
					d.state = dataCR
				}
			case dataCR:
				if c == '\n' {
					p[n] = '\n'
					n++
					k++
					d.state = dataLineStart
				} else {
					d.state = dataMid
				}
			case dataLineStart:
				if c == '.' {
					k++ // held back: stuffing or the terminator
					d.state = dataDot
				} else {
					d.state = dataMid
				}
			case dataDot:
				if c == '\r' {
					k++
					d.state = dataDotCR
				} else {
					// The line has more than the dot: the dot was
					// stuffing and is dropped (RFC 5321 §4.5.2).
					d.state = dataMid
				}
			case dataDotCR:
				if c == '\n' {
					k++
					d.state = dataDone
				} else {
					// "." CR and something other than LF: not the end.
					// The dot was stuffing; the CR is content, and c is
					// looked at again as the byte after a CR.
					p[n] = '\r'
					n++
					d.state = dataCR
				}
			}
		}
		if _, err := d.r.Discard(k); err != nil {
			d.err = err // cannot happen: k bytes are buffered
			return n, err
		}
		if d.state == dataDone {
			d.err = io.EOF
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
	}
	return n, nil
}

// errDataWriterClosed is returned by Write after Close.
var errDataWriterClosed = errors.New("smtp: write to closed DataWriter")

// dataWriterChunk is how much input DataWriter encodes per write to the
// underlying writer; the output is at most twice as long.
const dataWriterChunk = 16 << 10

// DataWriter writes a message to an SMTP server after DATA's 354 reply, in
// one canonical framing (RFC 5321 §4.5.2):
//
//   - every line ending — CRLF, bare LF or bare CR — becomes CRLF;
//   - every line that starts with "." gets another "." in front, where a
//     line starts at the beginning of the message and after any of those
//     endings, so a "<LF>.<LF>" smuggling attempt becomes a harmless ".."
//     line;
//   - Close ends the content with CRLF if it does not already, then writes
//     the terminating ".\r\n".
//
// The output therefore never contains CR LF "." CR LF except as the final
// terminator. A CRLF split across two Write calls stays one line ending.
// Write returns an error from the underlying writer and keeps returning
// it; nothing is buffered between calls except whether the last byte was a
// CR.
type DataWriter struct {
	w      io.Writer
	buf    []byte
	bol    bool // at the start of a line
	cr     bool // the last byte was a CR; its LF has been written only if the next byte is one
	closed bool
	err    error
}

// NewDataWriter returns a DataWriter that writes to w. Close must be called
// to end the message; it does not close w.
func NewDataWriter(w io.Writer) *DataWriter {
	return &DataWriter{w: w, bol: true}
}

// Reset makes d write a new message to w, keeping its buffer, so one
// DataWriter serves every message of a connection without allocating.
func (d *DataWriter) Reset(w io.Writer) {
	*d = DataWriter{w: w, buf: d.buf[:0], bol: true}
}

// Write encodes p and writes it to the underlying writer.
func (d *DataWriter) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.closed {
		return 0, errDataWriterClosed
	}
	written := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > dataWriterChunk {
			chunk = chunk[:dataWriterChunk]
		}
		d.buf = d.encode(d.buf[:0], chunk)
		if _, err := d.w.Write(d.buf); err != nil {
			d.err = err
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// encode appends the canonical form of p to out.
func (d *DataWriter) encode(out, p []byte) []byte {
	for len(p) > 0 {
		if d.cr {
			// A CR was written; whatever follows, the line has ended.
			d.cr = false
			d.bol = true
			out = append(out, '\n')
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if d.bol {
			if p[0] == '.' {
				out = append(out, '.') // RFC 5321 §4.5.2
			}
			d.bol = false
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			i = len(p)
		}
		if j := bytes.IndexByte(p[:i], '\r'); j >= 0 {
			i = j
		}
		out = append(out, p[:i]...)
		if i == len(p) {
			break
		}
		if p[i] == '\n' {
			out = append(out, '\r', '\n')
			d.bol = true
			p = p[i+1:]
			continue
		}
		// A CR.
		if i+1 < len(p) && p[i+1] == '\n' {
			out = append(out, '\r', '\n')
			d.bol = true
			p = p[i+2:]
			continue
		}
		out = append(out, '\r')
		d.cr = true
		p = p[i+1:]
	}
	return out
}

// Close ends the message: it completes the last line with CRLF if needed
// and writes the terminator ".\r\n". It does not close the underlying
// writer. Closing twice writes nothing more.
func (d *DataWriter) Close() error {
	if d.err != nil {
		return d.err
	}
	if d.closed {
		return nil
	}
	d.closed = true
	out := d.buf[:0]
	if d.cr {
		out = append(out, '\n')
		d.cr = false
		d.bol = true
	}
	if !d.bol {
		out = append(out, '\r', '\n')
	}
	out = append(out, '.', '\r', '\n')
	if _, err := d.w.Write(out); err != nil {
		d.err = err
		return err
	}
	return nil
}
