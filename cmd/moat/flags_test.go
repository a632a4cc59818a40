package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every subcommand's --help prints its usage once, to stdout, exit 0; an
// unknown flag prints flag's message and the usage once, to stderr, exit
// exitUsage. (flag.FlagSet prints Usage itself on -help: a command that
// printed it again went to both streams.)
func TestFlagsHelpAndErrors(t *testing.T) {
	for _, cmd := range [][]string{
		{"serve"}, {"config", "check"}, {"dnsbl", "check"}, {"rules", "test"}, {"rules", "compare"},
		{"analyze"}, {"capture"}, {"replay"}, {"version"},
	} {
		name := strings.Join(cmd, " ")
		for _, help := range []string{"--help", "-h"} {
			var out, errb bytes.Buffer
			code := run(append(append([]string(nil), cmd...), help), &out, &errb)
			if code != 0 || strings.Count(out.String(), "Usage:") != 1 || errb.Len() != 0 {
				t.Errorf("moat %s %s: exit %d, stdout %q, stderr %q; want 0, the usage once on stdout", name, help, code, out.String(), errb.String())
			}
		}
		var out, errb bytes.Buffer
		code := run(append(append([]string(nil), cmd...), "--no-such-flag"), &out, &errb)
		if code != exitUsage || out.Len() != 0 || strings.Count(errb.String(), "Usage:") != 1 ||
			!strings.Contains(errb.String(), "flag provided but not defined: -no-such-flag") {
			t.Errorf("moat %s --no-such-flag: exit %d, stdout %q, stderr %q; want %d, the error and the usage once on stderr", name, code, out.String(), errb.String(), exitUsage)
		}
	}
}
