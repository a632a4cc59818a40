package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

// state is where a session stands in the RFC 5321 command sequence
// (§4.1.4: HELO/EHLO, then MAIL, RCPT..., DATA).
type state uint8

const (
	stateGreeted state = iota // greeting sent, waiting for HELO/EHLO
	stateHelo                 // greeted by the client, no transaction
	stateMail                 // MAIL accepted, no recipient yet
	stateRcpt                 // at least one recipient accepted
	stateRefused              // connect stage refused the session: only QUIT
)

var stateNames = [...]string{"greeted", "helo", "mail", "rcpt", "refused"}

func (s state) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(?)"
}

// conn is one client session. It is served by one goroutine; only the
// idle flag is shared, with Shutdown.
type conn struct {
	srv    *Server
	cfg    *Config         // the configuration the session started with
	engine *inspect.Engine // likewise the engine
	nc     net.Conn        // the client connection; a *tls.Conn after STARTTLS
	// raw is the TCP connection under nc. Unlike nc it never changes, so
	// other goroutines (Shutdown) may use it while a TLS handshake
	// replaces nc.
	raw net.Conn
	rd  *deadlineReader
	r   *bufio.Reader
	w   *bufio.Writer
	log *slog.Logger
	ctx context.Context

	mu   sync.Mutex // guards idle against Shutdown
	idle bool       // blocked waiting for a new command

	// Session: lives as long as the connection.
	sess        inspect.Session
	state       state
	outcome     sessionOutcome
	implicitTLS bool         // accepted on an implicit-TLS listener
	admitted    bool         // counted against its client IP's limit
	deadline    time.Time    // the whole session ends here (slowloris bound)
	offer       upstreamCaps // what the EHLO reply offered this client
	errors      int          // bad commands so far
	commands    int          // commands so far
	scratch     []byte       // ReadLine's buffer for lines that span reads
	up          *upstream    // nil until a transaction passes the mail stage
	upPooled    bool         // up came from the pool and has not proved itself yet

	// Transaction: cleared by reset.
	tx        inspect.Transaction
	txStart   time.Time
	rcptTried int
	rcptLog   []rcptResult
	// pending are RCPTs of a pipelined batch written to the upstream
	// whose replies are not read yet (RFC 2920), in command order.
	pending []pendingRcpt
	spool   spool
	bdat    *bdatState      // a BDAT transfer in progress
	verdict inspect.Verdict // the data stage's verdict, for the log
}

// rcptResult is one RCPT and the reply it got, for the transaction log.
type rcptResult struct {
	Rcpt  string `json:"rcpt"`
	Reply string `json:"reply"`
}

func newConn(s *Server, cfg *Config, nc net.Conn, implicitTLS bool) *conn {
	c := &conn{srv: s, cfg: cfg, engine: s.engine.Load(), nc: nc, raw: nc, implicitTLS: implicitTLS}
	c.rd = &deadlineReader{c: c, timeout: cfg.Timeouts.Command}
	// 16 KB: a message arrives in a few reads, not hundreds; an idle
	// session costs that much, 16 MB per thousand.
	c.r = bufio.NewReaderSize(c.rd, 16<<10)
	c.w = bufio.NewWriterSize(nc, 4096)
	c.spool = spool{memLimit: int64(cfg.Data.SpoolMemory), dir: cfg.Data.SpoolDir}
	c.sess.ID = newID()
	c.sess.Start = time.Now()
	c.deadline = c.sess.Start.Add(cfg.Timeouts.Session)
	c.sess.Client = addrPort(nc.RemoteAddr())
	c.sess.Server = addrPort(nc.LocalAddr())
	c.log = s.log.With("session", c.sess.ID)
	return c
}

