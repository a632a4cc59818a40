package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// startTLS upgrades a client session after EHLO and returns it re-wrapped.
func (c *client) startTLS(cfg *tls.Config) *client {
	c.t.Helper()
	c.cmd(220, "STARTTLS")
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	return &client{t: c.t, nc: tc, tp: textproto.NewConn(tc)}
}

var insecure = &tls.Config{InsecureSkipVerify: true, ServerName: "moat.test"}

// STARTTLS with the self-signed certificate moat makes for itself: the
// session starts over (RFC 3207 §4.2), STARTTLS is no longer offered, and
// the Received header records the TLS version and cipher.
func TestSTARTTLS(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)
	c := ehloed(t, h.addr)
	tc := c.startTLS(insecure)
	st := tc.nc.(*tls.Conn).ConnectionState()
	if st.Version < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", st.Version)
	}
	if cn := st.PeerCertificates[0].Subject.CommonName; cn != "moat.test" {
		t.Errorf("self-signed certificate for %q, want the hostname", cn)
	}
	tc.cmd(503, "MAIL FROM:<a@client.test>") // the EHLO before TLS is forgotten
	if msg := tc.cmd(250, "EHLO client.test"); strings.Contains(msg, "STARTTLS") {
		t.Errorf("STARTTLS offered again inside TLS: %q", msg)
	}
	tc.cmd(503, "STARTTLS")
	tc.cmd(250, "MAIL FROM:<a@client.test>")
	tc.cmd(250, "RCPT TO:<b@example.net>")
	tc.cmd(354, "DATA")
	tc.send("Subject: tls\r\n\r\nover TLS\r\n.\r\n")
	tc.expect(250)
	tc.cmd(221, "QUIT")

	msg := pf.WaitMessages(t, 1, 20*time.Second)[0]
	re := regexp.MustCompile(`\tby moat\.test \(moat\) with ESMTPS \(TLS1\.[23] TLS_[A-Z0-9_]+\) id `)
	if !re.Match(msg) {
		t.Fatalf("Received header lacks TLS details:\n%s", msg)
	}
	if l := transactionLogs(h); len(l) != 1 || !strings.Contains(l[0], `"tls":"TLS1.`) {
		t.Fatalf("transaction log lacks TLS: %q", l)
	}
}

// Commands pipelined behind STARTTLS before the handshake are discarded,
// not executed inside the TLS session (CVE-2011-0411).
func TestSTARTTLSCommandInjection(t *testing.T) {
	up := startFakeUpstream(t, failNone)
	h := startProxy(t, up.addr, nil)
	c := ehloed(t, h.addr)
	c.send("STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\n")
	c.expect(220)
	tc := tls.Client(c.nc, insecure)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	s := &client{t: t, nc: tc, tp: textproto.NewConn(tc)}
	s.cmd(250, "EHLO client.test")
	// Had the injected MAIL run, this RCPT would be accepted.
	s.cmd(503, "RCPT TO:<b@example.net>")
	if !strings.Contains(h.logs.String(), "discarded commands pipelined after STARTTLS") {
		t.Fatalf("injection not logged:\n%s", h.logs.String())
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.got) != 0 {
		t.Fatalf("the upstream saw %q", up.got)
	}
}

// An implicit-TLS listener (RFC 8314, port 465 style) handshakes first.
func TestImplicitTLS(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	h := startProxy(t, pf.Addr, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.srv.Serve(ln, true)

	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), insecure)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, nc: tc, tp: textproto.NewConn(tc)}
	t.Cleanup(func() { tc.Close() })
	c.expect(220)
	if msg := c.cmd(250, "EHLO client.test"); strings.Contains(msg, "STARTTLS") {
		t.Errorf("STARTTLS offered on an implicit-TLS listener: %q", msg)
	}
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.cmd(250, "RCPT TO:<b@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: implicit\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd(221, "QUIT")
	if msg := pf.WaitMessages(t, 1, 20*time.Second)[0]; !strings.Contains(string(msg), "with ESMTPS (TLS1.") {
		t.Fatalf("delivered:\n%s", msg)
	}
}

