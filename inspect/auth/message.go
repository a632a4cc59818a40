package auth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
)

// The message checks (DKIM, ARC) read the message once, while it is
// received: the proxy's DATA loop and the capture analyser write the
// bytes to a Message as they arrive, and nothing reads the spool again.
//
// A Message buffers the header section (bounded) until the empty line
// that ends it, reads the header fields the callers need (From,
// Authentication-Results) and starts the verifiers: go-msgauth for the
// DKIM signatures, fed through a pipe, and the ARC verifier. go-msgauth
// asks for the keys after reading the header and before reading the body,
// so a bounded queue sits between Write and the verifiers: an ordinary
// message is taken in whole while the key lookups are under way, and
// only a message larger than the queue waits for them (back-pressure, so
// that memory stays bounded).

// MessageOptions bound the work on one message. The zero value is the
// defaults.
type MessageOptions struct {
	// MaxSignatures is the number of DKIM signatures verified per
	// message, against denial of service; 0 means 5. Signatures beyond it
	// are reported with result policy and reason "too many signatures"
	// (see dkimVerifier.results for the choice of result).
	MaxSignatures int
	// MaxHeaderBytes bounds the header section, the empty line that ends
	// it included; 0 means 1 MiB. A longer header section is not
	// checked: its DKIM signatures (those within the bound) are
	// permerror, ARC is none, both with a reason, and HeaderBytes says
	// how long it was.
	MaxHeaderBytes int
}

const (
	defaultMaxSignatures  = 5
	defaultMaxHeaderBytes = 1 << 20
	// bodyQueueBytes is how much of the body Write takes in ahead of the
	// verifiers. go-msgauth reads no body until its key lookups are
	// answered; a message this large passes while they are pending.
	bodyQueueBytes = 1 << 20
	// queueChunkBytes is the unit of the queue; writes are coalesced
	// into chunks this large.
	queueChunkBytes = 32 << 10
)

