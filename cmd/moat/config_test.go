package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

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
		re := regexp.MustCompile(`(?m)^[ \t]*#?[ \t]*` + regexp.QuoteMeta(k) + `:`)
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
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
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
