// Package postfixtest starts a throwaway real Postfix for integration tests.
//
// moat's end-to-end tests put a real MTA behind the proxy, because the
// behaviour that matters — how an unpatched server frames DATA, what it logs
// about the client, how it answers XCLIENT or a PROXY header — cannot be
// faked convincingly. Start runs a private Postfix instance (Debian 12's
// postfix 3.7, as root) with its own configuration, queue, data and mail
// directories under a short temp dir in /tmp, listening on a free loopback
// port. Every recipient of the domain example.net is delivered by virtual(8)
// into one Maildir the test can read; mail to any other domain bounces
// through the error transport, so nothing ever leaves the machine. Logging
// goes to a plain file (maillog_file), not syslog.
//
// The instance deliberately keeps Postfix's legacy defaults where they
// matter to moat's tests: smtpd_forbid_bare_newline stays "no", so this
// Postfix accepts <LF>.<CR><LF> and friends as end of DATA and is exactly the
// vulnerable server the SMTP smuggling tests need behind the proxy.
//
// Delivery is asynchronous (smtpd queues, qmgr schedules, virtual writes the
// file), so tests wait for messages and log lines with WaitMessages and
// WaitLog instead of sleeping.
package postfixtest

import (
	"bytes"
	"errors"
	"fmt"
	"moat/internal/mtatest"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Domain is the only domain the instance delivers; every recipient in it
// lands in the one Maildir.
const Domain = "example.net"

// Hostname is the instance's myhostname; it appears in the greeting
// ("220 upstream.test ESMTP") and in the Received: header Postfix adds.
const Hostname = "upstream.test"

// nobody is the uid and gid virtual(8) delivers as (nobody/nogroup on Debian).
const nobody = 65534

// Options selects the optional features of an instance.
type Options struct {
	// XClient lets loopback clients send XCLIENT
	// (smtpd_authorized_xclient_hosts = 127.0.0.0/8). Postfix answers a
	// successful XCLIENT with a fresh 220 greeting, after which the client
	// must send EHLO again.
	XClient bool
	// ProxyProtocol makes smtpd expect a HAProxy PROXY v1 header on every
	// connection (smtpd_upstream_proxy_protocol = haproxy); clients that do
	// not send one get no greeting.
	ProxyProtocol bool
	// MessageSizeLimit sets message_size_limit in bytes (advertised as
	// SIZE); 0 keeps Postfix's default of 10240000.
	MessageSizeLimit int64
	// RelayTo, when not empty, makes the instance a sending MTA — a real
	// SMTP client for the server at RelayTo ("127.0.0.1:PORT") — instead of
	// the test's upstream. Nothing is delivered locally (mydestination and
	// virtual_mailbox_domains are empty): every message, whatever its
	// domain, goes by smtp(8) to relayhost = [RelayTo], brackets so no DNS
	// is ever asked. The client is Postfix's default one — PIPELINING,
	// STARTTLS when offered (smtp_tls_security_level = may, not verified),
	// no BDAT (Postfix's SMTP client has no CHUNKING support) — with the
	// connection cache always on for RelayTo, TLS connections included
	// (smtp_tls_connection_reuse = yes, through tlsproxy(8)), and
	// smtp_tls_loglevel = 1, so the maillog says "TLS connection
	// established" per connection and "conn_use=N" per message sent over
	// a reused one. Inject mail with Sendmail; retry deferred mail now with
	// Flush. The instance's own smtpd still listens on Addr.
	RelayTo string
	// SASLPath, when not empty, turns on SMTP AUTH: smtpd offers AUTH
	// PLAIN LOGIN (whatever the SASL server offers) and hands every
	// exchange to the Dovecot auth service listening on this Unix socket
	// (an absolute path: smtpd runs without chroot here); start one with
	// dovecottest. AUTH is offered without TLS, since moat talks to the
	// instance in plaintext on loopback. The maillog's line of an
	// authenticated session's message carries "sasl_method=PLAIN,
	// sasl_username=alice"; a failed AUTH is answered "535 5.7.8 Error:
	// authentication failed: …" and logged once as "warning:
	// unknown[127.0.0.1]: SASL PLAIN authentication failed: …". Each failure
	// counts as an error of the session: after smtpd_hard_error_limit (20)
	// of them smtpd says 421 and hangs up. smtpd_error_sleep_time is 0, so
	// the replies after smtpd_soft_error_limit (10) errors are not delayed
	// by 1 s each; a failed AUTH still takes about 0.5 s, Dovecot's
	// (see dovecottest).
	SASLPath string
	// ExtraMainCF holds extra "key = value" lines for main.cf. A key given
	// here replaces postfixtest's own setting of that key; lines that start
	// with white space continue the previous line, as in main.cf.
	ExtraMainCF []string
}

// SenderHostname is the myhostname of an instance started with
// Options.RelayTo; it is the name in its EHLO.
const SenderHostname = "sender.test"

// Postfix is one running instance. Its methods may be called from several
// goroutines. Messages and WaitMessages read MailDir; Log and WaitLog read
// the maillog, where daemons log through postlogd asynchronously, so a line
// can appear a moment after the SMTP reply it belongs to.
type Postfix struct {
	// Addr is the "127.0.0.1:PORT" address of its smtpd.
	Addr string
	// Dir is the instance's temp root; it holds conf/, spool/, data/, mail/
	// and the maillog, and is removed when the test ends.
	Dir string
	// MailDir is the Maildir every example.net recipient is delivered to;
	// finished messages appear in MailDir/new. virtual(8) writes one file per
	// recipient, with LF line endings and Return-Path:, X-Original-To:,
	// Delivered-To: and Postfix's Received: prepended. For clients at
	// 127.0.0.1 (local_header_rewrite_clients) cleanup also adds a missing
	// Message-Id: and Date:, and rewrites unqualified addresses.
	MailDir string

	mtatest.Output

	bin     string // the postfix command
	confDir string
	logFile string

	mu      sync.Mutex
	pid     int  // master process id, also its process group id; 0 before start
	stopped bool // Stop has run
}

// Start starts a Postfix instance for the test on a free loopback port and
// stops it (and removes its directories) when the test ends. It fails the
// test with Postfix's own error output when the instance cannot start or does
// not greet within a few seconds. Start needs root and an installed Postfix
// (scripts/install-test-deps.sh installs it).
//
// When Start returns, smtpd has already answered one connection with 220 (the
// readiness probe), so the maillog begins with a connect/disconnect from
// 127.0.0.1 that carries no transaction.
func Start(t testing.TB, opts Options) *Postfix {
	t.Helper()
	bin := postfixCommand(t)
	p := mtatest.StartRetrying(t, "postfixtest", func() (*Postfix, error) { return start(bin, opts) })
	mtatest.Cleanup(t, p.Output, p.Dir, p.Stop)
	return p
}

// postfixCommand returns the postfix command, failing the test when Postfix
// is missing or the test does not run as root.
func postfixCommand(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("postfix")
	if err != nil {
		// /usr/sbin is often missing from a non-login PATH.
		bin = "/usr/sbin/postfix"
		if _, err := os.Stat(bin); err != nil {
			t.Fatal("postfixtest: postfix is not installed; run scripts/install-test-deps.sh")
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("postfixtest: a private Postfix instance must be started as root")
	}
	return bin
}

// start creates the directories and configuration of one instance, starts it
// and waits for its greeting. On error nothing of the instance is left.
func start(bin string, opts Options) (p *Postfix, err error) {
	postfixUID, _, err := mtatest.UserIDs("postfix")
	if err != nil {
		return nil, fmt.Errorf("%v (is Postfix installed?)", err)
	}
	// Not t.TempDir: its path can exceed the 108 bytes a Unix socket path
	// (spool/private/…, spool/public/…) may have. Daemons running as
	// postfix and nobody must be able to reach their directories below it.
	pl, err := mtatest.NewPlace("pf")
	if err != nil {
		return nil, err
	}
	root := pl.Dir
	p = &Postfix{
		Addr:    pl.Addr,
		Dir:     root,
		MailDir: pl.MailDir,
		Output:  mtatest.NewOutput("postfixtest", pl.MailDir, filepath.Join(root, "maillog"), "maillog"),
		bin:     bin,
		confDir: filepath.Join(root, "conf"),
		logFile: filepath.Join(root, "maillog"),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.shutdown(), mtatest.RemoveAll(root))
		}
	}()

	dirs := []struct {
		name     string
		uid, gid int // -1: keep root
	}{
		{"conf", -1, -1},
		{"spool", -1, -1}, // queue_directory; postfix start creates its subdirectories
		{"data", postfixUID, -1},
		{"mail", nobody, nobody},
	}
	for _, d := range dirs {
		dir := filepath.Join(root, d.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return p, err
		}
		if err := os.Chown(dir, d.uid, d.gid); err != nil {
			return p, err
		}
	}
	if err := writeConfig(filepath.Join(p.confDir, "main.cf"), mainCF(root, opts)); err != nil {
		return p, err
	}
	if err := writeConfig(filepath.Join(p.confDir, "master.cf"), masterCF(p.Addr, opts.RelayTo != "")); err != nil {
		return p, err
	}

	if out, err := p.command("start"); err != nil {
		log := mtatest.ReadLog(p.logFile)
		if strings.Contains(log, "Address already in use") {
			return p, fmt.Errorf("postfix start on %s: %w", p.Addr, mtatest.ErrPortTaken)
		}
		return p, fmt.Errorf("postfix -c %s start: %v\n%s\nmaillog:\n%s", p.confDir, err, out, log)
	}
	pid, err := readPid(filepath.Join(root, "spool", "pid", "master.pid"))
	if err != nil {
		return p, fmt.Errorf("postfix started but %v\nmaillog:\n%s", err, mtatest.ReadLog(p.logFile))
	}
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()

	// master binds the port before postfix start returns, but smtpd is
	// spawned only for the first connection.
	if err := mtatest.AwaitGreeting(p.Addr, opts.ProxyProtocol, 10*time.Second); err != nil {
		return p, fmt.Errorf("postfix on %s does not greet: %v\nmaillog:\n%s", p.Addr, err, mtatest.ReadLog(p.logFile))
	}
	return p, nil
}

