// Package replay sends the client side of recorded SMTP sessions again,
// to a live server, one connection per recorded session, in capture
// order: to try a configuration of moat itself, or of a test MTA, on real
// recorded traffic (moat replay). It is an SMTP client; the recordings
// come from capture, which reassembles and reconstructs them.
//
// The client's bytes go out as they were captured — command lines,
// messages with their own line endings and dot-stuffing, BDAT chunks —
// but in step with the live server, never blindly: each command, or each
// pipelined batch (RFC 2920 §3.1, told by the recorded client having sent
// the next command before the recorded reply came), waits for the live
// server's replies before the next goes out. A message is sent only after
// the live server's 354 (RFC 5321 §4.1.1.4), an AUTH response only after
// its 334 (RFC 4954 §4), since either would otherwise be read as commands.
// Where the live server refuses what the recorded server accepted, or
// accepts what it refused, the replay goes on as the recorded client did
// and reports the divergence.
//
// Sessions that used TLS (STARTTLS accepted, or implicit TLS) are skipped:
// what they carried is not in the capture. So are sessions whose client
// side has bytes missing, which could not be sent as the client sent them.
package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"moat/capture"
	"moat/inspect/smtp"
)

// Options configure Run.
type Options struct {
	// To is the live server, "host:port". Run connects to it and to
	// nothing else.
	To string
	// Pace waits between the client's commands as long as the recorded
	// client did, each wait at most MaxPause (default 10s). Without it,
	// each command goes out as soon as the previous replies are in.
	Pace     bool
	MaxPause time.Duration
	// Timeout bounds connecting and every wait for a reply; default 60s.
	Timeout time.Duration
	// Session, when set, is called with each session once it has been
	// replayed or skipped, in capture order.
	Session func(*Session)
}

// Session is what became of one recorded session.
type Session struct {
	UID            string
	Start          time.Time
	Client, Server string // the recorded addresses
	// Skipped says why the session was not replayed: "tls" (STARTTLS or
	// implicit TLS), "client_gap" (client bytes missing from the
	// capture), "no_client_data", "spool_error" (the temporary file
	// failed); "" when it was replayed.
	Skipped string
	// Commands is how many command lines were sent.
	Commands int
	// Transactions counts the messages the recorded client sent (DATA or
	// a BDAT sequence), split by what the live server did with them.
	Transactions, Accepted, Refused int
	// Divergences are the replies whose outcome differs from the recorded
	// server's, and what replay did about them.
	Divergences []Divergence
	// Err ended the session early: the live server closed the connection
	// or stopped answering.
	Err error
}

// Divergence is one reply of the live server that went the other way
// from the recorded server's: a refusal (4xx, 5xx) where the recorded
// server went on (2xx, 3xx), or the reverse.
type Divergence struct {
	// Command is the recorded command: "greeting" for the server's
	// greeting, "message" for the reply after a message, AUTH with the
	// mechanism only, never its credentials.
	Command string
	// Recorded and Live are the two replies as Zeek's last_reply shows
	// them: the code, the enhanced code, the last line's text; "" for
	// none.
	Recorded, Live string
	// Note says what the replay did differently, if anything.
	Note string
}

// Stats sum up a replay.
type Stats struct {
	Sessions int            // replayed
	Skipped  map[string]int // not replayed, by reason (Session.Skipped)
	Failed   int            // replayed, but ended early by the connection
	// Transactions, Accepted and Refused add up the sessions'.
	Transactions, Accepted, Refused int
	// Divergences counts them all; Diverged the sessions with any.
	Divergences, Diverged int
	// Capture is what reading the capture found.
	Capture *capture.Stats
}

func (st *Stats) add(rs *Session) {
	if rs.Skipped != "" {
		st.Skipped[rs.Skipped]++
		return
	}
	st.Sessions++
	if rs.Err != nil {
		st.Failed++
	}
	st.Transactions += rs.Transactions
	st.Accepted += rs.Accepted
	st.Refused += rs.Refused
	st.Divergences += len(rs.Divergences)
	if len(rs.Divergences) > 0 {
		st.Diverged++
	}
}

// Defaults of Options.
const (
	defaultMaxPause = 10 * time.Second
	defaultTimeout  = 60 * time.Second
)

