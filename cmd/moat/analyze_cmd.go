package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"moat/capture"
	"moat/dnsbl"
	"moat/inspect"
	"moat/internal/state"
	"moat/rules"
)

const analyzeUsage = `Usage:
  moat analyze [flags] CAPTURE...

Reads pcap or pcapng captures (gzip-compressed too; "-" is standard input;
several are merged in time order), reassembles every SMTP connection,
reconstructs its sessions and runs them through the same inspection
pipeline as the proxy, with the rules and DNS lists of the configuration.
Writes one record per transaction (Zeek smtp.log field names, plus moat's
verdict, score, rules and stage) and a summary on standard error.
`

// analyzeFlags are the flags moat analyze and moat capture share.
type analyzeFlags struct {
	config, rules, dnsblMode, format, out, extract, ports, metrics string
	state                                                          string // moat analyze only
	noDetect, quiet                                                bool
	shards                                                         int
	openMetrics                                                    string // moat analyze only
}

func (f *analyzeFlags) register(fs *flag.FlagSet, format string) {
	fs.StringVar(&f.config, "config", "", "configuration `FILE` for the rules and DNS lists (default: built-in)")
	fs.StringVar(&f.rules, "rules", "", "rules `FILE` instead of the configuration's")
	dnsUsage := "every DNS lookup (lists, rDNS, SPF, DKIM, DMARC, ARC): off (not asked: their facts are unknown), live (asked now) or recorded (answered from the DNS responses in the capture; an unrecorded answer is unknown, never a failure)"
	fs.StringVar(&f.dnsblMode, "dns", "off", dnsUsage)
	fs.StringVar(&f.dnsblMode, "dnsbl", "off", "the older name of --dns")
	fs.StringVar(&f.format, "format", format, "output format: jsonl or table")
	fs.StringVar(&f.out, "out", "", "write records to `FILE` instead of standard output")
	fs.StringVar(&f.extract, "extract", "", "write every message to `DIR` as an .eml file")
	fs.StringVar(&f.ports, "ports", "", "SMTP server `PORTS`, comma-separated (default 25,465,587,2525)")
	fs.BoolVar(&f.noDetect, "no-detect", false, "do not look for SMTP on other ports by its greeting")
	fs.IntVar(&f.shards, "shards", 0, "connections analysed in parallel on `N` cores (0: all)")
	fs.StringVar(&f.metrics, "metrics", "", "write Prometheus metrics (mode=\"offline\") to `FILE` at the end")
	fs.BoolVar(&f.quiet, "quiet", false, "no summary and no progressBar")
}

// captureConfig turns the flags into capture's configuration.
func (f *analyzeFlags) captureConfig() (capture.Config, error) {
	var cc capture.Config
	if f.ports != "" {
		for _, p := range strings.Split(f.ports, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil {
				return cc, fmt.Errorf("--ports: %q is not a port", p)
			}
			cc.Ports = append(cc.Ports, n)
		}
	}
	if f.noDetect {
		no := false
		cc.Detect = &no
	}
	cc.Shards = f.shards
	cc.Defaults()
	if err := cc.Validate(); err != nil {
		return cc, err
	}
	return cc, nil
}