// writeConfig writes a configuration file dated one hour back. Postfix
// distrusts a file modified within the last second or so — it may still be
// being written — and re-reads it every 300ms until its mtime is old enough,
// which would cost every command and daemon about two seconds.
func writeConfig(path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	old := time.Now().Add(-time.Hour)
	return os.Chtimes(path, old, old)
}

// mainCF returns the instance's main.cf.
func mainCF(root string, opts Options) string {
	params := [][2]string{
		{"compatibility_level", "3.6"},
		{"config_directory", filepath.Join(root, "conf")},
		{"queue_directory", filepath.Join(root, "spool")},
		{"data_directory", filepath.Join(root, "data")},
		{"myhostname", Hostname},
		{"smtpd_banner", "$myhostname ESMTP"},
		{"inet_interfaces", "127.0.0.1"},
		{"inet_protocols", "ipv4"},
		{"mynetworks", "127.0.0.0/8"},
		// Nothing is local and nothing is relayed: example.net goes to the
		// Maildir, everything else bounces without touching the network.
		{"mydestination", ""},
		{"relayhost", ""},
		{"default_transport", "error"},
		{"relay_transport", "error"},
		{"smtp_dns_support_level", "disabled"},
		{"smtpd_peername_lookup", "no"},
		// The Debian default (hash:/etc/aliases, nis:mail.aliases) only
		// produces NIS warnings here.
		{"alias_maps", ""},
		{"alias_database", ""},
		{"virtual_mailbox_domains", Domain},
		{"virtual_mailbox_base", filepath.Join(root, "mail")},
		// Every recipient → Maildir all/ (a regexp map with $1 is refused by
		// virtual(8)).
		{"virtual_mailbox_maps", "static:all/"},
		{"virtual_uid_maps", "static:" + strconv.Itoa(nobody)},
		{"virtual_gid_maps", "static:" + strconv.Itoa(nobody)},
		// virtual(8) refuses to run when this is below message_size_limit;
		// a test Maildir needs no quota.
		{"virtual_mailbox_limit", "0"},
		// Without this, cleanup pauses up to 1s per message when tests send
		// faster than the queue manager delivers.
		{"in_flow_delay", "0s"},
		{"maillog_file", filepath.Join(root, "maillog")},
		{"maillog_file_prefixes", root},
	}
	if opts.XClient {
		params = append(params, [2]string{"smtpd_authorized_xclient_hosts", "127.0.0.0/8"})
	}
	if opts.ProxyProtocol {
		params = append(params, [2]string{"smtpd_upstream_proxy_protocol", "haproxy"})
	}
	if opts.MessageSizeLimit != 0 {
		params = append(params, [2]string{"message_size_limit", strconv.FormatInt(opts.MessageSizeLimit, 10)})
	}
	if opts.SASLPath != "" {
		params = append(params, saslParams(opts.SASLPath)...)
	}
	if opts.RelayTo != "" {
		params = append(params, relayParams(opts.RelayTo)...)
	}

	// Postfix would take the last of two settings but warns about the
	// first; drop ours instead.
	overridden := map[string]bool{}
	for _, line := range opts.ExtraMainCF {
		if m := mainCFKey.FindStringSubmatch(line); m != nil {
			overridden[m[1]] = true
		}
	}
	// Of two settings of one key in params, the later wins.
	last := map[string]int{}
	for i, kv := range params {
		last[kv[0]] = i
	}
	var b strings.Builder
	b.WriteString("# Written by moat/internal/postfixtest.\n")
	for i, kv := range params {
		if !overridden[kv[0]] && last[kv[0]] == i {
			fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
		}
	}
	for _, line := range opts.ExtraMainCF {
		b.WriteString(strings.TrimRight(line, "\n"))
		b.WriteByte('\n')
	}
	return b.String()
}

