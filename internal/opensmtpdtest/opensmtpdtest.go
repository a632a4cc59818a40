// Package opensmtpdtest starts a throwaway real OpenSMTPD for integration
// tests.
//
// OpenSMTPD is one of the four real upstreams behind moat, next to Postfix
// (internal/postfixtest), Exim (internal/eximtest) and Sendmail
// (internal/sendmailtest). Debian 12 ships OpenSMTPD 6.8.0p2. It answers
// with enhanced status codes (RFC 2034) and its own wording:
//
//	220 upstream.test ESMTP OpenSMTPD
//	250-upstream.test Hello client.test [127.0.0.1], pleased to meet you
//	250-8BITMIME
//	250-ENHANCEDSTATUSCODES
//	250-SIZE 36700160
//	250-DSN
//	250 HELP
//	MAIL → 250 2.0.0 Ok
//	RCPT → 250 2.1.5 Destination address valid: Recipient ok
//	DATA → 354 Enter mail, end with "." on a line by itself
//	dot  → 250 2.0.0 <8 hex digits> Message accepted for delivery
//	QUIT → 221 2.0.0 Bye
//	other domain at RCPT → 550 Invalid recipient: <x@elsewhere.test>
//	over the size limit at the dot → 554 5.3.4 Message too big for system: …
//
// Other replies: RSET → 250 2.0.0 Reset state, NOOP → 250 2.0.0 Ok, VRFY
// and BDAT → 500 5.5.1 Invalid command: Command unrecognized, a command out
// of order (DATA without MAIL, a second MAIL) → 503 5.5.1 Invalid command:
// Command not allowed at this point., a second EHLO/HELO → 503 5.5.1
// Invalid command: Already identified. A session may carry at most 100
// messages (Options.MaxMessagesPerSession).
//
// It does not offer PIPELINING (6.8 does not advertise it), nor STARTTLS
// (no certificate is configured), nor AUTH or SMTPUTF8. Note that its
// refusal of a recipient of another domain carries no enhanced code.
//
// Debian's MTA packages conflict with each other, and installing opensmtpd
// would remove Postfix. So OpenSMTPD is not installed:
// scripts/install-test-deps.sh downloads the package and unpacks it with
// dpkg-deb -x into a cache directory (DefaultRoot, or $MOAT_OPENSMTPD_ROOT),
// and this package runs the binary from there. The same script creates the
// two system users the binary looks up at start (User and QueueUser; their
// Debian names, from the package's postinst, not OpenBSD's _smtpd and
// _smtpq).
//
// The Debian build has its paths compiled in: the queue /var/spool/smtpd
// (there is no option to move it), the control socket /var/run/smtpd.sock
// (a second smtpd refuses to start while one listens on it), the chroot
// /var/lib/opensmtpd/empty, and the delivery helpers in
// /usr/libexec/opensmtpd (the maildir action runs
// /usr/libexec/opensmtpd/mail.maildir). So Start runs smtpd inside private
// namespaces made with unshare(1): a mount namespace in which the
// instance's own directories are bind-mounted over /var/spool, /run and
// /var/lib, and the unpacked usr/libexec over /usr/libexec; a PID namespace,
// so that stopping the daemon ends every process it forked (its six
// privilege-separated processes and the delivery agents); and a UTS
// namespace whose host name is Hostname. Nothing outside the instance's
// temp dir is written, and instances run in parallel without sharing a
// queue. Making the namespaces needs root with CAP_SYS_ADMIN (a VM, or a
// privileged container); without it Start fails with unshare's
// "Operation not permitted".
//
// Start runs smtpd in the foreground (-d) as root with its own smtpd.conf,
// listening on a free loopback port. Every recipient of the domain
// example.net is delivered, as the user nobody (one virtual user for the
// whole domain), into one Maildir the test can read; recipients of any
// other domain are refused at RCPT, so nothing ever leaves the machine.
// Options add built-in filters (smtpd.conf(5) "MAIL FILTERING") that refuse
// given senders or recipients with a 5xx or 4xx reply, and set the message
// size limit.
//
// The log is smtpd's own stderr (with -d it logs there instead of to
// syslog): one line per session event, such as
// "… smtp failed-command command="RCPT TO:<…>" result="550 …"" and
// "… mda delivery evpid=… to=<bo@example.net> … result=Ok stat=Delivered".
// Delivery is asynchronous, so tests wait for messages and log lines with
// WaitMessages and WaitLog instead of sleeping.
package opensmtpdtest

