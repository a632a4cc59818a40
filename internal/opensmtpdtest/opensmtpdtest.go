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
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
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

// pollInterval is how often the Wait functions look again.
const pollInterval = 20 * time.Millisecond

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
// several goroutines.
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

	logFile string

	cmd  *exec.Cmd
	done chan struct{} // closed when unshare, and so the namespace, is gone
	mu   sync.Mutex
	// stopped is set by the first Stop.
	stopped bool
}

// binaryState caches the result of checking the unpacked binary, which
// runs ldd: once per test binary is enough.
var binaryState struct {
	once sync.Once
	root string
	err  error
}

// Root returns the unpacked opensmtpd tree after checking what
// scripts/install-test-deps.sh checks: the smtpd binary and the
// mail.maildir helper are there, ldd finds every shared library smtpd needs,
// the users opensmtpd and opensmtpq exist, and unshare(1) and mount(8) are
// on PATH.
func Root() (string, error) {
	binaryState.once.Do(func() {
		binaryState.root, binaryState.err = checkRoot()
	})
	return binaryState.root, binaryState.err
}

func checkRoot() (string, error) {
	root := os.Getenv("MOAT_OPENSMTPD_ROOT")
	if root == "" {
		root = DefaultRoot
	}
	const fix = "; run scripts/install-test-deps.sh as root"
	bin := filepath.Join(root, "usr", "sbin", "smtpd")
	for _, f := range []string{bin, filepath.Join(root, "usr", "libexec", "opensmtpd", "mail.maildir")} {
		if _, err := os.Stat(f); err != nil {
			return "", fmt.Errorf("no unpacked OpenSMTPD: %v%s", err, fix)
		}
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
	for _, u := range []string{User, QueueUser, DeliveryUser} {
		if _, err := user.Lookup(u); err != nil {
			return "", fmt.Errorf("user %s: %v%s", u, err, fix)
		}
	}
	for _, c := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			return "", fmt.Errorf("%v (util-linux and mount are needed to give smtpd private namespaces)", err)
		}
	}
	return root, nil
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
	// A free port is found by binding :0 and closing it; someone else may
	// take it before smtpd binds it, so a bind failure is retried with a
	// fresh port and directory.
	const attempts = 3
	for i := 1; ; i++ {
		o, err := start(root, conf, opts)
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("opensmtpdtest: last lines of the log:\n%s", lastLines(o.readLog(), 40))
				}
				o.Stop(t)
				if err := removeAll(o.Dir); err != nil {
					t.Errorf("opensmtpdtest: %v", err)
				}
			})
			return o
		}
		if i < attempts && errors.Is(err, errPortTaken) {
			t.Logf("opensmtpdtest: %v; retrying with another port", err)
			continue
		}
		t.Fatalf("opensmtpdtest: %v", err)
	}
}

// errPortTaken marks a start that failed only because the chosen port was
// taken in the meantime.
var errPortTaken = errors.New("port taken")

// start creates the directories and configuration of one instance, starts
// the daemon and waits for its greeting. On error nothing of the instance is
// left.
func start(root, filterConf string, opts Options) (o *OpenSMTPD, err error) {
	du, err := user.Lookup(DeliveryUser)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(du.Uid)
	gid, _ := strconv.Atoi(du.Gid)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: a short path under /tmp that the delivery user can
	// reach.
	dir, err := os.MkdirTemp("/tmp", "os")
	if err != nil {
		return nil, err
	}
	o = &OpenSMTPD{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:     dir,
		MailDir: filepath.Join(dir, "mail", "all"),
		logFile: filepath.Join(dir, "smtpd.log"),
		done:    make(chan struct{}),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, o.shutdown(), removeAll(dir))
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return o, err
	}
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
	logf, err := os.Create(o.logFile)
	if err != nil {
		return o, err
	}
	defer logf.Close()
	bin := filepath.Join(root, "usr", "sbin", "smtpd")
	// The shell runs inside the new namespaces (as PID 1 of the PID
	// namespace, then replaced by smtpd): the mounts are private to it, and
	// vanish with the namespace.
	script := strings.Join([]string{
		"set -e",
		"hostname " + Hostname,
		"mount --bind " + shq(filepath.Join(dir, "spool")) + " /var/spool",
		"mount --bind " + shq(filepath.Join(dir, "run")) + " /run",
		"mount --bind " + shq(filepath.Join(dir, "varlib")) + " /var/lib",
		"mount --bind " + shq(filepath.Join(root, "usr", "libexec")) + " /usr/libexec",
		"exec " + shq(bin) + " -d -f " + shq(conf),
	}, "\n")
	// --kill-child: should unshare die (even by SIGKILL), the kernel kills
	// its child, PID 1 of the namespace, and with it every process in it.
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child=SIGKILL",
		"--mount", "--propagation", "private", "--uts", "--", "/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return o, err
	}
	o.mu.Lock()
	o.cmd = cmd
	o.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(o.done)
	}()

	if err := o.awaitGreeting(10 * time.Second); err != nil {
		out := lastLines(o.readLog(), 30)
		if strings.Contains(out, "Address already in use") {
			return o, fmt.Errorf("smtpd on %s: %w", o.Addr, errPortTaken)
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
			if err := checkAddr(a); err != nil {
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

// checkAddr accepts the addresses an Options list may hold.
func checkAddr(a string) error {
	if a == "" || strings.Count(a, "@") != 1 {
		return fmt.Errorf("option address %q: want one local@domain", a)
	}
	for _, r := range a {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-@", r)) {
			return fmt.Errorf("option address %q: only letters, digits and . _ + - @ are supported", a)
		}
	}
	return nil
}

// shq quotes s for the shell.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// awaitGreeting connects until smtpd answers with 220, the daemon exits or
// the timeout ends.
func (o *OpenSMTPD) awaitGreeting(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := probe(o.Addr, deadline)
		if err == nil {
			return nil
		}
		select {
		case <-o.done:
			return fmt.Errorf("daemon exited (%v)", o.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollInterval)
	}
}

// probe makes one connection, reads the 220 greeting and says QUIT.
func probe(addr string, deadline time.Time) error {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
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
	if o.stopped || o.cmd == nil {
		o.stopped = true
		return nil
	}
	o.stopped = true
	return stopNamespace(o.cmd.Process.Pid, o.done, "smtpd")
}

// stopNamespace ends the PID namespace that unshare (process unsharePid,
// whose exit closes done) created: SIGTERM to its first process, SIGKILL
// after 5s.
func stopNamespace(unsharePid int, done <-chan struct{}, name string) error {
	gone := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	if init := childOf(unsharePid); init > 0 {
		_ = syscall.Kill(init, syscall.SIGTERM)
		if waitFor(5*time.Second, gone) {
			return nil
		}
		_ = syscall.Kill(init, syscall.SIGKILL)
	}
	// unshare blocks SIGTERM while it waits; SIGKILL ends it, and
	// --kill-child then kills the namespace.
	_ = syscall.Kill(-unsharePid, syscall.SIGKILL)
	if waitFor(5*time.Second, gone) {
		return nil
	}
	return fmt.Errorf("%s (unshare %d) still running after SIGKILL", name, unsharePid)
}

// childOf returns the PID of a child process of pid, or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
		return 0
	}
	// Without CONFIG_PROC_CHILDREN: look for a process whose parent is pid.
	entries, _ := os.ReadDir("/proc")
	want := strconv.Itoa(pid)
	for _, ent := range entries {
		c, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		if f := strings.Fields(string(stat[i+1:])); len(f) > 1 && f[1] == want {
			return c
		}
	}
	return 0
}