// serve runs the session to its end.
func (c *conn) serve() {
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx = ctx
	c.srv.metrics.connOpened()
	defer func() {
		if v := recover(); v != nil {
			c.recovered(v)
		}
		if c.state >= stateMail && c.state != stateRefused {
			c.finishTx("aborted", smtp.Reply{})
		}
		if c.up != nil && !c.srv.pool.put(c.up, c.srv.cfg.Load()) {
			c.up.quit()
		}
		cancel()
		c.engine.End(&c.sess)
		c.spool.reset()
		c.w.Flush() // a last 421 or 221 may still be queued
		c.nc.Close()
		if c.admitted {
			c.srv.releaseIP(c.sess.Client.Addr())
		}
		c.srv.metrics.sessionEnded(c.outcome)
		c.srv.metrics.connClosed()
		c.srv.forget(c)
	}()

	if !c.setup() || !c.greet() {
		return
	}
	for {
		// RFC 2920 §3.1: replies to a pipelined batch may be held back,
		// but must be flushed before the server blocks waiting for more
		// input — which it does when no whole command is buffered, even
		// if part of one is.
		if len(c.pending) > 0 && !c.lineBuffered() {
			c.resolvePending()
		}
		if !c.lineBuffered() {
			if err := c.w.Flush(); err != nil {
				return
			}
		}
		if c.srv.closing.Load() {
			c.reply(smtp.Replyf(421, "4.3.2", "%s Service shutting down, try again later", c.cfg.Hostname))
			return
		}
		c.setIdle(true)
		line, bareLF, err := smtp.ReadLine(c.r, &c.scratch, c.cfg.Limits.MaxLineLength)
		c.setIdle(false)
		if err != nil {
			if errors.Is(err, smtp.ErrLineTooLong) {
				// RFC 5321 §4.5.3.1.4, and §4.2.4's 500 for a line too long;
				// RFC 3463's X.5.2 is a syntax error (X.5.6 belongs to
				// AUTH, RFC 4954 §6).
				if !c.refuse(smtp.Replyf(500, "5.5.2", "Line too long")) {
					return
				}
				continue
			}
			c.readFailed(err)
			return
		}
		if bareLF {
			c.sess.Anomalies.BareLFCommand = true
		}
		if c.commands++; c.commands > c.cfg.Limits.MaxCommands {
			c.reply(smtp.Replyf(421, "4.7.0", "%s Too many commands, closing connection", c.cfg.Hostname))
			c.log.Info("session closed", "reason", "too_many_commands")
			return
		}
		cmd, err := smtp.ParseCommand(line)
		if err != nil {
			c.sess.Anomalies.InvalidCommands++
			if !c.refuse(smtp.Replyf(500, "5.5.2", "Syntax error, command unrecognized")) {
				return
			}
			continue
		}
		if !c.dispatch(cmd) {
			return
		}
	}
}