import (
	"errors"
	"fmt"
	"moat/internal/mtatest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Domain is the only domain the instance accepts; every recipient in it
// lands in the one Maildir.
const Domain = "example.net"

// Hostname is the instance's host name: it is in the greeting
// ("220 upstream.test ESMTP OpenSMTPD"), in the Received: header and in the
// names of the Maildir files.
const Hostname = "upstream.test"

// DefaultRoot is where scripts/install-test-deps.sh unpacks opensmtpd:
// outside the repository, so that it survives git clean and is shared by
// every checkout, and under /var/cache, the place for data a program can
// download again (FHS 3.0 §5.5). $MOAT_OPENSMTPD_ROOT overrides it, for
// the script and for this package alike.
const DefaultRoot = "/var/cache/moat-test/opensmtpd/root"

// User and QueueUser are the unprivileged users the Debian build of smtpd
// looks up at start (it exits with "unknown user opensmtpd" without them).
// scripts/install-test-deps.sh creates them as the package's postinst does.
const (
	User      = "opensmtpd"
	QueueUser = "opensmtpq"
)

// DeliveryUser is the user that delivers every message (and so owns the
// Maildir files, mode 0600): smtpd will not run a delivery agent as root.
const DeliveryUser = "nobody"

// Options selects the optional features of an instance. Addresses are
// matched as whole addresses (smtpd's mail-from and rcpt-to table
// conditions); they may hold letters, digits and . _ + - @ only.
type Options struct {
	// DenySenders are MAIL FROM addresses refused with
	// "550 5.7.1 Sender refused".
	DenySenders []string
	// DeferSenders are MAIL FROM addresses answered with
	// "451 4.7.1 Sender deferred".
	DeferSenders []string
	// DenyRecipients are RCPT TO addresses refused with
	// "550 5.7.1 Recipient refused".
	DenyRecipients []string
	// DeferRecipients are RCPT TO addresses answered with
	// "451 4.7.1 Recipient deferred".
	DeferRecipients []string
	// MessageSizeLimit sets "smtp max-message-size" in bytes (advertised
	// as SIZE; a bigger message is refused after the final dot with
	// "554 5.3.4 Message too big for system: …" — a bigger SIZE= on MAIL
	// FROM is not refused); 0 keeps OpenSMTPD's default of 35M
	// (SIZE 36700160).
	MessageSizeLimit int64
	// MaxMessagesPerSession sets "smtp limit max-mails": the MAIL command
	// after that many messages in one session is answered with
	// "452 4.5.3 Too many recipients: Too many messages sent". 0 keeps
	// OpenSMTPD's default of 100, which a test that sends more messages
	// through one (pooled) connection has to raise.
	MaxMessagesPerSession int
}

// Reply texts of the Options' filters.
const (
	DenySenderReply     = "550 5.7.1 Sender refused"
	DeferSenderReply    = "451 4.7.1 Sender deferred"
	DenyRecipientReply  = "550 5.7.1 Recipient refused"
	DeferRecipientReply = "451 4.7.1 Recipient deferred"
)

// OpenSMTPD is one running instance. Its methods may be called from
// several goroutines. Messages and WaitMessages read MailDir; Log and
// WaitLog read smtpd's log, its stderr.
type OpenSMTPD struct {
	// Addr is the "127.0.0.1:PORT" address of its SMTP listener.
	Addr string
	// Dir is the instance's temp root; it holds smtpd.conf, the directories
	// mounted over /var/spool, /run and /var/lib, mail/ and the log, and is
	// removed when the test ends.
	Dir string
	// MailDir is the Maildir every example.net recipient is delivered to;
	// finished messages appear in MailDir/new, one file per recipient, with
	// CRLF turned into LF and Return-Path:, Delivered-To: and OpenSMTPD's
	// Received: prepended.
	MailDir string

	mtatest.Output

	mu     sync.Mutex
	daemon *mtatest.Daemon // unshare, whose exit ends the namespace
	// stopped is set by the first Stop.
	stopped bool
}

// rootOnce caches the result of checking the unpacked binary, which runs
// ldd: once per test binary is enough.
var rootOnce = sync.OnceValues(checkRoot)

// Root returns the unpacked opensmtpd tree after checking what
// scripts/install-test-deps.sh checks: the smtpd binary and the
// mail.maildir helper are there, ldd finds every shared library smtpd needs,
// the users opensmtpd and opensmtpq exist, and unshare(1) and mount(8) are
// on PATH.
func Root() (string, error) { return rootOnce() }

func checkRoot() (string, error) {
	root := mtatest.UnpackedRoot("MOAT_OPENSMTPD_ROOT", DefaultRoot)
	err := mtatest.Unpacked{
		Name:  "OpenSMTPD",
		Bin:   filepath.Join(root, "usr", "sbin", "smtpd"),
		Files: []string{filepath.Join(root, "usr", "libexec", "opensmtpd", "mail.maildir")},
		Users: []string{User, QueueUser, DeliveryUser},
	}.Check()
	if err == nil {
		err = mtatest.CheckUnshare("smtpd")
	}
	return root, err
}

// Start starts an OpenSMTPD instance for the test on a free loopback port
// and stops it (and removes its directories) when the test ends. It fails
// the test — never skips it — when the unpacked OpenSMTPD is missing, when
// the test does not run as root, or when the daemon cannot start or does
// not greet within a few seconds, with smtpd's own error output.
//
// When Start returns, the daemon has already answered one connection with
// 220 (the readiness probe).
func Start(t testing.TB, opts Options) *OpenSMTPD {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatalf("opensmtpdtest: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("opensmtpdtest: a private OpenSMTPD must be started as root")
	}
	conf, err := filters(opts)
	if err != nil {
		t.Fatalf("opensmtpdtest: %v", err)
	}
	o := mtatest.StartRetrying(t, "opensmtpdtest", func() (*OpenSMTPD, error) { return start(root, conf, opts) })
	mtatest.Cleanup(t, o.Output, o.Dir, o.Stop)
	return o
}

// start creates the directories and configuration of one instance, starts
// the daemon and waits for its greeting. On error nothing of the instance is
// left.
func start(root, filterConf string, opts Options) (o *OpenSMTPD, err error) {
	uid, gid, err := mtatest.UserIDs(DeliveryUser)
	if err != nil {
		return nil, err
	}
	// A short path under /tmp that the delivery user can reach.
	pl, err := mtatest.NewPlace("os")
	if err != nil {
		return nil, err
	}
	dir, port := pl.Dir, pl.Port
	logFile := filepath.Join(dir, "smtpd.log")
	o = &OpenSMTPD{
		Addr:    pl.Addr,
		Dir:     dir,
		MailDir: pl.MailDir,
		Output:  mtatest.NewOutput("opensmtpdtest", pl.MailDir, logFile, "log"),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, o.shutdown(), mtatest.RemoveAll(dir))
		}
	}()
	// spool is mounted over /var/spool: smtpd makes spool/smtpd and its
	// subdirectories with the owners it wants. varlib over /var/lib holds
	// the empty chroot of the unprivileged processes. run over /run takes
	// the control socket.
	for _, d := range []string{"spool", "run", "varlib/opensmtpd/empty", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return o, err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "spool"), 0o711); err != nil {
		return o, err
	}
	if err := os.Chown(filepath.Join(dir, "mail"), uid, gid); err != nil {
		return o, err
	}
	conf := filepath.Join(dir, "smtpd.conf")
	if err := os.WriteFile(conf, []byte(config(dir, port, filterConf, opts)), 0o644); err != nil {
		return o, err
	}
	logf, err := os.Create(logFile)
	if err != nil {
		return o, err
	}
	defer logf.Close()
	bin := filepath.Join(root, "usr", "sbin", "smtpd")
	// The shell runs inside the new namespaces (as PID 1 of the PID
	// namespace, then replaced by smtpd).
	// Its resolver (PTR lookups of clients, its own name) must not reach
	// the system's nameserver: private hosts and resolv.conf files.
	resolver, err := mtatest.PrivateResolver(dir, Hostname)
	if err != nil {
		return o, err
	}
	lines := append([]string{"set -e", "hostname " + Hostname}, resolver...)
	lines = append(lines,
		"mount --bind "+mtatest.Shq(filepath.Join(dir, "spool"))+" /var/spool",
		"mount --bind "+mtatest.Shq(filepath.Join(dir, "run"))+" /run",
		"mount --bind "+mtatest.Shq(filepath.Join(dir, "varlib"))+" /var/lib",
		"mount --bind "+mtatest.Shq(filepath.Join(root, "usr", "libexec"))+" /usr/libexec",
		"exec "+mtatest.Shq(bin)+" -d -f "+mtatest.Shq(conf),
	)
	script := strings.Join(lines, "\n")
	d, err := mtatest.StartDaemon(mtatest.Unshare(script, logf))
	if err != nil {
		return o, err
	}
	o.mu.Lock()
	o.daemon = d
	o.mu.Unlock()

	if err := d.AwaitGreeting(o.Addr, 10*time.Second); err != nil {
		out := mtatest.LastLines(mtatest.ReadLog(logFile), 30)
		if strings.Contains(out, "Address already in use") {
			return o, fmt.Errorf("smtpd on %s: %w", o.Addr, mtatest.ErrPortTaken)
		}
		return o, fmt.Errorf("smtpd -d -f %s on %s does not greet: %v\n%s", conf, o.Addr, err, out)
	}
	return o, nil
}

