package mtatest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeServer greets every connection with greeting, takes the data after
// DATA, answers QUIT with 221 and everything else with 250.
func fakeServer(t *testing.T, greeting string) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(greeting))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(line, "QUIT"):
						c.Write([]byte("221 bye\r\n"))
						return
					case strings.HasPrefix(line, "DATA"):
						c.Write([]byte("354 go on\r\n"))
						for line != ".\r\n" && err == nil {
							line, err = r.ReadString('\n')
						}
					}
					c.Write([]byte("250 ok\r\n"))
				}
			}()
		}
	}()
	return l.Addr().String()
}

func TestAwaitGreeting(t *testing.T) {
	if err := AwaitGreeting(fakeServer(t, "220-one\r\n220 two\r\n"), false, time.Second); err != nil {
		t.Errorf("multi-line greeting: %v", err)
	}
	if err := AwaitGreeting(fakeServer(t, "554 go away\r\n"), false, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "554 go away") {
		t.Errorf("refusing server: %v", err)
	}
}

// A daemon that exits is reported as such, without waiting for the
// timeout.
func TestDaemonAwaitGreetingExited(t *testing.T) {
	d, err := StartDaemon(exec.Command("/bin/sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = d.AwaitGreeting(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || time.Since(start) > 5*time.Second {
		t.Errorf("AwaitGreeting of an exited daemon: %v after %v", err, time.Since(start))
	}
}

// StopGroup ends the daemon and what it left running in its group; a
// process that ignores SIGTERM gets SIGKILL.
func TestDaemonStopGroup(t *testing.T) {
	d, err := StartDaemon(exec.Command("/bin/sh", "-c", "trap '' TERM; sleep 60 & sleep 60 & wait"))
	if err != nil {
		t.Fatal(err)
	}
	pgid := d.Pid()
	if !WaitFor(5*time.Second, func() bool { return ChildOf(pgid) != 0 }) {
		t.Fatal("no child of the daemon")
	}
	// The fallback without CONFIG_PROC_CHILDREN finds a child too.
	want := strconv.Itoa(pgid)
	if c, ok := findProc(func(f []string) bool { return len(f) > 1 && f[1] == want }); !ok || c == 0 {
		t.Errorf("findProc: no child of %d (%v)", pgid, ok)
	}
	if !GroupAlive(pgid) {
		t.Error("GroupAlive: the daemon's group is not alive")
	}
	start := time.Now()
	if err := d.StopGroup("test daemon"); err != nil {
		t.Fatal(err)
	}
	if GroupAlive(pgid) {
		t.Error("group alive after StopGroup")
	}
	if took := time.Since(start); took < stopWait {
		t.Errorf("StopGroup took %v: the shell ignores SIGTERM, so SIGKILL comes after %v", took, stopWait)
	}
}

// The readiness check of an unpacked MTA names the fix.
func TestUnpackedCheck(t *testing.T) {
	dir := t.TempDir()
	err := Unpacked{Name: "X", Bin: filepath.Join(dir, "x")}.Check()
	if err == nil || !strings.HasPrefix(err.Error(), "no unpacked X: ") || !strings.HasSuffix(err.Error(), "run scripts/install-test-deps.sh as root") {
		t.Errorf("missing binary: %v", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip(err)
	}
	if err := (Unpacked{Name: "sh", Bin: sh, Users: []string{"root"}}).Check(); err != nil {
		t.Errorf("sh: %v", err)
	}
	if err := (Unpacked{Name: "sh", Bin: sh, Users: []string{"no-such-user-moat"}}).Check(); err == nil || !strings.Contains(err.Error(), "install-test-deps.sh") {
		t.Errorf("missing user: %v", err)
	}
}

// Output reads the Maildir and the log; Session sends through a server.
func TestOutputAndSession(t *testing.T) {
	dir := t.TempDir()
	o := NewOutput("mtatest", filepath.Join(dir, "mail"), filepath.Join(dir, "log"), "log")
	if msgs := o.Messages(t); len(msgs) != 0 || o.Log(t) != "" {
		t.Fatalf("empty instance: %q %q", msgs, o.Log(t))
	}
	if err := os.MkdirAll(filepath.Join(dir, "mail", "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"b", "a"} {
		f := filepath.Join(dir, "mail", "new", name)
		if err := os.WriteFile(f, []byte("Subject: "+name+"\n\nbody\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		mtime := time.Now().Add(time.Duration(i-10) * time.Second)
		if err := os.Chtimes(f, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "log"), []byte("one\ndelivered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if msgs := o.WaitMessages(t, 2, time.Second); len(msgs) != 2 || !strings.HasPrefix(string(msgs[0]), "Subject: b") {
		t.Errorf("messages not in delivery order: %q", msgs)
	}
	if log := o.WaitLog(t, "delivered", time.Second); !strings.HasPrefix(log, "one\n") {
		t.Errorf("log %q", log)
	}

	s, greeting := Dial(t, fakeServer(t, "220 fake ESMTP\r\n"))
	if greeting != "fake ESMTP" {
		t.Errorf("greeting %q", greeting)
	}
	s.Do(250, "EHLO client.test")
	s.Send("a@client.test", []string{"b@example.net", "c@example.net"}, "Subject: x\r\n\r\n.dot\r\n")
	s.Do(221, "QUIT")
}

func TestCheckAddr(t *testing.T) {
	for _, a := range []string{`a$b@x.test`, "a b@x.test", `a"b@x.test`, "nodomain", "a@b@c", ""} {
		if CheckAddr(a) == nil {
			t.Errorf("%q accepted", a)
		}
	}
	if err := CheckAddr("a.b+c_d-e@x.test"); err != nil {
		t.Error(err)
	}
}
