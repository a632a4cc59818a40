package capture

import (
	"bufio"
	"sort"
	"time"

	"moat/inspect/smtp"
)

// What capture lends to a program that sends recorded sessions again
// (moat replay, in internal/replay): each session's two reassembled
// directions, through Deps.Keep, and the reconstruction's own readings of
// them — where SMTP starts, whether a line is a header or an AUTH
// response, the line limit — so that the replay splits a recording into
// commands exactly where the reconstruction did.

// Stream is one direction of a reassembled connection, lent to Deps.Keep.
// It is valid only during that call: its bytes are freed after.
type Stream struct{ h *halfStream }

// Size is the length of the stream, missing bytes included.
func (s *Stream) Size() int64 { return s.h.size }

// Complete is how many bytes come before the first gap: Size when the
// capture lost none.
func (s *Stream) Complete() int64 {
	if len(s.h.gaps) > 0 {
		return s.h.gaps[0].off
	}
	return s.h.size
}

// ReadAt reads the stream's bytes at off; bytes missing from the capture
// read as zeros.
func (s *Stream) ReadAt(p []byte, off int64) (int, error) { return s.h.ReadAt(p, off) }

// Times returns when the stream's bytes arrived; it may be kept after
// Deps.Keep returns.
func (s *Stream) Times() Timeline {
	return Timeline{marks: append([]mark(nil), s.h.marks...)}
}

// Timeline says when each byte of a stream arrived, to a few packets
// (the marks are thinned past maxMarks).
type Timeline struct{ marks []mark }

// At returns when the byte at off arrived: the capture time of the packet
// that carried it, the zero time for an empty stream.
func (t Timeline) At(off int64) time.Time {
	i := sort.Search(len(t.marks), func(i int) bool { return t.marks[i].off > off })
	if i == 0 {
		if len(t.marks) > 0 {
			return t.marks[0].ts
		}
		return time.Time{}
	}
	return t.marks[i-1].ts
}

// Limits of the reconstruction that a replay must share to read the
// client's stream as it did.
const (
	// MaxCommandLine is the longest command line read as one; a longer
	// one is smtp.ErrLineTooLong.
	MaxCommandLine = maxCommandLine
	// MaxAuthLines is how many client lines one AUTH exchange may take.
	MaxAuthLines = maxAuthLines
)

// SkipPrelude skips what came before SMTP in a session the reconstruction
// marked with the problem "prelude" (an HTTP CONNECT proxy's exchange):
// the client's bytes to its first HELO or EHLO, the server's to its first
// 220 line. Both readers must be at the start of their stream and buffer
// at least 4 KiB. server may be nil: without the server's side there is
// no prelude to find.
func SkipPrelude(client, server *bufio.Reader) {
	if server == nil {
		return
	}
	(&conversation{cr: client, sr: server, out: &Session{}}).skipPrelude()
}

// HeaderNext reports whether the client's next line is a header field
// (RFC 5322 §2.2: a field name, then a colon) rather than a command: how
// the reconstruction tells that a client sent its message after a DATA
// whose recorded reply it cannot trust.
func HeaderNext(client *bufio.Reader) bool { return (&conversation{cr: client}).headerNext() }

// AuthResponseNext guesses, without the server's replies, whether the
// client's next line answers an AUTH challenge (RFC 4954 §4) rather than
// being a command.
func AuthResponseNext(client *bufio.Reader) bool { return (&conversation{cr: client}).authLineNext() }

// Positive reports whether a reply let the command through (2xx, 3xx);
// a reply not captured (nil) counts as positive.
func Positive(r *smtp.Reply) bool { return positive(r) }
