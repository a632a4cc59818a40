package authguard

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"moat/internal/strictyaml"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Cooldown:       15 * time.Minute,
		Limits:         DefaultLimits(),
		Spray:          SprayConfig{Window: time.Hour, Users: 5, Networks: 5},
		KnownClientTTL: 720 * time.Hour,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults %+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Config)
		err  string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"spray off", func(c *Config) { c.Spray.Users, c.Spray.Networks = -1, -1 }, ""},
		{"user limits only", func(c *Config) { c.Limits = []Limit{{ScopeUser, time.Hour, 3}} }, ""},
		{"no limits", func(c *Config) { c.Limits = []Limit{} }, "limits: no limits"},
		{"bad scope", func(c *Config) { c.Limits = []Limit{{"client", time.Hour, 3}} }, `limits[0].scope: "client"`},
		{"zero max", func(c *Config) { c.Limits[1].Max = 0 }, "limits[1].max"},
		{"short window", func(c *Config) { c.Limits[0].Window = time.Millisecond }, "limits[0].window"},
		{"long window", func(c *Config) { c.Limits[0].Window = 500 * 24 * time.Hour }, "limits[0].window"},
		{"twice", func(c *Config) { c.Limits = append(c.Limits, Limit{ScopeIP, time.Minute, 3}) }, "limits[8]: a second limit"},
		{"cooldown", func(c *Config) { c.Cooldown = -time.Second }, "cooldown"},
		{"spray window", func(c *Config) { c.Spray.Window = time.Millisecond }, "spray.window"},
		{"known ttl", func(c *Config) { c.KnownClientTTL = time.Millisecond }, "known_client_ttl"},
	} {
		cfg := Config{}
		cfg.Defaults()
		c.edit(&cfg)
		err := cfg.Validate()
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.err)
		}
		if c.err != "" && err != nil && !strings.HasPrefix(err.Error(), "submission.lockout.") {
			t.Errorf("%s: %v does not name its key", c.name, err)
		}
		if _, nerr := New(nil, cfg, nil); (nerr == nil) != (err == nil) {
			t.Errorf("%s: New %v, Validate %v", c.name, nerr, err)
		}
	}
}

// TestConfigYAML: the README's syntax decodes, strictly, as moat's
// configuration will embed it.
func TestConfigYAML(t *testing.T) {
	type file struct {
		Submission struct {
			Lockout Config `yaml:"lockout"`
		} `yaml:"submission"`
	}
	var f file
	err := strictyaml.Decode("moat.yaml", []byte(`
submission:
  lockout:
    cooldown: 10m
    limits:
      - {scope: ip, window: 1m, max: 10}
      - {scope: net_narrow, window: 24h, max: 150}
      - {scope: user, window: 1h, max: 30}
    spray: {window: 2h, users: 8, networks: -1}
    known_client_ttl: 240h
`), &f)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Submission.Lockout
	c.Defaults()
	want := Config{
		Cooldown: 10 * time.Minute,
		Limits: []Limit{
			{ScopeIP, time.Minute, 10}, {ScopeNetNarrow, 24 * time.Hour, 150}, {ScopeUser, time.Hour, 30},
		},
		Spray:          SprayConfig{Window: 2 * time.Hour, Users: 8, Networks: -1},
		KnownClientTTL: 240 * time.Hour,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{
		"submission: {lockout: {cooldown: 10m, cooldwn: 5m}}",
		"submission: {lockout: {limits: [{scope: ip, window: 1m, max: 10, burst: 3}]}}",
		"submission: {lockout: {cooldown: 1d}}",
	} {
		var f file
		if err := strictyaml.Decode("moat.yaml", []byte(bad), &f); err == nil || !strings.Contains(err.Error(), "moat.yaml:1:") {
			t.Errorf("%s: %v, want an error at its line", bad, err)
		}
	}
}
