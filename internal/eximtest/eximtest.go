// Package eximtest starts a throwaway real Exim 4 for integration tests.
//
// Exim is the second real upstream behind moat, next to Postfix
// (internal/postfixtest), because it answers in the legacy style: no
// enhanced status codes (RFC 2034) in any reply — "250 OK", "250 Accepted",
// "550 Administrative prohibition" — so it shows what moat passes on from a
// server that does not speak ENHANCEDSTATUSCODES.
//
// Debian's MTA packages conflict with each other, and installing
// exim4-daemon-light would remove Postfix. So Exim is not installed:
// scripts/install-test-deps.sh downloads the package and unpacks it with
// dpkg-deb -x into a cache directory (DefaultRoot, or $MOAT_EXIM_ROOT), and
// this package runs the binary from there. The same script installs the
// shared libraries the binary needs and creates the Debian-exim user that
// the binary looks up at start.
//
// Start runs a private Exim daemon in the foreground (-bdf, as root) with
// its own configuration, spool, logs and mail directory under a short temp
// dir in /tmp, listening on a free loopback port. Every recipient of the
// domain example.net is delivered into one Maildir the test can read;
// recipients of any other domain are refused at RCPT, so nothing ever leaves
// the machine. Options add ACL rules that deny or defer given senders,
// recipients or messages.
//
// Delivery is asynchronous (the receiving process forks a delivery after the
// reply to the final dot), so tests wait for messages and log lines with
// WaitMessages and WaitLog instead of sleeping.
package eximtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"moat/internal/mtatest"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Domain is the only domain the instance accepts; every recipient in it
// lands in the one Maildir.
const Domain = "example.net"

// Hostname is the instance's primary_hostname; it appears in the greeting
// ("220 upstream.test ESMTP Exim 4.96") and in the Received: header Exim
// adds.
const Hostname = "upstream.test"

// DefaultRoot is where scripts/install-test-deps.sh unpacks
// exim4-daemon-light: outside the repository, so that it survives git clean
// and is shared by every checkout, and under /var/cache, the place for data
// a program can download again (FHS 3.0 §5.5). $MOAT_EXIM_ROOT overrides
// it, for the script and for this package alike.
const DefaultRoot = "/var/cache/moat-test/exim/root"

// User is the user the Debian build of Exim looks up at start (its
// compiled-in EXIM_USER); without it Exim exits with "failed to find uid
// for user name". It also owns the spool and log directories, and, because
// Exim started with -C gives up root before delivering (see config), the
// Maildir.
const User = "Debian-exim"

// Options selects the optional features of an instance.
type Options struct {
	// DenySenders are MAIL FROM addresses refused with Exim's default
	// "550 Administrative prohibition".
	DenySenders []string
	// DenyRecipients are RCPT TO addresses (in example.net) refused with
	// "550 Administrative prohibition".
	DenyRecipients []string
	// DeferRecipients are RCPT TO addresses answered with
	// "451 Temporary local problem - please try later".
	DeferRecipients []string
	// DenySubject, when not empty, refuses at the end of DATA every
	// message whose Subject: contains it, with
	// "550 Administrative prohibition".
	DenySubject string
	// MessageSizeLimit sets message_size_limit in bytes (advertised as
	// SIZE); 0 keeps Exim's default of 50M.
	MessageSizeLimit int64
	// RelayTo, when not empty, makes the instance a sending MTA — a real
	// SMTP client for the server at RelayTo ("127.0.0.1:PORT") — instead
	// of the test's upstream: one manualroute router sends every address,
	// whatever its domain, to RelayTo with the smtp transport, and nothing
	// is delivered locally. The transport keeps Exim's client defaults:
	// STARTTLS whenever offered (tried, not required; the certificate is
	// checked but a failure only logs CV=no), PIPELINING, CHUNKING (BDAT)
	// whenever offered, and several messages per connection in a queue
	// run. The daemon runs no queue runner, so nothing is delivered until
	// the test says so: inject with Sendmail (queue only), deliver with
	// RunQueue. A retry rule (F,1h,10m) keeps temporarily refused mail
	// queued, and RunQueue forces it past its retry time. The Deny*,
	// Defer* and MessageSizeLimit options do not apply.
	RelayTo string
}

// SenderHostname is the primary_hostname of an instance started with
// Options.RelayTo; it is the name in its EHLO.
const SenderHostname = "sender.test"

