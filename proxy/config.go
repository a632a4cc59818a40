package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"moat/inspect/sequencer"
	"net"
	"net/netip"
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
	// ListenTLS are implicit-TLS listeners (RFC 8314, port 465 style):
	// the TLS handshake comes before the greeting.
	ListenTLS []HostPort `yaml:"listen_tls"`
	// ListenSubmission and ListenSubmissionTLS are submission listeners
	// (RFC 6409 port 587 with STARTTLS; RFC 8314 port 465 with implicit
	// TLS): they offer AUTH PLAIN LOGIN once the session runs over TLS,
	// and relay the exchange to the upstream, which checks the password.
	ListenSubmission    []HostPort `yaml:"listen_submission"`
	ListenSubmissionTLS []HostPort `yaml:"listen_submission_tls"`
	// ListenProxyProtocol names the networks of trusted load balancers.
	// A connection from one of them must start with a HAProxy PROXY
	// header (v1 or v2), whose source address then is the client's.
	ListenProxyProtocol []Prefix `yaml:"listen_proxy_protocol"`
	// Hostname is moat's name in the greeting, the EHLO reply and the
	// Received header. Default: the machine's host name.
	Hostname string `yaml:"hostname"`

	TLS      TLSConfig      `yaml:"tls"`
	Upstream UpstreamConfig `yaml:"upstream"`
	Limits   Limits         `yaml:"limits"`
	Timeouts Timeouts       `yaml:"timeouts"`
	Greeting GreetingConfig `yaml:"greeting"`
	Data     DataConfig     `yaml:"data"`

	upstreamTLS *tls.Config // built from Upstream by Server.Reload
}

// TLSConfig is moat's server side of TLS: STARTTLS (RFC 3207) and the
// implicit-TLS listeners.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files, re-read on reload. With neither
	// set, moat generates a self-signed certificate at startup.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// STARTTLS offers STARTTLS to clients. Default true; set false to
	// leave TLS to a load balancer.
	STARTTLS *bool `yaml:"starttls"`
}

// GreetingConfig controls the start of a session.
type GreetingConfig struct {
	// Delay holds the 220 greeting back this long. A client that talks
	// before the greeting (RFC 5321 §4.3.1 forbids it) is an early
	// talker, typical of spam bots; 0 disables the check.
	Delay time.Duration `yaml:"delay"`
	// EarlyTalker is what happens to an early talker: "log" records it as
	// a session fact for the rules, "reject" refuses the session with 554.
	EarlyTalker string `yaml:"early_talker"`
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
	// ProbeInterval is how often the upstream is probed for /readyz and
	// its capabilities.
	ProbeInterval time.Duration `yaml:"probe_interval"`
	// PoolSize is how many idle upstream connections are kept for the
	// next client sessions (default 0: none, one upstream connection per
	// client session). Not used with xclient or proxy_protocol, where a
	// connection speaks for one client.
	PoolSize *int `yaml:"pool_size"`
	// PoolIdle is how long a pooled connection may sit idle; keep it well
	// below the upstream's own idle timeout (Postfix: 300s).
	PoolIdle time.Duration `yaml:"pool_idle"`
	// PoolMaxAge bounds how long one upstream connection is reused,
	// counted from its connect (Postfix's smtp_connection_reuse_time_limit,
	// also 300s): load spreads again over the addresses behind the name,
	// and an upstream restarted or reconfigured is met afresh.
	PoolMaxAge time.Duration `yaml:"pool_max_age"`

	// XClient sends Postfix's XCLIENT (ADDR, PORT, NAME, HELO, PROTO)
	// before MAIL, so the upstream sees the real client. The upstream
	// must authorise moat (Postfix: smtpd_authorized_xclient_hosts).
	XClient bool `yaml:"xclient"`
	// ProxyProtocol sends a HAProxy PROXY header, "v1" or "v2", on
	// connect (Postfix: smtpd_upstream_proxy_protocol = haproxy).
	ProxyProtocol string `yaml:"proxy_protocol"`

	// TLS to the upstream: "off", "opportunistic" (STARTTLS when
	// offered, unverified, plaintext if it fails) or "required"
	// (STARTTLS with a verified certificate, or no delivery).
	TLS string `yaml:"tls"`
	// TLSCAFile verifies the upstream's certificate (PEM). Default: the
	// system roots.
	TLSCAFile string `yaml:"tls_ca_file"`
	// TLSServerName is the name verified. Default: the host of Address.
	TLSServerName string `yaml:"tls_server_name"`
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
	// MaxCommands bounds the commands of one session.
	MaxCommands int `yaml:"max_commands"`
	// MaxHeaderSize bounds the header section of a message.
	MaxHeaderSize ByteSize `yaml:"max_header_size"`
	// MaxConnections bounds concurrent client connections in all;
	// MaxConnectionsPerIP those from one client address. Past either,
	// a new client gets 421 4.7.0.
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// PerIPExempt are client networks max_connections_per_ip does not
	// apply to, as Postfix exempts $mynetworks from its per-client
	// limits (smtpd_client_event_limit_exceptions). Default: loopback,
	// 127.0.0.0/8 and ::1, so local tools and monitoring are never
	// turned away; an empty list exempts nobody.
	PerIPExempt []Prefix `yaml:"per_ip_exempt"`
}

