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
	"moat/inspect/sequencer"
	"moat/inspect/smtp"
)

// conn is one client session. It is served by one goroutine; only the
// idle flag is shared, with Shutdown.
type conn struct {
	srv *Server
	cfg *Config  // the configuration the session started with
	nc  net.Conn // the client connection; a *tls.Conn after STARTTLS
	// raw is the TCP connection under nc. Unlike nc it never changes, so
	// other goroutines (Shutdown) may use it while a TLS handshake
	// replaces nc.
	raw    net.Conn
	rd     *deadlineReader
	r      *bufio.Reader
	w      *bufio.Writer
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc // ends ctx, and the engine's lookups with it

	mu   sync.Mutex // guards idle against Shutdown
	idle bool       // blocked waiting for a new command

	// Session: lives as long as the connection. The SMTP state, the
	// transaction and every policy decision are the sequencer's.
	q           *sequencer.Sequencer
	outcome     sessionOutcome
	implicitTLS bool      // accepted on an implicit-TLS listener
	admitted    bool      // counted against its client IP's limit
	deadline    time.Time // the whole session ends here (slowloris bound)
	scratch     []byte    // ReadLine's buffer for lines that span reads
	up          *upstream // nil until a transaction passes the mail stage
	upPooled    bool      // up came from the pool and has not proved itself yet

	// Transaction: the I/O side of the sequencer's transaction.
	txStart time.Time
	spool   spool
	bdat    *bdatState // a BDAT transfer in progress
}

func newConn(s *Server, cfg *Config, nc net.Conn, l Listener) *conn {
	c := &conn{srv: s, cfg: cfg, nc: nc, raw: nc, implicitTLS: l.ImplicitTLS}
	c.rd = &deadlineReader{c: c, timeout: cfg.Timeouts.Command}
	// 16 KB: a message arrives in a few reads, not hundreds; an idle
	// session costs that much, 16 MB per thousand.
	c.r = bufio.NewReaderSize(c.rd, 16<<10)
	c.w = bufio.NewWriterSize(nc, 4096)
	c.spool = spool{memLimit: int64(cfg.Data.SpoolMemory), dir: cfg.Data.SpoolDir}
	sess := inspect.Session{ID: newID(), Start: time.Now(),
		Client: addrPort(nc.RemoteAddr()), Server: addrPort(nc.LocalAddr())}
	c.deadline = sess.Start.Add(cfg.Timeouts.Session)
	c.log = s.log.With("session", sess.ID)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	// The session keeps the engine it started with across reloads, as it
	// keeps its configuration.
	qc := cfg.SequencerConfig()
	qc.Submission = l.Submission
	c.q = sequencer.New(c.ctx, qc, s.engine.Load(), sess)
	if caps := s.caps.Load(); caps != nil {
		c.q.SetUpstream(sequencer.Upstream{SMTPUTF8: caps.smtputf8, DSN: caps.dsn})
	}
	return c
}

