package proxy

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"moat/inspect"
)

// writeMessage writes the spooled message to w with what the verdict adds:
// header fields in front (after moat's Received), and a prefix for the
// Subject. Everything else passes byte for byte.
func writeMessage(w io.Writer, s *spool, v *inspect.Verdict) error {
	for _, h := range v.Headers {
		if _, err := io.WriteString(w, h.Name+": "+foldAtSemicolons(len(h.Name)+2, sanitizeHeaderValue(h.Value))+"\r\n"); err != nil {
			return err
		}
	}
	if v.SubjectPrefix == "" && len(v.DropHeaders) == 0 {
		_, err := s.WriteTo(w)
		return err
	}
	r := without(s, s.size, v.DropHeaders)
	if v.SubjectPrefix == "" {
		_, err := io.Copy(w, r)
		return err
	}
	return prefixSubject(w, r, v.SubjectPrefix)
}

// without reads the message in s, size bytes, leaving out the spans
// (header fields the engine found forged: RFC 8601 §5), which are in
// message order and do not overlap.
func without(s io.ReaderAt, size int64, drop []inspect.Span) io.Reader {
	var parts []io.Reader
	at := int64(0)
	for _, sp := range drop {
		if sp.Start < at || sp.End > size || sp.End <= sp.Start {
			continue // not a span of this message: keep the bytes
		}
		parts = append(parts, io.NewSectionReader(s, at, sp.Start-at))
		at = sp.End
	}
	parts = append(parts, io.NewSectionReader(s, at, size-at))
	return io.MultiReader(parts...)
}

// prefixSubject copies a message, putting prefix in front of the first
// Subject field's value, or adding a Subject when there is none. Only the
// header section is looked at, line by line; the body is copied as is.
func prefixSubject(w io.Writer, r io.Reader, prefix string) error {
	br := bufio.NewReaderSize(r, 8192)
	prefix = sanitizeHeaderValue(prefix)
	done := false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A header line longer than the buffer: pass it through in
			// pieces; it is not a Subject we could recognise anyway.
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				if _, werr := w.Write(line); werr != nil {
					return werr
				}
			}
			if err != nil && err != io.EOF {
				return err
			}
			continue
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			// End of the header section (or of a message without body).
			if !done && len(line) > 0 {
				if _, err := io.WriteString(w, "Subject: "+strings.TrimRight(prefix, " ")+"\r\n"); err != nil {
					return err
				}
			}
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			break
		}
		if !done && len(line) >= 8 && strings.EqualFold(string(line[:8]), "subject:") {
			rest := line[8:]
			ws := len(rest) - len(bytes.TrimLeft(rest, " \t"))
			if _, err := w.Write(line[:8+ws]); err != nil {
				return err
			}
			if _, err := io.WriteString(w, prefix); err != nil {
				return err
			}
			line = rest[ws:]
			done = true
		}
		if _, werr := w.Write(line); werr != nil {
			return werr
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	_, err := io.Copy(w, br)
	return err
}

// sanitizeHeaderValue keeps a value on one header line.
// foldAtSemicolons folds a structured value — Authentication-Results'
// "; "-separated results — so that lines stay near 78 characters and
// always under RFC 5322 §2.1.1's 998: a line break and a tab before any
// result that would go past 78 (FWS, §3.2.2). used is the length of the
// line before the value ("Name: ").
func foldAtSemicolons(used int, v string) string {
	if used+len(v) <= 78 || !strings.Contains(v, "; ") {
		return v
	}
	var b strings.Builder
	b.Grow(len(v) + 16)
	line := used
	for i, part := range strings.Split(v, "; ") {
		if i > 0 {
			b.WriteByte(';')
			line++
			if line+1+len(part) > 78 {
				b.WriteString("\r\n\t")
				line = 1
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(part)
		line += len(part)
	}
	return b.String()
}

func sanitizeHeaderValue(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
