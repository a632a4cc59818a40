package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"moat/dnsbl"
	"moat/inspect"
	"moat/inspect/authguard"
	"moat/inspect/classifier"
	"moat/inspect/greylist"
	"moat/inspect/ratelimit"
	"moat/inspect/reputation"
	"moat/internal/state"
	"moat/proxy"
	"moat/rules"
)

const serveUsage = `Usage:
  moat serve [--config FILE] [--listen HOST:PORT]... [--upstream HOST:PORT] [--http HOST:PORT|off]

Runs the SMTP proxy. Without --config, moat listens on 127.0.0.1:2525,
forwards to 127.0.0.1:25 and serves /metrics on 127.0.0.1:9325.
--listen, --upstream and --http replace the configuration's listen,
upstream.address and http.listen (the file's or the built-in ones), also
when SIGHUP re-reads the file.
SIGTERM or SIGINT stop it gracefully: idle sessions are closed with 421,
messages in flight are finished.
`

// serveOverrides are the addresses given on the command line; they win
// over the configuration file's, on every (re)load.
type serveOverrides struct {
	listen   []proxy.HostPort
	upstream proxy.HostPort
	http     string
}

func (o serveOverrides) apply(c *Config) {
	if len(o.listen) > 0 {
		c.Listen = o.listen
	}
	if o.upstream != "" {
		c.Upstream.Address = o.upstream
	}
	if o.http != "" {
		c.HTTP.Listen = o.http
	}
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat serve", serveUsage, stderr)
	configPath := fs.String("config", "", "configuration `FILE` (default: built-in defaults)")
	var ov serveOverrides
	fs.Func("listen", "SMTP listener `HOST:PORT` instead of the configuration's listen (repeat for several)", func(s string) error {
		hp, err := proxy.ParseHostPort(s)
		ov.listen = append(ov.listen, hp)
		return err
	})
	fs.Func("upstream", "the upstream MTA's `HOST:PORT` instead of the configuration's upstream.address", func(s string) error {
		hp, err := proxy.ParseHostPort(s)
		ov.upstream = hp
		return err
	})
	fs.Func("http", "HTTP listener `HOST:PORT` (/metrics, /healthz, /readyz) or off, instead of the configuration's http.listen", func(s string) error {
		if s != "off" {
			if _, err := proxy.ParseHostPort(s); err != nil {
				return err
			}
		}
		ov.http = s
		return nil
	})
	if ok, code := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "moat serve: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	// Catch SIGHUP before anything else: its default action would kill a
	// moat that is still starting up.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := loadConfigWith(*configPath, ov.apply)
	if err != nil {
		return exitCode(stderr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return exitCode(stderr, serve(ctx, hup, *configPath, ov, cfg, stderr))
}

// serve runs moat until ctx is cancelled, then shuts down gracefully.
// Every value on hup (SIGHUP) re-reads the config file at path, with the
// command line's overrides applied again.
func serve(ctx context.Context, hup <-chan os.Signal, path string, ov serveOverrides, cfg *Config, logOut io.Writer) error {
	log := newLogger(cfg.Log, logOut)
	prof, err := startProfiling(cfg.Profiling.Pyroscope, log)
	if err != nil {
		return err
	}
	defer prof.stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "moat_build_info", Help: "Always 1; labels carry moat's version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)
	reloads := newReloadMetrics(reg)
	reg.MustRegister(buildInfo)

	ruleMetrics, err := rules.NewMetrics(reg)
	if err != nil {
		return err
	}
	lists, err := newChecker(cfg, dnsbl.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	deps := engineDeps{Rules: ruleMetrics, Auth: inspect.NewAuthMetrics(reg), Log: log, Live: true,
		Greylist: greylist.NewMetrics(reg), RateLimits: ratelimit.NewMetrics(reg),
		Reputation: reputation.NewMetrics(reg)}
	if deps.AuthGuard, err = authguard.NewMetrics(reg); err != nil {
		return err
	}
	if cfg.State != nil {
		// Opened once; every engine a reload builds shares it. A change
		// of the state section takes a restart.
		store, err := state.New(*cfg.State, state.Deps{Registerer: reg})
		if err != nil {
			return fmt.Errorf("state: %w", err)
		}
		defer store.Close()
		deps.Store, deps.StateConfig = store, cfg.State
		log.Info("state store opened", "backend", string(cfg.State.Backend))
	}
	deps.Classifier = liveClassifier(ctx, cfg, deps.Store, log)
	registerClassifierMetrics(reg, func() *classifier.Live { return deps.Classifier })
	if deps.Classifier != nil {
		go deps.Classifier.Watch(ctx, deps.Store, cfg.Classifier.Refresh, log)
		if a := cfg.Classifier.Autolearn; a.Enabled {
			// Started once, with the startup configuration; a reload
			// does not change autolearning.
			deps.Autolearn = classifier.NewAutolearner(a.AutolearnConfig, deps.Store, deps.Classifier, log)
			go deps.Autolearn.Run(ctx)
		}
	}
	engine, set, err := buildEngine(cfg, lists, deps)
	if err != nil {
		return err
	}
	log.Info("rules loaded", "rules", set.File(), "count", set.Len(), "mode", cfg.Rules.Mode)
	srv, err := proxy.New(cfg.Config, proxy.Deps{Engine: engine, Logger: log, Registerer: reg})
	if err != nil {
		return &configError{err}
	}

	// Learn the upstream's extensions before the first client asks; a
	// down upstream is not fatal (the MTA may start after moat), it is
	// probed again by the first transaction.
	pctx, cancel := context.WithTimeout(ctx, cfg.Upstream.ConnectTimeout)
	if err := srv.ProbeUpstream(pctx); err != nil {
		log.Warn("upstream probe failed; SMTPUTF8 and DSN are not offered until it answers", "upstream", string(cfg.Upstream.Address), "err", err)
	}
	cancel()

	lns, err := srv.Listen()
	if err != nil {
		return err
	}
	var httpSrv *http.Server
	var httpLn net.Listener
	if cfg.HTTP.Listen != "off" {
		httpLn, err = net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("http listen %s: %w", cfg.HTTP.Listen, err)
		}
		mux := httpMux(reg, srv, cfg.HTTP.PProf)
		handleState(mux, deps.Store)
		handleLearn(mux, deps.Store, deps.Classifier)
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}

	addrs := make([]string, 0, len(lns))
	var tlsAddrs, subAddrs, subTLSAddrs []string
	for _, l := range lns {
		switch {
		case l.Submission && l.ImplicitTLS:
			subTLSAddrs = append(subTLSAddrs, l.Addr().String())
		case l.Submission:
			subAddrs = append(subAddrs, l.Addr().String())
		case l.ImplicitTLS:
			tlsAddrs = append(tlsAddrs, l.Addr().String())
		default:
			addrs = append(addrs, l.Addr().String())
		}
	}
	httpAddr := "off"
	if httpLn != nil {
		httpAddr = httpLn.Addr().String()
	}
	log.Info("moat started", "version", version, "listen", addrs, "listen_tls", tlsAddrs,
		"listen_submission", subAddrs, "listen_submission_tls", subTLSAddrs,
		"upstream", string(cfg.Upstream.Address), "http", httpAddr, "config", configName(path))

	var wg sync.WaitGroup
	errc := make(chan error, len(lns)+1)
	for _, l := range lns {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- srv.ServeListener(l) }()
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go srv.ProbeLoop(probeCtx)
	go lists.Start(probeCtx) // RFC 5782 health probes of the DNS lists
	if httpSrv != nil {
		go func() {
			if err := httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			reload(log, path, ov, srv, reloads, deps, lists)
		case err := <-errc:
			if err != nil {
				runErr = err
				log.Error("listener failed", "err", err)
				break loop
			}
		}
	}

	log.Info("moat shutting down", "grace", cfg.Timeouts.Shutdown.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown grace period over, connections closed", "err", err)
	}
	if httpSrv != nil {
		httpSrv.Shutdown(sctx)
	}
	wg.Wait()
	log.Info("moat stopped")
	return runErr
}

// reload re-reads the configuration on SIGHUP. A file that does not load
// or validate is refused whole, logged, and the running configuration
// stays; a good one takes effect for every session that starts after it.
func reload(log *slog.Logger, path string, ov serveOverrides, srv *proxy.Server, reloads reloadMetrics, d engineDeps, lists *dnsbl.Checker) {
	if path == "" {
		log.Info("SIGHUP: running on the built-in default config, nothing to reload")
		return
	}
	cfg, err := loadConfigWith(path, ov.apply)
	var engine *inspect.Engine
	var set *rules.Set
	if err == nil {
		// The new rules compile whole before anything changes; sessions
		// running keep the engine they started with.
		// DNS lists keep their cache and metrics: changing lists needs a
		// restart, and rules are checked against the running ones.
		engine, set, err = buildEngine(cfg, lists, d)
	}
	if err == nil {
		err = srv.Reload(cfg.Config, engine)
	}
	if err != nil {
		reloads.record(false)
		log.Error("config reload failed, keeping the running configuration", "config", path, "err", err)
		return
	}
	reloads.record(true)
	if !reflect.DeepEqual(cfg.State, d.StateConfig) {
		log.Warn("the state section changed: it takes a restart; the running store stays", "config", path)
	}
	log.Info("config reloaded", "config", path, "rules", set.File(), "rule_count", set.Len(), "mode", cfg.Rules.Mode)
}

// reloadMetrics count reloads and tell whether the last one worked: a
// failed reload leaves moat running on an older configuration than the
// file says, which is what the ConfigReloadFailed alert watches.
type reloadMetrics struct {
	total      *prometheus.CounterVec
	lastOK     prometheus.Gauge
	lastOKTime prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) reloadMetrics {
	m := reloadMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_config_reloads_total", Help: "Configuration reloads by result.",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_config_last_reload_successful", Help: "1 when the last reload (or the startup) loaded the configuration, 0 when it was refused.",
		}),
		lastOKTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_config_last_reload_success_timestamp_seconds", Help: "When the configuration in force was loaded, as a Unix time.",
		}),
	}
	m.total.WithLabelValues("ok")
	m.total.WithLabelValues("error")
	m.lastOK.Set(1)
	m.lastOKTime.SetToCurrentTime()
	reg.MustRegister(m.total, m.lastOK, m.lastOKTime)
	return m
}

func (m reloadMetrics) record(ok bool) {
	if !ok {
		m.total.WithLabelValues("error").Inc()
		m.lastOK.Set(0)
		return
	}
	m.total.WithLabelValues("ok").Inc()
	m.lastOK.Set(1)
	m.lastOKTime.SetToCurrentTime()
}

func configName(path string) string {
	if path == "" {
		return "built-in default"
	}
	return path
}

func httpMux(reg *prometheus.Registry, srv *proxy.Server, withPProf bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// Alive: the process serves HTTP.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	// Ready: the upstream answered its last probe, so mail can flow.
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !srv.Ready() {
			http.Error(w, "upstream not answering", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if !withPProf {
		return mux
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func newLogger(cfg LogConfig, out io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.Level) // validated at load
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(out, opts))
	}
	return slog.New(slog.NewJSONHandler(out, opts))
}