// Exim is one running instance. Its methods may be called from several
// goroutines.
type Exim struct {
	// Addr is the "127.0.0.1:PORT" address of its SMTP listener.
	Addr string
	// Dir is the instance's temp root; it holds exim.conf, spool/, log/,
	// mail/ and the daemon's stderr, and is removed when the test ends.
	Dir string
	// MailDir is the Maildir every example.net recipient is delivered to;
	// finished messages appear in MailDir/new, one file per recipient, with
	// CRLF turned into LF and Return-path:, Envelope-to:, Delivery-date: and
	// Exim's Received: prepended.
	MailDir string

	bin        string // the exim4 binary
	conf       string // the configuration file
	logDir     string
	stderrFile string

	cmd  *exec.Cmd
	done chan struct{} // closed when the daemon has exited
	mu   sync.Mutex
	// stopped is set by the first Stop.
	stopped bool
}

// binaryState caches the result of checking the unpacked binary, which
// runs ldd: once per test binary is enough.
var binaryState struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of the unpacked exim4 binary after checking what
// scripts/install-test-deps.sh checks: the file is there, ldd finds every
// shared library it needs, and the Debian-exim user exists.
func Binary() (string, error) {
	binaryState.once.Do(func() {
		binaryState.path, binaryState.err = checkBinary()
	})
	return binaryState.path, binaryState.err
}

func checkBinary() (string, error) {
	root := os.Getenv("MOAT_EXIM_ROOT")
	if root == "" {
		root = DefaultRoot
	}
	bin := filepath.Join(root, "usr", "sbin", "exim4")
	const fix = "; run scripts/install-test-deps.sh as root"
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no unpacked Exim: %v%s", err, fix)
	}
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ldd %s: %v\n%s%s", bin, err, out, fix)
	}
	var missing []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "not found") {
			missing = append(missing, strings.TrimSpace(line))
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s lacks shared libraries: %s%s", bin, strings.Join(missing, "; "), fix)
	}
	if _, err := user.Lookup(User); err != nil {
		return "", fmt.Errorf("user %s: %v%s", User, err, fix)
	}
	return bin, nil
}

// Start starts an Exim instance for the test on a free loopback port and
// stops it (and removes its directories) when the test ends. It fails the
// test — never skips it — when the unpacked Exim is missing, when the test
// does not run as root, or when the daemon cannot start or does not greet
// within a few seconds, with Exim's own error output.
//
// When Start returns, the daemon has already answered one connection with
// 220 (the readiness probe).
func Start(t testing.TB, opts Options) *Exim {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("eximtest: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("eximtest: a private Exim daemon must be started as root")
	}
	// A free port is found by binding :0 and closing it; someone else may
	// take it before Exim binds it, so a bind failure is retried with a
	// fresh port and directory.
	const attempts = 3
	for i := 1; ; i++ {
		e, err := start(bin, opts)
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("eximtest: last lines of %s:\n%s", filepath.Join(e.logDir, "mainlog"), mtatest.LastLines(e.readLog(), 40))
				}
				e.Stop(t)
				if err := mtatest.RemoveAll(e.Dir); err != nil {
					t.Errorf("eximtest: %v", err)
				}
			})
			return e
		}
		if i < attempts && errors.Is(err, errPortTaken) {
			t.Logf("eximtest: %v; retrying with another port", err)
			continue
		}
		t.Fatalf("eximtest: %v", err)
	}
}

// errPortTaken marks a start that failed only because the chosen port was
// taken in the meantime.
var errPortTaken = errors.New("port taken")

// start creates the directories and configuration of one instance, starts
// the daemon and waits for its greeting. On error nothing of the instance is
// left.
func start(bin string, opts Options) (e *Exim, err error) {
	eu, err := user.Lookup(User)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(eu.Uid)
	gid, _ := strconv.Atoi(eu.Gid)
	port, err := mtatest.FreePort()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: a short path under /tmp, like postfixtest, and one
	// that the Exim user can reach.
	root, err := os.MkdirTemp("/tmp", "ex")
	if err != nil {
		return nil, err
	}
	e = &Exim{
		Addr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:        root,
		MailDir:    filepath.Join(root, "mail", "all"),
		bin:        bin,
		conf:       filepath.Join(root, "exim.conf"),
		logDir:     filepath.Join(root, "log"),
		stderrFile: filepath.Join(root, "stderr"),
		done:       make(chan struct{}),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.shutdown(), mtatest.RemoveAll(root))
		}
	}()
	if err := os.Chmod(root, 0o755); err != nil {
		return e, err
	}
	// The receiving and delivering processes run as the Exim user.
	for _, d := range []string{"spool", "log", "mail"} {
		dir := filepath.Join(root, d)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return e, err
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			return e, err
		}
	}
	conf := e.conf
	// Exim refuses a configuration file that others can write or that
	// root or the Exim user does not own; 0644 by root is fine.
	if err := os.WriteFile(conf, []byte(config(bin, root, port, opts)), 0o644); err != nil {
		return e, err
	}
	stderr, err := os.Create(e.stderrFile)
	if err != nil {
		return e, err
	}
	defer stderr.Close()
	// -bdf: the daemon stays in the foreground as our child, so it can be
	// waited for; its own process group holds it and every reception and
	// delivery process it forks, so Stop can signal them all.
	args := []string{"-C", conf, "-bdf", "-q5s"}
	if opts.RelayTo != "" {
		// A sending instance delivers only when RunQueue says so.
		args = args[:3]
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return e, err
	}
	e.mu.Lock()
	e.cmd = cmd
	e.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(e.done)
	}()

	if err := e.awaitGreeting(10 * time.Second); err != nil {
		out := e.errorOutput()
		if strings.Contains(out, "Address already in use") {
			return e, fmt.Errorf("exim on %s: %w", e.Addr, errPortTaken)
		}
		return e, fmt.Errorf("exim -C %s -bdf on %s does not greet: %v\n%s", conf, e.Addr, err, out)
	}
	return e, nil
}

