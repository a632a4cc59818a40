package authguard

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Scope is what a failure counter and a lock are kept for: the client
// address, one of its networks, or the username.
type Scope string

// The scopes, from the most specific. The networks are mox's
// (ratelimit.Limiter.maskIP in github.com/mjl-/mox): an IPv6 client gets
// a whole /64, since one host usually has one.
const (
	ScopeIP        Scope = "ip"         // IPv4 /32, IPv6 /64
	ScopeNetNarrow Scope = "net_narrow" // IPv4 /26, IPv6 /48
	ScopeNetWide   Scope = "net_wide"   // IPv4 /21, IPv6 /32
	ScopeUser      Scope = "user"       // the SASL authentication identity
)

// Scopes are every scope, from the most specific: the order Check looks
// for locks in and Decision reports the first of.
var Scopes = []Scope{ScopeIP, ScopeNetNarrow, ScopeNetWide, ScopeUser}

func (s Scope) valid() bool {
	for _, x := range Scopes {
		if s == x {
			return true
		}
	}
	return false
}

// bits is the prefix length of a client scope for an IPv4 or IPv6
// address; 0 for the user scope.
func (s Scope) bits(v4 bool) int {
	switch s {
	case ScopeIP:
		return pick(v4, 32, 64)
	case ScopeNetNarrow:
		return pick(v4, 26, 48)
	case ScopeNetWide:
		return pick(v4, 21, 32)
	}
	return 0
}

func pick(v4 bool, a, b int) int {
	if v4 {
		return a
	}
	return b
}

// Limit is one entry of lockout.limits: at most Max failed attempts per
// scope value (one client, one network, one username) within Window; the
// failure that reaches Max locks the scope value for the cooldown.
type Limit struct {
	Scope  Scope         `yaml:"scope"`
	Window time.Duration `yaml:"window"`
	Max    int64         `yaml:"max"`
}

// SprayConfig is lockout.spray: password spraying is many usernames
// failing from one network, or one username failing from many networks,
// within Window. It is reported (Spray, a metric), not locked by itself:
// the limits lock.
type SprayConfig struct {
	// Window is how long distinct usernames and networks are
	// remembered. Default 1h.
	Window time.Duration `yaml:"window"`
	// Users is the number of distinct usernames failing from one /24
	// (IPv6 /64) that is spraying. Default 5; negative turns it off.
	Users int `yaml:"users"`
	// Networks is the number of distinct /24 (IPv6 /64) networks failing
	// one username that is spraying. Default 5; negative turns it off.
	Networks int `yaml:"networks"`
}

// Config is the submission.lockout section of moat's configuration.
type Config struct {
	// Cooldown is how long a scope value stays locked once one of its
	// limits is reached. Default 15m.
	Cooldown time.Duration `yaml:"cooldown"`
	// Limits default to DefaultLimits when none are given.
	Limits []Limit     `yaml:"limits"`
	Spray  SprayConfig `yaml:"spray"`
	// KnownClientTTL is how long a successful login makes its client
	// (/32, IPv6 /64) a known client of the username: a username locked
	// by failures from elsewhere stays usable from its known clients.
	// Default 720h (30 days).
	KnownClientTTL time.Duration `yaml:"known_client_ttl"`
}

// DefaultLimits are the limits without a limits key.
//
// The client scopes are mox's failed-auth limiter (LimiterFailedAuth in
// github.com/mjl-/mox, mox-/limitauth.go): 10 failures a minute and 50 a
// day per address, 30 and 150 per /26, 90 and 450 per /21 (IPv6 /64,
// /48, /32). A person who mistyped a password ten times in a minute is
// rare; a NAT of an office fits the /26 limits.
//
// The user limits are moat's: mox has none. They catch a distributed
// attack on one account that stays under every network limit. 30 an
// hour still lets a phone and a laptop with an old saved password retry
// in the background for a while; 100 a day is far above what a
// misconfigured client of the owner produces once locked out (it no
// longer reaches the upstream), and far below what guessing needs. The
// owner's known clients are not locked out by it (KnownClientTTL).
func DefaultLimits() []Limit {
	return []Limit{
		{ScopeIP, time.Minute, 10},
		{ScopeIP, 24 * time.Hour, 50},
		{ScopeNetNarrow, time.Minute, 30},
		{ScopeNetNarrow, 24 * time.Hour, 150},
		{ScopeNetWide, time.Minute, 90},
		{ScopeNetWide, 24 * time.Hour, 450},
		{ScopeUser, time.Hour, 30},
		{ScopeUser, 24 * time.Hour, 100},
	}
}

// Defaults fills every unset key with its default.
func (c *Config) Defaults() {
	if c.Cooldown == 0 {
		c.Cooldown = 15 * time.Minute
	}
	if c.Limits == nil {
		c.Limits = DefaultLimits()
	}
	if c.Spray.Window == 0 {
		c.Spray.Window = time.Hour
	}
	if c.Spray.Users == 0 {
		c.Spray.Users = 5
	}
	if c.Spray.Networks == 0 {
		c.Spray.Networks = 5
	}
	if c.KnownClientTTL == 0 {
		c.KnownClientTTL = 720 * time.Hour
	}
}

// maxDuration is the state store's bound on a TTL or window.
const maxDuration = 400 * 24 * time.Hour

// Validate reports the first setting that cannot work, naming its key.
func (c Config) Validate() error {
	const at = "submission.lockout"
	dur := func(key string, d, least time.Duration) error {
		if d < least || d > maxDuration {
			return fmt.Errorf("%s.%s: %v must be from %v to 400 days (9600h)", at, key, d, least)
		}
		return nil
	}
	if err := dur("cooldown", c.Cooldown, time.Second); err != nil {
		return err
	}
	if len(c.Limits) == 0 {
		return fmt.Errorf("%s.limits: no limits: leave the key out for the defaults", at)
	}
	type sw struct {
		s Scope
		w time.Duration
	}
	seen := map[sw]bool{}
	for i, l := range c.Limits {
		key := fmt.Sprintf("limits[%d]", i)
		if !l.Scope.valid() {
			names := make([]string, len(Scopes))
			for i, s := range Scopes {
				names[i] = string(s)
			}
			return fmt.Errorf("%s.%s.scope: %q is not one of %s", at, key, l.Scope, strings.Join(names, ", "))
		}
		if err := dur(key+".window", l.Window, time.Second); err != nil {
			return err
		}
		if l.Max < 1 {
			return fmt.Errorf("%s.%s.max: %d must be at least 1", at, key, l.Max)
		}
		if seen[sw{l.Scope, l.Window}] {
			return fmt.Errorf("%s.%s: a second limit for scope %s and window %v", at, key, l.Scope, l.Window)
		}
		seen[sw{l.Scope, l.Window}] = true
	}
	if err := dur("spray.window", c.Spray.Window, time.Second); err != nil {
		return err
	}
	if err := dur("known_client_ttl", c.KnownClientTTL, time.Second); err != nil {
		return err
	}
	if c.Spray.Users == 0 || c.Spray.Networks == 0 {
		return errors.New(at + ".spray: users and networks must not be 0 after Defaults")
	}
	return nil
}
