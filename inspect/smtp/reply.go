package smtp

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits that [ReadReply] applies.
const (
	MaxReplyLineLen = 2048 // bytes in one reply line, without CRLF; RFC 5321 §4.5.3.1.5 asks for 512
	MaxReplyLines   = 128  // lines in one multi-line reply
)

// Reply is an SMTP reply (RFC 5321 §4.2) with an optional enhanced status
// code (RFC 2034, RFC 3463).
//
// A Reply separates what goes on the wire (Code, Enhanced, Lines) from why
// it was produced (Err), which is for logs only. Reply implements error, so
// a handler can return the reply it wants sent and errors.As finds it.
type Reply struct {
	// Code is the three-digit reply code, 200 to 599.
	Code int
	// Enhanced is the enhanced status code "class.subject.detail" when the
	// first line carries one (RFC 3463 §2), else "".
	Enhanced string
	// Lines holds the text of each line, with the reply code, the
	// separator and, where the line carries it, the enhanced code removed.
	Lines []string
	// Err is the diagnostic cause. It is never written to the wire.
	Err error
}

// Replyf builds a one-line reply, such as
// Replyf(451, "4.4.2", "upstream %s", x). enhanced may be "".
func Replyf(code int, enhanced, format string, args ...any) Reply {
	return Reply{Code: code, Enhanced: enhanced, Lines: []string{fmt.Sprintf(format, args...)}}
}

// Class returns the first digit of the code (RFC 5321 §4.2.1): 2 success,
// 3 intermediate, 4 transient failure, 5 permanent failure.
func (r Reply) Class() int { return r.Code / 100 }

// Error returns the wire text (see [Reply.String]) followed by ": " and the
// diagnostic error, if any.
func (r Reply) Error() string {
	if r.Err == nil {
		return r.String()
	}
	return r.String() + ": " + r.Err.Error()
}

// Unwrap returns the diagnostic error.
func (r Reply) Unwrap() error { return r.Err }

// String returns the wire form with lines joined by CRLF and no CRLF after
// the last line, e.g. "250-first\r\n250 last".
func (r Reply) String() string {
	b := r.Append(nil)
	return string(b[:len(b)-2])
}

// Summary is the reply on one line, for logs: the code, the enhanced
// code and every line's text, separated by spaces; "" for no reply.
func (r Reply) Summary() string { return r.summary(false) }

// LastLine is the reply as Zeek's smtp.log last_reply writes it: the
// code, the enhanced code and the text of the last line only.
func (r Reply) LastLine() string { return r.summary(true) }

func (r Reply) summary(lastOnly bool) string {
	if r.Code == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != "" {
		b.WriteByte(' ')
		b.WriteString(r.Enhanced)
	}
	lines := r.Lines
	if lastOnly && len(lines) > 0 {
		lines = lines[len(lines)-1:]
	}
	for _, l := range lines {
		if l != "" {
			b.WriteByte(' ')
			b.WriteString(l)
		}
	}
	return b.String()
}

// Bytes returns the wire form of the reply, every line ending in CRLF.
func (r Reply) Bytes() []byte { return r.Append(nil) }

// WriteTo writes the wire form of the reply to w in a single Write.
func (r Reply) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(r.Append(nil))
	return int64(n), err
}

// Append appends the wire form of the reply to b and returns the result.
//
// Every line is "CODE-text" except the last, "CODE text" (RFC 5321 §4.2).
// When Enhanced is set it starts the text of every line (RFC 2034 §3 asks
// for it on each line). A line with no text carries no trailing space:
// "250" or "250 2.0.0". A reply with no lines is written as one empty
// line. Control characters other than TAB in the text are written as spaces,
// so text built from untrusted input cannot inject extra lines.
func (r Reply) Append(b []byte) []byte {
	lines := r.Lines
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, text := range lines {
		b = strconv.AppendInt(b, int64(r.Code), 10)
		if i < len(lines)-1 {
			b = append(b, '-')
		} else if r.Enhanced != "" || text != "" {
			b = append(b, ' ')
		}
		if r.Enhanced != "" {
			b = appendSanitized(b, r.Enhanced)
			if text != "" {
				b = append(b, ' ')
			}
		}
		b = appendSanitized(b, text)
		b = append(b, '\r', '\n')
	}
	return b
}

