package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"moat/dnsbl"
	"moat/inspect/greylist"
	"moat/inspect/ratelimit"
	"moat/inspect/reputation"
	"moat/internal/state"
	"moat/internal/strictyaml"
	"moat/proxy"
	"moat/rules"
)

// Config is moat's configuration file. Each package owns its part; this
// type only composes them. moat.example.yaml documents every key.
type Config struct {
	proxy.Config `yaml:",inline"`

	DNSBL dnsbl.Config `yaml:"dnsbl"`
	Auth  AuthConfig   `yaml:"auth"`
	Rules rules.Config `yaml:"rules"`
	// State is the store of greylisting entries. nil (no state section):
	// no store, and rules with action greylist let mail through with a
	// warning. A state section, even empty, opens the embedded store in
	// its dir (default /var/lib/moat).
	State    *state.Config   `yaml:"state"`
	Greylist greylist.Config `yaml:"greylist"`
	// RateLimits are named limits counted on the state store; without a
	// state section they are off (rate_limit conditions are unknown).
	RateLimits ratelimit.Config `yaml:"rate_limits"`
	// Reputation counts verdicts per client network and sender domain on
	// the state store (off without one).
	Reputation reputation.Config `yaml:"reputation"`
	// Submission is the lockout, the per-user limits and the sender map
	// of the submission listeners.
	Submission SubmissionConfig `yaml:"submission"`
	// Classifier is the statistical classifier (its model lives in the
	// state store; moat learn trains it).
	Classifier ClassifierConfig `yaml:"classifier"`
	HTTP       HTTPConfig       `yaml:"http"`
	Log        LogConfig        `yaml:"log"`

	Profiling ProfilingConfig `yaml:"profiling"`
}

// HTTPConfig is the operator's HTTP listener: /metrics, /healthz,
// /readyz and, when enabled, /debug/pprof.
type HTTPConfig struct {
	// Listen is host:port; "off" disables the listener.
	Listen string `yaml:"listen"`
	// PProf serves Go's profiler under /debug/pprof/. Off by default:
	// it shows internals, and a CPU profile or trace costs CPU.
	PProf bool `yaml:"pprof"`
}

// LogConfig selects the log format and level.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or text
}

// configError is a configuration the operator must fix; it exits 2.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// defaults fills every unset key.
func (c *Config) defaults() {
	c.Config.Defaults()
	c.Rules.Defaults()
	c.DNSBL.Defaults()
	c.Auth.defaults(c.Config.Hostname)
	if c.State != nil {
		c.State.Defaults()
	}
	c.Greylist.Defaults()
	c.Submission.defaults(c) // adds the per-user rate limits
	c.Classifier.defaults()
	c.RateLimits.Defaults()
	c.Reputation.Defaults()
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = "127.0.0.1:9325"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.Profiling.defaults()
}

// validate checks what decoding could not: settings that depend on each
// other, and values of free-form strings.
func (c *Config) validate(file string) error {
	bad := func(format string, args ...any) error {
		return &configError{fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...))}
	}
	if err := c.Config.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Rules.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.DNSBL.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Auth.validate(); err != nil {
		return bad("%v", err)
	}
	if c.State != nil {
		if err := c.State.Validate(); err != nil {
			return bad("%v", err)
		}
	}
	if err := c.Greylist.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.RateLimits.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Reputation.Validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Submission.validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Classifier.validate(); err != nil {
		return bad("%v", err)
	}
	if c.HTTP.Listen != "off" {
		if _, err := proxy.ParseHostPort(c.HTTP.Listen); err != nil {
			return bad("http.listen: %v (or \"off\")", err)
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return bad("log.level: %v", err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		return bad("log.format: %q is not json or text", c.Log.Format)
	}
	if err := c.Profiling.validate(); err != nil {
		return bad("%v", err)
	}
	return nil
}

// loadConfig reads, decodes, completes and validates a configuration
// file. path "" means the built-in default configuration.
func loadConfig(path string) (*Config, error) {
	return loadConfigWith(path, nil)
}

// loadConfigWith is loadConfig with override applied to the decoded file
// before defaults and validation (moat serve's --listen, --upstream and
// --http), so values derived from them are derived from the override.
func loadConfigWith(path string, override func(*Config)) (*Config, error) {
	if path == "" {
		return parseConfig("", nil, override)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &configError{fmt.Errorf("config file %s: does not exist", path)}
		}
		return nil, &configError{fmt.Errorf("config file %s: %v", path, err)}
	}
	return parseConfig(path, data, override)
}

// parseConfig decodes, completes and validates the configuration data
// read from the file name, with override applied before the defaults;
// name "" means the built-in default.
func parseConfig(name string, data []byte, override func(*Config)) (*Config, error) {
	var cfg Config
	if name != "" {
		if err := strictyaml.Decode(name, data, &cfg); err != nil {
			return nil, &configError{err}
		}
	} else {
		name = "built-in default config"
	}
	if override != nil {
		override(&cfg)
	}
	cfg.defaults()
	if err := cfg.validate(name); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}
