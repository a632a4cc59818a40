package capture

import (
	"fmt"
	"time"
)

// Config is the capture section of moat's configuration; the command line
// of moat analyze and moat capture sets the same fields. README.md in this
// folder documents every key.
type Config struct {
	// Ports are the TCP ports whose connections are SMTP whatever they
	// carry. Default 25, 465, 587, 2525.
	Ports []int `yaml:"ports"`
	// Detect also reads connections on other ports as SMTP when the
	// server opens with a 220 reply line and the client greets with
	// HELO or EHLO. Default true.
	Detect *bool `yaml:"detect"`
	// IdleTimeout ends a connection that has seen no packet for this
	// long, in capture time. Default 5m (Zeek's tcp_inactivity_timeout).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// GapTimeout is how long, in capture time, reassembly waits for a
	// missing segment before it gives up on it and records a gap.
	// Default 10s.
	GapTimeout time.Duration `yaml:"gap_timeout"`
	// MaxFlows bounds the connections followed at once per shard; past
	// it, the least recently active are ended early. Default 100000.
	MaxFlows int `yaml:"max_flows"`
	// MaxPagesPerFlow and MaxPages bound the out-of-order segments
	// reassembly holds (pages of 1900 bytes) per connection and per
	// shard; past them it skips ahead, recording a gap. Defaults 4096
	// and 65536.
	MaxPagesPerFlow int `yaml:"max_pages_per_flow"`
	MaxPages        int `yaml:"max_pages"`
	// FlowMemory is how much of one direction of a connection is kept in
	// memory before it moves to a file in SpoolDir; Memory bounds all of
	// them together. Defaults 1 MiB and 256 MiB.
	FlowMemory int64 `yaml:"flow_memory"`
	Memory     int64 `yaml:"memory"`
	// SpoolDir holds the spool files, deleted as soon as created. Default
	// the system's temporary directory.
	SpoolDir string `yaml:"spool_dir"`
	// MaxMessageSize bounds the message bytes kept for judging and
	// extraction; the rest is counted but dropped. Default 64 MiB.
	MaxMessageSize int64 `yaml:"max_message_size"`
	// Shards is how many cores reassemble and judge connections in
	// parallel; 0 means one per core (GOMAXPROCS).
	Shards int `yaml:"shards"`
}

// Defaults fills every unset field.
func (c *Config) Defaults() {
	if len(c.Ports) == 0 {
		c.Ports = []int{25, 465, 587, 2525}
	}
	if c.Detect == nil {
		t := true
		c.Detect = &t
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.GapTimeout == 0 {
		c.GapTimeout = 10 * time.Second
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = 100000
	}
	if c.MaxPagesPerFlow == 0 {
		c.MaxPagesPerFlow = 4096
	}
	if c.MaxPages == 0 {
		c.MaxPages = 65536
	}
	if c.FlowMemory == 0 {
		c.FlowMemory = 1 << 20
	}
	if c.Memory == 0 {
		c.Memory = 256 << 20
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 64 << 20
	}
}

// Validate checks a configuration after Defaults.
func (c *Config) Validate() error {
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("capture.ports: %d is not a TCP port", p)
		}
	}
	switch {
	case c.IdleTimeout < time.Second:
		return fmt.Errorf("capture.idle_timeout: %v is less than a second", c.IdleTimeout)
	case c.GapTimeout < 0:
		return fmt.Errorf("capture.gap_timeout: %v is negative", c.GapTimeout)
	case c.MaxFlows < 1:
		return fmt.Errorf("capture.max_flows: %d is not positive", c.MaxFlows)
	case c.MaxPagesPerFlow < 1 || c.MaxPages < 1:
		return fmt.Errorf("capture.max_pages_per_flow and max_pages must be positive")
	case c.FlowMemory < 0 || c.Memory < 0:
		return fmt.Errorf("capture.flow_memory and memory must not be negative")
	case c.MaxMessageSize < 1:
		return fmt.Errorf("capture.max_message_size: %d is not positive", c.MaxMessageSize)
	case c.Shards < 0:
		return fmt.Errorf("capture.shards: %d is negative", c.Shards)
	}
	return nil
}
