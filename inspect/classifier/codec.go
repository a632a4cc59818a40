package classifier

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// The stored form of a model: a magic string, the table size, the two
// message counts, then every non-empty bucket in ascending order as
// (index delta, spam count, ham count), all unsigned varints. A model
// learned from a few thousand messages has some 10^5 non-empty buckets:
// about a megabyte, against 8 MiB in memory.
const magic = "moat-classifier-1\n"

// MarshalBinary encodes the model.
func (m *Model) MarshalBinary() ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var b bytes.Buffer
	b.Grow(1 << 20)
	b.WriteString(magic)
	b.WriteByte(m.bits)
	var tmp [binary.MaxVarintLen64]byte
	put := func(v uint64) { b.Write(tmp[:binary.PutUvarint(tmp[:], v)]) }
	put(uint64(m.nSpam))
	put(uint64(m.nHam))
	nonEmpty := 0
	for i := range m.spam {
		if m.spam[i]|m.ham[i] != 0 {
			nonEmpty++
		}
	}
	put(uint64(nonEmpty))
	last := 0
	for i := range m.spam {
		if m.spam[i]|m.ham[i] == 0 {
			continue
		}
		put(uint64(i - last))
		put(uint64(m.spam[i]))
		put(uint64(m.ham[i]))
		last = i
	}
	return b.Bytes(), nil
}

// ErrCorrupt marks a stored model that cannot be read.
var ErrCorrupt = errors.New("classifier: stored model is corrupt")

// UnmarshalModel decodes a stored model. Anything malformed — a wrong
// magic, a table size out of range, an index beyond the table, a count
// beyond 32 bits, trailing bytes — is an error wrapping ErrCorrupt,
// never a panic or a partial model.
func UnmarshalModel(data []byte) (*Model, error) {
	bad := func(what string) (*Model, error) { return nil, fmt.Errorf("%w: %s", ErrCorrupt, what) }
	if !bytes.HasPrefix(data, []byte(magic)) {
		return bad("not a moat classifier model")
	}
	r := bytes.NewReader(data[len(magic):])
	bits, err := r.ReadByte()
	if err != nil || bits < 10 || bits > 24 {
		return bad("table size")
	}
	get := func() (uint64, bool) {
		v, err := binary.ReadUvarint(r)
		return v, err == nil
	}
	nSpam, ok1 := get()
	nHam, ok2 := get()
	n, ok3 := get()
	size := uint64(1) << bits
	if !ok1 || !ok2 || !ok3 || nSpam > 1<<32-1 || nHam > 1<<32-1 || n > size {
		return bad("header")
	}
	m := NewModel(int(bits))
	m.nSpam, m.nHam = uint32(nSpam), uint32(nHam)
	idx := uint64(0)
	for i := uint64(0); i < n; i++ {
		d, ok1 := get()
		s, ok2 := get()
		h, ok3 := get()
		if !ok1 || !ok2 || !ok3 || s > 1<<32-1 || h > 1<<32-1 {
			return bad("bucket")
		}
		if i > 0 && d == 0 || d >= size || idx+d >= size {
			return bad("bucket index")
		}
		idx += d
		m.spam[idx], m.ham[idx] = uint32(s), uint32(h)
	}
	if r.Len() != 0 {
		return bad("trailing bytes")
	}
	return m, nil
}

// Digest identifies a message for learning: the same message learned
// twice (from two folders, or redelivered with other trace fields) has
// the same digest, so it is counted once. It covers what the sender
// wrote — Message-ID, Date, From, To, Subject, the text, the links and
// the parts — and not the trace fields added on the way.
func Digest(d *Doc) string {
	h := sha256.New()
	for _, hd := range d.Headers {
		switch strings.ToLower(hd.Name) {
		case "message-id", "date", "from", "to", "subject":
			h.Write([]byte(strings.ToLower(hd.Name) + ":" + strings.TrimSpace(hd.Value) + "\n"))
		}
	}
	h.Write([]byte("\x00" + d.Text + "\x00"))
	for _, u := range d.URLHosts {
		h.Write([]byte(u + "\n"))
	}
	for _, p := range d.Parts {
		h.Write([]byte(p.Type + "/" + p.Filename + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