func (o MessageOptions) withDefaults() MessageOptions {
	if o.MaxSignatures <= 0 {
		o.MaxSignatures = defaultMaxSignatures
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	return o
}

// MessageResult is what the message checks found.
type MessageResult struct {
	// DKIM has one result per DKIM-Signature field, in header order; none
	// when the message is not signed (the caller reports dkim=none).
	DKIM []DKIMResult
	// ARC is the verdict on the ARC chain.
	ARC ARCResult
	// From holds the value of every From: field, unfolded and trimmed of
	// surrounding white space, for DMARC: all of them, since RFC 7489
	// §6.6.1 has rules for messages with none or several.
	From []string
	// AuthResults locates every Authentication-Results field, so that the
	// caller can remove those that claim its own authserv-id before
	// adding its own (RFC 8601 §5).
	AuthResults []HeaderSpan
	// HeaderBytes is the length of the header section, the empty line
	// that ends it included: the body starts at this offset. A message
	// without an empty line is all header. When it exceeds
	// MaxHeaderBytes, nothing was checked.
	HeaderBytes int64
}

// HeaderSpan is one header field of a message.
type HeaderSpan struct {
	// Start and End are its byte offsets in the message, End exclusive:
	// the whole field, with its line end and folded continuation lines.
	Start, End int64
	// Value is the field's value, after the colon, unfolded and trimmed
	// of surrounding white space.
	Value string
}

// messagePanics counts panics recovered in the verifiers' goroutines: a
// bug there must cost one message its verdicts, not the process. Tests
// fail when it is not zero.
var messagePanics atomic.Int64

// msgPhase is where a Message is in the message.
type msgPhase uint8

const (
	phaseHeader      msgPhase = iota // buffering the header section
	phaseBody                        // passing the body to the verifiers
	phaseTooLong                     // header section over the bound: looking for its end, to count it
	phaseTooLongBody                 // after a header section over the bound: counting bytes
)

// Message checks the DKIM signatures and the ARC chain of one message
// while it is written to it.
//
// Write and Close are called by one goroutine, the one that receives the
// message. Wait may be called from any goroutine, after Close, any
// number of times: the first call fixes the result.
//
// A Message starts its goroutines when the header section has been read
// (or at Close): the feeder and go-msgauth's. They end after Close once
// the verifiers have their answers, or soon after ctx is done, or when
// Wait gives up — as long as the Resolver honours its ctx. A message that
// is abandoned must therefore be Closed or have its ctx cancelled.
type Message struct {
	ctx    context.Context
	cancel context.CancelFunc
	r      Resolver
	opts   MessageOptions

	// The writer's state, touched by Write and Close only.
	n      int64
	phase  msgPhase
	closed bool
	hdr    []byte          // the header section so far
	end    headerEndFinder // finds the empty line that ends it
	q      *bodyQueue      // the body on its way to the verifiers

	// Fixed before closedCh is closed; read by Wait after it.
	res     MessageResult // From, AuthResults, HeaderBytes
	sigs    []dkimSig     // every DKIM-Signature field
	tooLong bool
	dkim    *dkimVerifier // nil without signatures
	arc     *arcVerifier  // nil when the header section is too long

	closedCh chan struct{} // closed by Close
	finished chan struct{} // closed when the verifiers have returned
	complete atomic.Bool   // the verifiers were given the whole message

	mu     sync.Mutex
	result *MessageResult // fixed by the first Wait
}

// NewMessage starts checking a message whose bytes — DATA content after
// dot-unstuffing, as received: normally CRLF line ends — will be written
// to it. Key lookups go through r (nil: none can be made, the signatures
// are temperror) and end when ctx is done. Wait, or the end of ctx,
// releases what the Message holds of ctx.
func NewMessage(ctx context.Context, r Resolver, opts MessageOptions) *Message {
	ctx, cancel := context.WithCancel(ctx)
	return &Message{
		ctx:      ctx,
		cancel:   cancel,
		r:        r,
		opts:     opts.withDefaults(),
		closedCh: make(chan struct{}),
		finished: make(chan struct{}),
	}
}

// Write takes the next bytes of the message. It never fails: a problem
// with the message is a result, never a reason to stop receiving it. It
// blocks only while more than the queue bound (1 MiB) of body waits for
// the verifiers, and then only until they catch up or ctx is done.
func (m *Message) Write(p []byte) (int, error) {
	n := len(p)
	if m.closed || n == 0 {
		return n, nil
	}
	switch m.phase {
	case phaseHeader:
		i := m.end.find(p)
		head := p
		if i >= 0 {
			head = p[:i]
		}
		if len(m.hdr)+len(head) > m.opts.MaxHeaderBytes {
			m.hdr = append(m.hdr, head[:m.opts.MaxHeaderBytes-len(m.hdr)]...)
			m.headerTooLong()
			m.phase = phaseTooLong
			if i >= 0 {
				m.res.HeaderBytes = m.n + int64(i)
				m.phase = phaseTooLongBody
			}
			break
		}
		m.hdr = append(m.hdr, head...)
		if i >= 0 {
			m.res.HeaderBytes = m.n + int64(i)
			m.start(splitMsgFields(m.hdr[:len(m.hdr)-m.end.termLen]))
			m.q.write(p[i:])
		}
	case phaseBody:
		m.q.write(p)
	case phaseTooLong:
		if i := m.end.find(p); i >= 0 {
			m.res.HeaderBytes = m.n + int64(i)
			m.phase = phaseTooLongBody
		}
	}
	m.n += int64(n)
	return n, nil
}

// Close ends the message. It does not wait for the verifiers.
func (m *Message) Close() {
	if m.closed {
		return
	}
	m.closed = true
	switch m.phase {
	case phaseHeader:
		// The message ended inside the header section (or is empty): it
		// has no body (RFC 5322 §3.5 makes the body optional). The
		// verifiers see the header with the empty line added and an
		// empty body.
		m.res.HeaderBytes = m.n
		m.start(splitMsgFields(m.hdr))
	case phaseTooLong:
		m.res.HeaderBytes = m.n
	}
	if m.q != nil {
		m.q.close()
	}
	close(m.closedCh)
}

// Wait returns the results, once the verifiers have them or ctx is done
// (then what did not finish is temperror). Call it after Close; before,
// it waits for Close as well.
func (m *Message) Wait(ctx context.Context) MessageResult {
	if !waitClosed(ctx, m.closedCh) {
		// Still being written: nothing the writer holds can be read.
		return MessageResult{ARC: ARCResult{Result: None, Reason: "message not complete"}}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.result != nil {
		return *m.result
	}
	res := m.res
	if m.tooLong {
		reason := fmt.Sprintf("header section longer than %d bytes: not verified", m.opts.MaxHeaderBytes)
		res.DKIM = dkimTooLongResults(m.sigs, m.opts.MaxSignatures, reason)
		res.ARC = ARCResult{Result: None, Reason: reason}
		m.cancel()
		m.result = &res
		return res
	}
	finished := waitClosed(ctx, m.finished)
	if m.dkim != nil {
		// The feeder may still be passing the body to the ARC verifier
		// when go-msgauth is done.
		res.DKIM = m.dkim.results(finished || waitClosed(ctx, m.dkim.done), m.complete.Load())
	}
	res.ARC = safeARCResult(ctx, m.arc)
	// Done with the lookups; if they have not finished, this ends them.
	m.cancel()
	m.result = &res
	return res
}

// wait waits for c to be closed or ctx to be done, and reports whether c
// was closed; if both are, c wins, so that an expired ctx never hides a
// result that is there.
func waitClosed(ctx context.Context, c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
	}
	select {
	case <-c:
		return true
	case <-ctx.Done():
		return false
	}
}

// headerTooLong records what can be told of a header section that goes
// beyond the bound: the fields that fit, the last of them perhaps cut.
func (m *Message) headerTooLong() {
	fields := splitMsgFields(m.hdr)
	if len(fields) > 0 {
		fields[len(fields)-1].complete = false
	}
	m.collect(fields)
	m.tooLong = true
	m.hdr = nil
	close(m.finished)
}

// collect notes the header fields the callers need and the DKIM
// signatures.
func (m *Message) collect(fields []msgField) {
	for _, f := range fields {
		if isDKIMSignature(f.text) {
			m.sigs = append(m.sigs, parseDKIMSig(f.text))
			continue
		}
		if !f.complete {
			continue
		}
		if v, ok := f.value("From"); ok {
			m.res.From = append(m.res.From, v)
		} else if v, ok := f.value("Authentication-Results"); ok {
			m.res.AuthResults = append(m.res.AuthResults, HeaderSpan{Start: f.start, End: f.end, Value: v})
		}
	}
}

// start starts the verifiers on the header fields: from now on the body
// goes through the queue.
func (m *Message) start(fields []msgField) {
	m.collect(fields)
	texts := make([]string, len(fields))
	size := 2
	for i, f := range fields {
		texts[i] = f.text
		size += len(f.text)
	}
	header := make([]byte, 0, size)
	for _, t := range texts {
		header = append(header, t...)
	}
	header = append(header, "\r\n"...)
	m.hdr = nil

	m.dkim = startDKIM(m.ctx, m.r, texts, m.sigs, m.opts.MaxSignatures)
	// The ARC verifier gets the fields as go-msgauth does: raw, in
	// order, each with its folded lines, line ends made CRLF (which they
	// are already in a message received by SMTP).
	m.arc = newARCVerifier(m.ctx, m.r, texts)
	m.q = newBodyQueue(bodyQueueBytes)
	var pw *io.PipeWriter
	if m.dkim != nil && m.dkim.pw != nil {
		pw = m.dkim.pw
	}
	m.phase = phaseBody
	go m.feed(header, pw)
}

// feed passes the message from the queue to the verifiers: the header
// section to go-msgauth (the ARC verifier has it already), then the body
// to both. It ends when the queue is closed and empty, or ctx is done.
func (m *Message) feed(header []byte, pw *io.PipeWriter) {
	dk := pw != nil
	defer func() {
		if v := recover(); v != nil {
			messagePanics.Add(1)
		}
		// Writes are dropped from now on: nothing must block DATA.
		m.q.stop()
		if pw != nil {
			// Always io.EOF, never an error: go-msgauth's parallelVerify
			// leaves its per-signature goroutines blocked for ever when
			// its reader fails. Cut short, the body no longer matches its
			// hash, and results() reports temperror.
			pw.Close()
		}
		safeARCClose(m.arc)
		if pw != nil {
			<-m.dkim.done
		}
		close(m.finished)
	}()
	if dk {
		if _, err := pw.Write(header); err != nil {
			dk = false
		}
	}
	for {
		c, ok := m.q.next(m.ctx.Done())
		if !ok {
			break
		}
		if dk && m.dkim.run.exceeds(c) {
			m.dkim.cut.Store(true)
			pw.Close()
			dk = false
		}
		if dk {
			if _, err := pw.Write(c); err != nil {
				// go-msgauth has its verdicts and reads no more.
				dk = false
			}
		}
		m.arc.Write(c)
		m.q.release(c)
	}
	m.complete.Store(m.q.drained())
}

// safeARCClose ends the ARC verifier's body; a panic there is counted, and
// must not keep the DKIM verdicts from being delivered.
func safeARCClose(a *arcVerifier) {
	defer func() {
		if v := recover(); v != nil {
			messagePanics.Add(1)
		}
	}()
	a.Close()
}

// safeARCResult is the ARC verifier's result, or none if it panicked.
func safeARCResult(ctx context.Context, a *arcVerifier) (res ARCResult) {
	defer func() {
		if v := recover(); v != nil {
			messagePanics.Add(1)
			res = ARCResult{Result: None, Reason: "internal error in ARC verification"}
		}
	}()
	return a.Result(ctx)
}

// dkimTooLongResults are the DKIM results of a message whose header section
// was too long to check.
func dkimTooLongResults(sigs []dkimSig, max int, reason string) []DKIMResult {
	if len(sigs) == 0 {
		return nil
	}
	out := make([]DKIMResult, len(sigs))
	for i, s := range sigs {
		out[i] = s.base
		if i < max {
			out[i].Result, out[i].Reason = PermError, reason
		} else {
			out[i].Result, out[i].Reason = Policy, "too many signatures"
		}
	}
	return out
}

// headerEndFinder finds the empty line that ends a header section, written in
// pieces. Lines end at LF; a line is empty when nothing or a lone CR
// precedes its LF — go-msgauth's reading of the header (net/textproto's
// ReadLine), which must agree with moat's on where the body starts.
type headerEndFinder struct {
	lineLen int  // bytes of the current line so far
	firstCR bool // its first byte is CR
	termLen int  // length of the empty line found: 1 (LF) or 2 (CRLF)
}

// find returns the offset in p just past the empty line, or -1.
func (h *headerEndFinder) find(p []byte) int {
	for i, c := range p {
		if c == '\n' {
			if h.lineLen == 0 || (h.lineLen == 1 && h.firstCR) {
				h.termLen = h.lineLen + 1
				return i + 1
			}
			h.lineLen = 0
			continue
		}
		if h.lineLen == 0 {
			h.firstCR = c == '\r'
		}
		h.lineLen++
	}
	return -1
}

// msgField is one field of a header section.
type msgField struct {
	start, end int64 // offsets in the message, end exclusive
	// text is the field as go-msgauth sees it: its lines, each ended by
	// CRLF whatever ended it in the message.
	text     string
	complete bool // not cut by the header bound
}

// value returns the unfolded, trimmed value of the field if it is named
// name (any case; RFC 5322 §4.5: the obsolete syntax allows space before
// the colon).
func (f msgField) value(name string) (string, bool) {
	k, v, ok := strings.Cut(f.text, ":")
	if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
		return "", false
	}
	// RFC 5322 §2.2.3: unfolding removes the CRLF before each
	// continuation line's white space.
	return strings.Trim(strings.ReplaceAll(v, "\r\n", ""), " \t"), true
}

