package sessiongen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StepTimeout bounds every step of Run (its writes and the replies it
// waits for), and the dial; the caller's context bounds the whole run.
const StepTimeout = 30 * time.Second

// Limits on what Run reads, so that a misbehaving server cannot make it
// hold unbounded memory.
const (
	maxReplyLine  = 4096
	maxReplyLines = 256
)

// Reply is one reply as the client saw it (RFC 5321 §4.2).
type Reply struct {
	// Code is the reply code.
	Code int
	// Enhanced is the RFC 2034 enhanced status code at the start of the
	// first line's text, when it has the reply's class; else "".
	Enhanced string
	// Text holds each line's text after the code and separator, with the
	// enhanced code removed where the line starts with it.
	Text []string
	// Raw holds the lines as received, without CRLF.
	Raw []string
}

// Class is the first digit of the code.
func (r Reply) Class() int { return r.Code / 100 }

// String is the reply's wire form, lines joined by " / ".
func (r Reply) String() string { return strings.Join(r.Raw, " / ") }

// StepResult is what happened at one step of a session.
type StepResult struct {
	// Sent summarises what the client sent: command lines as written,
	// "<message N octets>", "BDAT N [LAST] <chunk>". A write the
	// connection refused (the server had closed it) is not in it.
	Sent []string
	// Replies are the replies read, in order.
	Replies []Reply
	// Pipelined is set when the step's commands went in one write.
	Pipelined bool
	// AsData is set for a BDAT step sent as DATA because the server did
	// not offer CHUNKING.
	AsData bool
	// Skipped says why the step was not played ("" when it was): "no 354",
	// "STARTTLS not offered", "connection closed".
	Skipped string
	// Closed is set when the connection was found closed during the step.
	Closed bool
}

// Transcript is the record of one played session.
type Transcript struct {
	// Greeting is the server's greeting (RFC 5321 §4.3.1).
	Greeting Reply
	// Steps has one entry per step of the session, by index.
	Steps []StepResult
	// Closed is set when the server closed the connection (at any point,
	// including the close after QUIT).
	Closed bool
	// TLS is set when a STARTTLS handshake succeeded.
	TLS bool
	// Ext are the keywords of the last EHLO reply (upper case) with their
	// parameters.
	Ext map[string]string
	// Local is the client's end of the connection ("ip:port"), by which
	// a test finds the session in a server's logs or a capture; "" when
	// the dial failed.
	Local string
}

// String is the transcript, one line per command and reply.
func (t *Transcript) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "<- %s\n", t.Greeting)
	for i, st := range t.Steps {
		if st.Skipped != "" {
			fmt.Fprintf(&b, "%2d (skipped: %s)\n", i, st.Skipped)
			continue
		}
		mark := ""
		if st.Pipelined {
			mark = " [pipelined]"
		}
		if st.AsData {
			mark = " [BDAT sent as DATA]"
		}
		for j, s := range st.Sent {
			switch {
			case j == 0:
				fmt.Fprintf(&b, "%2d -> %s%s\n", i, s, mark)
			case len(st.Sent) > 8 && j >= 3 && j < len(st.Sent)-2:
				if j == 3 {
					fmt.Fprintf(&b, "   -> … %d more …\n", len(st.Sent)-5)
				}
			default:
				fmt.Fprintf(&b, "   -> %s\n", s)
			}
		}
		// Runs of the same reply are written once, with a count.
		for j := 0; j < len(st.Replies); {
			k := j + 1
			for k < len(st.Replies) && st.Replies[k].String() == st.Replies[j].String() {
				k++
			}
			if k-j > 1 {
				fmt.Fprintf(&b, "   <- %s (×%d)\n", st.Replies[j], k-j)
			} else {
				fmt.Fprintf(&b, "   <- %s\n", st.Replies[j])
			}
			j = k
		}
		if st.Closed {
			b.WriteString("   (connection closed)\n")
		}
	}
	return b.String()
}

// errClosed marks the server closing the connection; Run records it and
// stops, it is not an error of the run.
var errClosed = errors.New("connection closed by the server")

