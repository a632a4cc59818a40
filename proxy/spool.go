package proxy

import (
	"io"
	"os"
	"sync"
)

// spool holds one message while it is inspected: in memory up to a
// threshold, in an unlinked-on-reset temp file beyond it. It is never the
// only copy of an accepted message — the client has no 250 until the
// upstream has the message — so a crash loses nothing.
type spool struct {
	memLimit int64
	dir      string
	mem      []byte // from spoolBufs while a message is held
	f        *os.File
	size     int64
}

// spoolBufs are the memory spools of finished messages, for the next
// message of any session: an idle session holds none, and a busy server
// does not allocate a new one per message.
var spoolBufs sync.Pool

// maxPooledSpool is the largest memory spool kept for reuse.
const maxPooledSpool = 1 << 20

func (s *spool) Write(p []byte) (int, error) {
	if s.f == nil && int64(len(s.mem)+len(p)) <= s.memLimit {
		if s.mem == nil {
			if b, ok := spoolBufs.Get().(*[]byte); ok {
				s.mem = (*b)[:0]
			}
		}
		s.size += int64(len(p))
		s.mem = append(s.mem, p...)
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "moat-spool-*")
		if err != nil {
			return 0, err
		}
		// Unlink at once: the file lives only as long as the descriptor.
		os.Remove(f.Name())
		if _, err := f.Write(s.mem); err != nil {
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
	b := s.mem
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
	n, err := w.Write(s.mem)
	return int64(n), err
}

// reset empties the spool for the next message and gives its memory back
// for reuse. Nothing may hold on to the message's bytes after it.
func (s *spool) reset() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	if s.mem != nil && cap(s.mem) <= maxPooledSpool {
		b := s.mem[:0]
		spoolBufs.Put(&b)
	}
	s.mem = nil
	s.size = 0
}