// config returns the instance's configuration file.
func config(bin, root string, port int, opts Options) string {
	if opts.RelayTo != "" {
		return senderConfig(bin, root, port, opts.RelayTo)
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by moat/internal/eximtest.")
	b.WriteString(common(bin, root, Hostname, port))
	p("qualify_domain = %s", Domain)
	// No STARTTLS: Exim would offer it with a self-signed certificate made
	// up at start, and the tests that need TLS set it up themselves.
	p("tls_advertise_hosts =")
	p("smtp_banner = $smtp_active_hostname ESMTP Exim $version_number")
	// Deliver every message at once: by default the eleventh message of
	// one connection is only queued, for a queue runner to find later.
	p("smtp_accept_queue_per_connection = 0")
	p("smtp_accept_max = 0")
	if opts.MessageSizeLimit != 0 {
		p("message_size_limit = %d", opts.MessageSizeLimit)
	}
	p("domainlist local_domains = %s", Domain)
	p("acl_smtp_mail = acl_mail")
	p("acl_smtp_rcpt = acl_rcpt")
	p("acl_smtp_data = acl_data")
	p("")
	p("begin acl")
	p("acl_mail:")
	if len(opts.DenySenders) > 0 {
		p("  deny senders = %s", exiList(opts.DenySenders))
	}
	p("  accept")
	p("acl_rcpt:")
	if len(opts.DeferRecipients) > 0 {
		p("  defer recipients = %s", exiList(opts.DeferRecipients))
	}
	if len(opts.DenyRecipients) > 0 {
		p("  deny recipients = %s", exiList(opts.DenyRecipients))
	}
	p("  accept domains = +local_domains")
	p("  deny message = relay not permitted")
	p("acl_data:")
	if opts.DenySubject != "" {
		// \N…\N quotes the text literally in Exim's string expansion.
		p(`  deny condition = ${if match{$h_subject:}{\N\Q%s\E\N}}`, opts.DenySubject)
	}
	p("  accept")
	p("")
	p("begin routers")
	p("maildir:")
	p("  driver = accept")
	p("  domains = +local_domains")
	p("  transport = maildir")
	p("")
	p("begin transports")
	p("maildir:")
	p("  driver = appendfile")
	p("  directory = %s", filepath.Join(root, "mail", "all"))
	p("  maildir_format = true")
	p("  create_directory = true")
	p("  delivery_date_add")
	p("  envelope_to_add")
	p("  return_path_add")
	p("  user = %s", User)
	p("  group = %s", User)
	return b.String()
}

// common returns the settings every instance has: paths, the listener,
// no lookups of the client, and a log that says what happened on the wire.
func common(bin, root, hostname string, port int) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("primary_hostname = %s", hostname)
	// Exim re-executes itself to deliver; the compiled-in path
	// (/usr/sbin/exim4) does not exist, since Exim is only unpacked.
	p("exim_path = %s", bin)
	p("spool_directory = %s", filepath.Join(root, "spool"))
	p("log_file_path = %s", filepath.Join(root, "log", "%slog"))
	p("pid_file_path = %s", filepath.Join(root, "exim.pid"))
	p("daemon_smtp_ports = %d", port)
	p("local_interfaces = 127.0.0.1")
	p("disable_ipv6 = true")
	// No reverse DNS of the client and no ident (RFC 1413) call back:
	// tests never touch the resolver or other ports.
	p("host_lookup =")
	p("rfc1413_hosts =")
	p("rfc1413_query_timeout = 0s")
	// Silences "Warning: purging the environment" on every start.
	p("keep_environment =")
	// A process started with -C that is not in Debian's trusted_configs
	// list runs as the Exim user once it re-executes itself ("exim user
	// lost privilege for using -C option"), so it cannot switch to another
	// user to deliver. Dropping privilege for every delivery makes that the
	// rule instead of a surprise, and the transport runs as the Exim user.
	p("deliver_drop_privilege = true")
	// Bounces nobody can receive are discarded instead of frozen.
	p("ignore_bounce_errors_after = 0s")
	return b.String()
}

