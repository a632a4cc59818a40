package mtatest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopWait is how long a stop waits after SIGTERM, and again after
// SIGKILL.
const stopWait = 5 * time.Second

// Daemon is a daemon process a harness started, in the foreground, as the
// leader of a process group of its own, and waits for.
type Daemon struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartDaemon starts cmd in a new process group (its pid is the group's
// id) and waits for it in the background.
func StartDaemon(cmd *exec.Cmd) (*Daemon, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &Daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// Pid returns the daemon's pid, also its process group id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// exited returns nil while the daemon runs, and what became of it after.
func (d *Daemon) exited() error {
	select {
	case <-d.done:
		return fmt.Errorf("daemon exited (%v)", d.cmd.ProcessState)
	default:
		return nil
	}
}

func (d *Daemon) gone() bool { return d.exited() != nil }

// AwaitGreeting connects to addr until the daemon answers with 220, the
// daemon exits or the timeout ends.
func (d *Daemon) AwaitGreeting(addr string, timeout time.Duration) error {
	return awaitGreeting(addr, false, timeout, d.exited)
}

// StopGroup ends the daemon's process group: SIGTERM to the group, then,
// if any process of it is still alive after 5s, SIGKILL. It returns when
// the daemon has exited and no process of the group is left, or with an
// error naming what (name, "exim daemon") is still alive 5s after SIGKILL.
func (d *Daemon) StopGroup(name string) error {
	pgid := d.Pid()
	return stop(fmt.Sprintf("processes of %s %d", name, pgid),
		func() { _ = syscall.Kill(-pgid, syscall.SIGTERM) },
		func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) },
		func() bool { return d.gone() && !GroupAlive(pgid) })
}

// StopGroup ends the process group pgid of a daemon the harness did not
// start itself (Postfix's master): terminate sends SIGTERM, then, if any
// process of the group is still alive after 5s, the group gets SIGKILL. It
// returns an error naming what (name, "master") is still alive 5s after
// that.
func StopGroup(name string, pgid int, terminate func()) error {
	gone := func() bool { return !GroupAlive(pgid) }
	return stop(fmt.Sprintf("processes of %s %d", name, pgid), terminate,
		func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }, gone)
}

// stop calls terminate and waits until gone holds, and if it does not
// within stopWait, calls kill and waits again.
func stop(what string, terminate, kill func(), gone func() bool) error {
	terminate()
	if WaitFor(stopWait, gone) {
		return nil
	}
	kill()
	if WaitFor(stopWait, gone) {
		return nil
	}
	return fmt.Errorf("%s still alive after SIGKILL", what)
}

// Unshare returns the command that runs the shell script inside private
// namespaces made with unshare(1): a PID namespace whose first process
// (PID 1) is the shell, which usually ends by exec'ing the daemon; a mount
// namespace, so the script's mounts are private to it and vanish with the
// namespace; and a UTS namespace, so it may set its own host name. Its
// output goes to out. Start it with StartDaemon and stop it with
// StopNamespace. Making the namespaces needs root with CAP_SYS_ADMIN;
// without it unshare fails with "Operation not permitted".
//
// --kill-child: should unshare die (even by SIGKILL), the kernel kills its
// child, PID 1 of the namespace, and with it every process in it.
func Unshare(script string, out io.Writer) *exec.Cmd {
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child=SIGKILL",
		"--mount", "--propagation", "private", "--uts", "--", "/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	return cmd
}

// CheckUnshare checks that unshare(1) and mount(8), which Unshare and its
// scripts need, are on PATH; daemon names what they are for.
func CheckUnshare(daemon string) error {
	for _, c := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%v (util-linux and mount are needed to give %s private namespaces)", err, daemon)
		}
	}
	return nil
}