// relayParams are the main.cf settings of a sending instance
// (Options.RelayTo); they replace the receiving ones of the same name.
func relayParams(relayTo string) [][2]string {
	host, port, err := net.SplitHostPort(relayTo)
	if err != nil {
		host, port = relayTo, "25"
	}
	nexthop := "[" + host + "]:" + port
	return [][2]string{
		{"myhostname", SenderHostname},
		{"virtual_mailbox_domains", ""},
		{"relayhost", nexthop},
		{"default_transport", "smtp"},
		{"relay_transport", "smtp"},
		{"smtp_tls_security_level", "may"},
		{"smtp_tls_loglevel", "1"},
		{"smtp_tls_connection_reuse", "yes"},
		{"smtp_connection_cache_destinations", nexthop},
	}
}

// saslParams are the main.cf settings of Options.SASLPath.
func saslParams(path string) [][2]string {
	return [][2]string{
		{"smtpd_sasl_auth_enable", "yes"},
		{"smtpd_sasl_type", "dovecot"},
		{"smtpd_sasl_path", path},
		// Postfix's defaults, spelt out because the tests rely on them:
		// no anonymous logins, and AUTH offered on plaintext connections
		// (moat relays it to this instance over loopback without TLS).
		{"smtpd_sasl_security_options", "noanonymous"},
		{"smtpd_tls_auth_only", "no"},
		// Tests that make many failed attempts in one session would
		// otherwise wait 1 s for every reply after the tenth error.
		{"smtpd_error_sleep_time", "0"},
	}
}