// config returns the instance's smtpd.conf.
func config(dir string, port int, filterConf string, opts Options) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by moat/internal/opensmtpdtest.")
	if opts.MessageSizeLimit != 0 {
		p("smtp max-message-size %d", opts.MessageSizeLimit)
	}
	if opts.MaxMessagesPerSession != 0 {
		p("smtp limit max-mails %d", opts.MaxMessagesPerSession)
	}
	b.WriteString(filterConf)
	filter := ""
	if filterConf != "" {
		filter = ` filter "moat"`
	}
	p("listen on 127.0.0.1 port %d hostname %s%s", port, Hostname, filter)
	// One user delivers for every recipient of the domain; the userbase
	// gives it a home in the instance, so that smtpd finds no ~/.forward
	// instead of warning about nobody's /nonexistent.
	du, _ := user.Lookup(DeliveryUser)
	p(`table moatvirtual { "@" = "%s" }`, DeliveryUser)
	p(`table moatusers { "%s" = "%s:%s:%s" }`, DeliveryUser, du.Uid, du.Gid, filepath.Join(dir, "mail"))
	p(`action "local" maildir "%s" virtual <moatvirtual> userbase <moatusers>`, filepath.Join(dir, "mail", "all"))
	p(`match from any for domain "%s" action "local"`, Domain)
	return b.String()
}

