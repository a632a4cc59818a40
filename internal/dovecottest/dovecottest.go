// Package dovecottest starts a throwaway real Dovecot for tests, as the
// SASL server that checks the passwords of SMTP AUTH.
//
// moat relays AUTH PLAIN and AUTH LOGIN to its upstream Postfix, and Postfix
// does not check passwords itself: smtpd(8) hands the SASL exchange to
// Dovecot's auth service over a Unix socket (smtpd_sasl_type = dovecot).
// Start runs a private Dovecot (Debian 12's dovecot-core 2.3, as root) with
// only that service — no IMAP or POP3 listener, protocols is empty — its own
// base_dir, state_dir and log file under a short temp dir in /tmp, and a
// passwd-file of the test's users with plaintext passwords. Point a Postfix
// at it with postfixtest.Options{SASLPath: d.SocketPath}.
//
// Its own base_dir keeps it apart from a system Dovecot that the package's
// init script may have started: sockets, pid file and the master's lock all
// live there.
//
// The Dovecot auth protocol, which the harness speaks itself for its
// readiness probe and for Auth, is line based: after connecting, the client
// sends "VERSION\t1\t2" and "CPID\t<pid>", the server sends its VERSION, one
// MECH line per mechanism, SPID, CUID, COOKIE and DONE; then each
// "AUTH\t<id>\t<mech>\t<fields>…\tresp=<base64>" is answered by
// "OK\t<id>\t…" or "FAIL\t<id>\t…".
//
// Timing a test should expect of Dovecot 2.3.19: a successful
// authentication is answered at once; a failed one about 0.5 s later. With
// auth_failure_delay = 0 the failure is not held for the default 2 s, but it
// still waits in the failure queue, which is checked every 500 ms (later
// versions answer at once). Dovecot's per-IP authentication penalty, which
// would delay every later attempt from 127.0.0.1 — successful ones too — by
// 4, 8, then 15 s after failures, is switched off (see config).
package dovecottest

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"moat/internal/mtatest"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Dovecot is one running instance. Its methods may be called from several
// goroutines. Log, WaitLog and Failures read the log file, which Dovecot's
// log process writes asynchronously: a line can appear a moment after the
// reply it belongs to.
type Dovecot struct {
	// SocketPath is the absolute path of the auth service's Unix socket,
	// mode 0666 so that Postfix's smtpd (user postfix) may connect; give
	// it to Postfix as smtpd_sasl_path.
	SocketPath string
	// Dir is the instance's temp root; it holds dovecot.conf, the users
	// file, run/ (base_dir), state/ and dovecot.log, and is removed when
	// the test ends.
	Dir string

	out        mtatest.Output
	logFile    string
	stderrFile string
	sentinels  atomic.Int64 // sentinel users Failures has used

	mu      sync.Mutex
	daemon  *mtatest.Daemon
	stopped bool
}

// Start starts a Dovecot auth service for the test that knows users (name
// → plaintext password) and stops it, removing its directory, when the test
// ends; the end of its log goes to the test log when the test failed. It
// fails the test with Dovecot's own output when Dovecot is missing, the
// test does not run as root, or the service does not answer within 10 s.
// Names and passwords may not hold ':' or control characters (the
// passwd-file format), nor names spaces.
//
// When Start returns, the auth process has already completed one protocol
// handshake (the readiness probe) and answered no authentication.
func Start(t testing.TB, users map[string]string) *Dovecot {
	t.Helper()
	bin := dovecotCommand(t)
	for name, pass := range users {
		if err := checkUser(name, pass); err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
	}
	d := mtatest.StartRetrying(t, "dovecottest", func() (*Dovecot, error) { return start(bin, users) })
	mtatest.Cleanup(t, d.out, d.Dir, d.Stop)
	return d
}

// dovecotCommand returns the dovecot command, failing the test when
// Dovecot is missing or the test does not run as root.
func dovecotCommand(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		// /usr/sbin is often missing from a non-login PATH.
		bin = "/usr/sbin/dovecot"
		if _, err := os.Stat(bin); err != nil {
			t.Fatal("dovecottest: dovecot is not installed; run scripts/install-test-deps.sh")
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("dovecottest: a private Dovecot must be started as root")
	}
	return bin
}

// checkUser refuses what the passwd-file could not hold.
func checkUser(name, pass string) error {
	bad := func(s string) bool {
		return strings.ContainsFunc(s, func(r rune) bool { return r == ':' || r < ' ' || r == 0x7f })
	}
	if name == "" || bad(name) || strings.ContainsAny(name, " ") {
		return fmt.Errorf("user name %q: want no ':', space or control characters", name)
	}
	if bad(pass) {
		return fmt.Errorf("password of %q: want no ':' or control characters", name)
	}
	return nil
}

