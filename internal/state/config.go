package state

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Backend names a store implementation.
type Backend string

const (
	// BackendEmbedded keeps the state in one bbolt file under Config.Dir:
	// one moat on one machine, nothing to install.
	BackendEmbedded Backend = "embedded"
	// BackendRedis keeps the state in a redis-server that several moat
	// instances share.
	BackendRedis Backend = "redis"
)

// Config is the state section of moat's configuration file. The zero
// value plus Defaults is valid: the embedded store in /var/lib/moat.
type Config struct {
	// Backend is embedded (default) or redis.
	Backend Backend `yaml:"backend"`
	// Dir is the embedded store's directory; its file is Dir/state.db.
	Dir string `yaml:"dir"`
	// SweepInterval is how often the embedded store deletes expired
	// entries, a bounded batch at a time (expired entries are invisible
	// before that anyway).
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// Redis configures the redis backend.
	Redis RedisConfig `yaml:"redis"`
}

// RedisConfig configures the connection to Redis. The timeouts are short
// on purpose: a slow store must not hold up an SMTP session; callers fail
// open instead.
type RedisConfig struct {
	// Address is "host:port", default 127.0.0.1:6379.
	Address string `yaml:"address"`
	// Password is sent with HELLO (AUTH) when set.
	Password string `yaml:"password"`
	// DB is the database number selected, default 0.
	DB int `yaml:"db"`
	// DialTimeout bounds connecting, default 250ms.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout bounds waiting for one reply (and writing one command),
	// default 250ms.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// PoolSize is the most connections kept open, default 16.
	PoolSize int `yaml:"pool_size"`
}

// DefaultDir is the embedded store's directory when none is configured.
const DefaultDir = "/var/lib/moat"

// Defaults fills every unset key with its default.
func (c *Config) Defaults() {
	if c.Backend == "" {
		c.Backend = BackendEmbedded
	}
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Minute
	}
	r := &c.Redis
	if r.Address == "" {
		r.Address = "127.0.0.1:6379"
	}
	if r.DialTimeout == 0 {
		r.DialTimeout = 250 * time.Millisecond
	}
	if r.ReadTimeout == 0 {
		r.ReadTimeout = 250 * time.Millisecond
	}
	if r.PoolSize == 0 {
		r.PoolSize = 16
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	switch c.Backend {
	case BackendEmbedded:
		if c.Dir == "" {
			return errors.New("state.dir: required for the embedded backend")
		}
		if c.SweepInterval <= 0 {
			return errors.New("state.sweep_interval: must be positive")
		}
	case BackendRedis:
		r := c.Redis
		if _, _, err := net.SplitHostPort(r.Address); err != nil {
			return fmt.Errorf("state.redis.address: %q is not host:port: %v", r.Address, err)
		}
		switch {
		case r.DB < 0:
			return errors.New("state.redis.db: must not be negative")
		case r.DialTimeout <= 0:
			return errors.New("state.redis.dial_timeout: must be positive")
		case r.ReadTimeout <= 0:
			return errors.New("state.redis.read_timeout: must be positive")
		case r.PoolSize <= 0:
			return errors.New("state.redis.pool_size: must be positive")
		}
	default:
		return fmt.Errorf("state.backend: %q is neither embedded nor redis", c.Backend)
	}
	return nil
}