// Run plays s against addr and returns what happened, adapting like a
// real client (see the package documentation): it gives up a transaction
// (Step.Tx) whose MAIL was refused — what it pipelined with the MAIL is
// sent already — and sends a transaction's DATA (when on its own) or BDAT
// only when one of its RCPTs was accepted; a 354 always gets its message. Skipped steps say why in their StepResult. tlsConf is
// used for STARTTLS; nil skips STARTTLS steps. The error is about the run, not the
// server's answers: the dial failed, a reply did not come within
// StepTimeout or ctx ended, a reply was malformed, or the TLS handshake
// failed. A server that closes the connection at any point is not an
// error: the transcript records where, and the remaining steps are skipped.
// The transcript so far is returned with an error too.
func Run(ctx context.Context, addr string, s Session, tlsConf *tls.Config) (Transcript, error) {
	return RunFrom(ctx, netip.Addr{}, addr, s, tlsConf)
}

// RunFrom is Run from the local address from (any port), when it is
// valid: a test that runs many sessions from 127.0.0.2, 127.0.0.3 ... can
// tell them apart in a server's logs or a capture by address alone,
// where ports may be used again.
func RunFrom(ctx context.Context, from netip.Addr, addr string, s Session, tlsConf *tls.Config) (Transcript, error) {
	tr := Transcript{Steps: make([]StepResult, len(s.Steps))}
	d := net.Dialer{Timeout: StepTimeout}
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tr, err
	}
	tr.Local = nc.LocalAddr().String()
	p := &player{ctx: ctx, nc: nc, r: bufio.NewReaderSize(nc, 4096), tls: tlsConf, tr: &tr}
	defer func() { p.nc.Close() }()
	// Cancelling ctx interrupts whatever I/O is in progress.
	stop := context.AfterFunc(ctx, func() { p.setDeadline(time.Now()) })
	defer stop()

	err = p.play(s)
	if errors.Is(err, errClosed) {
		tr.Closed = true
		err = nil
	}
	if err != nil {
		// The connection's deadline may fire a moment before ctx reports
		// the same deadline.
		if d, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(d) {
			// Read the cause once: ctx may end between two looks.
			cause := context.Cause(ctx)
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			err = fmt.Errorf("%w (%v)", cause, err)
		}
	}
	return tr, err
}

type player struct {
	ctx     context.Context
	nc      net.Conn // a *tls.Conn after STARTTLS
	r       *bufio.Reader
	tls     *tls.Config
	tr      *Transcript
	greeted bool
	data    bool // the last reply was 354: the server waits for data
	// The transaction in progress (Step.Tx): whether its MAIL was
	// refused, and how many of its RCPTs were accepted.
	tx         int
	mailFailed bool
	rcptOK     int
}

func (p *player) setDeadline(t time.Time) { p.nc.SetDeadline(t) }

// deadline starts a step's time.
func (p *player) deadline() {
	dl := time.Now().Add(StepTimeout)
	if d, ok := p.ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if p.ctx.Err() != nil {
		dl = time.Now()
	}
	p.setDeadline(dl)
}

func (p *player) play(s Session) error {
	p.deadline()
	if !s.EarlyTalk {
		if err := p.greet(); err != nil {
			return err
		}
	}
	for i, st := range s.Steps {
		p.deadline()
		res := &p.tr.Steps[i]
		err := p.step(st, res)
		if errors.Is(err, errClosed) {
			res.Closed = true
			for j := i + 1; j < len(s.Steps); j++ {
				p.tr.Steps[j].Skipped = "connection closed"
			}
			return err
		}
		if err != nil {
			return fmt.Errorf("step %d (%s): %w", i, st, err)
		}
	}
	if !p.greeted { // a session of no steps
		if err := p.greet(); err != nil {
			return err
		}
	}
	// After QUIT the server closes; a short wait tells whether it did.
	if n := len(s.Steps); n > 0 && isQuit(s.Steps[n-1]) {
		p.setDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.r.ReadByte(); err != nil && closedErr(err) {
			return errClosed
		}
	}
	return nil
}

func isQuit(st Step) bool {
	return st.Kind == KindCmd && len(st.Cmds) > 0 && st.Cmds[len(st.Cmds)-1].Tag == TagQuit
}

// greet reads the greeting.
func (p *player) greet() error {
	p.greeted = true
	r, err := p.read()
	p.tr.Greeting = r
	return err
}

