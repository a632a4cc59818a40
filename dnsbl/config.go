package dnsbl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"
)

// Config is the dnsbl section of moat's configuration file. The zero value
// plus Defaults is valid: no lists, nothing looked up.
type Config struct {
	// Resolver are the recursive resolvers queried, "IP" or "IP:port",
	// tried in order when one fails. One address may be given without a
	// list. Default: the nameservers of /etc/resolv.conf.
	//
	// Spamhaus, URIBL, SURBL and others refuse queries that come through
	// big public resolvers (8.8.8.8, 1.1.1.1 ...): use a local one.
	Resolver []Resolver `yaml:"resolver"`
	// Timeout bounds one lookup on one list (the A query, a retry over
	// TCP and the TXT query together), unless the list sets its own.
	Timeout time.Duration `yaml:"timeout"`
	// CacheSize bounds the answers cached, over all lists.
	CacheSize int `yaml:"cache_size"`
	// HealthInterval is how often every list is probed with its RFC 5782
	// test entries.
	HealthInterval time.Duration `yaml:"health_interval"`
	// Lists are looked up in this order, and their results come out in
	// this order.
	Lists []ListConfig `yaml:"lists"`
}

// ListConfig configures one blocklist or allowlist.
type ListConfig struct {
	// Name is what rules and metrics call the list.
	Name string `yaml:"name"`
	// Zone is the DNS zone queried. Optional with a profile that knows it.
	Zone string `yaml:"zone"`
	// Kind is what the list lists: ip, domain or uri. Default: the
	// profile's, else ip.
	Kind Kind `yaml:"kind"`
	// Profile is a built-in list description (see profiles.go): codes,
	// error codes, zone, kind, allow and health test entries. Keys set
	// here override it; codes are merged, entry by entry.
	Profile Profile `yaml:"profile"`
	// Codes map answers to reasons and weights. Without codes and
	// without a profile, any answer in 127.0.0.0/8 is a listing with
	// reason "listed" and weight 1 (RFC 5782 §2.3). With codes, an
	// answer that matches no entry is not a listing (as in postscreen).
	// Either way an answer in 127.255.255.0/24 that no address entry
	// maps is the list refusing the query: a list error.
	Codes Codes `yaml:"codes"`
	// TXT fetches the TXT record of a listed key, the list's own words
	// for why, which reject texts may show.
	TXT bool `yaml:"txt"`
	// Timeout overrides the global timeout for this list.
	Timeout time.Duration `yaml:"timeout"`
	// Allow marks an allowlist (DNSWL style): a listing is good news and
	// its weights count as negative.
	Allow *bool `yaml:"allow"`
	// OnError is carried in every failed result for the engine: "open"
	// (default) treats a failed lookup as not listed, "closed" asks for a
	// temporary failure instead.
	OnError OnError `yaml:"on_error"`
	// HideZone keeps the zone out of reject texts (Result.Describe): they
	// name the reason only, like postscreen's dnsbl_reply_map.
	HideZone bool `yaml:"hide_zone"`
	// HealthCheck turns the periodic RFC 5782 probes off for a list
	// without test entries. Default true.
	HealthCheck *bool `yaml:"health_check"`
	// TestListed and TestUnlisted are the probe keys: one the list must
	// list, one it must not. Defaults: RFC 5782 §5's 127.0.0.2 and
	// 127.0.0.1 for ip lists, "test" and "invalid" for domain and uri
	// lists, or the profile's.
	TestListed   string `yaml:"test_listed"`
	TestUnlisted string `yaml:"test_unlisted"`
}

