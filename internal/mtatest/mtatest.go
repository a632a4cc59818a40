// Package mtatest holds what the harnesses of real test MTAs share
// (internal/postfixtest, internal/eximtest, and the others): reading the
// Maildir a test instance delivers into, polling for an event with a
// deadline instead of sleeping, telling when a daemon's whole process
// group is gone, and small helpers for ports, temp dirs and logs.
package mtatest

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	entries, err := os.ReadDir("/proc")
	if err != nil {
		// No procfs: fall back to signal 0, which counts zombies.
		return syscall.Kill(-pgid, 0) == nil
	}
	want := strconv.Itoa(pgid)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
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
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		// Only the group counts, not the bare pid: should the pid of a
		// dead leader be reused, the newcomer is almost never a group
		// leader.
		if f[2] == want {
			return true
		}
	}
	return false
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