// splitMsgFields splits a header section (without the empty line that ends
// it) into fields, as go-msgauth does: a line ends at LF, less one CR
// before it; a line that starts with space or tab continues the field
// before it. The last line may lack its LF when the message ended there
// (the message or the header bound ended there); it is then taken whole,
// as net/textproto does.
func splitMsgFields(b []byte) []msgField {
	var fields []msgField
	for pos := 0; pos < len(b); {
		next := len(b)
		if e := bytes.IndexByte(b[pos:], '\n'); e >= 0 {
			next = pos + e + 1
		}
		if c := b[pos]; (c == ' ' || c == '\t') && len(fields) > 0 {
			fields[len(fields)-1].end = int64(next)
		} else {
			fields = append(fields, msgField{start: int64(pos), end: int64(next), complete: true})
		}
		pos = next
	}
	for i := range fields {
		fields[i].text = crlfLines(b[fields[i].start:fields[i].end])
	}
	return fields
}

// crlfLines ends every line of b with CRLF: a line's LF, with one
// CR before it, is replaced; a last line without LF gets one.
func crlfLines(b []byte) string {
	var s strings.Builder
	s.Grow(len(b) + 2)
	for len(b) > 0 {
		e := bytes.IndexByte(b, '\n')
		if e < 0 {
			s.Write(b)
			break
		}
		line := b[:e]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		s.Write(line)
		s.WriteString("\r\n")
		b = b[e+1:]
		if len(b) == 0 {
			return s.String()
		}
	}
	s.WriteString("\r\n")
	return s.String()
}