// filters returns the tables and filters that carry out the refusals of
// opts, chained as "moat", or "" when there are none.
func filters(opts Options) (string, error) {
	var b strings.Builder
	var names []string
	add := func(name, phase, cond string, addrs []string, reply string) error {
		if len(addrs) == 0 {
			return nil
		}
		quoted := make([]string, len(addrs))
		for i, a := range addrs {
			if err := mtatest.CheckAddr(a); err != nil {
				return err
			}
			quoted[i] = `"` + a + `"`
		}
		fmt.Fprintf(&b, "table %s { %s }\n", name, strings.Join(quoted, ", "))
		fmt.Fprintf(&b, "filter %q phase %s match %s <%s> reject %q\n", name, phase, cond, name, reply)
		names = append(names, `"`+name+`"`)
		return nil
	}
	for _, f := range []struct {
		name, phase, cond string
		addrs             []string
		reply             string
	}{
		{"denysenders", "mail-from", "mail-from", opts.DenySenders, DenySenderReply},
		{"defersenders", "mail-from", "mail-from", opts.DeferSenders, DeferSenderReply},
		{"denyrcpts", "rcpt-to", "rcpt-to", opts.DenyRecipients, DenyRecipientReply},
		{"deferrcpts", "rcpt-to", "rcpt-to", opts.DeferRecipients, DeferRecipientReply},
	} {
		if err := add(f.name, f.phase, f.cond, f.addrs, f.reply); err != nil {
			return "", err
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	fmt.Fprintf(&b, "filter \"moat\" chain { %s }\n", strings.Join(names, ", "))
	return b.String(), nil
}

// Stop stops the instance now: SIGTERM to smtpd, then, if it has not ended
// after 5s, SIGKILL. When smtpd, PID 1 of its PID namespace, ends, the
// kernel kills every other process of the namespace and unshare returns
// only after that, so when Stop returns no process of the instance is left.
// Open SMTP sessions are cut. Stop is idempotent; the test's cleanup calls
// it too. Messages and Log keep working after Stop until the test ends.
func (o *OpenSMTPD) Stop(t testing.TB) {
	t.Helper()
	if err := o.shutdown(); err != nil {
		t.Errorf("opensmtpdtest: stopping %s: %v", o.Addr, err)
	}
}

// shutdown is Stop without a testing.TB.
func (o *OpenSMTPD) shutdown() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped || o.daemon == nil {
		o.stopped = true
		return nil
	}
	o.stopped = true
	return o.daemon.StopNamespace("smtpd")
}
