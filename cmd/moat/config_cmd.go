package main

import (
	"fmt"
	"io"
	"moat/dnsbl"
	"moat/proxy"
	"strings"
)

const configUsage = `Usage:
  moat config check FILE

Reads FILE as moat's configuration and reports the first error with its
file, line, column and key. Exits 0 when the file is valid, 2 when not.
`

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		if len(args) > 0 && isHelp(args[0]) {
			fmt.Fprint(stdout, configUsage)
			return 0
		}
		fmt.Fprint(stderr, configUsage)
		return exitUsage
	}
	fs := newFlagSet("moat config check", configUsage, stderr)
	if ok, code := parseFlags(fs, args[1:], stdout); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	path := fs.Arg(0)
	cfg, err := loadConfig(path)
	if err != nil {
		return exitCode(stderr, err)
	}
	lists, err := newChecker(cfg, dnsbl.Deps{})
	if err != nil {
		return exitCode(stderr, err)
	}
	_, set, err := buildEngine(cfg, lists, engineDeps{})
	if err != nil {
		return exitCode(stderr, err)
	}
	fmt.Fprintf(stdout, "%s: ok (listen %s, upstream %s, %d rules from %s)\n", path, joinHostPorts(cfg), cfg.Upstream.Address, set.Len(), set.File())
	return 0
}

func isHelp(s string) bool {
	return s == "-h" || s == "-help" || s == "--help" || s == "help"
}

func joinHostPorts(cfg *Config) string {
	var s []string
	for _, g := range []struct {
		kind  string
		addrs []proxy.HostPort
	}{{"", cfg.Listen}, {"tls ", cfg.ListenTLS}, {"submission ", cfg.ListenSubmission}, {"submission_tls ", cfg.ListenSubmissionTLS}} {
		for _, a := range g.addrs {
			s = append(s, g.kind+string(a))
		}
	}
	return strings.Join(s, ", ")
}
