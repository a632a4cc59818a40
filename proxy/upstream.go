package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"moat/inspect"
	"moat/inspect/sequencer"
	"moat/inspect/smtp"
)

// upstreamCaps is what the upstream advertised in its EHLO reply
// (RFC 5321 §4.1.1.1), reduced to what moat needs.
type upstreamCaps struct {
	esmtp      bool // answered EHLO (else we fell back to HELO)
	pipelining bool
	size       bool
	eightBit   bool // 8BITMIME, RFC 6152
	smtputf8   bool // RFC 6531
	dsn        bool // RFC 3461
	chunking   bool // RFC 3030
	starttls   bool
	auth       bool // AUTH offered (RFC 4954)
	xclient    bool
	// xclientAttrs are the XCLIENT attributes the upstream accepts.
	xclientAttrs map[string]bool
}

// parseCaps reduces the upstream's EHLO reply, read by the one EHLO
// parser (smtp.ParseEHLO), to what moat needs.
func parseCaps(r smtp.Reply) upstreamCaps {
	e := smtp.ParseEHLO(r)
	c := upstreamCaps{esmtp: true,
		pipelining: e.Has("PIPELINING"),
		size:       e.Has("SIZE"),
		eightBit:   e.Has("8BITMIME"),
		smtputf8:   e.Has("SMTPUTF8"),
		dsn:        e.Has("DSN"),
		chunking:   e.Has("CHUNKING"),
		starttls:   e.Has("STARTTLS"),
		auth:       e.Has("AUTH"),
		xclient:    e.Has("XCLIENT"),
	}
	if c.xclient {
		c.xclientAttrs = map[string]bool{}
		for _, a := range e.Params("XCLIENT") {
			c.xclientAttrs[strings.ToUpper(a)] = true
		}
	}
	return c
}

// upstream is moat's client connection to the MTA it shields. It is used
// by one session goroutine only.
type upstream struct {
	cfg    *UpstreamConfig
	nc     net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	caps   upstreamCaps
	tls    bool // the connection runs over STARTTLS
	inTx   bool // a MAIL was accepted and no RSET or final reply since
	broken bool // an I/O error or 421 happened; the connection is unusable
	// authenticated: a client's AUTH succeeded on this connection; it
	// belongs to that session and is never pooled.
	authenticated bool
	dialed        time.Time
	scratch       []byte
	dw            *smtp.DataWriter
}

// upstreamError is an upstream failure that is not an SMTP reply: the
// connection could not be made, broke, or timed out. The session answers
// it with a 4xx and never a 2xx (the end-to-end acknowledgement rule).
type upstreamError struct {
	op  string
	err error
}