// StopNamespace ends the PID namespace of a daemon started with Unshare:
// SIGTERM to its first process, SIGKILL after 5s. When that process ends,
// the kernel kills every other process of the namespace, and unshare
// returns only after that; so when StopNamespace returns no process of the
// namespace is left. name ("smtpd") is in its error.
func (d *Daemon) StopNamespace(name string) error {
	unsharePid := d.Pid()
	init := ChildOf(unsharePid)
	return stop(fmt.Sprintf("%s (unshare %d)", name, unsharePid),
		func() {
			if init > 0 {
				_ = syscall.Kill(init, syscall.SIGTERM)
			}
		},
		func() {
			if init > 0 {
				_ = syscall.Kill(init, syscall.SIGKILL)
			}
			// unshare blocks SIGTERM while it waits; SIGKILL ends it, and
			// --kill-child then kills the namespace.
			_ = syscall.Kill(-unsharePid, syscall.SIGKILL)
		},
		d.gone)
}

// ChildOf returns the PID of a child process of pid, or 0.
func ChildOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
		return 0
	}
	// Without CONFIG_PROC_CHILDREN: look for a process whose parent is pid.
	want := strconv.Itoa(pid)
	c, _ := findProc(func(f []string) bool { return len(f) > 1 && f[1] == want })
	return c
}

// NamespaceMembers counts the processes whose PID namespace is link (as
// os.Readlink("/proc/PID/ns/pid") gives it).
func NamespaceMembers(link string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, ent := range entries {
		if l, err := os.Readlink("/proc/" + ent.Name() + "/ns/pid"); err == nil && l == link {
			n++
		}
	}
	return n
}

// Shq quotes s for the shell.
func Shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// AwaitGreeting connects to addr until the server answers with 220 or the
// timeout ends, for a daemon the harness did not start itself. With proxy,
// each connection begins with a HAProxy PROXY v1 header, for a server
// that expects one.
func AwaitGreeting(addr string, proxy bool, timeout time.Duration) error {
	return awaitGreeting(addr, proxy, timeout, nil)
}

// awaitGreeting probes addr until it greets, exited (when not nil) returns
// an error, or the timeout ends.
func awaitGreeting(addr string, proxy bool, timeout time.Duration, exited func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		// Every probe gets a second at least: the error of a last probe
		// with no time left would be a dial timeout instead of what the
		// server said.
		pd := time.Now().Add(time.Second)
		if deadline.After(pd) {
			pd = deadline
		}
		err := probe(addr, proxy, pd)
		if err == nil {
			return nil
		}
		if exited != nil {
			if err := exited(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(PollInterval)
	}
}

// probe makes one connection, reads the 220 greeting and says QUIT.
func probe(addr string, proxy bool, deadline time.Time) error {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if proxy {
		local := c.LocalAddr().(*net.TCPAddr)
		remote := c.RemoteAddr().(*net.TCPAddr)
		if _, err := fmt.Fprintf(c, "PROXY TCP4 %s %s %d %d\r\n", local.IP, remote.IP, local.Port, remote.Port); err != nil {
			return err
		}
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading greeting: %v", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	// Skip the rest of a multi-line greeting, then leave politely so the
	// log shows no lost connection.
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

// PrivateResolver writes, in dir, the hosts and resolv.conf files of a
// daemon run in its own mount namespace, and returns the shell lines that
// bind them over /etc/hosts and /etc/resolv.conf there. host and
// localhost name 127.0.0.1; the only nameserver is 127.0.0.1, where
// nothing listens, so a DNS lookup fails at once and never leaves the
// machine (the system's resolver may be an address no test may reach).
// "lookup file bind" makes OpenSMTPD's resolver (asr) read the hosts file
// first; glibc ignores the line.
func PrivateResolver(dir, host string) ([]string, error) {
	hosts := filepath.Join(dir, "hosts")
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost "+host+"\n::1\tlocalhost\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\nlookup file bind\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		return nil, err
	}
	return []string{"mount --bind " + Shq(hosts) + " /etc/hosts", "mount --bind " + Shq(resolv) + " /etc/resolv.conf"}, nil
}