func (p *player) step(st Step, res *StepResult) error {
	if st.Tx != p.tx {
		p.tx, p.mailFailed, p.rcptOK = st.Tx, false, 0
	}
	// A real client gives up a transaction whose MAIL was refused, and
	// sends no message when no recipient was accepted — except what it
	// already pipelined.
	switch {
	case st.Tx == 0:
	case st.Kind == KindData && p.data:
		// The server waits for the message: it must come, whatever
		// the client thinks of the transaction.
	case p.mailFailed:
		res.Skipped = "MAIL refused"
		return nil
	case p.rcptOK == 0 && (st.Kind == KindBDAT || st.Kind == KindCmd && len(st.Cmds) == 1 && st.Cmds[0].Tag == TagData):
		res.Skipped = "no recipient accepted"
		return nil
	}
	switch st.Kind {
	case KindCmd:
		return p.commands(st, res)
	case KindData:
		if !p.data {
			res.Skipped = "no 354"
			return nil
		}
		return p.message(st.Msg, res)
	case KindBDAT:
		return p.bdat(st, res)
	case KindStartTLS:
		return p.startTLS(res)
	}
	return fmt.Errorf("unknown step kind %v", st.Kind)
}

// line returns a command's line as this server gets it.
func (p *player) line(c Command) string {
	if c.Size > 0 && c.Tag == TagMail && p.has("SIZE") {
		return c.Line + " SIZE=" + strconv.FormatInt(c.Size, 10)
	}
	return c.Line
}

func (p *player) has(ext string) bool {
	_, ok := p.tr.Ext[ext]
	return ok
}