func (e *upstreamError) Error() string { return "upstream " + e.op + ": " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// reply translates an upstream failure into the reply for the client.
// RFC 3463: X.4.1 no answer from host, X.4.2 bad connection, X.7.10
// encryption needed, X.3.5 system incorrectly configured.
func (e *upstreamError) reply() smtp.Reply {
	var ne net.Error
	switch {
	case e.op == "connect":
		return smtp.Reply{Code: 451, Enhanced: "4.4.1", Lines: []string{"Upstream mail server unavailable, try again later"}, Err: e}
	case e.op == "tls":
		return smtp.Reply{Code: 451, Enhanced: "4.7.10", Lines: []string{"Upstream mail server TLS unavailable, try again later"}, Err: e}
	case e.op == "auth":
		return smtp.Reply{Code: 421, Enhanced: "4.4.2", Lines: []string{"Upstream connection of the authenticated session lost, closing"}, Err: e}
	case e.op == "xclient":
		return smtp.Reply{Code: 451, Enhanced: "4.3.5", Lines: []string{"Upstream mail server refused moat's session setup, try again later"}, Err: e}
	case errors.As(e.err, &ne) && ne.Timeout():
		return smtp.Reply{Code: 451, Enhanced: "4.4.2", Lines: []string{"Upstream mail server timed out, try again later"}, Err: e}
	}
	return smtp.Reply{Code: 451, Enhanced: "4.4.2", Lines: []string{"Upstream mail server connection lost, try again later"}, Err: e}
}

// dialUpstream connects and sets the session up: PROXY header, greeting,
// EHLO (HELO if EHLO is refused, RFC 5321 §4.1.1.1), STARTTLS and XCLIENT
// as configured. sess is the client's session; nil for a probe, which
// then identifies itself as moat (PROXY LOCAL, no XCLIENT).
func dialUpstream(ctx context.Context, cfg *Config, sess *inspect.Session) (*upstream, error) {
	u, err := dialUpstreamTLS(ctx, cfg, sess, cfg.Upstream.TLS != "off")
	var ue *upstreamError
	if err != nil && cfg.Upstream.TLS == "opportunistic" && errors.As(err, &ue) && ue.op == "tls" {
		// RFC 7435 §3: opportunistic security falls back to what the
		// peer can do, which is plaintext.
		return dialUpstreamTLS(ctx, cfg, sess, false)
	}
	return u, err
}

func dialUpstreamTLS(ctx context.Context, cfg *Config, sess *inspect.Session, useTLS bool) (*upstream, error) {
	ucfg := &cfg.Upstream
	d := net.Dialer{Timeout: ucfg.ConnectTimeout}
	nc, err := d.DialContext(ctx, "tcp", string(ucfg.Address))
	if err != nil {
		return nil, &upstreamError{"connect", err}
	}
	// The writer carries messages: 32 KB per write system call.
	u := &upstream{cfg: ucfg, nc: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 32<<10), dialed: time.Now()}
	fail := func(op string, err error) (*upstream, error) {
		u.nc.Close()
		return nil, &upstreamError{op, err}
	}
	if ucfg.ProxyProtocol != "" {
		// A probe speaks for moat itself: its own connection's ends.
		// (Postfix refuses v1's "UNKNOWN" form, so LOCAL is not used.)
		h := ProxyHeader{Source: addrPort(nc.LocalAddr()), Dest: addrPort(nc.RemoteAddr())}
		if sess != nil {
			h = ProxyHeader{Source: sess.Client, Dest: sess.Server}
		}
		var b []byte
		if ucfg.ProxyProtocol == "v1" {
			b = h.AppendV1(nil)
		} else {
			b = h.AppendV2(nil)
		}
		nc.SetWriteDeadline(time.Now().Add(ucfg.ConnectTimeout))
		if _, err := nc.Write(b); err != nil {
			return fail("connect", err)
		}
	}
	greet, err := u.read(ucfg.ConnectTimeout)
	if err != nil {
		return fail("connect", err)
	}
	if greet.Code != 220 {
		u.quit()
		return nil, &upstreamError{"connect", fmt.Errorf("greeting %v", greet)}
	}
	if err := u.hello(u.cfg.Helo); err != nil {
		return fail("connect", err)
	}
	if useTLS {
		if !u.caps.starttls {
			return fail("tls", errors.New("STARTTLS not offered"))
		}
		rep, err := u.cmd(ucfg.CommandTimeout, "STARTTLS")
		if err != nil {
			return fail("tls", err)
		}
		if rep.Code != 220 {
			return fail("tls", fmt.Errorf("STARTTLS refused: %v", rep))
		}
		tc := tls.Client(nc, cfg.upstreamTLS)
		hctx, cancel := context.WithTimeout(ctx, ucfg.ConnectTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return fail("tls", err)
		}
		u.nc, u.tls = tc, true
		u.r.Reset(tc)
		u.w.Reset(tc)
		// RFC 3207 §4.2: forget what was learnt before TLS; EHLO again.
		if err := u.hello(u.cfg.Helo); err != nil {
			return fail("tls", err)
		}
	}
	if ucfg.XClient && sess != nil {
		if err := u.xclient(sess); err != nil {
			return fail("xclient", err)
		}
	}
	return u, nil
}

// hello sends EHLO, or HELO if EHLO is refused, and records capabilities.
func (u *upstream) hello(name string) error {
	rep, err := u.cmd(u.cfg.CommandTimeout, "EHLO "+name)
	if err != nil {
		return err
	}
	if rep.Code == 250 {
		u.caps = parseCaps(rep)
		return nil
	}
	rep, err = u.cmd(u.cfg.CommandTimeout, "HELO "+name)
	if err != nil {
		return err
	}
	if rep.Code != 250 {
		return fmt.Errorf("HELO refused: %v", rep)
	}
	u.caps = upstreamCaps{}
	return nil
}

// xclient hands the upstream the real client's identity with Postfix's
// XCLIENT (XCLIENT_README): the upstream answers with a new 220 greeting
// and a fresh session, so EHLO follows again. Only attributes the
// upstream announced are sent.
func (u *upstream) xclient(sess *inspect.Session) error {
	if !u.caps.xclient {
		return errors.New("upstream does not offer XCLIENT (Postfix: smtpd_authorized_xclient_hosts)")
	}
	addr := sess.Client.Addr()
	ip := addr.String()
	if addr.Is6() {
		ip = "IPV6:" + ip
	}
	proto := "SMTP"
	if sess.ESMTP() {
		proto = "ESMTP"
	}
	var b strings.Builder
	b.WriteString("XCLIENT")
	for _, kv := range [][2]string{
		{"ADDR", ip},
		{"PORT", strconv.Itoa(int(sess.Client.Port()))},
		{"NAME", "[UNAVAILABLE]"},
		{"HELO", sess.Helo},
		{"PROTO", proto},
	} {
		if !u.caps.xclientAttrs[kv[0]] || kv[1] == "" {
			continue
		}
		b.WriteString(" " + kv[0] + "=" + smtp.EncodeXtext(kv[1]))
	}
	rep, err := u.cmd(u.cfg.CommandTimeout, b.String())
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		return fmt.Errorf("XCLIENT refused: %v", rep)
	}
	// The new session's EHLO is the client's own name: Postfix takes the
	// HELO of its trace header and policy checks from this EHLO, not
	// from XCLIENT's HELO attribute.
	name := sequencer.SanitizeHelo(sess.Helo)
	if name == "" {
		name = u.cfg.Helo
	}
	return u.hello(name)
}

