package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"moat/capture"
	"moat/internal/replay"
)

const replayUsage = `Usage:
  moat replay --to HOST:PORT [flags] CAPTURE...

Sends the client side of every recorded SMTP session in the captures again,
to the server at HOST:PORT — moat itself with a new configuration, or a
test MTA — one connection per session, in capture order. Commands go out in
the recorded order, each (or each pipelined batch) after the live server's
replies; a message only after its 354. Where the live server refuses what
the recorded one accepted, or the reverse, the replay goes on as the
recorded client did and prints the divergence. Sessions that used TLS, and
sessions with client bytes missing from the capture, are skipped.

moat connects to HOST:PORT and nowhere else. Recorded AUTH credentials are
sent to it as they were recorded.
`

func cmdReplay(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat replay", replayUsage, stderr)
	to := fs.String("to", "", "the SMTP server to send to, `HOST:PORT` (required)")
	pace := fs.Bool("pace", false, "wait between commands as long as the recorded client did (each wait at most --max-pause)")
	maxPause := fs.Duration("max-pause", 10*time.Second, "longest single wait with --pace")
	timeout := fs.Duration("timeout", time.Minute, "longest wait to connect and for each reply")
	ports := fs.String("ports", "", "SMTP server `PORTS` in the capture, comma-separated (default 25,465,587,2525)")
	noDetect := fs.Bool("no-detect", false, "do not look for SMTP on other ports by its greeting")
	quiet := fs.Bool("quiet", false, "print the summary only, not each divergence")
	if ok, code := parseFlags(fs, args, stdout); !ok {
		return code
	}
	switch {
	case *to == "":
		// Never a default: replay sends recorded mail, and only where
		// the operator says.
		fmt.Fprintln(stderr, "moat replay: --to HOST:PORT is required: the server to send the recorded sessions to")
		return exitUsage
	case !validHostPort(*to):
		fmt.Fprintf(stderr, "moat replay: --to %q is not HOST:PORT\n", *to)
		return exitUsage
	case fs.NArg() == 0:
		fmt.Fprintln(stderr, "moat replay: no capture file given")
		fs.Usage()
		return exitUsage
	case *maxPause <= 0 || *timeout <= 0:
		fmt.Fprintln(stderr, "moat replay: --max-pause and --timeout must be positive")
		return exitUsage
	}
	cc, err := (&analyzeFlags{ports: *ports, noDetect: *noDetect}).captureConfig()
	if err != nil {
		fmt.Fprintf(stderr, "moat replay: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	opts := replay.Options{To: *to, Pace: *pace, MaxPause: *maxPause, Timeout: *timeout}
	return exitCode(stderr, runReplay(ctx, cc, opts, fs.Args(), *quiet, stdout))
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}

// runReplay is moat replay after the flags.
func runReplay(ctx context.Context, cc capture.Config, opts replay.Options, files []string, quiet bool, stdout io.Writer) error {
	srcs := make([]capture.Source, 0, len(files))
	for _, name := range files {
		s, err := capture.OpenFile(name)
		if err != nil {
			for _, o := range srcs {
				o.Close()
			}
			return err
		}
		srcs = append(srcs, s)
	}
	src := capture.Merge(srcs...)
	defer src.Close()
	opts.Session = func(rs *replay.Session) {
		if quiet || rs.Skipped != "" {
			return
		}
		for _, d := range rs.Divergences {
			fmt.Fprintf(stdout, "%s %s > %s: %s: recorded %q, live %q", rs.UID, rs.Client, rs.Server, d.Command, d.Recorded, d.Live)
			if d.Note != "" {
				fmt.Fprintf(stdout, " (%s)", d.Note)
			}
			fmt.Fprintln(stdout)
		}
		if rs.Err != nil {
			fmt.Fprintf(stdout, "%s %s > %s: ended early: %v\n", rs.UID, rs.Client, rs.Server, rs.Err)
		}
	}
	st, err := replay.Run(ctx, cc, src, opts)
	if st != nil && (err == nil || st.Sessions > 0) {
		writeReplaySummary(stdout, st, opts.To)
	}
	return err
}

func writeReplaySummary(w io.Writer, st *replay.Stats, to string) {
	skipped := 0
	var why []string
	for _, k := range slices.Sorted(maps.Keys(st.Skipped)) {
		skipped += st.Skipped[k]
		why = append(why, fmt.Sprintf("%s %d", k, st.Skipped[k]))
	}
	fmt.Fprintln(w, "== moat replay summary")
	fmt.Fprintf(w, "sessions:      %d replayed to %s, %d skipped", st.Sessions, to, skipped)
	if len(why) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(why, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "transactions:  %d messages sent: %d accepted, %d refused by the live server\n", st.Transactions, st.Accepted, st.Refused)
	fmt.Fprintf(w, "divergences:   %d, in %d sessions (replies that went the other way from the recorded server's)\n", st.Divergences, st.Diverged)
	fmt.Fprintf(w, "ended early:   %d sessions (connection closed or timed out)\n", st.Failed)
	if st.Capture != nil && len(st.Capture.ReadErrors) > 0 {
		fmt.Fprintf(w, "read errors:   %s\n", strings.Join(st.Capture.ReadErrors, "; "))
	}
}
