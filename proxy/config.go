package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the proxy's part of moat's configuration file. The zero value
// plus Defaults is a working proxy on 127.0.0.1:2525 in front of
// 127.0.0.1:25.
type Config struct {
	// Listen are the SMTP listeners ("host:port").
	Listen []HostPort `yaml:"listen"`
	// Hostname is moat's name in the greeting, the EHLO reply and the
	// Received header. Default: the machine's host name.
	Hostname string `yaml:"hostname"`

	Upstream UpstreamConfig `yaml:"upstream"`
	Limits   Limits         `yaml:"limits"`
	Timeouts Timeouts       `yaml:"timeouts"`
	Data     DataConfig     `yaml:"data"`
}

// UpstreamConfig describes the mail server moat shields.
type UpstreamConfig struct {
	// Address of the upstream MTA's SMTP service.
	Address HostPort `yaml:"address"`
	// Helo is the name moat gives in its EHLO to the upstream. Default:
	// Hostname.
	Helo string `yaml:"helo"`
	// ConnectTimeout bounds the TCP connect and the 220 greeting.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// CommandTimeout bounds the reply to EHLO, MAIL, RCPT, RSET and DATA
	// (RFC 5321 §4.5.3.2.2/3 say 5 minutes; a local MTA answers in
	// milliseconds, so the default is shorter).
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// DataTimeout bounds the final reply after the message was sent
	// (RFC 5321 §4.5.3.2.6: 10 minutes).
	DataTimeout time.Duration `yaml:"data_timeout"`
}

// Limits bound what one client can make moat hold.
type Limits struct {
	// MaxMessageSize is advertised with SIZE (RFC 1870) and enforced
	// while reading DATA.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
	// MaxRecipients per transaction; RFC 5321 §4.5.3.1.8 requires at
	// least 100 to be accepted.
	MaxRecipients int `yaml:"max_recipients"`
	// MaxLineLength bounds a command line, without its CRLF. RFC 5321
	// §4.5.3.1.4 says 512 with the CRLF; extensions (SIZE, DSN,
	// SMTPUTF8) need more, so the default is Postfix's 2048.
	MaxLineLength int `yaml:"max_line_length"`
	// MaxErrors is how many bad commands a session may send before moat
	// answers 421 and closes it.
	MaxErrors int `yaml:"max_errors"`
}

// Timeouts bound how long moat waits for a client.
type Timeouts struct {
	// Command is the wait for the next command (RFC 5321 §4.5.3.2.7:
	// at least 5 minutes).
	Command time.Duration `yaml:"command"`
	// Data is the wait for each block of message data (RFC 5321
	// §4.5.3.2.5 gives the sender 3 minutes per block).
	Data time.Duration `yaml:"data"`
	// Shutdown is how long a stopping moat waits for messages in flight
	// before it closes the remaining connections.
	Shutdown time.Duration `yaml:"shutdown"`
}

// DataConfig controls how message data is held while it is inspected.
type DataConfig struct {
	// SpoolMemory is how much of a message is kept in memory; the rest
	// spills to a temp file in SpoolDir, so a large message never costs
	// unbounded RAM.
	SpoolMemory ByteSize `yaml:"spool_memory"`
	// SpoolDir is where spilled messages go. Default: the system temp
	// directory.
	SpoolDir string `yaml:"spool_dir"`
}

// Defaults fills every unset field with its default.
func (c *Config) Defaults() {
	if len(c.Listen) == 0 {
		c.Listen = []HostPort{"127.0.0.1:2525"}
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if c.Hostname == "" {
			c.Hostname = "localhost"
		}
	}
	u := &c.Upstream
	if u.Address == "" {
		u.Address = "127.0.0.1:25"
	}
	if u.Helo == "" {
		u.Helo = c.Hostname
	}
	setDuration(&u.ConnectTimeout, 30*time.Second)
	setDuration(&u.CommandTimeout, 2*time.Minute)
	setDuration(&u.DataTimeout, 10*time.Minute)

	l := &c.Limits
	if l.MaxMessageSize == 0 {
		l.MaxMessageSize = 25 << 20
	}
	if l.MaxRecipients == 0 {
		l.MaxRecipients = 1000
	}
	if l.MaxLineLength == 0 {
		l.MaxLineLength = 2048
	}
	if l.MaxErrors == 0 {
		l.MaxErrors = 20
	}
	setDuration(&c.Timeouts.Command, 5*time.Minute)
	setDuration(&c.Timeouts.Data, 3*time.Minute)
	setDuration(&c.Timeouts.Shutdown, time.Minute)
	if c.Data.SpoolMemory == 0 {
		c.Data.SpoolMemory = 1 << 20
	}
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	switch {
	case c.Limits.MaxMessageSize < 0:
		return errors.New("limits.max_message_size: must be positive")
	case c.Limits.MaxRecipients < 100:
		return errors.New("limits.max_recipients: RFC 5321 §4.5.3.1.8 requires at least 100")
	case c.Limits.MaxLineLength < 510:
		return errors.New("limits.max_line_length: RFC 5321 §4.5.3.1.4 requires at least 510")
	case c.Limits.MaxErrors < 1:
		return errors.New("limits.max_errors: must be at least 1")
	case c.Data.SpoolMemory < 0:
		return errors.New("data.spool_memory: must be positive")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"upstream.connect_timeout", c.Upstream.ConnectTimeout},
		{"upstream.command_timeout", c.Upstream.CommandTimeout},
		{"upstream.data_timeout", c.Upstream.DataTimeout},
		{"timeouts.command", c.Timeouts.Command},
		{"timeouts.data", c.Timeouts.Data},
		{"timeouts.shutdown", c.Timeouts.Shutdown},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s: must be positive", d.key)
		}
	}
	return nil
}

// HostPort is a "host:port" network address, checked when it is decoded.
type HostPort string

// ParseHostPort checks that s is host:port with a numeric port.
func ParseHostPort(s string) (HostPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port", s)
	}
	if strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("%q: bad host %q", s, host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	return HostPort(s), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (h *HostPort) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseHostPort(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// ByteSize is a size in bytes, written as a number or with a unit suffix:
// "512KiB", "25MiB", "1GiB", "10MB".
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// ParseByteSize parses a ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (a number of bytes, or with KiB, MiB, GiB, KB, MB, GB)", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}