func appendSanitized(b []byte, s string) []byte {
	for i := range len(s) {
		c := s[i]
		if isCtl(c) && c != '\t' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// ReadReply reads one reply, single- or multi-line, from r (RFC 5321 §4.2).
//
// Every line must start with the same three-digit code, 200 to 599
// (RFC 5321 §4.2: the first digit is 2 to 5), followed by "-" on every line
// but the last and by a space or the end of the line on the last. The text
// may hold TAB and UTF-8 but no other control characters. A reply of more
// than [MaxReplyLines] lines, or a line that breaks these rules, is an
// error wrapping [ErrSyntax]; a line over [MaxReplyLineLen] bytes gives
// [ErrLineTooLong] as soon as it has been read. After a bad line ReadReply keeps reading while the lines
// still look like continuation lines ("ddd-"), so it stops at the end of
// the bad reply where that can be told.
//
// An enhanced status code (RFC 2034 §3) is recognised at the start of the
// first line's text when its class digit equals the reply's first digit and
// it has the form d.ddd.ddd (one digit, then one to three, then one to
// three), followed by a space or the end of the line. The same code at the
// start of later lines is removed from their text too.
//
// If r ends before any byte of a reply, ReadReply returns io.EOF; inside a
// reply, io.ErrUnexpectedEOF.
func ReadReply(r *bufio.Reader) (Reply, error) {
	var scratch []byte
	var rep Reply
	var firstErr error
	for n := 0; ; n++ {
		line, _, err := ReadLine(r, &scratch, MaxReplyLineLen)
		if err != nil {
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			if firstErr != nil && err != io.ErrUnexpectedEOF {
				err = firstErr
			}
			return Reply{}, err
		}
		more := isContinuation(line)
		if firstErr == nil && n >= MaxReplyLines {
			// Stop reading: the peer may be streaming an endless reply.
			return Reply{}, fmt.Errorf("%w: reply longer than %d lines", ErrSyntax, MaxReplyLines)
		}
		if firstErr == nil {
			firstErr = rep.addLine(line, n)
		}
		if !more {
			break
		}
		if firstErr != nil && n >= MaxReplyLines {
			break
		}
	}
	if firstErr != nil {
		return Reply{}, firstErr
	}
	return rep, nil
}

// isContinuation reports whether line looks like a non-last reply line.
func isContinuation(line []byte) bool {
	return len(line) >= 4 && isDigit(line[0]) && isDigit(line[1]) && isDigit(line[2]) && line[3] == '-'
}

// addLine parses line number n of a reply into rep.
func (rep *Reply) addLine(line []byte, n int) error {
	if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) {
		return fmt.Errorf("%w: reply line must start with a three-digit code", ErrSyntax)
	}
	code := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if code < 200 || code > 599 {
		return fmt.Errorf("%w: reply code %d out of range", ErrSyntax, code)
	}
	if n > 0 && code != rep.Code {
		return fmt.Errorf("%w: reply code %d on a continuation of %d", ErrSyntax, code, rep.Code)
	}
	var text []byte
	if len(line) > 3 {
		if line[3] != ' ' && line[3] != '-' {
			return fmt.Errorf("%w: reply code must be followed by a space or -", ErrSyntax)
		}
		text = line[4:]
	}
	for _, c := range text {
		if isCtl(c) && c != '\t' {
			return fmt.Errorf("%w: control character 0x%02x in reply text", ErrSyntax, c)
		}
	}
	if n == 0 {
		rep.Code = code
		if l := enhancedLen(text, byte('0'+code/100)); l > 0 {
			rep.Enhanced = string(text[:l])
			text = text[l:]
			if len(text) > 0 {
				text = text[1:] // the space after the enhanced code
			}
		}
	} else if e := rep.Enhanced; e != "" && len(text) >= len(e) && string(text[:len(e)]) == e &&
		(len(text) == len(e) || text[len(e)] == ' ') {
		text = text[len(e):]
		if len(text) > 0 {
			text = text[1:]
		}
	}
	rep.Lines = append(rep.Lines, string(text))
	return nil
}

// enhancedLen returns the length of the enhanced status code (RFC 3463 §2,
// class.subject.detail) at the start of text, 0 if there is none. It is
// recognised only with the given class digit and when followed by a space
// or the end of the text (RFC 2034 §4).
func enhancedLen(text []byte, class byte) int {
	if len(text) < 5 || text[0] != class || text[1] != '.' {
		return 0
	}
	i := 2
	for part := range 2 {
		j := i
		for j < len(text) && j-i < 4 && isDigit(text[j]) {
			j++
		}
		if j == i || j-i > 3 {
			return 0
		}
		i = j
		if part == 0 {
			if i >= len(text) || text[i] != '.' {
				return 0
			}
			i++
		}
	}
	if i < len(text) && text[i] != ' ' {
		return 0
	}
	return i
}

// IsEnhancedCode reports whether s is an enhanced status code of the form
// class.subject.detail (RFC 3463 §2) with class 2, 4 or 5 and subject and
// detail of one to three digits.
func IsEnhancedCode(s string) bool {
	if s == "" || s[0] != '2' && s[0] != '4' && s[0] != '5' {
		return false
	}
	return enhancedLen([]byte(s), s[0]) == len(s)
}

// ParseReply parses a reply written as text, such as a reply configured in
// a rules file: "550 5.7.1 Not accepted", or several lines separated by
// CRLF or LF, with or without a final line ending. The grammar and limits
// are those of [ReadReply]; text after the reply's last line is an error.
func ParseReply(s string) (Reply, error) {
	if !strings.HasSuffix(s, "\n") {
		s += "\r\n"
	}
	r := bufio.NewReader(strings.NewReader(s))
	rep, err := ReadReply(r)
	if err == io.EOF {
		err = fmt.Errorf("%w: empty reply", ErrSyntax)
	}
	if err != nil {
		return Reply{}, err
	}
	if _, err := r.Peek(1); err != io.EOF {
		return Reply{}, fmt.Errorf("%w: text after the last reply line", ErrSyntax)
	}
	return rep, nil
}

// WithDefaultEnhanced returns r with an enhanced status code added when it
// has none, for relaying a reply from a server that does not speak
// ENHANCEDSTATUSCODES to a client that was offered it: RFC 2034 §3 asks
// for a code on every 2xx, 4xx and 5xx reply other than the greeting and
// the answer to HELO/EHLO, which callers do not pass here. The text stays
// as the server wrote it; a reply that already has a code, and a 3xx
// reply, are returned unchanged.
//
// verb is the command the reply answers ("MAIL", "RCPT", "DATA" for the
// reply to the message, "BDAT"; case does not matter). The code chosen is
// one RFC 3463 defines and the reply surely means, never a guess at a
// detail the server did not state:
//
//   - 2xx: X.1.0 "other address status" for MAIL, X.1.5 "destination
//     address valid" for RCPT (§3.2), X.0.0 for anything else, the message
//     included (as Postfix and Sendmail answer the final dot).
//   - 500 to 504 and 555: these codes name a command or syntax problem
//     in themselves (RFC 5321 §4.2.3), so X.5.2 for
//     500 (syntax error), X.5.4 for 501, 504 and 555 (invalid arguments),
//     X.5.1 for 502 and 503 (invalid command) (§3.6).
//   - 530: X.7.0, as RFC 4954 §6 pairs it ("530 5.7.0 Authentication
//     required").
//   - any other 4xx or 5xx: the undefined X.0.0 (§3.1). A 550 to RCPT may
//     well mean an unknown mailbox (X.1.1), but it may as well be a policy
//     refusal (X.7.1) or a relay refusal; claiming either would mislead
//     the client's bounce.
func (r Reply) WithDefaultEnhanced(verb string) Reply {
	if r.Enhanced != "" {
		return r
	}
	switch class := r.Class(); {
	case class == 2:
		switch strings.ToUpper(verb) {
		case "MAIL":
			r.Enhanced = "2.1.0"
		case "RCPT":
			r.Enhanced = "2.1.5"
		default:
			r.Enhanced = "2.0.0"
		}
	case class == 4 || class == 5:
		r.Enhanced = string(rune('0'+class)) + ".0.0"
		switch r.Code {
		case 500:
			r.Enhanced = "5.5.2"
		case 501, 504, 555:
			r.Enhanced = "5.5.4"
		case 502, 503:
			r.Enhanced = "5.5.1"
		case 530:
			r.Enhanced = "5.7.0"
		}
	}
	return r
}
