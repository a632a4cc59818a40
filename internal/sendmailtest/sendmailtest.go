// Package sendmailtest starts a throwaway real Sendmail for integration
// tests.
//
// Sendmail is one of the four real upstreams behind moat, next to Postfix
// (internal/postfixtest), Exim (internal/eximtest) and OpenSMTPD
// (internal/opensmtpdtest). Debian 12 ships Sendmail 8.17.1.9. It answers
// with enhanced status codes (RFC 2034), and most of its replies name the
// address they are about:
//
//	220 upstream.test ESMTP Sendmail 8.17.1.9/8.17.1.9; Sun, 6 Dec 2026 15:31:25 GMT
//	250-upstream.test Hello localhost [127.0.0.1], pleased to meet you
//	250-ENHANCEDSTATUSCODES
//	250-PIPELINING
//	250-EXPN
//	250-VERB
//	250-8BITMIME
//	250-SIZE
//	250-DSN
//	250-ETRN
//	250-DELIVERBY
//	250 HELP
//	MAIL → 250 2.1.0 <ana@client.test>... Sender ok
//	RCPT → 250 2.1.5 <bo@example.net>... Recipient ok
//	DATA → 354 End data with <CR><LF>.<CR><LF>
//	dot  → 250 2.0.0 6B6FVPVw010332 Message accepted for delivery
//	QUIT → 221 2.0.0 upstream.test closing connection
//	other domain at RCPT → 550 5.7.1 <x@elsewhere.test>... Relaying denied
//
// Other replies: RSET → 250 2.0.0 Reset state, NOOP → 250 2.0.0 OK,
// VRFY → 252 2.1.5 <b@example.net>, BDAT → 500 5.5.1 Command unrecognized:
// "BDAT 1", DATA without MAIL → 503 5.0.0 Need MAIL command. There is no
// limit on the messages of one connection (102 in one were all delivered).
// For mail it delivers locally Sendmail adds Date:, From: and Message-Id:
// when the message lacks them (the mailer's F=DFM, as for Sendmail's own
// local mailer).
//
// A 5xx refusal from a check ruleset is prefixed with the address
// ("550 5.7.1 <spam@client.test>... Sender refused"), a 4xx one is not
// ("451 4.7.1 Recipient deferred"). SIZE carries the limit only when one is
// set (MessageSizeLimit). STARTTLS is not offered (no certificate is
// configured) and AUTH is switched off (M=A in DaemonPortOptions: otherwise
// it would offer whatever SASL mechanisms the machine's libsasl2 plugins
// provide, which differs between machines); EXPN, VERB and ETRN are
// Sendmail's defaults and kept.
//
// Debian's MTA packages conflict with each other, and installing
// sendmail-bin would remove Postfix. So Sendmail is not installed:
// scripts/install-test-deps.sh downloads sendmail-bin and sendmail-cf and
// unpacks them with dpkg-deb -x into one cache directory (DefaultRoot, or
// $MOAT_SENDMAIL_ROOT), and this package runs the binary from there. The
// same script installs the shared libraries the binary needs and m4.
// sendmail-base (Debian's configuration scripts) is not needed, nor are the
// smmsp user and group: they serve the mail submission program
// (submit.cf), which is not used.
//
// Start writes a sendmail.mc, turns it into sendmail.cf with m4 and the
// unpacked cf/ tree (OSTYPE linux), and runs "sendmail -bD -C sendmail.cf
// -q5s" as root: the daemon in the foreground, with its own queue, on a free
// loopback port (DaemonPortOptions Addr=127.0.0.1; no MSA port). Every
// recipient of the domain example.net is routed (LOCAL_RULE_0) to a mailer
// "moat" whose program, a small shell script run as nobody, writes the
// message into one Maildir the test can read, prefixed with Delivered-To:.
// Local_check_rcpt refuses every recipient outside example.net (Sendmail
// would otherwise let a client on 127.0.0.1 relay anywhere), so nothing
// ever leaves the machine; Local_check_mail and Local_check_rcpt carry out
// the refusals of Options.
//
// Sendmail logs only through syslog(3), and it looks up its own host name
// at start, sleeping 60s ("My unqualified host name (vm) unknown; sleeping
// for retry") when that name has no dot and the resolver does not qualify
// it. So the daemon runs inside private namespaces made with unshare(1): a
// UTS namespace whose host name is Hostname; a mount namespace in which a
// private /etc/hosts (127.0.0.1 localhost upstream.test) and resolv.conf
// (mtatest.PrivateResolver) keep DNS on the machine, and a
// private /dev (the real null, zero, full, random and urandom bind-mounted
// into it) holds a /dev/log socket this package reads, so the log lines
// land in Dir/maillog; and a PID namespace, so that stopping the daemon
// ends every process it forked, even one that left the daemon's process
// group or session (Sendmail detaches background deliveries). Nothing outside the instance's temp dir is
// written. Making the namespaces needs root with CAP_SYS_ADMIN (a VM, or a
// privileged container); without it Start fails with unshare's
// "Operation not permitted". The resolver is also kept off by the configuration:
// ServiceSwitchFile says "hosts files", FEATURE(nocanonify) and
// FEATURE(accept_unresolvable_domains) (without it every sender of a
// domain that does not resolve is refused with 553 5.1.8).
//
// Delivery is asynchronous (DeliveryMode background: a forked process
// delivers after the reply to the final dot), so tests wait for messages and
// log lines with WaitMessages and WaitLog instead of sleeping.
package sendmailtest