func cmdAnalyze(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat analyze", analyzeUsage, stderr)
	var f analyzeFlags
	f.register(fs, "jsonl")
	fs.StringVar(&f.state, "state", "", "read reputation from a state store, never writing it: an embedded store's `DIR` (its state.db is copied first) or redis://HOST:PORT[/DB]; greylisting and rate limits stay unknown")
	fs.StringVar(&f.openMetrics, "openmetrics", "", "write the metrics to `FILE` as OpenMetrics with the capture's own timestamps (for promtool tsdb create-blocks-from openmetrics)")
	if ok, code := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "moat analyze: no capture file given")
		fs.Usage()
		return exitUsage
	}
	if err := f.check(); err != nil {
		fmt.Fprintf(stderr, "moat analyze: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return exitCode(stderr, runAnalyze(ctx, &f, fs.Args(), stdout, stderr))
}

func (f *analyzeFlags) check() error {
	switch f.dnsblMode {
	case "off", "live", "recorded":
	default:
		return fmt.Errorf("--dns %q is not off, live or recorded", f.dnsblMode)
	}
	if f.format != "jsonl" && f.format != "table" {
		return fmt.Errorf("--format %q is not jsonl or table", f.format)
	}
	return nil
}

// load turns the flags shared by analyze and capture into the capture
// configuration, moat's configuration (with --rules applied) and the
// logger of an offline run, which reports warnings and worse.
func (f *analyzeFlags) load(stderr io.Writer) (capture.Config, *Config, *slog.Logger, error) {
	cc, err := f.captureConfig()
	if err != nil {
		return cc, nil, nil, &configError{err}
	}
	cfg, err := loadConfig(f.config)
	if err != nil {
		return cc, nil, nil, err
	}
	if f.rules != "" {
		cfg.Rules.File = f.rules
	}
	return cc, cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil
}

// runAnalyze is moat analyze after the flags.
func runAnalyze(ctx context.Context, f *analyzeFlags, files []string, stdout, stderr io.Writer) error {
	cc, cfg, log, err := f.load(stderr)
	if err != nil {
		return err
	}
	var om *capture.OpenMetrics
	if f.openMetrics != "" {
		// job and instance, which a scrape would have added: the
		// dashboards select by them. The instance is the capture's name.
		instance := filepath.Base(files[0])
		if files[0] == "-" {
			instance = "stdin"
		}
		om = capture.NewOpenMetrics(capture.OpenMetricsOptions{Version: version,
			Labels: map[string]string{"job": "moat-offline", "instance": instance}})
	}

	// Standard input can be read only once; recorded DNS needs two passes.
	if f.dnsblMode == "recorded" {
		var cleanup func()
		files, cleanup, err = spoolStdin(files)
		if err != nil {
			return err
		}
		defer cleanup()
	}

	reg, ruleMetrics, capMetrics, err := offlineMetrics()
	if err != nil {
		return err
	}
	ed := engineDeps{Rules: ruleMetrics, Log: log}
	if f.state != "" {
		st, closeState, err := openReadStore(f.state)
		if err != nil {
			return err
		}
		defer closeState()
		ed.ReadStore = st
		// The model as the live moat had it: read once, never written.
		ed.Classifier = liveClassifier(ctx, cfg, st, log)
	}
	engine, dnsDesc, closeEngine, err := analyzeEngine(ctx, cfg, f.dnsblMode, files, ed)
	if err != nil {
		return err
	}
	defer closeEngine()

	out := stdout
	if f.out != "" {
		of, err := os.Create(f.out)
		if err != nil {
			return err
		}
		defer of.Close()
		out = of
	}
	w, err := capture.NewWriter(out, f.format)
	if err != nil {
		return &configError{err}
	}
	deps := capture.Deps{Engine: engine, Session: cfg.Config.SequencerConfig(), Logger: log, Metrics: capMetrics}
	var ex *capture.Extractor
	if f.extract != "" {
		if err := os.MkdirAll(f.extract, 0o755); err != nil {
			return err
		}
		ex = &capture.Extractor{Dir: f.extract}
		deps.Extract = ex.Extract
	}
	an, err := capture.New(cc, deps)
	if err != nil {
		return &configError{err}
	}
	srcs := make([]capture.Source, 0, len(files))
	var total int64
	for _, name := range files {
		s, err := capture.OpenFile(name)
		if err != nil {
			for _, o := range srcs {
				o.Close()
			}
			return err
		}
		if st, err := os.Stat(name); err == nil && name != "-" {
			total += st.Size()
		}
		srcs = append(srcs, s)
	}
	src := capture.Merge(srcs...)
	defer src.Close()

	sum := capture.NewSummary()
	sum.DNSBL = dnsDesc
	var prog *progressBar
	if !f.quiet && isTerminal(stderr) {
		prog = startProgressBar(stderr, total)
		src = prog.count(src)
	}
	stats, err := an.Run(ctx, src, func(s *capture.Session) error {
		sum.Add(s)
		if om != nil {
			om.Add(s)
		}
		prog.session()
		return w.Write(s)
	})
	prog.stop()
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	sum.Stats = stats
	if !f.quiet {
		sw := stderr
		if f.format == "table" && f.out == "" {
			sw = stdout
		}
		sum.WriteText(sw)
	}
	if ex != nil && ex.Err() != nil {
		return fmt.Errorf("--extract: %w", ex.Err())
	}
	if f.metrics != "" {
		if err := writeMetrics(reg, f.metrics); err != nil {
			return err
		}
	}
	if om != nil {
		if err := writeOpenMetrics(om, f.openMetrics); err != nil {
			return err
		}
	}
	if stats.Panics > 0 {
		return fmt.Errorf("%d sessions were lost to an internal error (a bug: please report it)", stats.Panics)
	}
	return nil
}

// openReadStore opens the store spec names for reading only: Redis
// through the read-only view; an embedded store by a copy of its file —
// the live file is locked by the moat that writes it, and a copy can be
// neither locked nor changed by this run.
func openReadStore(spec string) (state.Store, func(), error) {
	var cfg state.Config
	cleanup := func() {}
	if rest, ok := strings.CutPrefix(spec, "redis://"); ok {
		addr, db, _ := strings.Cut(rest, "/")
		cfg.Backend = state.BackendRedis
		cfg.Defaults()
		cfg.Redis.Address = addr
		if db != "" {
			n, err := strconv.Atoi(db)
			if err != nil {
				return nil, nil, &configError{fmt.Errorf("--state %s: database %q is not a number", spec, db)}
			}
			cfg.Redis.DB = n
		}
	} else {
		src, err := os.ReadFile(filepath.Join(spec, state.FileName))
		if err != nil {
			return nil, nil, &configError{fmt.Errorf("--state %s: %v", spec, err)}
		}
		dir, err := os.MkdirTemp("", "moat-analyze-state")
		if err != nil {
			return nil, nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		if err := os.WriteFile(filepath.Join(dir, state.FileName), src, 0o600); err != nil {
			cleanup()
			return nil, nil, err
		}
		cfg.Backend = state.BackendEmbedded
		cfg.Defaults()
		cfg.Dir = dir
	}
	if err := cfg.Validate(); err != nil {
		cleanup()
		return nil, nil, &configError{fmt.Errorf("--state %s: %v", spec, err)}
	}
	st, err := state.New(cfg, state.Deps{})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("--state %s: %v (copy state.db while moat is stopped)", spec, err)
	}
	ro := state.ReadOnly(st)
	return ro, func() { ro.Close(); cleanup() }, nil
}

// analyzeEngine builds the inspection engine for mode: the configured
// rules, and the DNS lists not queried (off), queried now (live), or
// answered from the DNS responses in the captures (recorded).
func analyzeEngine(ctx context.Context, cfg *Config, mode string, files []string, d engineDeps) (*inspect.Engine, string, func(), error) {
	log := d.Log
	nothing := func() {}
	switch mode {
	case "live":
		lists, err := newChecker(cfg, dnsbl.Deps{Logger: log})
		if err != nil {
			return nil, "", nil, err
		}
		e, _, err := buildEngine(cfg, lists, d)
		return e, "queried live, now (not as they were at capture time)", nothing, err
	case "recorded":
		answers := capture.NewDNSAnswers()
		for _, name := range files {
			src, err := capture.OpenFile(name)
			if err != nil {
				return nil, "", nil, err
			}
			capture.CollectDNS(src, answers)
			src.Close()
		}
		addr, stop, err := answers.Serve(ctx)
		if err != nil {
			return nil, "", nil, err
		}
		c := *cfg
		c.DNSBL.Resolver = []dnsbl.Resolver{dnsbl.Resolver(addr)}
		lists, err := newChecker(&c, dnsbl.Deps{Logger: log})
		if err != nil {
			stop()
			return nil, "", nil, err
		}
		dd := d
		dd.Recorded = true
		e, _, err := buildEngine(&c, lists, dd)
		if err != nil {
			stop()
			return nil, "", nil, err
		}
		desc := fmt.Sprintf("answered from %d DNS answers recorded in the capture (a query without one is a failed lookup)", answers.Len())
		return e, desc, stop, nil
	}
	// off: the rules still know the lists by name, but every lookup
	// reports "not queried" (see engineDeps.NotQueried).
	lists, _ := dnsbl.New(cfg.DNSBL, dnsbl.Deps{})
	dd := d
	dd.NotQueried = true
	e, _, err := buildEngine(cfg, lists, dd)
	return e, "not queried (--dnsbl off): list conditions are unknown, never \"not listed\"", nothing, err
}

// errNotQueried is the answer of every list under --dnsbl off.
var errNotQueried = errors.New("DNS lists are not queried offline (--dnsbl off)")

// notQueried answers every lookup with a failure of kind "not_queried".
type notQueried struct{ c *dnsbl.Checker }

func (n notQueried) Lookup(_ context.Context, kind inspect.ListKind, key string) func(context.Context) []inspect.ListResult {
	var out []inspect.ListResult
	for _, li := range n.c.Lists() {
		if toInspectKind(li.Kind) != kind {
			continue
		}
		out = append(out, inspect.ListResult{List: li.Name, Key: key, Allow: li.Allow,
			Err: errNotQueried, ErrKind: "not_queried", Text: "not queried"})
	}
	return func(context.Context) []inspect.ListResult { return out }
}

// spoolStdin copies "-" to a temporary file so it can be read twice.
func spoolStdin(files []string) ([]string, func(), error) {
	cleanup := func() {}
	out := append([]string(nil), files...)
	for i, name := range out {
		if name != "-" {
			continue
		}
		tmp, err := os.CreateTemp("", "moat-stdin-*.pcap")
		if err != nil {
			return nil, nil, err
		}
		if _, err := io.Copy(tmp, os.Stdin); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return nil, nil, err
		}
		tmp.Close()
		out[i] = tmp.Name()
		cleanup = func() { os.Remove(tmp.Name()) }
		break // stdin can appear once
	}
	return out, cleanup, nil
}

