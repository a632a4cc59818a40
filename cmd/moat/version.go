package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func versionString() string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("moat %s%s (%s %s/%s)", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat version", "Usage:\n  moat version\n\nPrints moat's version, Go version and platform.\n", stderr)
	if ok, code := parseFlags(fs, args, stdout); !ok {
		return code
	}
	fmt.Fprintln(stdout, versionString())
	return 0
}
