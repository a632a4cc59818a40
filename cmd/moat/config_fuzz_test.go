package main

import (
	"log/slog"
	"os"
	"testing"

	"moat/dnsbl"
	"moat/proxy"
	"moat/rules"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzConfig feeds arbitrary YAML as a configuration file. Properties: no
// panic while decoding and validating; and a configuration that
// `moat config check` accepts builds its DNS lists, rules engine and
// proxy without a panic either — no accepted config may crash moat.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"../../moat.example.yaml",
	} {
		data, err := os.ReadFile(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("listen: [\"127.0.0.1:0\"]\nhostname: mx.example.org\nupstream:\n  address: \"127.0.0.1:25\"\n"))
	f.Add([]byte("limits: {max_recipients: 0}\ngreeting: {delay: -1s}\n"))
	f.Add([]byte("dnsbl: {resolver: [\"127.0.0.1:1\"], lists: [{name: x, zone: x.test, kind: ip}]}\n"))
	f.Add([]byte("rules: {mode: monitor}\nupstream: {pool_size: 3, tls: required}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig("fuzz.yaml", data, nil)
		if err != nil {
			return
		}
		if cfg.Rules.File != "" {
			cfg.Rules.File = "" // no file reads from random names
		}
		log := slog.New(slog.DiscardHandler)
		reg := prometheus.NewRegistry()
		lists, err := dnsbl.New(cfg.DNSBL, dnsbl.Deps{Logger: log, Registerer: reg})
		if err != nil {
			return // refused with an error: fine
		}
		m, err := rules.NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		engine, _, err := buildEngine(cfg, lists, engineDeps{Rules: m, Log: log})
		if err != nil {
			return
		}
		if _, err := proxy.New(cfg.Config, proxy.Deps{Engine: engine, Logger: log, Registerer: reg}); err != nil {
			return
		}
	})
}
