package proxy

import (
	"bytes"
	"io"
	"os"
)

// spool holds one message while it is inspected: in memory up to a
// threshold, in an unlinked-on-reset temp file beyond it. It is never the
// only copy of an accepted message — the client has no 250 until the
// upstream has the message — so a crash loses nothing.
type spool struct {
	memLimit int64
	dir      string
	mem      bytes.Buffer
	f        *os.File
	size     int64
}

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && int64(s.mem.Len()+len(p)) <= s.memLimit {
		s.size += int64(len(p))
		return s.mem.Write(p)
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "moat-spool-*")
		if err != nil {
			return 0, err
		}
		// Unlink at once: the file lives only as long as the descriptor.
		os.Remove(f.Name())
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			f.Close()
			return 0, err
		}
		s.f = f
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	return n, err
}

// ReadAt implements io.ReaderAt over the whole message.
func (s *spool) ReadAt(p []byte, off int64) (int, error) {
	if s.f != nil {
		return s.f.ReadAt(p, off)
	}
	b := s.mem.Bytes()
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteTo copies the whole message to w.
func (s *spool) WriteTo(w io.Writer) (int64, error) {
	if s.f != nil {
		return io.Copy(w, io.NewSectionReader(s.f, 0, s.size))
	}
	n, err := w.Write(s.mem.Bytes())
	return int64(n), err
}

// reset empties the spool for the next message, keeping the memory buffer
// unless it grew large.
func (s *spool) reset() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	if s.mem.Cap() > 256<<10 {
		s.mem = bytes.Buffer{}
	}
	s.mem.Reset()
	s.size = 0
}