import (
	"bytes"
	"errors"
	"fmt"
	"moat/internal/mtatest"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Domain is the only domain the instance accepts; every recipient in it
// lands in the one Maildir.
const Domain = "example.net"

// Hostname is the instance's host name ($j): it is in the greeting
// ("220 upstream.test ESMTP Sendmail …"), in the Received: header and in the
// names of the Maildir files.
const Hostname = "upstream.test"

// DefaultRoot is where scripts/install-test-deps.sh unpacks sendmail-bin
// and sendmail-cf: outside the repository, so that it survives git clean and
// is shared by every checkout, and under /var/cache, the place for data a
// program can download again (FHS 3.0 §5.5). $MOAT_SENDMAIL_ROOT overrides
// it, for the script and for this package alike.
const DefaultRoot = "/var/cache/moat-test/sendmail/root"

// DeliveryUser is the user the delivery script runs as (U= of the mailer),
// and so the owner of the Maildir and its files (mode 0600).
const DeliveryUser = "nobody"

// Options selects the optional features of an instance. Addresses are
// matched as whole addresses, without regard to case (Sendmail compares
// tokens so); they may hold letters, digits and . _ + - @ only.
type Options struct {
	// DenySenders are MAIL FROM addresses refused with
	// "550 5.7.1 <address>... Sender refused".
	DenySenders []string
	// DeferSenders are MAIL FROM addresses answered with
	// "451 4.7.1 Sender deferred".
	DeferSenders []string
	// DenyRecipients are RCPT TO addresses refused with
	// "550 5.7.1 <address>... Recipient refused".
	DenyRecipients []string
	// DeferRecipients are RCPT TO addresses answered with
	// "451 4.7.1 Recipient deferred".
	DeferRecipients []string
	// MessageSizeLimit sets MaxMessageSize in bytes, advertised as
	// "SIZE n". MAIL FROM with a bigger SIZE= is refused with
	// "552 5.2.3 Message size exceeds fixed maximum message size (n)", a
	// bigger message at the final dot with
	// "552 5.2.3 Message exceeds maximum fixed size (n)". 0 keeps
	// Sendmail's default: no limit, "SIZE" without a number.
	MessageSizeLimit int64
}

// Sendmail is one running instance. Its methods may be called from several
// goroutines. Messages and WaitMessages read MailDir; Log and WaitLog read
// what Sendmail has logged through syslog so far, one message a line
// ("Dec  6 15:31:25 sendmail[10332]: 6B6FVPVw010332: from=<…>, …"):
// delivery lines are written by a process forked after the SMTP reply.
type Sendmail struct {
	// Addr is the "127.0.0.1:PORT" address of its SMTP listener.
	Addr string
	// Dir is the instance's temp root; it holds sendmail.mc, sendmail.cf,
	// mqueue/, mail/, the private dev/ and hosts, and the log, and is
	// removed when the test ends.
	Dir string
	// MailDir is the Maildir every example.net recipient is delivered to;
	// finished messages appear in MailDir/new, one file per recipient, with
	// CRLF turned into LF and Delivered-To:, Return-Path: and Sendmail's
	// Received: prepended.
	MailDir string

	mtatest.Output

	logFile    string
	stderrFile string
	syslog     *net.UnixConn
	syslogDone chan struct{} // closed when the syslog reader has ended

	mu     sync.Mutex
	daemon *mtatest.Daemon // unshare, whose exit ends the namespace
	// stopped is set by the first Stop.
	stopped bool
}

// rootOnce caches the result of checking the unpacked tree, which runs
// ldd: once per test binary is enough.
var rootOnce = sync.OnceValues(checkRoot)

// Root returns the unpacked Sendmail tree after checking what
// scripts/install-test-deps.sh checks: the sendmail binary and the cf/ tree
// are there, ldd finds every shared library the binary needs, m4 is on PATH;
// and what the package needs besides: the user nobody, unshare(1) and
// mount(8).
func Root() (string, error) { return rootOnce() }

func checkRoot() (string, error) {
	root := mtatest.UnpackedRoot("MOAT_SENDMAIL_ROOT", DefaultRoot)
	err := mtatest.Unpacked{
		Name:     "Sendmail",
		Bin:      binPath(root),
		Files:    []string{filepath.Join(cfDir(root), "m4", "cf.m4")},
		Users:    []string{DeliveryUser},
		Commands: []string{"m4"},
	}.Check()
	if err == nil {
		err = mtatest.CheckUnshare("sendmail")
	}
	return root, err
}

// binPath is the sendmail binary in the unpacked tree (Debian keeps it in
// /usr/libexec/sendmail; /usr/sbin/sendmail is a link made by the
// package's postinst).
func binPath(root string) string {
	return filepath.Join(root, "usr", "libexec", "sendmail", "sendmail")
}

// cfDir is the unpacked sendmail-cf tree.
func cfDir(root string) string {
	return filepath.Join(root, "usr", "share", "sendmail", "cf")
}

// Start starts a Sendmail instance for the test on a free loopback port and
// stops it (and removes its directories) when the test ends. It fails the
// test — never skips it — when the unpacked Sendmail is missing, when the
// test does not run as root, or when the daemon cannot start or does not
// greet within a few seconds, with Sendmail's own error output.
//
// When Start returns, the daemon has already answered one connection with
// 220 (the readiness probe).
func Start(t testing.TB, opts Options) *Sendmail {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatalf("sendmailtest: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("sendmailtest: a private Sendmail daemon must be started as root")
	}
	for _, list := range [][]string{opts.DenySenders, opts.DeferSenders, opts.DenyRecipients, opts.DeferRecipients} {
		for _, a := range list {
			if err := mtatest.CheckAddr(a); err != nil {
				t.Fatalf("sendmailtest: %v", err)
			}
		}
	}
	s := mtatest.StartRetrying(t, "sendmailtest", func() (*Sendmail, error) { return start(root, opts) })
	mtatest.Cleanup(t, s.Output, s.Dir, s.Stop)
	return s
}

// devNodes are the devices bind-mounted into the private /dev.
var devNodes = []string{"null", "zero", "full", "random", "urandom"}

// start creates the directories and configuration of one instance, starts
// the daemon and waits for its greeting. On error nothing of the instance is
// left.
func start(root string, opts Options) (s *Sendmail, err error) {
	uid, gid, err := mtatest.UserIDs(DeliveryUser)
	if err != nil {
		return nil, err
	}
	// A short path under /tmp that the delivery user can reach.
	pl, err := mtatest.NewPlace("sm")
	if err != nil {
		return nil, err
	}
	dir, port := pl.Dir, pl.Port
	s = &Sendmail{
		Addr:       pl.Addr,
		Dir:        dir,
		MailDir:    pl.MailDir,
		Output:     mtatest.NewOutput("sendmailtest", pl.MailDir, filepath.Join(dir, "maillog"), "log"),
		logFile:    filepath.Join(dir, "maillog"),
		stderrFile: filepath.Join(dir, "stderr"),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.shutdown(), mtatest.RemoveAll(dir))
		}
	}()
	// Sendmail wants its queue owned by root and closed to others.
	if err := os.Mkdir(filepath.Join(dir, "mqueue"), 0o700); err != nil {
		return s, err
	}
	if err := os.Mkdir(filepath.Join(dir, "mail"), 0o755); err != nil {
		return s, err
	}
	if err := os.Chown(filepath.Join(dir, "mail"), uid, gid); err != nil {
		return s, err
	}
	dev := filepath.Join(dir, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		return s, err
	}
	for _, n := range devNodes {
		// Mount points for the real devices.
		if err := os.WriteFile(filepath.Join(dev, n), nil, 0o644); err != nil {
			return s, err
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return s, err
		}
	}
	if err := s.listenSyslog(filepath.Join(dev, "log")); err != nil {
		return s, err
	}
	files := map[string]string{
		"service.switch": "hosts\tfiles\naliases\tfiles\n",
		"aliases":        "",
		"deliver":        deliverScript,
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if name == "deliver" {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			return s, err
		}
	}
	mc := filepath.Join(dir, "sendmail.mc")
	if err := os.WriteFile(mc, []byte(config(root, dir, port, opts)), 0o644); err != nil {
		return s, err
	}
	cf := filepath.Join(dir, "sendmail.cf")
	if err := m4(root, mc, cf); err != nil {
		return s, err
	}
	stderr, err := os.Create(s.stderrFile)
	if err != nil {
		return s, err
	}
	defer stderr.Close()
	var script strings.Builder
	fmt.Fprintf(&script, "set -e\nhostname %s\n", Hostname)
	resolver, err := mtatest.PrivateResolver(dir, Hostname)
	if err != nil {
		return s, err
	}
	for _, l := range resolver {
		script.WriteString(l + "\n")
	}
	for _, n := range devNodes {
		fmt.Fprintf(&script, "mount --bind /dev/%s %s\n", n, mtatest.Shq(filepath.Join(dev, n)))
	}
	fmt.Fprintf(&script, "mount --rbind %s /dev\n", mtatest.Shq(dev))
	fmt.Fprintf(&script, "exec %s -bD -C %s -q5s\n", mtatest.Shq(binPath(root)), mtatest.Shq(cf))
	// The shell runs inside the new namespaces (as PID 1 of the PID
	// namespace, then replaced by sendmail).
	d, err := mtatest.StartDaemon(mtatest.Unshare(script.String(), stderr))
	if err != nil {
		return s, err
	}
	s.mu.Lock()
	s.daemon = d
	s.mu.Unlock()

	if err := d.AwaitGreeting(s.Addr, 10*time.Second); err != nil {
		out := mtatest.Tails(20, s.stderrFile, s.logFile)
		if strings.Contains(out, "Address already in use") {
			return s, fmt.Errorf("sendmail on %s: %w", s.Addr, mtatest.ErrPortTaken)
		}
		return s, fmt.Errorf("sendmail -bD -C %s on %s does not greet: %v\n%s", cf, s.Addr, err, out)
	}
	return s, nil
}