// bodyQueue is the bounded queue between Write and the feeder: chunks of the
// body, at most limit bytes of them, counted until the feeder releases
// them.
type bodyQueue struct {
	mu      sync.Mutex
	chunks  []*[]byte
	queued  int // bytes queued or held by the feeder
	limit   int
	peak    int  // the most queued at once, for tests
	closed  bool // no more writes
	stopped bool // no more reads: writes are dropped
	data    chan struct{}
	room    chan struct{}
	stopCh  chan struct{}
}

var bodyQueueChunks = sync.Pool{New: func() any { b := make([]byte, 0, queueChunkBytes); return &b }}

func newBodyQueue(limit int) *bodyQueue {
	return &bodyQueue{
		limit:  limit,
		data:   make(chan struct{}, 1),
		room:   make(chan struct{}, 1),
		stopCh: make(chan struct{}),
	}
}

func bodyQueueNotify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// write queues p, waiting for room while the queue is full, until the
// feeder stops.
func (s *bodyQueue) write(p []byte) {
	for len(p) > 0 {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		room := s.limit - s.queued
		if room <= 0 {
			s.mu.Unlock()
			select {
			case <-s.room:
			case <-s.stopCh:
				return
			}
			continue
		}
		k := min(room, len(p))
		s.queued += k
		s.peak = max(s.peak, s.queued)
		for b := p[:k]; len(b) > 0; {
			var c *[]byte
			if n := len(s.chunks); n > 0 && len(*s.chunks[n-1]) < cap(*s.chunks[n-1]) {
				c = s.chunks[n-1]
			} else {
				c = bodyQueueChunks.Get().(*[]byte)
				*c = (*c)[:0]
				s.chunks = append(s.chunks, c)
			}
			j := min(cap(*c)-len(*c), len(b))
			*c = append(*c, b[:j]...)
			b = b[j:]
		}
		s.mu.Unlock()
		bodyQueueNotify(s.data)
		p = p[k:]
	}
}