// Timeouts bound how long moat waits for a client.
type Timeouts struct {
	// Command is the wait for the next command (RFC 5321 §4.5.3.2.7:
	// at least 5 minutes).
	Command time.Duration `yaml:"command"`
	// Data is the wait for each block of message data (RFC 5321
	// §4.5.3.2.5 gives the sender 3 minutes per block).
	Data time.Duration `yaml:"data"`
	// Session bounds a whole session, however active: the answer to a
	// slowloris client that trickles a byte at a time.
	Session time.Duration `yaml:"session"`
	// Shutdown is how long a stopping moat waits for messages in flight
	// before it closes the remaining connections.
	Shutdown time.Duration `yaml:"shutdown"`
	// ProxyHeader is the wait for the PROXY header of a trusted load
	// balancer (listen_proxy_protocol), which sends it as soon as it has
	// connected. Postfix's smtpd_upstream_proxy_timeout is also 5s.
	ProxyHeader time.Duration `yaml:"proxy_header"`
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
	// BareLF and BareCR say what to do with a line ending other than
	// CRLF inside a message, the raw material of SMTP smuggling:
	// "normalize" turns it into CRLF (and dot-stuffs what follows), so
	// the upstream sees exactly the framing moat saw; "reject" refuses
	// the message with 550 5.5.2.
	BareLF string `yaml:"bare_lf"`
	BareCR string `yaml:"bare_cr"`
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
	setDuration(&u.ProbeInterval, 30*time.Second)
	if u.PoolSize == nil {
		n := 0
		u.PoolSize = &n
	}
	setDuration(&u.PoolIdle, 10*time.Second)
	setDuration(&u.PoolMaxAge, 5*time.Minute)
	if u.TLS == "" {
		u.TLS = "off"
	}
	if c.TLS.STARTTLS == nil {
		on := true
		c.TLS.STARTTLS = &on
	}
	if c.Greeting.EarlyTalker == "" {
		c.Greeting.EarlyTalker = "log"
	}

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
	if l.MaxCommands == 0 {
		l.MaxCommands = 10000
	}
	if l.MaxHeaderSize == 0 {
		l.MaxHeaderSize = 1 << 20
	}
	if l.MaxConnections == 0 {
		l.MaxConnections = 2000
	}
	if l.MaxConnectionsPerIP == 0 {
		l.MaxConnectionsPerIP = 50
	}
	if l.PerIPExempt == nil {
		l.PerIPExempt = []Prefix{{netip.MustParsePrefix("127.0.0.0/8")}, {netip.MustParsePrefix("::1/128")}}
	}
	setDuration(&c.Timeouts.Command, 5*time.Minute)
	setDuration(&c.Timeouts.Data, 3*time.Minute)
	setDuration(&c.Timeouts.Session, 30*time.Minute)
	setDuration(&c.Timeouts.Shutdown, time.Minute)
	setDuration(&c.Timeouts.ProxyHeader, 5*time.Second)
	if c.Data.SpoolMemory == 0 {
		c.Data.SpoolMemory = 1 << 20
	}
	if c.Data.BareLF == "" {
		c.Data.BareLF = "normalize"
	}
	if c.Data.BareCR == "" {
		c.Data.BareCR = "normalize"
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
	case *c.Upstream.PoolSize < 0:
		return errors.New("upstream.pool_size: must not be negative (0 disables the pool)")
	case c.Limits.MaxCommands < 1, c.Limits.MaxConnections < 1, c.Limits.MaxConnectionsPerIP < 1, c.Limits.MaxHeaderSize < 1:
		return errors.New("limits: max_commands, max_connections, max_connections_per_ip and max_header_size must be positive")
	case c.Data.BareLF != "normalize" && c.Data.BareLF != "reject":
		return fmt.Errorf("data.bare_lf: %q is not normalize or reject", c.Data.BareLF)
	case c.Data.BareCR != "normalize" && c.Data.BareCR != "reject":
		return fmt.Errorf("data.bare_cr: %q is not normalize or reject", c.Data.BareCR)
	case c.Greeting.EarlyTalker != "log" && c.Greeting.EarlyTalker != "reject":
		return fmt.Errorf("greeting.early_talker: %q is not log or reject", c.Greeting.EarlyTalker)
	case c.Upstream.ProxyProtocol != "" && c.Upstream.ProxyProtocol != "v1" && c.Upstream.ProxyProtocol != "v2":
		return fmt.Errorf("upstream.proxy_protocol: %q is not v1 or v2", c.Upstream.ProxyProtocol)
	case c.Upstream.TLS != "off" && c.Upstream.TLS != "opportunistic" && c.Upstream.TLS != "required":
		return fmt.Errorf("upstream.tls: %q is not off, opportunistic or required", c.Upstream.TLS)
	case (c.TLS.CertFile == "") != (c.TLS.KeyFile == ""):
		return errors.New("tls: cert_file and key_file go together")
	case len(c.ListenSubmission) > 0 && (c.TLS.STARTTLS == nil || !*c.TLS.STARTTLS):
		// AUTH is offered only under TLS (RFC 8314 §3.3), which a
		// STARTTLS submission listener gets only through STARTTLS.
		return errors.New("listen_submission: needs tls.starttls (AUTH is offered only after STARTTLS); use listen_submission_tls for implicit TLS")
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
		{"timeouts.session", c.Timeouts.Session},
		{"greeting.delay", c.Greeting.Delay},
		{"upstream.probe_interval", c.Upstream.ProbeInterval},
		{"upstream.pool_idle", c.Upstream.PoolIdle},
		{"upstream.pool_max_age", c.Upstream.PoolMaxAge},
		{"timeouts.shutdown", c.Timeouts.Shutdown},
		{"timeouts.proxy_header", c.Timeouts.ProxyHeader},
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

// Prefix is an IP network ("10.0.0.0/8", "2001:db8::/32") or a single
// address, checked when it is decoded.
type Prefix struct{ netip.Prefix }

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if a, err := netip.ParseAddr(s); err == nil {
		p.Prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return nil
	}
	pf, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is not an IP network (like 10.0.0.0/8) or address", s)
	}
	p.Prefix = pf.Masked()
	return nil
}

// SequencerConfig is the policy of a session, for the session sequencer:
// the proxy's and, for the same judgement offline, the capture analyzer's.
func (c *Config) SequencerConfig() sequencer.Config {
	return sequencer.Config{
		Hostname:       c.Hostname,
		MaxLineLength:  c.Limits.MaxLineLength,
		MaxCommands:    c.Limits.MaxCommands,
		MaxErrors:      c.Limits.MaxErrors,
		MaxRecipients:  c.Limits.MaxRecipients,
		MaxMessageSize: int64(c.Limits.MaxMessageSize),
		MaxHeaderSize:  int64(c.Limits.MaxHeaderSize),
		EarlyTalker:    c.Greeting.EarlyTalker,
		BareLF:         c.Data.BareLF,
		BareCR:         c.Data.BareCR,
		STARTTLS:       c.TLS.STARTTLS != nil && *c.TLS.STARTTLS,
		GreetingDelay:  c.Greeting.Delay,
	}
}
