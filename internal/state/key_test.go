package state

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestEscapePart(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a@example.org", "a@example.org"},
		{"192.0.2.0/24", "192.0.2.0/24"},
		{"2001:db8::/64", "2001%3Adb8%3A%3A/64"},
		{"", ""},
		{"*?[]\\", "%2A%3F%5B%5D%5C"},
		{"%41", "%2541"},
		{"#", "%23"},
		{"a b\r\n\x00", "a%20b%0D%0A%00"},
		{"é", "%C3%A9"},
		{"a+tag=x_y-z", "a+tag=x_y-z"},
	} {
		if got := EscapePart(c.in); got != c.want {
			t.Errorf("EscapePart(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := EscapePart(strings.Repeat("x", 201))
	if !strings.HasPrefix(long, "#") || len(long) != 33 {
		t.Errorf("a 201-byte part: %q, want # and 32 hex digits", long)
	}
	if EscapePart(strings.Repeat("x", 200)) != strings.Repeat("x", 200) {
		t.Error("a 200-byte part was hashed")
	}
	if EscapePart(strings.Repeat("x", 300)) == EscapePart(strings.Repeat("x", 301)) {
		t.Error("two long parts hash alike")
	}
}

func TestNewKey(t *testing.T) {
	if got := NewKey("grey", "a", "b:c").String(); got != "moat:v1:grey:a:b%3Ac" {
		t.Errorf("NewKey = %q", got)
	}
	if got := NewKey("grey").String(); got != "moat:v1:grey" {
		t.Errorf("NewKey without parts = %q", got)
	}
	for _, ns := range []string{"", "Grey", "1x", "a:b", "a*", strings.Repeat("a", 33), "é"} {
		if NewKey(ns, "x").Valid() {
			t.Errorf("namespace %q accepted", ns)
		}
	}
	for _, ns := range []string{"grey", "rate-ip", "rep_net2", strings.Repeat("a", 32)} {
		if !NewKey(ns).Valid() {
			t.Errorf("namespace %q refused", ns)
		}
	}
	// Every key is printable ASCII without spaces or glob characters
	// outside what NewKey writes, whatever the parts.
	for _, p := range hostile {
		s := NewKey("grey", p).String()
		for i := 0; i < len(s); i++ {
			if s[i] < 0x21 || s[i] > 0x7e || strings.IndexByte(`*?[]\`, s[i]) >= 0 {
				t.Errorf("key of %q has byte %#x", p, s[i])
			}
		}
	}
}

// TestGlobMatch: the embedded store's glob, against what Redis's
// stringmatchlen answers for the same pattern (the Redis cases of
// TestNamespacing and TestScanDelete check it on a real server).
func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true},
		{"*", "abc", true},
		{"a*", "abc", true},
		{"a*", "bac", false},
		{"*c", "abc", true},
		{"a*c", "ac", true},
		{"a*c", "abcbc", true},
		{"a*c", "abcb", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[ab]c", "bc", true},
		{"[ab]c", "cc", false},
		{"[^ab]c", "cc", true},
		{"[^ab]c", "ac", false},
		{"[a-c]x", "bx", true},
		{"[c-a]x", "bx", true},
		{"[a-c]x", "dx", false},
		{`\*`, "*", true},
		{`\*`, "a", false},
		{`a\?`, "a?", true},
		{`[\]]`, "]", true},
		{"grey:*:b", "grey:a:b", true},
		{"grey:*:b", "grey:a:c", false},
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"*a*a*a*a*a*a*a*a*b", strings.Repeat("a", 60), false},
	} {
		if got := globMatch(c.pat, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	c.Defaults()
	if err := c.Validate(); err != nil || c.Backend != BackendEmbedded || c.Dir != DefaultDir {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Backend = "memcached" }, "state.backend"},
		{func(c *Config) { c.Dir = "" }, "state.dir"},
		{func(c *Config) { c.SweepInterval = -1 }, "state.sweep_interval"},
		{func(c *Config) { c.Backend, c.Redis.Address = BackendRedis, "localhost" }, "state.redis.address"},
		{func(c *Config) { c.Backend, c.Redis.DB = BackendRedis, -1 }, "state.redis.db"},
		{func(c *Config) { c.Backend, c.Redis.DialTimeout = BackendRedis, -1 }, "state.redis.dial_timeout"},
		{func(c *Config) { c.Backend, c.Redis.ReadTimeout = BackendRedis, -1 }, "state.redis.read_timeout"},
		{func(c *Config) { c.Backend, c.Redis.PoolSize = BackendRedis, -1 }, "state.redis.pool_size"},
	} {
		cfg := Config{}
		cfg.Defaults()
		c.mod(&cfg)
		if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: %v", c.want, err)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
backend: redis
dir: /var/lib/moat
redis:
  address: 10.0.0.5:6379
  password: sekrit
  db: 2
  dial_timeout: 100ms
  read_timeout: 150ms
  pool_size: 8
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := RedisConfig{Address: "10.0.0.5:6379", Password: "sekrit", DB: 2, DialTimeout: 100 * time.Millisecond, ReadTimeout: 150 * time.Millisecond, PoolSize: 8}
	if c.Backend != BackendRedis || c.Redis != want {
		t.Errorf("decoded %+v", c)
	}
	dec = yaml.NewDecoder(strings.NewReader("redis: {adress: x}\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err == nil {
		t.Error("a misspelt key was accepted")
	}
}