// senderConfig is the configuration of a sending instance
// (Options.RelayTo).
func senderConfig(bin, root string, port int, relayTo string) string {
	host, relayPort, err := net.SplitHostPort(relayTo)
	if err != nil {
		host, relayPort = relayTo, "25"
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by moat/internal/eximtest (sending instance).")
	b.WriteString(common(bin, root, SenderHostname, port))
	p("qualify_domain = %s", SenderHostname)
	p("tls_advertise_hosts =")
	// Delivery lines name the TLS version and cipher (X=), whether the
	// certificate was verified (CV=), the server's reply to the message
	// (C=), its port, and K when the message went by BDAT; connection
	// lines count the messages sent over each connection.
	p("log_selector = +tls_cipher +tls_certificate_verified +smtp_confirmation +outgoing_port +smtp_connection +pipelining +millisec")
	p("domainlist local_domains =")
	p("acl_smtp_rcpt = acl_rcpt")
	p("")
	p("begin acl")
	p("acl_rcpt:")
	// Mail submitted over SMTP from loopback is relayed like the rest.
	p("  accept hosts = 127.0.0.1")
	p("  deny")
	p("")
	p("begin routers")
	p("relay:")
	p("  driver = manualroute")
	p("  route_list = * %s", host)
	// The relay is this very machine: send to it anyway.
	p("  self = send")
	p("  transport = relay_smtp")
	p("  no_more")
	p("")
	p("begin transports")
	p("relay_smtp:")
	p("  driver = smtp")
	p("  port = %s", relayPort)
	p("  allow_localhost")
	p("  hosts_try_chunking = *")
	p("")
	p("begin retry")
	p("* * F,1h,10m")
	return b.String()
}

// exiList joins addresses into an Exim address list; a colon, the list
// separator, is doubled.
func exiList(addrs []string) string {
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = strings.ReplaceAll(a, ":", "::")
	}
	return strings.Join(quoted, " : ")
}

// awaitGreeting connects until Exim answers with 220, the daemon exits or
// the timeout ends.
func (e *Exim) awaitGreeting(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := e.probe(deadline)
		if err == nil {
			return nil
		}
		select {
		case <-e.done:
			return fmt.Errorf("daemon exited (%v)", e.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(mtatest.PollInterval)
	}
}

// probe makes one connection, reads the 220 greeting and says QUIT.
func (e *Exim) probe(deadline time.Time) error {
	c, err := net.DialTimeout("tcp", e.Addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading greeting: %v", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	for len(line) > 3 && line[3] == '-' {
		if line, err = r.ReadString('\n'); err != nil {
			return nil
		}
	}
	if _, err := c.Write([]byte("QUIT\r\n")); err == nil {
		_, _ = r.ReadString('\n')
	}
	return nil
}

// Sendmail submits msg (a complete message, header and body, with LF
// line endings) from the envelope sender from to the recipients to, as a
// local program would: exim -bm with -oi, so a line holding a single dot
// is just text, and -odq, so the message is only queued; RunQueue
// delivers it.
func (e *Exim) Sendmail(t testing.TB, from string, to []string, msg []byte) {
	t.Helper()
	args := append([]string{"-C", e.conf, "-odq", "-oi", "-f", from, "--"}, to...)
	cmd := exec.Command(e.bin, args...)
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("eximtest: exim %v: %v\n%s", args, err, out)
	}
}

// RunQueue runs one queue runner over every queued message, whatever its
// retry time (-qqff: forced, frozen ones too, in two passes so that
// messages for one host share a connection), and returns when it and
// every delivery process it started have finished, with what they wrote
// on stdout and stderr. debug, when not empty, is a -d selector
// ("+transport") whose output, the SMTP dialogue among it, is part of
// what RunQueue returns.
//
// A delivery that hands its connection on to the next message for the
// same host does so through a double fork, so that process is not the
// runner's child: RunQueue waits for the runner's whole process group.
func (e *Exim) RunQueue(t testing.TB, debug string) string {
	t.Helper()
	args := []string{"-C", e.conf, "-qqff"}
	if debug != "" {
		args = append(args, "-d"+debug)
	}
	cmd := exec.Command(e.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("eximtest: exim %v: %v\n%s", args, err, out)
	}
	if pgid := cmd.Process.Pid; !mtatest.WaitFor(time.Minute, func() bool { return !mtatest.GroupAlive(pgid) }) {
		t.Fatalf("eximtest: processes of the queue run %d still alive after a minute", pgid)
	}
	return string(out)
}