// deliverScript is the program of the "moat" mailer: deliver MAILDIR
// RECIPIENT writes the message on stdin into the Maildir, through tmp/ and a
// rename into new/. Exit code 75 (EX_TEMPFAIL) makes Sendmail keep the
// message queued and try again.
const deliverScript = `#!/bin/sh
# Written by moat/internal/sendmailtest.
PATH=/usr/bin:/bin
umask 077
dir=$1
mkdir -p "$dir/tmp" "$dir/new" "$dir/cur" || exit 75
name=$(date +%s.%N).P$$.$(hostname)
{ printf 'Delivered-To: %s\n' "$2" && cat; } >"$dir/tmp/$name" || exit 75
mv "$dir/tmp/$name" "$dir/new/$name" || exit 75
`

// config returns the instance's sendmail.mc.
func config(root, dir string, port int, opts Options) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	q := func(s string) string { return "`" + s + "'" }
	def := func(name, value string) { p("define(%s, %s)dnl", q(name), q(value)) }
	p("divert(-1)")
	p("# Written by moat/internal/sendmailtest.")
	p("divert(0)dnl")
	p("OSTYPE(%s)dnl", q("linux"))
	def("confDOMAIN_NAME", Hostname)
	def("confSERVICE_SWITCH_FILE", filepath.Join(dir, "service.switch"))
	def("confHOSTS_FILE", filepath.Join(dir, "hosts"))
	def("QUEUE_DIR", filepath.Join(dir, "mqueue"))
	def("STATUS_FILE", filepath.Join(dir, "sendmail.st"))
	def("confPID_FILE", filepath.Join(dir, "sendmail.pid"))
	def("HELP_FILE", filepath.Join(root, "etc", "mail", "helpfile"))
	def("ALIAS_FILE", filepath.Join(dir, "aliases"))
	// No ident (RFC 1413) call back to the client.
	def("confTO_IDENT", "0")
	def("confDONT_PROBE_INTERFACES", "true")
	// The machine is shared with other tests: by default Sendmail only
	// queues at a load average of 8 per CPU and refuses connections at 12.
	def("confQUEUE_LA", "1000")
	def("confREFUSE_LA", "1000")
	def("confDELAY_LA", "0")
	if opts.MessageSizeLimit != 0 {
		def("confMAX_MESSAGE_SIZE", strconv.FormatInt(opts.MessageSizeLimit, 10))
	}
	p("FEATURE(%s)dnl", q("nocanonify"))
	p("FEATURE(%s)dnl", q("accept_unresolvable_domains"))
	// No MSA on port 587 of every interface.
	p("FEATURE(%s)dnl", q("no_default_msa"))
	p("RELAY_DOMAIN(%s)dnl", q(Domain))
	// M=A: no AUTH.
	p("DAEMON_OPTIONS(%s)dnl", q(fmt.Sprintf("Port=%d, Addr=127.0.0.1, Family=inet, Name=MTA, M=A", port)))
	p("MAILER(%s)dnl", q("local"))
	p("MAILER(%s)dnl", q("smtp"))
	// Rules: left and right side are separated by tabs.
	rule := func(lhs, rhs string) { p("R%s\t%s", lhs, rhs) }
	refuse := func(addrs []string, enh, reply string) {
		for _, a := range addrs {
			rule(a, fmt.Sprintf(`$#error $@ %s $: "%s"`, enh, reply))
		}
	}
	p("LOCAL_RULE_0")
	rule("$+ < @ "+Domain+" $* > $*", "$#moat $: $1 @ "+Domain)
	p("LOCAL_RULESETS")
	p("SLocal_check_mail")
	rule("< $* >", "$1")
	refuse(opts.DenySenders, "5.7.1", "550 Sender refused")
	refuse(opts.DeferSenders, "4.7.1", "451 Sender deferred")
	p("SLocal_check_rcpt")
	rule("< $* >", "$1")
	refuse(opts.DenyRecipients, "5.7.1", "550 Recipient refused")
	refuse(opts.DeferRecipients, "4.7.1", "451 Recipient deferred")
	rule("$+ @ "+Domain, "$@ OK")
	rule("$*", `$#error $@ 5.7.1 $: "550 Relaying denied"`)
	p("MAILER_DEFINITIONS")
	// F=: l local, s strip quotes, D F M add Date:, From:, Message-Id: if
	// missing, P add Return-Path:, h u keep case, n no "From " line; no m,
	// so one delivery (one file) per recipient.
	p("Mmoat,\tP=/bin/sh, F=lsDFMPhnu, S=EnvFromL/HdrFromL, R=EnvToL/HdrToL, T=DNS/RFC822/X-Unix, U=%s:%s,", DeliveryUser, groupName(DeliveryUser))
	p("\tA=sh %s %s $u", filepath.Join(dir, "deliver"), filepath.Join(dir, "mail", "all"))
	return b.String()
}