// commands plays a KindCmd step.
func (p *player) commands(st Step, res *StepResult) error {
	p.data = false
	if st.Pipelined && len(st.Cmds) > 1 && p.has("PIPELINING") {
		// RFC 2920: every command in one write, then every reply.
		res.Pipelined = true
		var b strings.Builder
		lines := make([]string, len(st.Cmds))
		for i, c := range st.Cmds {
			lines[i] = p.line(c)
			b.WriteString(lines[i] + "\r\n")
		}
		if err := p.write([]byte(b.String())); err != nil {
			return err
		}
		res.Sent = append(res.Sent, lines...)
		for _, c := range st.Cmds {
			if err := p.reply(c, res); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range st.Cmds {
		l := p.line(c)
		if err := p.write([]byte(l + "\r\n")); err != nil {
			return err
		}
		res.Sent = append(res.Sent, l)
		if err := p.reply(c, res); err != nil {
			return err
		}
	}
	return nil
}

// reply reads the reply to c and learns from it.
func (p *player) reply(c Command, res *StepResult) error {
	if !p.greeted {
		if err := p.greet(); err != nil {
			return err
		}
	}
	r, err := p.read()
	if r.Code != 0 {
		res.Replies = append(res.Replies, r)
	}
	if err != nil {
		return err
	}
	p.data = r.Code == 354
	switch c.Tag {
	case TagMail:
		p.mailFailed = r.Class() != 2
		p.rcptOK = 0
	case TagRcpt, TagRcptOver, TagRcptNoMail:
		if r.Class() == 2 {
			p.rcptOK++
		}
	case TagEHLO:
		p.tr.Ext = nil
		if r.Code == 250 {
			p.tr.Ext = parseExt(r)
		}
	case TagHELO:
		p.tr.Ext = nil
	}
	return nil
}

// message sends a message after a 354 and reads the final reply.
func (p *player) message(m *Message, res *StepResult) error {
	p.data = false
	w := m.Wire()
	if err := p.write(w); err != nil {
		return err
	}
	res.Sent = append(res.Sent, fmt.Sprintf("<message %s, %d octets on the wire>", m.ID, len(w)))
	r, err := p.read()
	if r.Code != 0 {
		res.Replies = append(res.Replies, r)
	}
	return err
}

// bdat sends a message in BDAT chunks, or as DATA when CHUNKING was not
// offered.
func (p *player) bdat(st Step, res *StepResult) error {
	p.data = false
	if !p.has("CHUNKING") {
		res.AsData = true
		if err := p.commands(Step{Kind: KindCmd, Cmds: []Command{{Line: "DATA", Tag: TagData}}}, res); err != nil || !p.data {
			return err
		}
		return p.message(st.Msg, res)
	}
	sum := 0
	for _, n := range st.Chunks {
		if n < 0 {
			return fmt.Errorf("BDAT chunk of %d octets", n)
		}
		sum += n
	}
	if sum != len(st.Msg.Content) {
		return fmt.Errorf("BDAT chunks %v do not add up to the message's %d octets", st.Chunks, len(st.Msg.Content))
	}
	off := 0
	for i, n := range st.Chunks {
		cmd := "BDAT " + strconv.Itoa(n)
		if i == len(st.Chunks)-1 {
			cmd += " LAST"
		}
		buf := make([]byte, 0, len(cmd)+2+n)
		buf = append(append(append(buf, cmd...), "\r\n"...), st.Msg.Content[off:off+n]...)
		off += n
		if err := p.write(buf); err != nil {
			return err
		}
		res.Sent = append(res.Sent, fmt.Sprintf("%s <%d octets of %s>", cmd, n, st.Msg.ID))
		r, err := p.read()
		if r.Code != 0 {
			res.Replies = append(res.Replies, r)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// startTLS plays STARTTLS and, after 220, the handshake.
func (p *player) startTLS(res *StepResult) error {
	p.data = false
	switch {
	case p.tls == nil:
		res.Skipped = "no TLS configuration"
		return nil
	case !p.has("STARTTLS"):
		res.Skipped = "STARTTLS not offered"
		return nil
	}
	if err := p.write([]byte("STARTTLS\r\n")); err != nil {
		return err
	}
	res.Sent = append(res.Sent, "STARTTLS")
	r, err := p.read()
	if r.Code != 0 {
		res.Replies = append(res.Replies, r)
	}
	if err != nil || r.Code != 220 {
		return err
	}
	if p.r.Buffered() > 0 {
		return errors.New("server sent more after its 220 to STARTTLS")
	}
	tc := tls.Client(p.nc, p.tls)
	if err := tc.HandshakeContext(p.ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	res.Sent = append(res.Sent, "<TLS handshake>")
	p.nc = tc
	p.r.Reset(tc)
	p.tr.TLS = true
	p.tr.Ext = nil // RFC 3207 §4.2: forget what was learnt before TLS
	return nil
}

// write sends b; a connection the server closed or reset is errClosed.
func (p *player) write(b []byte) error {
	if _, err := p.nc.Write(b); err != nil {
		if closedErr(err) {
			return errClosed
		}
		return err
	}
	return nil
}

// closedErr reports whether err means the peer closed or reset the
// connection.
func closedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// read reads one reply. A reply cut short by the end of the connection is
// returned with what was read and errClosed.
func (p *player) read() (Reply, error) {
	var r Reply
	for {
		line, err := p.readLine()
		if err != nil {
			if closedErr(err) {
				return r, errClosed
			}
			return r, err
		}
		if len(line) < 3 || !isDigits(line[:3]) || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		code, _ := strconv.Atoi(line[:3])
		if code < 200 || code > 599 || (r.Code != 0 && code != r.Code) {
			return r, fmt.Errorf("malformed reply line %q (reply so far %q)", line, r.Raw)
		}
		if len(r.Raw) >= maxReplyLines {
			return r, fmt.Errorf("reply of more than %d lines", maxReplyLines)
		}
		r.Code = code
		r.Raw = append(r.Raw, line)
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		if len(r.Raw) == 1 {
			if m := enhancedRE.FindStringSubmatch(text); m != nil && m[1][0] == line[0] {
				r.Enhanced = m[1]
			}
		}
		if r.Enhanced != "" {
			if rest, ok := strings.CutPrefix(text, r.Enhanced); ok && (rest == "" || rest[0] == ' ') {
				text = strings.TrimPrefix(rest, " ")
			}
		}
		r.Text = append(r.Text, text)
		if len(line) == 3 || line[3] == ' ' {
			return r, nil
		}
	}
}

var enhancedRE = regexp.MustCompile(`^([245]\.\d{1,3}\.\d{1,3})(?: |$)`)

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// readLine reads a line ending in LF, without CR LF, at most maxReplyLine
// octets.
func (p *player) readLine() (string, error) {
	var b []byte
	for {
		frag, err := p.r.ReadSlice('\n')
		b = append(b, frag...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull && len(b) <= maxReplyLine {
			continue
		}
		if err == bufio.ErrBufferFull {
			return "", fmt.Errorf("reply line longer than %d octets", maxReplyLine)
		}
		if err == io.EOF && len(b) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	if len(b) > maxReplyLine+2 {
		return "", fmt.Errorf("reply line longer than %d octets", maxReplyLine)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// parseExt returns the EHLO keywords of a 250 reply (RFC 5321
// §4.1.1.1): every line after the first, keyword upper-cased.
func parseExt(r Reply) map[string]string {
	ext := map[string]string{}
	for _, l := range r.Text[1:] {
		kw, param, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw != "" {
			ext[strings.ToUpper(kw)] = param
		}
	}
	return ext
}