// start writes the configuration and users of one instance, starts it and
// waits until the auth service answers. On error nothing of the instance
// is left.
func start(bin string, users map[string]string) (d *Dovecot, err error) {
	// Not t.TempDir: its path can exceed the 108 bytes a Unix socket path
	// may have. mtatest.TempDir's 0755 lets the auth process (user dovecot)
	// reach the users file below it.
	root, err := mtatest.TempDir("dc")
	if err != nil {
		return nil, err
	}
	d = &Dovecot{
		SocketPath: filepath.Join(root, "run", "auth-postfix"),
		Dir:        root,
		logFile:    filepath.Join(root, "dovecot.log"),
		stderrFile: filepath.Join(root, "dovecot.stderr"),
	}
	d.out = mtatest.NewOutput("dovecottest", "", d.logFile, "dovecot.log")
	defer func() {
		if err != nil {
			err = errors.Join(err, d.shutdown(), mtatest.RemoveAll(root))
		}
	}()
	for _, dir := range []string{"run", "state"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
			return d, err
		}
	}
	usersFile := filepath.Join(root, "users")
	if err := os.WriteFile(usersFile, []byte(passwdFile(users)), 0o644); err != nil {
		return d, err
	}
	conf := filepath.Join(root, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(config(root, usersFile)), 0o644); err != nil {
		return d, err
	}
	stderr, err := os.Create(d.stderrFile)
	if err != nil {
		return d, err
	}
	defer stderr.Close()
	// -F: the master stays in the foreground as our child, so it can be
	// waited for; its process group holds every process it spawns (log,
	// config, anvil, auth, stats), so Stop can signal them all. Errors
	// found before log_path is open go to stderr.
	cmd := exec.Command(bin, "-F", "-c", conf)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	dm, err := mtatest.StartDaemon(cmd)
	if err != nil {
		return d, err
	}
	d.mu.Lock()
	d.daemon = dm
	d.mu.Unlock()

	if err := awaitAuth(d.SocketPath, dm, 10*time.Second); err != nil {
		return d, fmt.Errorf("dovecot -F -c %s: auth service does not answer on %s: %v\n%s",
			conf, d.SocketPath, err, mtatest.Tails(20, d.stderrFile, d.logFile))
	}
	return d, nil
}

// passwdFile returns the passwd-file of users, sorted by name so the file
// is the same for the same users.
func passwdFile(users map[string]string) string {
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "%s:{PLAIN}%s\n", name, users[name])
	}
	return b.String()
}

// config returns the instance's dovecot.conf. Nothing of /etc/dovecot is
// included: Debian's conf.d would add protocols, SSL certificates and
// mail settings the auth service does not need.
func config(root, usersFile string) string {
	return `# Written by moat/internal/dovecottest.
# The auth service only: no IMAP, POP3 or LMTP listeners.
protocols =
base_dir = ` + filepath.Join(root, "run") + `
state_dir = ` + filepath.Join(root, "state") + `
log_path = ` + filepath.Join(root, "dovecot.log") + `

# moat talks to Postfix in plaintext on loopback, and Postfix passes the
# credentials on as they came; Dovecot would otherwise refuse PLAIN and
# LOGIN on a connection it does not know to be secure.
disable_plaintext_auth = no
auth_mechanisms = plain login
# Log every failed authentication (one line per attempt: "Password
# mismatch" or "unknown user"); Failures counts them.
auth_verbose = yes
# The default 2 s delay of every failed authentication, against brute
# force, would make each failing test step 2 s slower.
auth_failure_delay = 0

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ` + usersFile + `
}
# No userdb: Postfix only authenticates; nobody logs in to a mailbox.

service auth {
  # For Postfix's smtpd, which runs as user postfix.
  unix_listener auth-postfix {
    mode = 0666
  }
}

# The authentication penalty: anvil remembers failures per client IP, and
# the auth process then delays every later request from that IP (all of
# moat's come from 127.0.0.1), successful ones too, by 4, 8, up to 15 s.
# Mode 0 leaves this listener out; the auth process, finding no socket,
# disables the penalty (silently: a missing socket is not logged).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`
}

// awaitAuth probes the auth socket until the auth service completes a
// handshake, the master exits or the timeout ends. The socket appears when
// the master binds it; the auth process behind it is spawned on the first
// connection, so only a handshake proves the service works.
func awaitAuth(path string, dm *mtatest.Daemon, timeout time.Duration) error {
	var err error
	if mtatest.WaitFor(timeout, func() bool {
		var c *authConn
		if c, err = dialAuth(path, time.Now().Add(time.Second)); err == nil {
			c.Close()
			return true
		}
		if !mtatest.GroupAlive(dm.Pid()) {
			err = fmt.Errorf("dovecot exited (%v)", err)
			return true
		}
		return false
	}) && err == nil {
		return nil
	}
	return err
}

