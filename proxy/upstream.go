package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

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
	xclient    bool
}

func parseCaps(r smtp.Reply) upstreamCaps {
	c := upstreamCaps{esmtp: true}
	// The first line is the greeting ("name text"); keywords follow.
	for _, l := range r.Lines[min(1, len(r.Lines)):] {
		kw, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch strings.ToUpper(kw) {
		case "PIPELINING":
			c.pipelining = true
		case "SIZE":
			c.size = true
		case "8BITMIME":
			c.eightBit = true
		case "SMTPUTF8":
			c.smtputf8 = true
		case "DSN":
			c.dsn = true
		case "CHUNKING":
			c.chunking = true
		case "STARTTLS":
			c.starttls = true
		case "XCLIENT":
			c.xclient = true
		}
	}
	return c
}

// upstream is moat's client connection to the MTA it shields. It is used
// by one session goroutine only.
type upstream struct {
	cfg     *UpstreamConfig
	nc      net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	caps    upstreamCaps
	inTx    bool // a MAIL was accepted and no RSET or final reply since
	broken  bool // an I/O error or 421 happened; the connection is unusable
	scratch []byte
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
// RFC 3463: X.4.1 no answer from host, X.4.2 bad connection, X.4.7
// delivery time expired.
func (e *upstreamError) reply() smtp.Reply {
	var ne net.Error
	switch {
	case e.op == "connect":
		return smtp.Reply{Code: 451, Enhanced: "4.4.1", Lines: []string{"Upstream mail server unavailable, try again later"}, Err: e}
	case errors.As(e.err, &ne) && ne.Timeout():
		return smtp.Reply{Code: 451, Enhanced: "4.4.2", Lines: []string{"Upstream mail server timed out, try again later"}, Err: e}
	}
	return smtp.Reply{Code: 451, Enhanced: "4.4.2", Lines: []string{"Upstream mail server connection lost, try again later"}, Err: e}
}

// dialUpstream connects, reads the greeting and says EHLO (HELO if EHLO is
// refused, RFC 5321 §4.1.1.1).
func dialUpstream(ctx context.Context, cfg *UpstreamConfig) (*upstream, error) {
	d := net.Dialer{Timeout: cfg.ConnectTimeout}
	nc, err := d.DialContext(ctx, "tcp", string(cfg.Address))
	if err != nil {
		return nil, &upstreamError{"connect", err}
	}
	u := &upstream{cfg: cfg, nc: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 4096)}
	greet, err := u.read(cfg.ConnectTimeout)
	if err != nil {
		nc.Close()
		return nil, &upstreamError{"connect", err}
	}
	if greet.Code != 220 {
		u.quit()
		return nil, &upstreamError{"connect", fmt.Errorf("greeting %v", greet)}
	}
	rep, err := u.cmd(cfg.CommandTimeout, "EHLO "+cfg.Helo)
	if err != nil {
		nc.Close()
		return nil, &upstreamError{"connect", err}
	}
	if rep.Code == 250 {
		u.caps = parseCaps(rep)
	} else {
		rep, err = u.cmd(cfg.CommandTimeout, "HELO "+cfg.Helo)
		if err != nil {
			nc.Close()
			return nil, &upstreamError{"connect", err}
		}
		if rep.Code != 250 {
			u.quit()
			return nil, &upstreamError{"connect", fmt.Errorf("HELO refused: %v", rep)}
		}
	}
	return u, nil
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
// DATA is returned as the reply with no error.
func (u *upstream) data(write func(w io.Writer) error) (smtp.Reply, error) {
	rep, err := u.cmd(u.cfg.CommandTimeout, "DATA")
	if err != nil || rep.Code != 354 {
		return rep, err
	}
	// The whole message may take a while on a slow link; the deadline is
	// per write, refreshed by the deadline writer.
	dw := smtp.NewDataWriter(deadlineWriter{u.nc, u.w, u.cfg.DataTimeout})
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
	return u.read(u.cfg.DataTimeout)
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