// Messages returns the full contents of the messages delivered so far, in
// delivery order (file modification time, then file name).
func (o *OpenSMTPD) Messages(t testing.TB) [][]byte {
	t.Helper()
	msgs, err := readMaildir(o.MailDir)
	if err != nil {
		t.Fatalf("opensmtpdtest: %v", err)
	}
	return msgs
}

// readMaildir returns the messages in dir/new in delivery order.
func readMaildir(maildir string) ([][]byte, error) {
	dir := filepath.Join(maildir, "new")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // mail.maildir creates the Maildir on first delivery
	}
	if err != nil {
		return nil, err
	}
	type file struct {
		name  string
		mtime time.Time
	}
	files := make([]file, 0, len(entries))
	for _, ent := range entries {
		info, err := ent.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files = append(files, file{ent.Name(), info.ModTime()})
	}
	slices.SortFunc(files, func(a, b file) int {
		if c := a.mtime.Compare(b.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	msgs := make([][]byte, 0, len(files))
	for _, f := range files {
		// Files in new/ are complete: mail.maildir writes in tmp/ and
		// renames.
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, b)
	}
	return msgs, nil
}

// WaitMessages waits until at least n messages have been delivered and
// returns all delivered messages as Messages does. It fails the test, with
// what it found and the end of the log, if that takes longer than timeout.
func (o *OpenSMTPD) WaitMessages(t testing.TB, n int, timeout time.Duration) [][]byte {
	t.Helper()
	var msgs [][]byte
	var err error
	if waitFor(timeout, func() bool {
		msgs, err = readMaildir(o.MailDir)
		return err != nil || len(msgs) >= n
	}) && err == nil {
		return msgs
	}
	if err != nil {
		t.Fatalf("opensmtpdtest: %v", err)
	}
	t.Fatalf("opensmtpdtest: %d of %d messages delivered to %s after %v; log ends:\n%s",
		len(msgs), n, o.MailDir, timeout, lastLines(o.readLog(), 30))
	return nil
}

// Log returns smtpd's log (its stderr) as it is now.
func (o *OpenSMTPD) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(o.logFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("opensmtpdtest: %v", err)
	}
	return string(b)
}

// WaitLog waits until the log contains substr and returns the whole log:
// delivery lines are written after the SMTP reply. It fails the test with
// the log if substr does not appear within timeout.
func (o *OpenSMTPD) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	var log string
	if waitFor(timeout, func() bool {
		log = o.readLog()
		return strings.Contains(log, substr)
	}) {
		return log
	}
	t.Fatalf("opensmtpdtest: log lacks %q after %v:\n%s", substr, timeout, lastLines(log, 40))
	return ""
}

// readLog returns the log, or "" when it cannot be read.
func (o *OpenSMTPD) readLog() string {
	b, _ := os.ReadFile(o.logFile)
	return string(b)
}

// waitFor polls cond every pollInterval until it holds or timeout passes,
// and reports whether it held. cond is evaluated at least once and once more
// after the deadline.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeAll removes dir, retrying briefly: a process killed a moment ago
// may still have been creating a file in it.
func removeAll(dir string) error {
	var err error
	for range 5 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