// A configured certificate is served, and a reload with a new one is
// served to the next session.
func TestConfiguredCertificateAndReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	cert1, key1 := ca.issue(t, dir, "one", "moat.test")
	cert2, key2 := ca.issue(t, dir, "two", "moat.test")
	h := startProxy(t, deadUpstream(t), func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = cert1, key1 })
	verify := &tls.Config{RootCAs: ca.pool, ServerName: "moat.test"}

	serial := func() string {
		c := ehloed(t, h.addr)
		tc := c.startTLS(verify)
		return tc.nc.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	cfg := h.srv.Config()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = cert2, key2
	if err := h.srv.Reload(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if second := serial(); second == first {
		t.Fatal("certificate unchanged after reload")
	}
	// A broken certificate is refused and the running one kept.
	cfg.TLS.CertFile = filepath.Join(dir, "missing.pem")
	if err := h.srv.Reload(cfg, nil); err == nil {
		t.Fatal("reload with a missing certificate succeeded")
	}
	serial()
}

// moat talks TLS to an upstream Postfix that offers STARTTLS: verified
// against the configured CA when required, and not at all when the
// upstream offers none (4xx, never plaintext).
func TestUpstreamTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	cert, key := ca.issue(t, dir, "upstream", "upstream.test")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"smtpd_tls_security_level = may",
		"smtpd_tls_cert_file = " + cert,
		"smtpd_tls_key_file = " + key,
		"smtpd_tls_loglevel = 1",
	}})
	for _, mode := range []string{"required", "opportunistic"} {
		h := startProxy(t, pf.Addr, func(c *Config) {
			c.Upstream.TLS = mode
			c.Upstream.TLSCAFile = caFile
			c.Upstream.TLSServerName = "upstream.test"
		})
		if code, msg := sendOne(t, h.addr); code != 250 {
			t.Fatalf("%s: %d %s", mode, code, msg)
		}
	}
	pf.WaitMessages(t, 2, 20*time.Second)
	if log := pf.Log(t); strings.Count(log, "TLS connection established from") < 2 {
		t.Fatalf("Postfix did not log TLS sessions:\n%s", log)
	}

	// Required, but the upstream's certificate is not from our CA.
	other := newTestCA(t)
	otherFile := filepath.Join(dir, "other.pem")
	os.WriteFile(otherFile, other.pem, 0o644)
	h := startProxy(t, pf.Addr, func(c *Config) {
		c.Upstream.TLS, c.Upstream.TLSCAFile, c.Upstream.TLSServerName = "required", otherFile, "upstream.test"
	})
	if code, msg := sendOne(t, h.addr); code != 451 || !strings.HasPrefix(msg, "4.7.10") {
		t.Fatalf("unverifiable upstream: %d %s", code, msg)
	}

	// Required, and the upstream offers no STARTTLS at all.
	plain := postfixtest.Start(t, postfixtest.Options{})
	h2 := startProxy(t, plain.Addr, func(c *Config) { c.Upstream.TLS = "required" })
	if code, msg := sendOne(t, h2.addr); code != 451 || !strings.HasPrefix(msg, "4.7.10") {
		t.Fatalf("upstream without STARTTLS: %d %s", code, msg)
	}
	// Opportunistic falls back to plaintext.
	h3 := startProxy(t, plain.Addr, func(c *Config) { c.Upstream.TLS = "opportunistic" })
	if code, msg := sendOne(t, h3.addr); code != 250 {
		t.Fatalf("opportunistic without STARTTLS: %d %s", code, msg)
	}
}

// testCA issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "moat test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
}

// issue writes a certificate and key for name into dir and returns the
// two file names.
func (ca *testCA) issue(t *testing.T, dir, base, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	// World-readable in a world-readable directory: Postfix's smtpd
	// reads them as its own user.
	os.Chmod(dir, 0o755)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// On an implicit-TLS listener, a client over its per-address connection
// limit is turned away before the TLS handshake: it costs moat no
// handshake, and counts as a refusal, not as a failed handshake.
func TestImplicitTLSLimitBeforeHandshake(t *testing.T) {
	h := startProxy(t, deadUpstream(t), func(c *Config) {
		c.Limits.MaxConnectionsPerIP = 1
		c.Limits.PerIPExempt = []Prefix{} // loopback is exempt by default
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.srv.Serve(ln, true)
	dialTLS := func() (*tls.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}}
		nc, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(nc, insecure)
		return tc, tc.Handshake()
	}
	first, err := dialTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, nc: first, tp: textproto.NewConn(first)}
	c.expect(220)
	if _, err := dialTLS(); err == nil {
		t.Fatal("a client over its limit got a TLS handshake")
	}
	if n := counterValue(t, h.srv.metrics.connsRefused.WithLabelValues("max_connections_per_ip")); n != 1 {
		t.Errorf("max_connections_per_ip refusals: %v, want 1", n)
	}
	if n := counterValue(t, h.srv.metrics.tlsFailures.WithLabelValues("implicit")); n != 0 {
		t.Errorf("implicit TLS handshake failures: %v, want 0", n)
	}
	c.cmd(221, "QUIT")
}

// Shutdown's forced close may come while a session's STARTTLS handshake
// has just replaced its connection; under -race this test catches the
// forced close reading the connection field the handshake wrote.
//
// The session is held after its handshake, without touching any lock
// Shutdown takes, by an upstream that never answers QUIT: the session
// ends (it sees the shutdown), says QUIT to the upstream of its earlier
// transaction and waits there while Shutdown's deadline passes. The
// deadline is a timer, not a cancel from this goroutine: anything this
// goroutine learns from a socket is ordered after the session's work for
// the race detector (which treats I/O as synchronisation), and would
// hide the race if it then reached Shutdown.
func TestShutdownDuringSTARTTLS(t *testing.T) {
	up := startFakeUpstream(t, failHangAtQuit)
	h := startProxy(t, up.addr, nil)
	c := ehloed(t, h.addr)
	c.cmd(250, "MAIL FROM:<a@client.test>")
	c.cmd(250, "RCPT TO:<b@example.net>")
	c.cmd(354, "DATA")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd(220, "STARTTLS")

	// Shut down while the session waits for the ClientHello.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctx) }()
	waitFor(t, h.srv.closing.Load)
	h.srv.mu.Lock() // Shutdown's first pass over the sessions is over
	h.srv.mu.Unlock()

	tc := tls.Client(c.nc, insecure)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	// The session saw the shutdown and is saying QUIT upstream.
	waitFor(t, func() bool { return up.count("QUIT") == 1 })
	if time.Now().After(deadline) {
		t.Log("the session reached QUIT after Shutdown's deadline: the race was not lined up")
	}
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, tc)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the session's connection was not closed by the forced shutdown")
	}
	close(up.release)
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want context.DeadlineExceeded", err)
	}
}
