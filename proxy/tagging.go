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
		if _, err := io.WriteString(w, h.Name+": "+sanitizeHeaderValue(h.Value)+"\r\n"); err != nil {
			return err
		}
	}
	if v.SubjectPrefix == "" {
		_, err := s.WriteTo(w)
		return err
	}
	return prefixSubject(w, io.NewSectionReader(s, 0, s.size), v.SubjectPrefix)
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
func sanitizeHeaderValue(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
