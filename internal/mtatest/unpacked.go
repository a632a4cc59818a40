package mtatest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strings"
)

// installFix ends the errors of Unpacked.Check: the way to make it pass.
const installFix = "; run scripts/install-test-deps.sh as root"

// UnpackedRoot returns the directory an MTA is unpacked into: $env, or def
// when that is empty. scripts/install-test-deps.sh reads the same variable.
func UnpackedRoot(env, def string) string {
	if root := os.Getenv(env); root != "" {
		return root
	}
	return def
}

// Unpacked is an MTA that scripts/install-test-deps.sh does not install
// (Debian's MTA packages conflict with Postfix) but downloads and unpacks
// with dpkg-deb -x into a cache directory, from where its harness runs it.
type Unpacked struct {
	Name     string   // "Exim", as in "no unpacked Exim"
	Bin      string   // the daemon's binary in the unpacked tree
	Files    []string // more files of the tree it needs
	Users    []string // system users it needs
	Commands []string // programs it needs on PATH
}

// Check checks what scripts/install-test-deps.sh checks before it calls
// the MTA ready: the binary and the other files are unpacked, ldd finds
// every shared library the binary needs, the users exist and the commands
// are on PATH. Its errors say to run the script.
func (u Unpacked) Check() error {
	for _, f := range append([]string{u.Bin}, u.Files...) {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("no unpacked %s: %v%s", u.Name, err, installFix)
		}
	}
	out, err := exec.Command("ldd", u.Bin).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ldd %s: %v\n%s%s", u.Bin, err, out, installFix)
	}
	var missing []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "not found") {
			missing = append(missing, strings.TrimSpace(line))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks shared libraries: %s%s", u.Bin, strings.Join(missing, "; "), installFix)
	}
	for _, name := range u.Users {
		if _, err := user.Lookup(name); err != nil {
			return fmt.Errorf("user %s: %v%s", name, err, installFix)
		}
	}
	for _, c := range u.Commands {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%v%s", err, installFix)
		}
	}
	return nil
}