// groupName returns the name of the primary group of the user name.
func groupName(name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		return name
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return u.Gid
	}
	return g.Name
}

// m4 turns mc into cf with the unpacked cf/ tree.
func m4(root, mc, cf string) error {
	dir := cfDir(root)
	cmd := exec.Command("m4", "-D_CF_DIR_="+dir+"/", filepath.Join(dir, "m4", "cf.m4"), mc)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		return fmt.Errorf("m4 %s: %v\n%s", mc, err, stderr.String())
	}
	// Sendmail refuses a configuration file others may write.
	return os.WriteFile(cf, stdout.Bytes(), 0o644)
}

// listenSyslog makes the socket that is /dev/log inside the namespace and
// starts copying what arrives on it into the log file, one line per
// message, without the "<priority>" prefix.
func (s *Sendmail) listenSyslog(path string) error {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		c.Close()
		return err
	}
	f, err := os.OpenFile(s.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		c.Close()
		return err
	}
	s.syslog = c
	s.syslogDone = make(chan struct{})
	go func() {
		defer close(s.syslogDone)
		defer f.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			msg := bytes.TrimRight(buf[:n], "\x00\r\n")
			if len(msg) > 0 && msg[0] == '<' {
				if i := bytes.IndexByte(msg, '>'); i > 0 && i < 5 {
					msg = msg[i+1:]
				}
			}
			_, _ = f.Write(append(msg, '\n'))
		}
	}()
	return nil
}

// Stop stops the instance now: SIGTERM to sendmail, then, if it has not
// ended after 5s, SIGKILL. When sendmail, PID 1 of its PID namespace, ends,
// the kernel kills every other process of the namespace and unshare returns
// only after that, so when Stop returns no process of the instance is left.
// Open SMTP sessions are cut. Stop is idempotent; the test's cleanup calls
// it too. Messages and Log keep working after Stop until the test ends.
func (s *Sendmail) Stop(t testing.TB) {
	t.Helper()
	if err := s.shutdown(); err != nil {
		t.Errorf("sendmailtest: stopping %s: %v", s.Addr, err)
	}
}

// shutdown is Stop without a testing.TB.
func (s *Sendmail) shutdown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var err error
	if s.daemon != nil {
		err = s.daemon.StopNamespace("sendmail")
	}
	if s.syslog != nil {
		s.syslog.Close()
		<-s.syslogDone
	}
	return err
}