// serve runs the session to its end.
func (c *conn) serve() {
	c.srv.metrics.connOpened()
	defer func() {
		if v := recover(); v != nil {
			c.recovered(v)
		}
		if s := c.q.End(); s.Ended != nil {
			c.finishTx(s.Ended)
		}
		if c.up != nil && !c.srv.pool.put(c.up, c.srv.cfg.Load()) {
			c.up.quit()
		}
		c.cancel()
		c.spool.reset()
		c.w.Flush() // a last 421 or 221 may still be queued
		c.nc.Close()
		if c.admitted {
			c.srv.releaseIP(c.q.Session.Client.Addr())
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
		if !c.lineBuffered() {
			c.resolvePending()
			if err := c.w.Flush(); err != nil {
				return
			}
		}
		if c.srv.closing.Load() {
			c.reply(replyShuttingDown(c.cfg.Hostname))
			return
		}
		c.setIdle(true)
		line, bareLF, err := smtp.ReadLine(c.r, &c.scratch, c.cfg.Limits.MaxLineLength)
		c.setIdle(false)
		tooLong := errors.Is(err, smtp.ErrLineTooLong)
		if err != nil && !tooLong {
			c.readFailed(err)
			return
		}
		s := c.q.Command(line, bareLF, tooLong)
		if s.Op == sequencer.OpResolve {
			c.resolvePending()
			s = c.q.Command(line, bareLF, tooLong)
		}
		if !c.do(s) {
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
	if c.up != nil {
		c.up.broken = true
		c.up.nc.Close()
	}
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	replyInternalError(c.cfg.Hostname).WriteTo(c.w)
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
			c.log.Warn("PROXY header missing or invalid", "peer", c.q.Session.Client.String(), "err", err)
			return false
		}
		if !h.Local {
			c.q.Session.Client, c.q.Session.Server = h.Source, h.Dest
		}
	}
	if !c.perIPExempt() {
		if !c.srv.admitIP(c.q.Session.Client.Addr(), c.cfg.Limits.MaxConnectionsPerIP) {
			c.srv.metrics.connRefused("max_connections_per_ip")
			c.log.Info("session refused", "reason", "max_connections_per_ip", "client_ip", c.q.Session.Client.Addr().String())
			if !c.implicitTLS {
				// On an implicit-TLS listener there is no plaintext to
				// say it in (RFC 8314 §3.3): the connection just closes.
				c.reply(replyTooManyFromAddress(c.cfg.Hostname))
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
	return containsAddr(c.cfg.ListenProxyProtocol, c.q.Session.Client.Addr())
}

// perIPExempt reports whether the client is exempt from the per-address
// connection limit (limits.per_ip_exempt).
func (c *conn) perIPExempt() bool {
	return containsAddr(c.cfg.Limits.PerIPExempt, c.q.Session.Client.Addr())
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
		c.log.Info("TLS handshake failed", "err", err, "client_ip", c.q.Session.Client.Addr().String())
		c.srv.metrics.tlsHandshakeFailed(c.implicitTLS)
		return false
	}
	st := tc.ConnectionState()
	c.q.Session.TLS = &inspect.TLSInfo{Version: tlsVersionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite)}
	c.srv.metrics.tlsSession(c.q.Session.TLS.Version)
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
	c.q.Begin()
	early := false
	if d := c.cfg.Greeting.Delay; d > 0 {
		c.rd.timeout = d
		_, err := c.r.Peek(1)
		c.rd.timeout = c.cfg.Timeouts.Command
		var ne net.Error
		switch {
		case err == nil:
			early = true
			c.log.Info("early talker", "client_ip", c.q.Session.Client.Addr().String(), "bytes", c.r.Buffered())
		case errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, errShuttingDown):
			// Silence: the polite behaviour.
		default:
			return false
		}
	}
	return c.do(c.q.Greet(early)) && c.w.Flush() == nil
}

// reply queues a reply; it reaches the client at the next flush.
func (c *conn) reply(r smtp.Reply) {
	// Replies go out in command order: a pipelined batch's first.
	c.resolvePending()
	c.writeReply(r)
}

// writeReply queues a reply without looking at the batch.
func (c *conn) writeReply(r smtp.Reply) {
	c.nc.SetWriteDeadline(time.Now().Add(c.cfg.Timeouts.Command))
	r.WriteTo(c.w)
}

// readFailed ends the session after a read error: a timeout or a
// shutdown gets a 421, a vanished client nothing.
func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShuttingDown):
		c.reply(replyShuttingDown(c.cfg.Hostname))
	case errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(c.deadline):
		c.reply(replySessionTimeLimit(c.cfg.Hostname))
		c.log.Info("session closed", "reason", "session_timeout", "state", c.q.State().String())
	case errors.As(err, &ne) && ne.Timeout():
		c.reply(replyTimeout(c.cfg.Hostname))
		c.log.Info("session closed", "reason", "timeout", "state", c.q.State().String())
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
