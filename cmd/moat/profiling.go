package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/grafana/pyroscope-go"
)

// ProfilingConfig is continuous profiling: moat pushing its own profiles
// to a profiling server. Off unless a server is configured.
type ProfilingConfig struct {
	Pyroscope PyroscopeConfig `yaml:"pyroscope"`
}

// PyroscopeConfig sends profiles to a Pyroscope (Grafana Pyroscope)
// server with github.com/grafana/pyroscope-go. It is read at startup;
// changing it needs a restart.
type PyroscopeConfig struct {
	// ServerAddress is the server's base URL ("http://pyroscope:4040");
	// profiles are POSTed to its /ingest. Empty: profiling off.
	ServerAddress string `yaml:"server_address"`
	// ApplicationName names moat's profiles on the server.
	ApplicationName string `yaml:"application_name"`
	// Tags are attached to every profile (static labels such as the
	// host or the environment).
	Tags map[string]string `yaml:"tags"`
	// ProfileTypes are the profiles taken; pyroscope-go's names.
	ProfileTypes []string `yaml:"profile_types"`
	// UploadInterval is how often profiles are sent; each covers it.
	UploadInterval time.Duration `yaml:"upload_interval"`
}

// profileTypes are the profile types pyroscope-go can take. goroutine_leak
// is left out: it needs an experimental Go build.
var profileTypes = []pyroscope.ProfileType{
	pyroscope.ProfileCPU,
	pyroscope.ProfileAllocObjects, pyroscope.ProfileAllocSpace,
	pyroscope.ProfileInuseObjects, pyroscope.ProfileInuseSpace,
	pyroscope.ProfileGoroutines,
	pyroscope.ProfileMutexCount, pyroscope.ProfileMutexDuration,
	pyroscope.ProfileBlockCount, pyroscope.ProfileBlockDuration,
}

// tagName is what Pyroscope accepts as a label name.
var tagName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.]*$`)

func (c *ProfilingConfig) defaults() {
	p := &c.Pyroscope
	if p.ApplicationName == "" {
		p.ApplicationName = "moat"
	}
	if len(p.ProfileTypes) == 0 {
		for _, t := range pyroscope.DefaultProfileTypes {
			p.ProfileTypes = append(p.ProfileTypes, string(t))
		}
	}
	if p.UploadInterval == 0 {
		p.UploadInterval = 15 * time.Second
	}
}

func (c *ProfilingConfig) validate() error {
	p := &c.Pyroscope
	if p.ServerAddress != "" {
		u, err := url.Parse(p.ServerAddress)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("profiling.pyroscope.server_address: %q is not an http:// or https:// URL", p.ServerAddress)
		}
	}
	// The application name becomes the series name of the profiles; tags
	// written into it ("app{k=v}") would bypass the checks below.
	if strings.ContainsAny(p.ApplicationName, "{}=,\" ") {
		return fmt.Errorf("profiling.pyroscope.application_name: %q: use tags for labels", p.ApplicationName)
	}
	for k, v := range p.Tags {
		if !tagName.MatchString(k) || strings.HasPrefix(k, "__") {
			return fmt.Errorf("profiling.pyroscope.tags: %q is not a valid tag name", k)
		}
		// The tags travel inside the series name, "app{k=v,...}".
		if strings.ContainsAny(v, "{}=,\"") {
			return fmt.Errorf("profiling.pyroscope.tags.%s: %q: braces, commas, quotes and = are not allowed", k, v)
		}
	}
	for _, t := range p.ProfileTypes {
		if !slices.Contains(profileTypes, pyroscope.ProfileType(t)) {
			return fmt.Errorf("profiling.pyroscope.profile_types: unknown type %q", t)
		}
	}
	if p.UploadInterval < time.Second {
		return fmt.Errorf("profiling.pyroscope.upload_interval: %v is shorter than 1s", p.UploadInterval)
	}
	return nil
}

// profiler is a running continuous profiling session; the zero value,
// profiling off, stops without doing anything.
type profiler struct{ p *pyroscope.Profiler }

// startProfiling starts pushing profiles when a server is configured.
func startProfiling(cfg PyroscopeConfig, log *slog.Logger) (profiler, error) {
	if cfg.ServerAddress == "" {
		return profiler{}, nil
	}
	types := make([]pyroscope.ProfileType, len(cfg.ProfileTypes))
	for i, t := range cfg.ProfileTypes {
		types[i] = pyroscope.ProfileType(t)
		// The runtime samples mutex and block events only when asked
		// to; these rates are the ones pyroscope-go documents, cheap
		// enough to leave on.
		switch types[i] {
		case pyroscope.ProfileMutexCount, pyroscope.ProfileMutexDuration:
			runtime.SetMutexProfileFraction(5)
		case pyroscope.ProfileBlockCount, pyroscope.ProfileBlockDuration:
			runtime.SetBlockProfileRate(5)
		}
	}
	// pyroscope-go changes the map it is given.
	tags := make(map[string]string, len(cfg.Tags))
	for k, v := range cfg.Tags {
		tags[k] = v
	}
	p, err := pyroscope.Start(pyroscope.Config{
		ApplicationName: cfg.ApplicationName,
		ServerAddress:   cfg.ServerAddress,
		Tags:            tags,
		ProfileTypes:    types,
		UploadRate:      cfg.UploadInterval,
		Logger:          pyroscopeLogger{log.With("component", "pyroscope")},
	})
	if err != nil {
		return profiler{}, fmt.Errorf("profiling: %w", err)
	}
	log.Info("continuous profiling on", "server", cfg.ServerAddress, "application", cfg.ApplicationName,
		"profile_types", cfg.ProfileTypes, "upload_interval", cfg.UploadInterval.String())
	return profiler{p}, nil
}

// stop sends what was profiled since the last upload and ends the
// session.
// A server that stopped answering may hold the last upload until
// pyroscope-go's HTTP timeout; shutdown waits for it only briefly.
func (p profiler) stop() {
	if p.p == nil {
		return
	}
	done := make(chan struct{})
	go func() { p.p.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// pyroscopeLogger puts pyroscope-go's messages into moat's log: its
// chatter at debug level, its errors (a server that does not answer) as
// warnings — profiling failing never stops mail.
type pyroscopeLogger struct{ log *slog.Logger }

func (l pyroscopeLogger) Infof(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l pyroscopeLogger) Debugf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}
func (l pyroscopeLogger) Errorf(format string, args ...any) { l.log.Warn(fmt.Sprintf(format, args...)) }