// authConn is a client connection to the auth service, after the
// handshake.
type authConn struct {
	net.Conn
	r *bufio.Reader
}

// dialAuth connects to the auth socket and does the handshake, all before
// deadline.
func dialAuth(path string, deadline time.Time) (*authConn, error) {
	nc, err := net.DialTimeout("unix", path, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	c := &authConn{Conn: nc, r: bufio.NewReader(nc)}
	if err := c.handshake(deadline); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *authConn) handshake(deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return err
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("auth handshake: %v", err)
		}
		if line == "DONE\n" {
			return nil
		}
	}
}

// Auth asks the auth service directly, as Postfix would (mechanism PLAIN,
// service smtp, client 127.0.0.1), whether pass is user's password. It
// fails the test when the service does not answer within 10 s. A refusal
// is logged and counted by Failures like one that came through Postfix.
func (d *Dovecot) Auth(t testing.TB, user, pass string) bool {
	t.Helper()
	ok, err := d.auth(user, pass)
	if err != nil {
		t.Fatalf("dovecottest: AUTH %s on %s: %v", user, d.SocketPath, err)
	}
	return ok
}

func (d *Dovecot) auth(user, pass string) (bool, error) {
	c, err := dialAuth(d.SocketPath, time.Now().Add(10*time.Second))
	if err != nil {
		return false, err
	}
	defer c.Close()
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if _, err := fmt.Fprintf(c, "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\tresp=%s\n", resp); err != nil {
		return false, err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return false, err
	}
	switch {
	case strings.HasPrefix(line, "OK\t1\t"), line == "OK\t1\n":
		return true, nil
	case strings.HasPrefix(line, "FAIL\t1"):
		return false, nil
	}
	return false, fmt.Errorf("unexpected answer %q", strings.TrimSpace(line))
}

// Log returns the instance's log as it is now.
func (d *Dovecot) Log(t testing.TB) string {
	t.Helper()
	return d.out.Log(t)
}

// WaitLog waits until the log contains substr and returns the whole log.
// It fails the test with the end of the log if substr does not appear
// within timeout.
func (d *Dovecot) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	return d.out.WaitLog(t, substr, timeout)
}

// failureLine matches the one line auth_verbose logs for an
// authentication the passdb refused, whatever the mechanism:
//
//	auth: Info: passwd-file(alice,127.0.0.1): Password mismatch
//	auth: Info: passwd-file(bob,127.0.0.1): unknown user
//
// The first group is the user name as the client gave it.
var failureLine = regexp.MustCompile(`(?m) auth: Info: passwd-file\(([^,)]*)(?:,[^)]*)?\): (?:Password mismatch|unknown user)`)

// sentinelPrefix starts the user names Failures authenticates as.
const sentinelPrefix = "dovecottest-sentinel-"

// Failures returns the number of authentications the passdb has refused so
// far — Postfix's and Auth's; one line per attempt, matched by
// failureLine — exactly: a failed attempt that was answered before
// Failures was called is counted, even though its log line is written
// asynchronously. To make sure of that, Failures makes a failing
// authentication of its own (a sentinel user, not counted) and waits until
// its line is in the log: the auth process logs its lines in order through
// the one log process, so every earlier line is there too. That costs
// about 0.5 s (see the package doc). A test proving that the upstream saw
// no more attempts after some point compares two Failures counts.
func (d *Dovecot) Failures(t testing.TB) int {
	t.Helper()
	sentinel := fmt.Sprintf("%s%d", sentinelPrefix, d.sentinels.Add(1))
	if d.Auth(t, sentinel, "x") {
		t.Fatalf("dovecottest: the sentinel user %s was accepted", sentinel)
	}
	log := d.WaitLog(t, "passwd-file("+sentinel+",", 10*time.Second)
	n := 0
	for _, m := range failureLine.FindAllStringSubmatch(log, -1) {
		if !strings.HasPrefix(m[1], sentinelPrefix) {
			n++
		}
	}
	return n
}

// Stop stops the instance now: SIGTERM to the master's process group, then
// SIGKILL to it if any process is still alive after 5 s. Stop is
// idempotent; the test's cleanup calls it too. Log keeps working after
// Stop until the test ends.
func (d *Dovecot) Stop(t testing.TB) {
	t.Helper()
	if err := d.shutdown(); err != nil {
		t.Errorf("dovecottest: stopping %s: %v", d.Dir, err)
	}
}

// shutdown is Stop without a testing.TB.
func (d *Dovecot) shutdown() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.daemon == nil {
		d.stopped = true
		return nil
	}
	d.stopped = true
	return d.daemon.StopGroup("dovecot")
}