// Run reads src, reconstructs its SMTP sessions with cfg as capture's
// Analyzer does, and replays each to opts.To. Sessions are reassembled
// first and replayed one after another at the end of the input, their
// bytes kept meanwhile in one unlinked temporary file (in
// cfg.SpoolDir), so memory stays bounded. A session ended early by the
// network is counted and the replay goes on; a server that cannot be
// connected to at all ends the replay with an error.
func Run(ctx context.Context, cfg capture.Config, src capture.Source, opts Options) (*Stats, error) {
	if opts.To == "" {
		return nil, errors.New("replay: needs the address of a server to send to")
	}
	if opts.MaxPause <= 0 {
		opts.MaxPause = defaultMaxPause
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	cfg.Defaults()
	sp := &spool{dir: cfg.SpoolDir}
	defer sp.close()
	var mu sync.Mutex
	kept := make(map[*capture.Session]*recording)
	a, err := capture.New(cfg, capture.Deps{Keep: func(s *capture.Session, client, server *capture.Stream) {
		r := sp.record(s, client, server)
		mu.Lock()
		kept[s] = r
		mu.Unlock()
	}})
	if err != nil {
		return nil, err
	}
	st := &Stats{Skipped: make(map[string]int)}
	stats, err := a.Run(ctx, src, func(s *capture.Session) error {
		mu.Lock()
		r := kept[s]
		delete(kept, s)
		mu.Unlock()
		rs := &Session{UID: s.UID, Start: s.Start, Client: s.Client.String(), Server: s.Server.String()}
		switch {
		case r == nil:
			return nil // lost to a recovered panic; the Stats count it
		case r.skip != "":
			rs.Skipped = r.skip
		default:
			if err := replaySession(ctx, r, &opts, rs); err != nil {
				return err
			}
		}
		st.add(rs)
		if opts.Session != nil {
			opts.Session(rs)
		}
		return ctx.Err()
	})
	st.Capture = stats
	if err == nil {
		err = sp.err
	}
	return st, err
}

// recording is what Run keeps of a session: its two directions, or why
// it cannot be replayed.
type recording struct {
	sess           *capture.Session
	skip           string
	client, server recordedStream
}

// recordedStream is one direction's bytes in the spool, with the times
// they arrived at.
type recordedStream struct {
	sp        *spool
	off, size int64 // where in the spool file
	times     capture.Timeline
}

func (r *recordedStream) reader() *io.SectionReader {
	return io.NewSectionReader(r.sp.file, r.off, r.size)
}

// span is a range of stream bytes, [off, end).
type span struct{ off, end int64 }

func (r *recordedStream) section(s span) *io.SectionReader {
	return io.NewSectionReader(r.sp.file, r.off+s.off, s.end-s.off)
}

// spool holds the recordings of a replay in one temporary file, unlinked
// as soon as it is created.
type spool struct {
	dir  string
	mu   sync.Mutex
	file *os.File
	size int64
	err  error
}

// record copies what a session needs for replaying: all of the client's
// bytes, and the server's up to the first gap (replies after one cannot
// be paired with commands).
func (sp *spool) record(s *capture.Session, client, server *capture.Stream) *recording {
	r := &recording{sess: s}
	switch {
	case s.TLS:
		r.skip = "tls"
	case client.Size() == 0:
		r.skip = "no_client_data"
	case client.Complete() < client.Size():
		r.skip = "client_gap"
	}
	if r.skip != "" {
		return r
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.err == nil && sp.file == nil {
		f, err := os.CreateTemp(sp.dir, "moat-replay-*")
		if err != nil {
			sp.err = fmt.Errorf("replay spool: %w", err)
		} else {
			os.Remove(f.Name())
			sp.file = f
		}
	}
	if sp.err != nil {
		r.skip = "spool_error"
		return r
	}
	var ok bool
	if r.client, ok = sp.copy(client, client.Size()); !ok {
		r.skip = "spool_error"
		return r
	}
	if r.server, ok = sp.copy(server, server.Complete()); !ok {
		r.skip = "spool_error"
	}
	return r
}

// copy appends the first n bytes of s to the spool; sp.mu is held.
func (sp *spool) copy(s *capture.Stream, n int64) (recordedStream, bool) {
	rs := recordedStream{sp: sp, off: sp.size, size: n, times: s.Times()}
	if n == 0 {
		return rs, true
	}
	w := io.NewOffsetWriter(sp.file, sp.size)
	if _, err := io.Copy(w, io.NewSectionReader(s, 0, n)); err != nil {
		sp.err = fmt.Errorf("replay spool: %w", err)
		return rs, false
	}
	sp.size += n
	return rs, true
}

func (sp *spool) close() {
	if sp.file != nil {
		sp.file.Close()
	}
}

// replaySession connects to the live server and replays one recording.
// Only a failure to connect is returned; what goes wrong later ends the
// session and is in rs.Err.
func replaySession(ctx context.Context, r *recording, opts *Options, rs *Session) error {
	d := net.Dialer{Timeout: opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", opts.To)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer conn.Close()
	// Cancelling the replay closes the connection, which ends any wait.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := &replayConn{ctx: ctx, opts: opts, out: rs, rec: r, conn: conn,
		lr: bufio.NewReaderSize(conn, bufSize), lw: bufio.NewWriter(conn)}
	c.cn = &countingReader{r: r.client.reader()}
	c.cr = bufio.NewReaderSize(c.cn, bufSize)
	if r.server.size > 0 {
		c.sn = &countingReader{r: r.server.reader()}
		c.sr = bufio.NewReaderSize(c.sn, bufSize)
	}
	if err := c.replay(); err != nil {
		rs.Err = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// bufSize is the buffer of each reader: at least what capture.SkipPrelude
// needs to look through.
const bufSize = 16 << 10

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// replayConn is one recorded session being replayed.
type replayConn struct {
	ctx  context.Context
	opts *Options
	out  *Session

	// The recording: the client's bytes to send, the recorded server's
	// replies to compare with (sr is nil once none can be paired).
	rec     *recording
	cr, sr  *bufio.Reader
	cn, sn  *countingReader
	scratch []byte

	// The live server.
	conn       net.Conn
	lr         *bufio.Reader
	lw         *bufio.Writer
	pipelining bool      // its last EHLO reply offered PIPELINING
	lastSent   time.Time // wall clock of the last write, for Pace
	lastAt     time.Time // capture time of the client bytes last sent
	bdatDone   bool      // the BDAT message in progress has been counted
	werr       error     // the first error queueing bytes to send
}

// replayStep is one recorded command with everything that belongs to it.
type replayStep struct {
	cmd   smtp.Command // Verb "" when the line is not a valid command
	line  span         // the command line, with its line ending
	at    time.Time    // when the recorded client sent it
	rec   *smtp.Reply  // the recorded reply; nil when not captured
	recAt time.Time    // when the recorded reply came
	// body is a DATA command's message (terminator included), sent
	// after a 354, or a BDAT command's chunk, sent right after it.
	body    span
	hasBody bool
	final   *smtp.Reply // DATA: the recorded reply to the message
	auth    []authStep  // AUTH: the client's responses to challenges
}

// authStep is one client line of an AUTH exchange and its recorded reply.
type authStep struct {
	line span
	rec  *smtp.Reply
}

// cpos is the offset in the client stream of the next byte to read.
func (c *replayConn) cpos() int64 { return c.cn.n - int64(c.cr.Buffered()) }

func (c *replayConn) spos() int64 { return c.sn.n - int64(c.sr.Buffered()) }

// replay walks the recording to its end, or to where the live server
// ends it: the greeting, then the client's commands batch by batch.
func (c *replayConn) replay() error {
	if slices.Contains(c.rec.sess.Problems, "prelude") {
		// Where the reconstruction found SMTP to start, with its code.
		capture.SkipPrelude(c.cr, c.sr)
	}
	var greeting *smtp.Reply
	if c.rec.sess.Greeting != "" {
		greeting, c.lastAt = c.recReply()
	}
	live, err := c.readLive()
	if err != nil {
		return err
	}
	c.lastSent = time.Now()
	c.compare("greeting", greeting, live, "")
	var batch []*replayStep
	for {
		st, err := c.readStep()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		batch = append(batch, st)
		if c.batchGoesOn(st) {
			continue
		}
		done, err := c.send(batch)
		if err != nil || done {
			return err
		}
		batch = batch[:0]
	}
	if len(batch) > 0 {
		_, err := c.send(batch)
		return err
	}
	return nil
}

// recReply reads the next recorded reply and when it came; nil once
// replies can no longer be paired with commands.
func (c *replayConn) recReply() (*smtp.Reply, time.Time) {
	if c.sr == nil {
		return nil, time.Time{}
	}
	at := c.rec.server.times.At(c.spos())
	r, err := smtp.ReadReply(c.sr)
	if err != nil {
		c.sr = nil
		return nil, time.Time{}
	}
	return &r, at
}

// readStep reads the client's next command and what the client sent
// with it (message, chunk, AUTH responses), pairing the recorded replies
// as the reconstruction does.
func (c *replayConn) readStep() (*replayStep, error) {
	start := c.cpos()
	line, _, err := smtp.ReadLine(c.cr, &c.scratch, capture.MaxCommandLine)
	st := &replayStep{at: c.rec.client.times.At(start)}
	switch {
	case err == io.EOF, err == io.ErrUnexpectedEOF:
		// The end, or a last line the client never finished: the
		// recorded client closed there, and so does the replay.
		return nil, io.EOF
	case errors.Is(err, smtp.ErrLineTooLong):
		// Sent as recorded; the server answers it as it will.
		st.line = span{start, c.cpos()}
		st.rec, st.recAt = c.recReply()
		return st, nil
	case err != nil:
		return nil, err
	}
	if cmd, err := smtp.ParseCommand(line); err == nil {
		st.cmd = cmd
	}
	st.line = span{start, c.cpos()}
	st.rec, st.recAt = c.recReply()
	switch st.cmd.Verb {
	case smtp.VerbDATA:
		// A client may send its message although the reply paired with
		// DATA refused it (the pairing is off, and the client saw the
		// real reply): the reconstruction's test tells, as it does there.
		if st.rec == nil || st.rec.Code == 354 || capture.HeaderNext(c.cr) {
			off := c.cpos()
			// The DataReader finds the end exactly where the proxy and
			// the reconstruction find it (CR LF "." CR LF); the bytes
			// sent are the raw ones, bare line endings and all.
			io.Copy(io.Discard, smtp.NewDataReader(c.cr))
			st.body, st.hasBody = span{off, c.cpos()}, true
			st.final, _ = c.recReply()
		}
	case smtp.VerbBDAT:
		// RFC 3030 §2: the chunk follows the command line whatever the
		// server will say.
		if size, _, err := smtp.ParseBDATArg(st.cmd.Arg); err == nil {
			off := c.cpos()
			io.CopyN(io.Discard, c.cr, size)
			st.body, st.hasBody = span{off, c.cpos()}, true
		}
	case smtp.VerbAUTH:
		c.readAuth(st)
	}
	return st, nil
}

// readAuth reads the client's responses of an AUTH exchange: a line for
// each 334 challenge, until the recorded server's final reply.
func (c *replayConn) readAuth(st *replayStep) {
	r := st.rec
	for i := 0; i < capture.MaxAuthLines; i++ {
		if r != nil && r.Code != 334 {
			return
		}
		// Without the server's side, the reconstruction's own guess
		// tells a response from the next command.
		if r == nil && !capture.AuthResponseNext(c.cr) {
			return
		}
		start := c.cpos()
		line, _, err := smtp.ReadLine(c.cr, &c.scratch, capture.MaxCommandLine)
		if err != nil {
			return
		}
		cancel := string(line) == "*"
		a := authStep{line: span{start, c.cpos()}}
		a.rec, _ = c.recReply()
		st.auth = append(st.auth, a)
		r = a.rec
		if cancel {
			return
		}
	}
}

// batchGoesOn reports whether the recorded client sent the next command
// before the reply to st came: a pipelined batch (RFC 2920 §3.1), sent
// as one when the live server offers PIPELINING too. Only MAIL, RCPT and
// RSET may be followed in a batch; the commands that end one (DATA,
// EHLO, QUIT, NOOP, ...) and those that need their reply first (AUTH,
// STARTTLS, BDAT) never are.
func (c *replayConn) batchGoesOn(st *replayStep) bool {
	if !c.pipelining || st.rec == nil || st.recAt.IsZero() {
		return false
	}
	switch st.cmd.Verb {
	case smtp.VerbMAIL, smtp.VerbRCPT, smtp.VerbRSET:
	default:
		return false
	}
	if b, _ := c.cr.Peek(1); len(b) == 0 {
		return false
	}
	return c.rec.client.times.At(c.cpos()).Before(st.recAt)
}

// send sends a batch and handles the live server's replies in order. It
// reports done when the session cannot or need not go on.
func (c *replayConn) send(batch []*replayStep) (done bool, err error) {
	if err := c.pace(batch[0].at); err != nil {
		return true, err
	}
	for _, st := range batch {
		c.write(st.line)
		c.out.Commands++
		if st.cmd.Verb == smtp.VerbBDAT && st.hasBody {
			c.write(st.body)
		}
	}
	if err := c.flush(); err != nil {
		return true, err
	}
	for _, st := range batch {
		live, err := c.readLive()
		if err != nil {
			return true, err
		}
		if done, err := c.handle(st, live); done || err != nil {
			return done, err
		}
	}
	return false, nil
}

// handle compares the live reply to st with the recorded one and does
// what the command needs after its reply.
func (c *replayConn) handle(st *replayStep, live *smtp.Reply) (done bool, err error) {
	name := commandName(st)
	switch st.cmd.Verb {
	case smtp.VerbEHLO, smtp.VerbHELO:
		c.compare(name, st.rec, live, "")
		c.pipelining = st.cmd.Verb == smtp.VerbEHLO && smtp.ParseEHLO(*live).Has("PIPELINING")
		c.bdatDone = false
	case smtp.VerbMAIL, smtp.VerbRSET:
		c.compare(name, st.rec, live, "")
		c.bdatDone = false
	case smtp.VerbDATA:
		return c.handleData(st, live)
	case smtp.VerbBDAT:
		c.compare(name, st.rec, live, "")
		_, last, _ := smtp.ParseBDATArg(st.cmd.Arg)
		if !c.bdatDone && (live.Class() != 2 || last) {
			c.transaction(live.Class() == 2)
			c.bdatDone = true
		}
		if last {
			c.bdatDone = false
		}
	case smtp.VerbAUTH:
		return c.handleAuth(st, live)
	case smtp.VerbSTARTTLS:
		if live.Code == 220 {
			// The recorded server refused it (a session that went to TLS
			// is not replayed); this one wants a handshake the recorded
			// client never made.
			c.diverge(name, st.rec, live, "the live server started TLS: session ended")
			return true, nil
		}
		c.compare(name, st.rec, live, "")
	case smtp.VerbQUIT:
		c.compare(name, st.rec, live, "")
		return true, nil
	default:
		c.compare(name, st.rec, live, "")
	}
	return false, nil
}

// handleData sends the message after a 354 (RFC 5321 §4.1.1.4), and only
// then: a message sent to a server that refused DATA would be read as
// commands.
func (c *replayConn) handleData(st *replayStep, live *smtp.Reply) (bool, error) {
	switch {
	case live.Code == 354 && st.hasBody:
		c.compare("DATA", st.rec, live, "")
		c.write(st.body)
		if err := c.flush(); err != nil {
			return true, err
		}
		final, err := c.readLive()
		if err != nil {
			return true, err
		}
		c.compare("message", st.final, final, "")
		c.transaction(final.Class() == 2)
		c.unasked()
	case live.Code == 354:
		// The recorded server refused DATA and its client sent no
		// message: there is nothing to send, and the live server reads
		// everything now as the message.
		c.diverge("DATA", st.rec, live, "no recorded message to send: session ended")
		return true, nil
	case st.hasBody:
		c.compare("DATA", st.rec, live, "message not sent")
		c.transaction(false)
	default:
		c.compare("DATA", st.rec, live, "")
	}
	return false, nil
}

// unasked reads replies the live server sent that no command asked for:
// after a message, a server that saw its end earlier than the strict
// parser (SMTP smuggling) answers the rest as commands.
func (c *replayConn) unasked() {
	for c.lr.Buffered() > 0 {
		r, err := smtp.ReadReply(c.lr)
		if err != nil {
			return
		}
		c.diverge("message", nil, &r, "a reply nobody asked for: the live server saw the message end earlier")
	}
}

// handleAuth goes through the AUTH exchange (RFC 4954 §4) as far as the
// live server asks for it: a recorded response goes out only for a 334.
func (c *replayConn) handleAuth(st *replayStep, live *smtp.Reply) (bool, error) {
	name := commandName(st)
	r, rec := live, st.rec
	for i, a := range st.auth {
		if r.Code != 334 {
			c.compare(name, rec, r, fmt.Sprintf("%d recorded AUTH responses not sent", len(st.auth)-i))
			return false, nil
		}
		c.compare(name, rec, r, "")
		c.write(a.line)
		if err := c.flush(); err != nil {
			return true, err
		}
		var err error
		if r, err = c.readLive(); err != nil {
			return true, err
		}
		rec = a.rec
	}
	if r.Code == 334 {
		// The live server wants more than the recorded client gave:
		// cancel the exchange (RFC 4954 §4: "*").
		c.diverge(name, rec, r, "AUTH cancelled: no recorded response left")
		c.lw.WriteString("*\r\n")
		if err := c.flush(); err != nil {
			return true, err
		}
		var err error
		if r, err = c.readLive(); err != nil {
			return true, err
		}
		return false, nil
	}
	c.compare(name, rec, r, "")
	return false, nil
}

// transaction counts a message the recorded client sent.
func (c *replayConn) transaction(accepted bool) {
	c.out.Transactions++
	if accepted {
		c.out.Accepted++
	} else {
		c.out.Refused++
	}
}

// compare records a divergence when the live reply went the other way
// from the recorded one. Without a recorded reply there is nothing to
// compare with.
func (c *replayConn) compare(command string, rec, live *smtp.Reply, note string) {
	if rec == nil || capture.Positive(rec) == capture.Positive(live) {
		return
	}
	c.diverge(command, rec, live, note)
}

// diverge records a divergence; rec may be nil.
func (c *replayConn) diverge(command string, rec, live *smtp.Reply, note string) {
	d := Divergence{Command: command, Live: live.LastLine(), Note: note}
	if rec != nil {
		d.Recorded = rec.LastLine()
	}
	c.out.Divergences = append(c.out.Divergences, d)
}

// commandName is a command as a divergence names it: AUTH keeps only its
// mechanism, an invalid line is quoted and cut short.
func commandName(st *replayStep) string {
	switch st.cmd.Verb {
	case "":
		return "invalid command"
	case smtp.VerbAUTH:
		mech, _, _ := strings.Cut(st.cmd.Arg, " ")
		return "AUTH " + mech
	}
	// ParseCommand lets no control character through; a long argument
	// is cut short.
	s := st.cmd.String()
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// pace waits, with Pace, as long as the recorded client waited before
// sending at (at most MaxPause), less the time already spent since the
// last write.
func (c *replayConn) pace(at time.Time) error {
	prev := c.lastAt
	if !c.opts.Pace || prev.IsZero() || at.IsZero() {
		return nil
	}
	wait := min(at.Sub(prev), c.opts.MaxPause) - time.Since(c.lastSent)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.ctx.Done():
		return c.ctx.Err()
	}
}

// write queues recorded client bytes for the live server; flush reports
// what went wrong.
func (c *replayConn) write(s span) {
	if _, err := io.Copy(c.lw, c.rec.client.section(s)); err != nil && c.werr == nil {
		c.werr = err
	}
	if s.end > s.off {
		c.lastAt = c.rec.client.times.At(s.end - 1)
	}
}

func (c *replayConn) flush() error {
	c.conn.SetWriteDeadline(time.Now().Add(c.opts.Timeout))
	err := c.lw.Flush()
	if c.werr != nil {
		err = c.werr
	}
	if err != nil {
		return fmt.Errorf("sending to the server: %w", err)
	}
	c.lastSent = time.Now()
	return nil
}

// readLive reads the live server's next reply.
func (c *replayConn) readLive() (*smtp.Reply, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.opts.Timeout))
	r, err := smtp.ReadReply(c.lr)
	if err != nil {
		if err == io.EOF {
			err = errors.New("the server closed the connection")
		}
		return nil, fmt.Errorf("reading the server's reply: %w", err)
	}
	return &r, nil
}