// mainCFKey matches the start of a main.cf "key = value" line.
var mainCFKey = regexp.MustCompile(`^([A-Za-z0-9_]+)\s*=`)

// masterCF returns the instance's master.cf: Debian's services without
// chroot (the temp dirs are not a chroot jail), without local delivery,
// with the smtpd listener bound to addr, the virtual delivery agent and the
// postlog service that maillog_file needs. The SMTP client (and tlsproxy,
// for reusing TLS connections) is there only in a sending instance.
func masterCF(addr string, sender bool) string {
	client := ""
	if sender {
		client = `smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
tlsproxy   unix  - - n -     0 tlsproxy
`
	}
	return client + addr + ` inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
tlsmgr     unix  - - n 1000? 1 tlsmgr
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
virtual    unix  - n n -     - virtual
postlog    unix-dgram n - n - 1 postlogd
`
}

// command runs "postfix -c CONF verb" and returns its output. postfix and
// postfix-script print errors to stderr only when it is a terminal (otherwise
// only to the log), so the command runs under script(1) when that exists.
func (p *Postfix) command(verb string) (string, error) {
	args := []string{p.bin, "-c", p.confDir, verb}
	var cmd *exec.Cmd
	if script, err := exec.LookPath("script"); err == nil {
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = mtatest.Shq(a)
		}
		cmd = exec.Command(script, "-eqc", strings.Join(quoted, " "), "/dev/null")
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	// A file, not a pipe: the master daemon that start leaves behind must not
	// hold our end open and keep Wait from returning.
	out, err := os.CreateTemp(p.Dir, "postfix-"+verb+"-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	text, err := os.ReadFile(out.Name())
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.ReplaceAll(string(text), "\r", "")), runErr
}

