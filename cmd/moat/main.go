// Command moat is a transparent SMTP proxy and anti-spam filter that sits in
// front of an existing mail server.
//
//	moat serve [--config FILE]    run the proxy
//	moat config check FILE        validate a configuration file
//	moat version                  print the version
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Exit statuses: 2 for a usage or configuration error (the operator must
// fix something before trying again), 1 for a failure at run time.
const (
	exitFailure = 1
	exitUsage   = 2
)

const usage = `moat — a transparent SMTP proxy and anti-spam filter

Usage:
  moat serve [--config FILE]   run the proxy (built-in defaults without --config)
  moat config check FILE       validate a configuration file and exit
  moat dnsbl check IP|DOMAIN   look an address or domain up on every list and say why
  moat auth check ... MSG.eml  check a message's SPF, DKIM, ARC and DMARC and say why
  moat state get|del PATTERN   show or delete entries of the running moat's state store
  moat rules test|compare ...  run rules over messages (see moat rules --help)
  moat learn --spam P --ham P  teach the statistical classifier the site's own mail
  moat explain MESSAGE.eml     show why a message gets its classifier score and rules
  moat analyze CAPTURE...      judge the SMTP sessions of pcap/pcapng files offline
  moat capture --iface NAME    judge the SMTP sessions seen live on an interface
  moat replay --to HOST:PORT   send the recorded SMTP sessions of captures to a server
  moat version                 print version information

Run "moat COMMAND --help" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "dnsbl":
		return cmdDnsbl(args[1:], stdout, stderr)
	case "auth":
		return cmdAuth(args[1:], stdout, stderr)
	case "state":
		return cmdState(args[1:], stdout, stderr)
	case "rules":
		return cmdRules(args[1:], stdout, stderr)
	case "learn":
		return cmdLearn(args[1:], stdout, stderr)
	case "explain":
		return cmdExplain(args[1:], stdout, stderr)
	case "analyze":
		return cmdAnalyze(args[1:], stdout, stderr)
	case "capture":
		return cmdCapture(args[1:], stdout, stderr)
	case "replay":
		return cmdReplay(args[1:], stdout, stderr)
	case "version":
		return cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "moat: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// exitCode maps an error to the process exit status, printing it.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "moat: %v\n", err)
	var ce *configError
	if errors.As(err, &ce) {
		return exitUsage
	}
	return exitFailure
}
