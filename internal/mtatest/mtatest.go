// Package mtatest holds what the harnesses of real test MTAs share
// (internal/postfixtest, internal/eximtest, internal/opensmtpdtest and
// internal/sendmailtest): reading the Maildir a test instance delivers into
// and the log it writes (Output, embedded by every harness), polling for an
// event with a deadline instead of sleeping, starting an instance with a
// retry when its port was taken, waiting for the greeting, stopping a
// daemon's whole process group or PID namespace (daemon.go), checking an MTA
// that scripts/install-test-deps.sh unpacked (unpacked.go), and small
// helpers for ports, temp dirs and logs. smtpclient.go is a raw SMTP client
// for the harnesses' own tests.
package mtatest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PollInterval is how often WaitFor looks again.
const PollInterval = 20 * time.Millisecond

// WaitFor polls cond every PollInterval until it holds or timeout passes,
// and reports whether it held. cond is evaluated at least once and once
// more after the deadline.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(PollInterval)
	}
}

// ReadMaildir returns the full contents of the messages in a Maildir's
// new/ folder, in delivery order (file modification time, then file
// name). A Maildir not created yet (MTAs create it on first delivery)
// holds no messages. Files in new/ are complete: MTAs write in tmp/ and
// rename.
func ReadMaildir(maildir string) ([][]byte, error) {
	dir := filepath.Join(maildir, "new")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type file struct {
		name  string
		mtime time.Time
	}
	files := make([]file, 0, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone since ReadDir (a test's cleanup, say)
		}
		if err != nil {
			return nil, err
		}
		files = append(files, file{e.Name(), info.ModTime()})
	}
	slices.SortFunc(files, func(a, b file) int {
		if c := a.mtime.Compare(b.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	msgs := make([][]byte, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, b)
	}
	return msgs, nil
}

// GroupAlive reports whether any process of the process group pgid (a
// daemon that called setsid, and everything it spawned) is still
// running. Zombies do not count: an orphaned daemon's exit status goes to
// init, which may reap late.
func GroupAlive(pgid int) bool {
	want := strconv.Itoa(pgid)
	found, ok := findProc(func(f []string) bool {
		// Only the group counts, not the bare pid: should the pid of a
		// dead leader be reused, the newcomer is almost never a group
		// leader.
		return len(f) >= 3 && f[0] != "Z" && f[0] != "X" && f[2] == want
	})
	if !ok {
		// No procfs: fall back to signal 0, which counts zombies.
		return syscall.Kill(-pgid, 0) == nil
	}
	return found != 0
}

// findProc returns the pid of a process whose /proc/PID/stat fields after
// "pid (comm)" — state, ppid, pgrp, … — match, or 0; ok is false when
// /proc cannot be read.
func findProc(match func(fields []string) bool) (pid int, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid pgrp …"; comm may hold spaces and parens.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		if match(strings.Fields(string(stat[i+1:]))) {
			return pid, true
		}
	}
	return 0, true
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RemoveAll removes dir, retrying briefly: a daemon killed a moment ago
// may still have been creating a file in it.
func RemoveAll(dir string) error {
	var err error
	for range 5 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// ReadLog returns the contents of a log file, or "" when it cannot be read.
func ReadLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// Tails returns the last n lines of each file that is not empty, each under
// its base name: what a daemon that failed to start said on stderr and in
// its logs.
func Tails(n int, files ...string) string {
	var b strings.Builder
	for _, f := range files {
		if text, err := os.ReadFile(f); err == nil && len(text) > 0 {
			fmt.Fprintf(&b, "%s:\n%s\n", filepath.Base(f), LastLines(string(text), n))
		}
	}
	return b.String()
}

// TempDir makes an instance's temp root: not t.TempDir, whose path can
// exceed the 108 bytes a Unix socket path (Postfix's spool/private/…) may
// have, but a short one under /tmp, mode 0755 so that the unprivileged
// users an MTA runs its processes as can reach their directories below it.
func TempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", errors.Join(err, os.Remove(dir))
	}
	return dir, nil
}

// UserIDs returns the uid and gid of a system user.
func UserIDs(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, err
	}
	gid, err = strconv.Atoi(u.Gid)
	return uid, gid, err
}

