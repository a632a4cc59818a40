package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"regexp"
	"strings"
	"syscall"

	"moat/capture"
)

const captureUsage = `Usage:
  moat capture --iface NAME [--filter "port 25 or port 587"] [flags]

Captures SMTP traffic live from a network interface (AF_PACKET, pure Go:
needs root or CAP_NET_RAW) and judges every session as it ends, with the
rules and DNS lists of the configuration, exactly as moat analyze does
for a file. Records are written as sessions end; SIGINT or SIGTERM stops
the capture, finishes the sessions still open and prints the summary.

--filter takes the port form of a BPF expression ("[tcp] port N [or
[tcp] port M ...]"), which sets the SMTP ports; moat compiles no other
BPF without libpcap.
`

func cmdCapture(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat capture", captureUsage, stderr)
	var f analyzeFlags
	f.register(fs, "jsonl")
	iface := fs.String("iface", "", "network interface `NAME` to capture on")
	filter := fs.String("filter", "", "BPF port `EXPRESSION` selecting the SMTP ports")
	if ok, code := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if *iface == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "moat capture: --iface is required and takes no other argument")
		fs.Usage()
		return exitUsage
	}
	if f.dnsblMode == "recorded" {
		fmt.Fprintln(stderr, "moat capture: --dns recorded needs a file; use off or live")
		return exitUsage
	}
	if *filter != "" {
		ports, err := filterPorts(*filter)
		if err != nil {
			fmt.Fprintf(stderr, "moat capture: --filter: %v\n", err)
			return exitUsage
		}
		f.ports = ports
		f.noDetect = true
	}
	if err := f.check(); err != nil {
		fmt.Fprintf(stderr, "moat capture: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return exitCode(stderr, runCapture(ctx, &f, *iface, stdout, stderr))
}

var portExpr = regexp.MustCompile(`^(?:tcp\s+)?port\s+(\d{1,5})$`)

// filterPorts reads "port 25 or tcp port 587" into "25,587".
func filterPorts(expr string) (string, error) {
	var ports []string
	for _, part := range strings.Split(expr, " or ") {
		m := portExpr.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			return "", fmt.Errorf("%q: only \"[tcp] port N\" terms joined by \"or\" are understood", part)
		}
		ports = append(ports, m[1])
	}
	return strings.Join(ports, ","), nil
}

func runCapture(ctx context.Context, f *analyzeFlags, iface string, stdout, stderr io.Writer) error {
	cc, cfg, log, err := f.load(stderr)
	if err != nil {
		return err
	}
	reg, ruleMetrics, capMetrics, err := offlineMetrics()
	if err != nil {
		return err
	}
	engine, dnsDesc, closeEngine, err := analyzeEngine(ctx, cfg, f.dnsblMode, nil, engineDeps{Rules: ruleMetrics, Log: log})
	if err != nil {
		return err
	}
	defer closeEngine()
	w, err := capture.NewWriter(stdout, f.format)
	if err != nil {
		return &configError{err}
	}
	deps := capture.Deps{Engine: engine, Session: cfg.Config.SequencerConfig(), Logger: log, Metrics: capMetrics, Stream: true}
	var ex *capture.Extractor
	if f.extract != "" {
		ex = &capture.Extractor{Dir: f.extract}
		deps.Extract = ex.Extract
	}
	an, err := capture.New(cc, deps)
	if err != nil {
		return &configError{err}
	}
	src, err := capture.OpenLive(iface)
	if err != nil {
		return fmt.Errorf("capture on %s: %w", iface, err)
	}
	// ReadPacketData blocks: closing the socket is what ends the run.
	go func() {
		<-ctx.Done()
		src.Close()
	}()
	sum := capture.NewSummary()
	sum.DNSBL = dnsDesc
	stats, err := an.Run(context.Background(), src, func(s *capture.Session) error {
		sum.Add(s)
		if err := w.Write(s); err != nil {
			return err
		}
		return w.Flush() // live: every session as it ends
	})
	if err != nil {
		return err
	}
	sum.Stats = stats
	if !f.quiet {
		sum.WriteText(stderr)
	}
	if f.metrics != "" {
		return writeMetrics(reg, f.metrics)
	}
	return nil
}