func writeMetrics(g prometheus.Gatherer, path string) error {
	mfs, err := g.Gather()
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(f, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func writeOpenMetrics(om *capture.OpenMetrics, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := om.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressBar draws a one-line progressBar bar on a terminal.
type progressBar struct {
	w        io.Writer
	total    int64
	bytes    atomic.Int64
	sessions atomic.Int64
	start    time.Time
	done     chan struct{}
	stopped  chan struct{}
}

func startProgressBar(w io.Writer, total int64) *progressBar {
	p := &progressBar{w: w, total: total, start: time.Now(), done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				fmt.Fprint(p.w, "\r\033[K")
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

func (p *progressBar) draw() {
	b := p.bytes.Load()
	el := time.Since(p.start).Seconds()
	line := fmt.Sprintf("%d sessions, %.1f MB, %.1f MB/s", p.sessions.Load(), float64(b)/1e6, float64(b)/1e6/el)
	if p.total > 0 {
		frac := min(float64(b)/float64(p.total), 1)
		const width = 30
		n := int(frac * width)
		line = fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, line)
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

func (p *progressBar) session() {
	if p != nil {
		p.sessions.Add(1)
	}
}

func (p *progressBar) stop() {
	if p != nil {
		close(p.done)
		<-p.stopped
	}
}

// count wraps src so that the bar sees the bytes read (captured frame
// bytes: close to the file size for pcap).
func (p *progressBar) count(src capture.Source) capture.Source {
	return &countingSource{Source: src, p: p}
}

type countingSource struct {
	capture.Source
	p *progressBar
}

func (c *countingSource) Next() (capture.Packet, error) {
	pk, err := c.Source.Next()
	c.p.bytes.Add(int64(len(pk.Data)) + 16)
	return pk, err
}

// offlineMetrics builds the registry of an offline run. Capture's own
// collectors carry mode="offline"; the rules engine's already have a
// "mode" label (enforce, shadow), so theirs say source="offline".
func offlineMetrics() (*prometheus.Registry, *rules.Metrics, *capture.Metrics, error) {
	reg := prometheus.NewRegistry()
	ruleMetrics, err := rules.NewMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"source": "offline"}, reg))
	if err != nil {
		return nil, nil, nil, err
	}
	capMetrics, err := capture.NewMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"mode": "offline"}, reg))
	if err != nil {
		return nil, nil, nil, err
	}
	return reg, ruleMetrics, capMetrics, nil
}