// close says no more is coming.
func (s *bodyQueue) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	bodyQueueNotify(s.data)
}

// next returns the next chunk; false when the queue is closed and empty,
// or done is closed.
func (s *bodyQueue) next(done <-chan struct{}) ([]byte, bool) {
	for {
		select {
		case <-done:
			return nil, false
		default:
		}
		s.mu.Lock()
		if len(s.chunks) > 0 {
			c := s.chunks[0]
			s.chunks[0] = nil
			s.chunks = s.chunks[1:]
			s.mu.Unlock()
			return *c, true
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-s.data:
		case <-done:
			return nil, false
		}
	}
}

// release gives back a chunk next returned, making room for Write.
func (s *bodyQueue) release(c []byte) {
	s.mu.Lock()
	s.queued -= len(c)
	s.mu.Unlock()
	c = c[:0]
	bodyQueueChunks.Put(&c)
	bodyQueueNotify(s.room)
}

// drained reports whether the queue was closed and everything passed on.
func (s *bodyQueue) drained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed && len(s.chunks) == 0
}

// stop ends the queue: the feeder is gone, Write drops what it is given.
func (s *bodyQueue) stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stopCh)
	}
	s.chunks = nil
	s.mu.Unlock()
}

// AuthResultsFields locates the Authentication-Results fields of a
// message's header section (the bytes as received, up to the empty line
// or the whole message), as the streaming verifier does: for a message
// that is not verified (an authenticated submission), whose forged
// fields must still go (RFC 8601 §5).
func AuthResultsFields(header []byte) []HeaderSpan {
	if i := bytes.Index(header, []byte("\r\n\r\n")); i >= 0 {
		header = header[:i+2]
	} else if i := bytes.Index(header, []byte("\n\n")); i >= 0 {
		header = header[:i+1]
	}
	var out []HeaderSpan
	for _, f := range splitMsgFields(header) {
		if !f.complete {
			continue
		}
		if v, ok := f.value("Authentication-Results"); ok {
			out = append(out, HeaderSpan{Start: f.start, End: f.end, Value: v})
		}
	}
	return out
}
