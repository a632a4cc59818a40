package smtp

import (
	"bufio"
	"errors"
	"io"
)

// ErrLineTooLong is returned by [ReadLine] (and [ReadReply]) for a line longer
// than the caller's limit. The whole line has been consumed when it is
// returned, so the next read starts at the next line.
var ErrLineTooLong = errors.New("smtp: line too long")

// ReadLine reads one line terminated by LF (CRLF or bare LF) from r and
// returns it without its terminator.
//
// The returned slice aliases r's buffer or *scratch and is valid only until
// the next read from r or the next use of scratch. A line that fits in r's
// buffer is returned without copying; only a line that spans buffer fills is
// assembled in *scratch, which is grown as needed and kept for the next call,
// so a command loop that reuses one scratch slice does not allocate in its
// steady state.
//
// bareLF reports that the line ended in LF without a preceding CR
// (RFC 5321 §2.3.8 requires CRLF; the bare form is accepted and reported).
// A CR that is not directly before the LF stays part of the line.
//
// A line longer than max bytes (not counting the terminator) is read to its
// end and discarded, and ErrLineTooLong is returned, so the conversation
// never loses its place; *scratch never grows much beyond max. If the input
// ends inside a line — also while discarding an overlong one —
// io.ErrUnexpectedEOF is returned; if it ends before any byte of a new line,
// io.EOF. Other read errors are returned as they are.
func ReadLine(r *bufio.Reader, scratch *[]byte, max int) (line []byte, bareLF bool, err error) {
	if max < 0 {
		max = 0
	}
	var buf []byte
	if scratch != nil {
		buf = (*scratch)[:0]
	}
	spanned := false // part of the line is in buf
	tooLong := false // discarding to the end of the line
	for {
		frag, err := r.ReadSlice('\n')
		switch err {
		case nil:
			if tooLong {
				return nil, false, ErrLineTooLong
			}
			n := len(buf) + len(frag) - 1 // line length without the LF
			// The byte before the LF may be in the previous fragment.
			bare := true
			if len(frag) >= 2 {
				bare = frag[len(frag)-2] != '\r'
			} else if len(buf) > 0 {
				bare = buf[len(buf)-1] != '\r'
			}
			if !bare {
				n--
			}
			if n > max {
				return nil, false, ErrLineTooLong
			}
			if !spanned {
				return frag[:n], bare, nil
			}
			buf = append(buf, frag...)
			if scratch != nil {
				*scratch = buf
			}
			return buf[:n], bare, nil
		case bufio.ErrBufferFull:
			if tooLong {
				continue
			}
			// One byte of slack: a CR at the very end may belong to the
			// CRLF terminator rather than to the line.
			if len(buf)+len(frag) > max+1 {
				tooLong = true
				buf = buf[:0]
				continue
			}
			buf = append(buf, frag...)
			if scratch != nil {
				*scratch = buf
			}
			spanned = true
		case io.EOF:
			if tooLong || spanned || len(frag) > 0 {
				return nil, false, io.ErrUnexpectedEOF
			}
			return nil, false, io.EOF
		default:
			return nil, false, err
		}
	}
}