// Sendmail submits msg (a complete message, header and body, with LF or
// CRLF line endings) from the envelope sender from to the recipients to,
// as a local program would: Postfix's sendmail(1) with -C pointing at the
// instance's configuration and -i, so a line holding a single dot is just
// text. The message goes to the queue; pickup and the queue manager take it
// from there.
func (p *Postfix) Sendmail(t testing.TB, from string, to []string, msg []byte) {
	t.Helper()
	args := append([]string{"-C", p.confDir, "-i", "-f", from, "--"}, to...)
	cmd := exec.Command(filepath.Join(filepath.Dir(p.bin), "sendmail"), args...)
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postfixtest: sendmail %v: %v\n%s", args, err, out)
	}
}

// Flush asks the queue manager to attempt delivery of every queued
// message now, deferred ones included, whatever their retry time
// (postqueue -f). It returns at once; delivery is asynchronous.
func (p *Postfix) Flush(t testing.TB) {
	t.Helper()
	out, err := exec.Command(filepath.Join(filepath.Dir(p.bin), "postqueue"), "-c", p.confDir, "-f").CombinedOutput()
	if err != nil {
		t.Fatalf("postfixtest: postqueue -f: %v\n%s", err, out)
	}
}

// Queued returns the number of messages in the instance's queue, in any
// state (postqueue -j).
func (p *Postfix) Queued(t testing.TB) int {
	t.Helper()
	out, err := exec.Command(filepath.Join(filepath.Dir(p.bin), "postqueue"), "-c", p.confDir, "-j").Output()
	if err != nil {
		t.Fatalf("postfixtest: postqueue -j: %v\n%s", err, out)
	}
	return bytes.Count(out, []byte("\n"))
}

// Stop stops the instance now: SIGTERM to master through "postfix abort",
// then, if master or any process of its process group is still alive after
// 5s, SIGKILL to the group. Open
// SMTP sessions are cut. The maillog's last line is postfix-script's
// "aborting the Postfix mail system". Stop is idempotent; the test's cleanup
// calls it too.
// Messages and Log keep working after Stop until the test ends.
func (p *Postfix) Stop(t testing.TB) {
	t.Helper()
	if err := p.shutdown(); err != nil {
		t.Errorf("postfixtest: stopping %s: %v", p.Addr, err)
	}
}

// shutdown is Stop without a testing.TB.
func (p *Postfix) shutdown() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil
	}
	p.stopped = true
	if p.pid == 0 {
		// start failed before it read the pid file. A master that got as
		// far as writing one may still be running.
		pid, err := readPid(filepath.Join(p.Dir, "spool", "pid", "master.pid"))
		if err != nil {
			return nil
		}
		p.pid = pid
	}
	pid := p.pid
	if !mtatest.GroupAlive(pid) {
		return nil
	}
	// "postfix abort" sends master the same SIGTERM as "postfix stop", and
	// master passes it on to its process group, but it does not then wait:
	// stop checks for the master once right after the signal and, losing
	// that race as often as not, sleeps a whole second before checking
	// again. We poll instead. Its error (for one, "not running" when master
	// died on its own) is not ours to report.
	return mtatest.StopGroup("master", pid, func() { _, _ = p.command("abort") })
}

// readPid reads a Postfix pid file (the number padded with spaces).
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("bad pid file %s: %q", path, b)
	}
	return pid, nil
}

// Signal sends sig to every process of the instance (the master's process
// group: master, smtpd, cleanup, ...): SIGKILL to kill the server under a
// client, SIGSTOP and SIGCONT to stall and resume it. A stopped instance
// is resumed when the test ends, so that Stop can end it.
func (p *Postfix) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	pid := p.pid
	p.mu.Unlock()
	if pid == 0 {
		t.Fatalf("postfixtest: %s is not running", p.Addr)
	}
	if err := syscall.Kill(-pid, sig); err != nil {
		t.Fatalf("postfixtest: signal %v to %s: %v", sig, p.Addr, err)
	}
	if sig == syscall.SIGSTOP {
		t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGCONT) })
	}
}