// recovered ends a session that panicked. One session's bug must not
// take down every other session: the panic is logged with its stack and
// counted, and the client gets 421 4.3.0 (RFC 5321 §3.8: the server
// closes the channel) — a 4xx, so nothing is acknowledged or lost.
func (c *conn) recovered(v any) {
	panicsRecovered.Add(1)
	c.srv.metrics.panics.Inc()
	c.log.Error("session panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	// Not through reply: the session's state is suspect, and reply may
	// talk to the upstream (pipelined RCPTs). Neither is the upstream
	// connection pooled or even told QUIT — it may be inside a message,
	// where QUIT would be data.
	c.pending = nil
	if c.up != nil {
		c.up.broken = true
		c.up.nc.Close()
	}
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	smtp.Replyf(421, "4.3.0", "%s Internal error, closing connection", c.cfg.Hostname).WriteTo(c.w)
}

// setup establishes who the client is before anything is said: the
// PROXY header of a trusted load balancer, the per-address connection
// limit, and the implicit TLS handshake — in that order, so that a client
// over its limit never costs moat a handshake.
func (c *conn) setup() bool {
	if c.trustedProxy() {
		// The balancer sends its header at once, in one segment; a peer
		// that does not is not worth waiting for as long as a client.
		c.rd.timeout = c.cfg.Timeouts.ProxyHeader
		h, err := ReadProxyHeader(c.r)
		c.rd.timeout = c.cfg.Timeouts.Command
		if err != nil {
			// A trusted balancer that sends no valid header is
			// misconfigured; guessing would attribute its traffic to it.
			c.log.Warn("PROXY header missing or invalid", "peer", c.sess.Client.String(), "err", err)
			return false
		}
		if !h.Local {
			c.sess.Client, c.sess.Server = h.Source, h.Dest
		}
	}
	if !c.perIPExempt() {
		if !c.srv.admitIP(c.sess.Client.Addr(), c.cfg.Limits.MaxConnectionsPerIP) {
			c.srv.metrics.connRefused("max_connections_per_ip")
			c.log.Info("session refused", "reason", "max_connections_per_ip", "client_ip", c.sess.Client.Addr().String())
			if !c.implicitTLS {
				// On an implicit-TLS listener there is no plaintext to
				// say it in (RFC 8314 §3.3): the connection just closes.
				c.reply(smtp.Replyf(421, "4.7.0", "%s Too many connections from your address, try again later", c.cfg.Hostname))
			}
			return false
		}
		c.admitted = true
	}
	return !c.implicitTLS || c.handshake()
}

// trustedProxy reports whether the peer is a load balancer that must send
// a PROXY header.
func (c *conn) trustedProxy() bool {
	return containsAddr(c.cfg.ListenProxyProtocol, c.sess.Client.Addr())
}

// perIPExempt reports whether the client is exempt from the per-address
// connection limit (limits.per_ip_exempt).
func (c *conn) perIPExempt() bool {
	return containsAddr(c.cfg.Limits.PerIPExempt, c.sess.Client.Addr())
}

func containsAddr(nets []Prefix, a netip.Addr) bool {
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// handshake runs the server side of a TLS handshake on the connection,
// for STARTTLS or an implicit-TLS listener.
func (c *conn) handshake() bool {
	// Bytes already buffered (after a PROXY header on an implicit-TLS
	// listener) are the start of the ClientHello.
	pending, _ := c.r.Peek(c.r.Buffered())
	tc := tls.Server(&prefixConn{Conn: c.nc, pending: append([]byte(nil), pending...)}, c.srv.serverTLSConfig())
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeouts.Command)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		c.log.Info("TLS handshake failed", "err", err, "client_ip", c.sess.Client.Addr().String())
		c.srv.metrics.tlsHandshakeFailed(c.implicitTLS)
		return false
	}
	st := tc.ConnectionState()
	c.sess.TLS = &inspect.TLSInfo{Version: tlsVersionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite)}
	c.srv.metrics.tlsSession(c.sess.TLS.Version)
	c.nc = tc
	c.r.Reset(c.rd)
	c.w.Reset(tc)
	return true
}