// CheckAddr accepts the addresses an Options list of a harness that writes
// them into a configuration may hold: one local@domain of letters, digits
// and . _ + - only, which needs no quoting anywhere.
func CheckAddr(a string) error {
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

// ErrPortTaken marks a start that failed only because the port chosen for
// it was taken in the meantime.
var ErrPortTaken = errors.New("port taken")

// StartRetrying returns the instance start starts, failing the test (as
// pkg, the harness's name) when start fails. A free port is found by
// binding :0 and closing it; someone else may take it before the daemon
// binds it, so a start that fails with ErrPortTaken is retried, with a fresh
// port and directory, up to three attempts in all.
func StartRetrying[T any](t testing.TB, pkg string, start func() (T, error)) T {
	t.Helper()
	const attempts = 3
	for i := 1; ; i++ {
		x, err := start()
		if err == nil {
			return x
		}
		if i < attempts && errors.Is(err, ErrPortTaken) {
			t.Logf("%s: %v; retrying with another port", pkg, err)
			continue
		}
		t.Fatalf("%s: %v", pkg, err)
	}
}

// Cleanup has the end of the test end an instance: when the test has
// failed, the last 40 lines of o's log go to the test log; then stop runs
// and dir, the instance's temp root, is removed.
func Cleanup(t testing.TB, o Output, dir string, stop func(testing.TB)) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s: last lines of %s:\n%s", o.pkg, o.logFile, LastLines(ReadLog(o.logFile), 40))
		}
		stop(t)
		if err := RemoveAll(dir); err != nil {
			t.Errorf("%s: %v", o.pkg, err)
		}
	})
}

// Output gives a harness the Messages, WaitMessages, Log and WaitLog
// methods of an instance that delivers into one Maildir and logs into one
// file; the harness embeds it, set by NewOutput. The methods may be called
// from several goroutines, and keep working after the instance has stopped,
// until the test ends and its directory is removed.
type Output struct {
	pkg     string // the harness, prefix of failures: "postfixtest"
	maildir string
	logFile string
	logName string // the log in failures: "maillog", "mainlog", "log"
}

// NewOutput returns the Output of an instance of the harness pkg that
// delivers into maildir and logs into logFile, called logName in failure
// messages.
func NewOutput(pkg, maildir, logFile, logName string) Output {
	return Output{pkg: pkg, maildir: maildir, logFile: logFile, logName: logName}
}

// Messages returns the full contents of the messages delivered so far, in
// delivery order (file modification time, then file name).
func (o Output) Messages(t testing.TB) [][]byte {
	t.Helper()
	msgs, err := ReadMaildir(o.maildir)
	if err != nil {
		t.Fatalf("%s: %v", o.pkg, err)
	}
	return msgs
}

// WaitMessages waits until at least n messages have been delivered and
// returns all delivered messages as Messages does. It fails the test, with
// what it found (each message's size and Subject:) and the end of the log,
// if that takes longer than timeout.
func (o Output) WaitMessages(t testing.TB, n int, timeout time.Duration) [][]byte {
	t.Helper()
	var msgs [][]byte
	var err error
	if WaitFor(timeout, func() bool {
		msgs, err = ReadMaildir(o.maildir)
		return err != nil || len(msgs) >= n
	}) && err == nil {
		return msgs
	}
	if err != nil {
		t.Fatalf("%s: %v", o.pkg, err)
	}
	var found strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&found, "  message %d: %d bytes, %s\n", i+1, len(m), headerLine(m, "Subject"))
	}
	t.Fatalf("%s: %d of %d messages delivered to %s after %v:\n%s%s ends:\n%s",
		o.pkg, len(msgs), n, o.maildir, timeout, found.String(), o.logName, LastLines(ReadLog(o.logFile), 30))
	return nil
}

// Log returns the instance's log as it is now.
func (o Output) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(o.logFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s: %v", o.pkg, err)
	}
	return string(b)
}

// WaitLog waits until the log contains substr and returns the whole log:
// an MTA logs a delivery after the SMTP reply that accepted the message,
// and often from another process. It fails the test with the end of the
// log if substr does not appear within timeout.
func (o Output) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	var log string
	if WaitFor(timeout, func() bool {
		log = ReadLog(o.logFile)
		return strings.Contains(log, substr)
	}) {
		return log
	}
	t.Fatalf("%s: %s lacks %q after %v; it ends:\n%s", o.pkg, o.logName, substr, timeout, LastLines(log, 60))
	return ""
}

// headerLine returns the first "Name: value" line of msg's header, or
// "no Name".
func headerLine(msg []byte, name string) string {
	for line := range strings.Lines(string(msg)) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(line[:len(name)], name) {
			return line
		}
	}
	return "no " + name
}

// Place is where a new instance lives: a loopback port that was free a
// moment ago, and a temp root made by TempDir with the one Maildir every
// recipient is delivered to below it.
type Place struct {
	Port    int
	Addr    string // "127.0.0.1:Port"
	Dir     string // the temp root
	MailDir string // Dir/mail/all
}

// NewPlace finds a port and makes a temp root named after prefix.
func NewPlace(prefix string) (Place, error) {
	port, err := FreePort()
	if err != nil {
		return Place{}, err
	}
	dir, err := TempDir(prefix)
	if err != nil {
		return Place{}, err
	}
	return Place{
		Port:    port,
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:     dir,
		MailDir: filepath.Join(dir, "mail", "all"),
	}, nil
}