// cmd sends one command line and reads its reply. An I/O error marks the
// connection broken; so does a 421, after which the server closes
// (RFC 5321 §3.8).
func (u *upstream) cmd(timeout time.Duration, line string) (smtp.Reply, error) {
	if u.broken {
		return smtp.Reply{}, &upstreamError{"write", errors.New("connection already failed")}
	}
	u.nc.SetWriteDeadline(time.Now().Add(timeout))
	u.w.WriteString(line)
	u.w.WriteString("\r\n")
	if err := u.w.Flush(); err != nil {
		u.broken = true
		return smtp.Reply{}, &upstreamError{"write", err}
	}
	return u.read(timeout)
}

// queue writes a command line to the send buffer without waiting for
// its reply (RFC 2920 pipelining); flush sends what is queued. A write
// error, should the buffer fill, surfaces at flush.
func (u *upstream) queue(timeout time.Duration, line string) {
	if u.broken {
		return
	}
	u.nc.SetWriteDeadline(time.Now().Add(timeout))
	u.w.WriteString(line)
	u.w.WriteString("\r\n")
}

func (u *upstream) flush(timeout time.Duration) error {
	if u.broken {
		return &upstreamError{"write", errors.New("connection already failed")}
	}
	u.nc.SetWriteDeadline(time.Now().Add(timeout))
	if err := u.w.Flush(); err != nil {
		u.broken = true
		return &upstreamError{"write", err}
	}
	return nil
}

func (u *upstream) read(timeout time.Duration) (smtp.Reply, error) {
	u.nc.SetReadDeadline(time.Now().Add(timeout))
	rep, err := smtp.ReadReply(u.r)
	if err != nil {
		u.broken = true
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return smtp.Reply{}, &upstreamError{"read", err}
	}
	if rep.Code == 421 {
		u.broken = true
		return rep, &upstreamError{"read", fmt.Errorf("upstream closing: %v", rep)}
	}
	return rep, nil
}

// data sends DATA, then the message produced by write through a
// dot-stuffing writer, and returns the final reply. A non-354 answer to
// DATA is returned as the reply with no error; the transaction then is
// still open upstream (RFC 5321 §4.1.1.4: a refused DATA leaves MAIL and
// RCPT in force), and inTx stays set until someone sends RSET. So it does
// after a refusal of the message itself.
func (u *upstream) data(write func(w io.Writer) error) (smtp.Reply, error) {
	rep, err := u.cmd(u.cfg.CommandTimeout, "DATA")
	if err != nil || rep.Code != 354 {
		return rep, err
	}
	// A final 2xx, or an error that breaks the connection, ends the
	// upstream transaction (§4.1.1.4); a refusal may not (below).
	u.inTx = false
	// The whole message may take a while on a slow link; the deadline is
	// per write, refreshed by the deadline writer. The encoder is reused
	// for every message of the connection.
	dst := deadlineWriter{u.nc, u.w, u.cfg.DataTimeout}
	if u.dw == nil {
		u.dw = smtp.NewDataWriter(dst)
	} else {
		u.dw.Reset(dst)
	}
	dw := u.dw
	if err := write(dw); err != nil {
		u.broken = true
		return smtp.Reply{}, &upstreamError{"write", err}
	}
	if err := dw.Close(); err != nil {
		u.broken = true
		return smtp.Reply{}, &upstreamError{"write", err}
	}
	u.nc.SetWriteDeadline(time.Now().Add(u.cfg.DataTimeout))
	if err := u.w.Flush(); err != nil {
		u.broken = true
		return smtp.Reply{}, &upstreamError{"write", err}
	}
	rep, err = u.read(u.cfg.DataTimeout)
	if err == nil && rep.Class() != 2 {
		// Not every server ends the transaction when it refuses the
		// message: Postfix keeps the envelope after its
		// smtpd_end_of_data_restrictions refuse, until RSET. Leave it to
		// the caller's rset, so that neither this client's next MAIL nor,
		// through the pool, another client's meets "503 nested MAIL".
		u.inTx = true
	}
	return rep, err
}

// rset aborts the upstream transaction, if any. Failure breaks the
// connection, which is then replaced for the next transaction.
func (u *upstream) rset() {
	if !u.inTx || u.broken {
		return
	}
	u.inTx = false
	if rep, err := u.cmd(u.cfg.CommandTimeout, "RSET"); err == nil && rep.Code != 250 {
		u.broken = true
	}
}

// quit says goodbye politely, with a short bound, and closes.
func (u *upstream) quit() {
	if !u.broken {
		u.nc.SetDeadline(time.Now().Add(5 * time.Second))
		u.w.WriteString("QUIT\r\n")
		if u.w.Flush() == nil {
			smtp.ReadReply(u.r)
		}
	}
	u.nc.Close()
}

// deadlineWriter writes through a bufio.Writer, moving the connection's
// write deadline forward before each write so that a long message is
// bounded per block, not as a whole.
type deadlineWriter struct {
	nc      net.Conn
	w       *bufio.Writer
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.nc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.w.Write(p)
}