// prefixConn is a connection with some of its input already read: the TLS
// layer reads pending first, then the connection.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pending) > 0 {
		n := copy(b, p.pending)
		p.pending = p.pending[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// greet runs the connect stage and sends the greeting (RFC 5321 §4.3.1):
// 220 to proceed, 554 to refuse the session (then only QUIT is honoured,
// §3.1), 421 to ask the client to come back later. With a greeting delay,
// a client that talks first is recorded as an early talker.
func (c *conn) greet() bool {
	// The DNS lookups about the client start now and run during the
	// greeting delay; the connect stage itself is judged after it, when
	// early talking is known.
	c.engine.Begin(&c.sess)
	if d := c.cfg.Greeting.Delay; d > 0 {
		c.rd.timeout = d
		_, err := c.r.Peek(1)
		c.rd.timeout = c.cfg.Timeouts.Command
		var ne net.Error
		switch {
		case err == nil:
			c.sess.EarlyTalker = true
			c.log.Info("early talker", "client_ip", c.sess.Client.Addr().String(), "bytes", c.r.Buffered())
		case errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, errShuttingDown):
			// Silence: the polite behaviour.
		default:
			return false
		}
	}
	v := c.engine.Connect(c.ctx, &c.sess)
	c.sess.Keep(inspect.StageConnect, v)
	if v.Action == inspect.Accept {
		c.judged(inspect.StageConnect, v) // monitor mode, shadow rules
	}
	if c.sess.EarlyTalker && c.cfg.Greeting.EarlyTalker == "reject" && v.Action < inspect.Reject {
		v = inspect.Verdict{Action: inspect.Reject, Reason: "early_talker",
			Reply: smtp.Replyf(554, "5.5.1", "Protocol error: talking before the greeting")}
	}
	c.noteVerdict(inspect.StageConnect, v)
	switch v.Action {
	case inspect.Tempfail:
		c.logDecision(inspect.StageConnect, v)
		c.reply(v.WireReply(inspect.StageConnect))
		return false
	case inspect.Reject:
		c.logDecision(inspect.StageConnect, v)
		c.reply(v.WireReply(inspect.StageConnect))
		c.state = stateRefused
	default:
		c.reply(smtp.Replyf(220, "", "%s ESMTP moat", c.cfg.Hostname))
	}
	return c.w.Flush() == nil
}

// dispatch runs one command. It returns false when the session is over.
func (c *conn) dispatch(cmd smtp.Command) bool {
	if c.state == stateRefused && cmd.Verb != "QUIT" {
		return c.refuse(smtp.Replyf(503, "5.5.1", "Bad sequence of commands"))
	}
	if len(c.pending) > 0 && cmd.Verb != "RCPT" {
		// A pipelined batch of RCPTs ends here (typically at DATA).
		c.resolvePending()
	}
	switch cmd.Verb {
	case "HELO", "EHLO":
		return c.cmdHelo(cmd)
	case "MAIL":
		return c.cmdMail(cmd)
	case "RCPT":
		return c.cmdRcpt(cmd)
	case "DATA":
		return c.cmdData(cmd)
	case "RSET":
		return c.cmdRset(cmd)
	case "NOOP":
		// RFC 5321 §4.1.1.9: any argument is ignored.
		c.reply(smtp.Replyf(250, "2.0.0", "Ok"))
	case "HELP":
		c.reply(smtp.Replyf(214, "2.0.0", "See RFC 5321"))
	case "VRFY", "EXPN":
		// RFC 5321 §3.5.3: 252 when we will not verify but will accept
		// mail; recipient validation is the upstream's, and asking it
		// would let anyone harvest addresses through moat.
		c.reply(smtp.Replyf(252, "2.0.0", "Cannot verify user, but will accept message and attempt delivery"))
	case "QUIT":
		if c.state >= stateMail && c.state != stateRefused {
			c.finishTx("aborted", smtp.Reply{})
			c.reset()
		}
		c.reply(smtp.Replyf(221, "2.0.0", "Bye"))
		return false
	case "STARTTLS":
		return c.cmdStartTLS(cmd)
	case "BDAT":
		return c.cmdBdat(cmd)
	case "AUTH", "ETRN", "TURN", "ATRN", "XCLIENT", "XFORWARD", "SEND", "SOML", "SAML":
		// Known commands moat does not offer (not in the EHLO reply).
		return c.refuse(smtp.Replyf(502, "5.5.1", "Command not implemented"))
	default:
		return c.refuse(smtp.Replyf(500, "5.5.2", "Syntax error, command unrecognized"))
	}
	return true
}

// reset clears the transaction (RFC 5321 §4.1.1.5), keeping the session.
func (c *conn) reset() {
	c.tx = inspect.Transaction{}
	c.rcptTried = 0
	c.rcptLog = c.rcptLog[:0]
	c.spool.reset()
	c.bdat = nil
	c.verdict = inspect.Verdict{}
	if c.state > stateHelo && c.state != stateRefused {
		c.state = stateHelo
	}
}

