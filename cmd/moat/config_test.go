package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/internal/state"
)

// Every configuration key appears in moat.example.yaml, set or commented
// out, so the example really documents all of them.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../moat.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	collectKeys(reflect.TypeOf(Config{}), &keys)
	if len(keys) < 20 {
		t.Fatalf("found only %d keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		re := regexp.MustCompile(`(?m)^[ \t]*#?[ \t]*(- )?` + regexp.QuoteMeta(k) + `:`)
		if !re.Match(data) {
			t.Errorf("moat.example.yaml does not document %q", k)
		}
	}
}

func collectKeys(t reflect.Type, keys *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem() // a list of entries documents the keys of one
		}
		if strings.Contains(opts, "inline") {
			collectKeys(ft, keys)
			continue
		}
		*keys = append(*keys, name)
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft.Field(0).IsExported() && ft.Field(0).Tag.Get("yaml") != "" {
			collectKeys(ft, keys)
		}
	}
}

// The state and greylist sections: no state section, no store; a bare
// one is the embedded store in its default directory; bad greylist
// settings are refused with their key.
func TestStateAndGreylistConfig(t *testing.T) {
	cfg, err := parseConfig("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.State != nil || cfg.Greylist.Delay != 5*time.Minute {
		t.Errorf("built-in default: state %+v, greylist %+v", cfg.State, cfg.Greylist)
	}
	cfg, err = parseConfig("m.yaml", []byte("state: {}\ngreylist: {delay: 1s}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.State == nil || cfg.State.Backend != state.BackendEmbedded || cfg.State.Dir != state.DefaultDir || cfg.Greylist.Delay != time.Second {
		t.Errorf("state %+v greylist %+v", cfg.State, cfg.Greylist)
	}
	for src, want := range map[string]string{
		"greylist: {on_store_error: reject}\n":       "greylist.on_store_error",
		"greylist: {delay: 1h, retry_window: 30m}\n": "greylist.retry_window",
		"state: {backend: memcached}\n":              "state.backend",
		"greylist: {dealy: 1s}\n":                    "dealy",
		"state: {backend: redis, redis: {db: -1}}\n": "state.redis.db",
	} {
		if _, err := parseConfig("m.yaml", []byte(src), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %s", src, err, want)
		}
	}
}

// The rate_limits section: defaults (burst = the rate's events, action
// none), the stage each limit is counted at for the rules loader, and
// refusals that name the limit and its key.
func TestRateLimitsConfig(t *testing.T) {
	src := "rate_limits:\n  - {name: per-ip, key: client_ip, count: messages, rate: 100/1h}\n  - {name: rcpts, key: rcpt, count: recipients, rate: 10/1m, burst: 2, action: close}\n"
	cfg, err := parseConfig("m.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.RateLimits[0]; l.Burst != 100 || l.Action != "none" {
		t.Errorf("defaults: %+v", l)
	}
	if st := rateLimitStages(cfg); st["per-ip"] != inspect.StageData || st["rcpts"] != inspect.StageRcpt {
		t.Errorf("stages %v", st)
	}
	for src, want := range map[string]string{
		"rate_limits: [{name: a, key: client_ip, count: messages, rate: 100/h}]\n":           "rate_limits.a.rate",
		"rate_limits: [{name: a, key: client_ip, count: messages, rate: 100}]\n":             "rate_limits.a.rate",
		"rate_limits: [{name: a, key: helo, count: messages, rate: 1/1h}]\n":                 "rate_limits.a.key",
		"rate_limits: [{name: a, key: mail_from, count: connections, rate: 1/1h}]\n":         "rate_limits.a.key",
		"rate_limits: [{name: a, key: client_ip, count: messages, rate: 1/1h, action: x}]\n": "rate_limits.a.action",
		"rate_limits: [{name: a, key: client_ip, count: messages, rate: 1/1h, brust: 1}]\n":  "brust",
	} {
		if _, err := parseConfig("m.yaml", []byte(src), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %s", src, err, want)
		}
	}
}

// The reputation section: off and a week's window by default; a window
// and enabled parse; a bad window and an unknown key are refused.
func TestReputationConfig(t *testing.T) {
	cfg, err := parseConfig("m.yaml", []byte("hostname: mx.test\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Reputation.Enabled || cfg.Reputation.Window != 168*time.Hour {
		t.Errorf("defaults: %+v", cfg.Reputation)
	}
	cfg, err = parseConfig("m.yaml", []byte("reputation: {enabled: true, window: 24h}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Reputation.Enabled || cfg.Reputation.Window != 24*time.Hour {
		t.Errorf("parsed: %+v", cfg.Reputation)
	}
	for src, want := range map[string]string{
		"reputation: {window: -1h}\n": "reputation.window",
		"reputation: {windw: 1h}\n":   "windw",
	} {
		if _, err := parseConfig("m.yaml", []byte(src), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %s", src, err, want)
		}
	}
}