// Queued returns the number of messages in the instance's queue (-bpc).
func (e *Exim) Queued(t testing.TB) int {
	t.Helper()
	out, err := exec.Command(e.bin, "-C", e.conf, "-bpc").CombinedOutput()
	if err != nil {
		t.Fatalf("eximtest: exim -bpc: %v\n%s", err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("eximtest: exim -bpc: %q", out)
	}
	return n
}

// Stop stops the instance now: SIGTERM to the daemon's process group, then,
// if any process of it is still alive after 5s, SIGKILL. Open SMTP sessions
// are cut. Stop is idempotent; the test's cleanup calls it too. Messages
// and Log keep working after Stop until the test ends.
func (e *Exim) Stop(t testing.TB) {
	t.Helper()
	if err := e.shutdown(); err != nil {
		t.Errorf("eximtest: stopping %s: %v", e.Addr, err)
	}
}

// shutdown is Stop without a testing.TB.
func (e *Exim) shutdown() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || e.cmd == nil {
		e.stopped = true
		return nil
	}
	e.stopped = true
	pgid := e.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	gone := func() bool {
		select {
		case <-e.done:
			return !mtatest.GroupAlive(pgid)
		default:
			return false
		}
	}
	if mtatest.WaitFor(5*time.Second, gone) {
		return nil
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if mtatest.WaitFor(5*time.Second, gone) {
		return nil
	}
	return fmt.Errorf("processes of exim daemon %d still alive after SIGKILL", pgid)
}

// Messages returns the full contents of the messages delivered so far, in
// delivery order (file modification time, then file name).
func (e *Exim) Messages(t testing.TB) [][]byte {
	t.Helper()
	msgs, err := e.messages()
	if err != nil {
		t.Fatalf("eximtest: %v", err)
	}
	return msgs
}

func (e *Exim) messages() ([][]byte, error) { return mtatest.ReadMaildir(e.MailDir) }

// WaitMessages waits until at least n messages have been delivered and
// returns all delivered messages as Messages does. It fails the test, with
// what it found and the end of the mainlog, if that takes longer than
// timeout.
func (e *Exim) WaitMessages(t testing.TB, n int, timeout time.Duration) [][]byte {
	t.Helper()
	var msgs [][]byte
	var err error
	if mtatest.WaitFor(timeout, func() bool {
		msgs, err = e.messages()
		return err != nil || len(msgs) >= n
	}) && err == nil {
		return msgs
	}
	if err != nil {
		t.Fatalf("eximtest: %v", err)
	}
	t.Fatalf("eximtest: %d of %d messages delivered to %s after %v; mainlog ends:\n%s",
		len(msgs), n, e.MailDir, timeout, mtatest.LastLines(e.readLog(), 30))
	return nil
}

// Log returns the instance's mainlog as it is now.
func (e *Exim) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.logDir, "mainlog"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("eximtest: %v", err)
	}
	return string(b)
}

// WaitLog waits until the mainlog contains substr and returns the whole
// log: delivery lines are written by a process forked after the SMTP reply.
// It fails the test with the log if substr does not appear within timeout.
func (e *Exim) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	var log string
	if mtatest.WaitFor(timeout, func() bool {
		log = e.readLog()
		return strings.Contains(log, substr)
	}) {
		return log
	}
	t.Fatalf("eximtest: mainlog lacks %q after %v:\n%s", substr, timeout, log)
	return ""
}

// readLog returns the mainlog, or "" when it cannot be read.
func (e *Exim) readLog() string {
	b, _ := os.ReadFile(filepath.Join(e.logDir, "mainlog"))
	return string(b)
}

// errorOutput returns what the daemon said on stderr and in its panic and
// main logs, for a start that failed.
func (e *Exim) errorOutput() string {
	var b strings.Builder
	for _, f := range []string{e.stderrFile, filepath.Join(e.logDir, "paniclog"), filepath.Join(e.logDir, "mainlog")} {
		if text, err := os.ReadFile(f); err == nil && len(text) > 0 {
			fmt.Fprintf(&b, "%s:\n%s\n", filepath.Base(f), mtatest.LastLines(string(text), 20))
		}
	}
	return b.String()
}