// reply queues a reply; it reaches the client at the next flush.
func (c *conn) reply(r smtp.Reply) {
	if len(c.pending) > 0 {
		// Replies go out in command order: the batch's first.
		c.resolvePending()
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.cfg.Timeouts.Command))
	r.WriteTo(c.w)
}

// refuse queues an error reply and counts it against the session's error
// budget; past the budget the session ends with 421 (RFC 5321 §4.2.2's
// 421 "closing transmission channel"). It returns false when the session
// is over.
func (c *conn) refuse(r smtp.Reply) bool {
	c.errors++
	c.reply(r)
	if c.errors >= c.cfg.Limits.MaxErrors {
		c.reply(smtp.Replyf(421, "4.7.0", "%s Too many errors, closing connection", c.cfg.Hostname))
		c.log.Info("session closed", "reason", "too_many_errors", "errors", c.errors)
		return false
	}
	return true
}

// readFailed ends the session after a read error: a timeout or a
// shutdown gets a 421, a vanished client nothing.
func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShuttingDown):
		c.reply(smtp.Replyf(421, "4.3.2", "%s Service shutting down, try again later", c.cfg.Hostname))
	case errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(c.deadline):
		c.reply(smtp.Replyf(421, "4.4.2", "%s Session time limit exceeded, closing connection", c.cfg.Hostname))
		c.log.Info("session closed", "reason", "session_timeout", "state", c.state.String())
	case errors.As(err, &ne) && ne.Timeout():
		c.reply(smtp.Replyf(421, "4.4.2", "%s Timeout exceeded, closing connection", c.cfg.Hostname))
		c.log.Info("session closed", "reason", "timeout", "state", c.state.String())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return
	default:
		c.log.Debug("session read failed", "err", err)
		return
	}
	c.w.Flush()
}

func (c *conn) setIdle(idle bool) {
	c.mu.Lock()
	c.idle = idle
	c.mu.Unlock()
}

// interruptIdle wakes a session blocked waiting for a command so that it
// notices the shutdown; a session inside a command is left to finish it.
func (c *conn) interruptIdle() {
	c.mu.Lock()
	if c.idle {
		// A TLS connection's deadlines are its TCP connection's.
		c.raw.SetReadDeadline(time.Now())
	}
	c.mu.Unlock()
}

// closeNow closes the client's connection from another goroutine: the
// forced end of a shutdown. Closing the TCP connection under any TLS
// layer ends whatever the session is doing with it.
func (c *conn) closeNow() { c.raw.Close() }

// panicsRecovered counts sessions ended by a recovered panic; tests fail
// when it is not zero.
var panicsRecovered atomic.Int64

var errShuttingDown = errors.New("server shutting down")

// deadlineReader reads from the client with a fresh deadline per read:
// the command timeout between commands, the data timeout inside DATA
// (RFC 5321 §4.5.3.2).
type deadlineReader struct {
	c       *conn
	timeout time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	c := d.c
	c.mu.Lock()
	if c.idle && c.srv.closing.Load() {
		c.mu.Unlock()
		return 0, errShuttingDown
	}
	// The per-read timeout, but never past the session's end: a client
	// trickling one byte a minute still meets the session deadline.
	dl := time.Now().Add(d.timeout)
	if c.deadline.Before(dl) {
		dl = c.deadline
	}
	c.nc.SetReadDeadline(dl)
	c.mu.Unlock()
	n, err := c.nc.Read(p)
	if err != nil && c.srv.closing.Load() {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = errShuttingDown
		}
	}
	return n, err
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// newID returns a random session ID, short enough for log lines and the
// Received header.
func newID() string {
	var b [10]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return idEncoding.EncodeToString(b[:])
}