// Defaults fills every unset global key with its default. Per-list
// defaults (timeouts, profiles) are applied by New.
func (c *Config) Defaults() {
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.CacheSize == 0 {
		c.CacheSize = 10000
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = 5 * time.Minute
	}
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// checkName checks a list or reason name: it becomes a metric label and a
// word in rules and reject texts.
func checkName(what, s string) error {
	if !nameRe.MatchString(s) {
		return fmt.Errorf("%s %q: use 1 to 63 letters, digits, '_', '-' or '.'", what, s)
	}
	return nil
}

// Validate reports the first setting that cannot work, naming its key.
// Values of the custom types (Kind, Codes, Profile ...) were checked when
// they were decoded.
func (c *Config) Validate() error {
	switch {
	case c.Timeout < 0:
		return errors.New("dnsbl.timeout: must be positive")
	case c.CacheSize < 0:
		return errors.New("dnsbl.cache_size: must be positive")
	case c.HealthInterval < 0:
		return errors.New("dnsbl.health_interval: must be positive")
	}
	names := map[string]int{}
	for i, l := range c.Lists {
		key := fmt.Sprintf("dnsbl.lists[%d]", i)
		if l.Name == "" {
			return fmt.Errorf("%s.name: required", key)
		}
		if err := checkName("name", l.Name); err != nil {
			return fmt.Errorf("%s.name: %v", key, err)
		}
		if j, dup := names[l.Name]; dup {
			return fmt.Errorf("%s.name: %q is already the name of dnsbl.lists[%d]", key, l.Name, j)
		}
		names[l.Name] = i
		if _, ok := profiles[l.Profile]; l.Profile != "" && !ok {
			return fmt.Errorf("%s.profile: unknown profile %q", key, l.Profile)
		}
		zone := l.Zone
		if zone == "" && l.Profile != "" {
			zone = profiles[l.Profile].zone
		}
		if zone == "" {
			return fmt.Errorf("%s.zone: required", key)
		}
		if err := checkZone(zone); err != nil {
			return fmt.Errorf("%s.zone: %v", key, err)
		}
		if l.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must be positive", key)
		}
		for _, r := range l.Codes {
			if r.Error {
				continue
			}
			if err := checkName("reason", r.Reason); err != nil {
				return fmt.Errorf("%s.codes: %q: %v", key, r.Key, err)
			}
		}
	}
	return nil
}

func checkZone(zone string) error {
	if _, ok := dns.IsDomainName(zone); !ok || strings.Trim(zone, ".") == "" {
		return fmt.Errorf("%q is not a domain name", zone)
	}
	if len(dns.Fqdn(zone)) > 200 {
		return fmt.Errorf("%q is too long to leave room for a key", zone)
	}
	return nil
}

// Kind is what a list lists.
type Kind uint8

// The kinds of list.
const (
	// KindIP lists client IP addresses: IPv4 reversed octets, IPv6
	// reversed nibbles (RFC 5782 §2.1 and §2.4).
	KindIP Kind = iota + 1
	// KindDomain lists domain names (RHSBL, RFC 5782 §2.2): the HELO
	// name, the MAIL FROM domain, the From: header domain.
	KindDomain
	// KindURI lists the hosts of URLs in message bodies (SURBL, URIBL,
	// Spamhaus DBL): domains as they are, IP addresses reversed.
	KindURI
)

// String returns the kind's config spelling.
func (k Kind) String() string {
	switch k {
	case KindIP:
		return "ip"
	case KindDomain:
		return "domain"
	case KindURI:
		return "uri"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind parses "ip", "domain" or "uri".
func ParseKind(s string) (Kind, error) {
	switch s {
	case "ip":
		return KindIP, nil
	case "domain":
		return KindDomain, nil
	case "uri":
		return KindURI, nil
	}
	return 0, fmt.Errorf("%q is not ip, domain or uri", s)
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (k *Kind) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseKind(s)
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// OnError is what a failed lookup means to the engine: "open" or "closed".
type OnError string

// UnmarshalYAML implements yaml.Unmarshaler.
func (o *OnError) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if s != "open" && s != "closed" {
		return fmt.Errorf("%q is not open or closed", s)
	}
	*o = OnError(s)
	return nil
}

// Profile names a built-in list description.
type Profile string

// UnmarshalYAML implements yaml.Unmarshaler: unknown profiles are errors.
func (p *Profile) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if _, ok := profiles[Profile(s)]; !ok {
		return fmt.Errorf("unknown profile %q (known: %s)", s, strings.Join(ProfileNames(), ", "))
	}
	*p = Profile(s)
	return nil
}

// Resolver is a resolver's address, "IP" or "IP:port" ("[IPv6]:port").
type Resolver string

// ParseResolver checks s and returns it as "IP:port", port 53 by default.
func ParseResolver(s string) (Resolver, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return Resolver(net.JoinHostPort(a.String(), "53")), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("%q is not IP or IP:port (a resolver needs an address, not a name)", s)
	}
	return Resolver(ap.String()), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Resolver) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := ParseResolver(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}
