// Package authguard locks out clients and usernames after failed SMTP
// AUTH attempts (RFC 4954), on moat's state store.
//
// moat relays AUTH on submission listeners to the upstream MTA, which
// checks the password; moat only sees the verdict (235 success, 535
// failure, RFC 4954 §6). Bots guess passwords: one address trying many,
// many addresses of a network, or a botnet spraying one password over
// many usernames. The guard counts failures per scope — the client
// address, its narrow and wide network, the username — over windows, and
// when a count reaches its limit it locks that scope value for a
// cooldown. While locked, the caller answers 454 4.7.0 (RFC 4954 §6)
// without asking the upstream, so the guessing never reaches it.
//
// The call order for one AUTH exchange:
//
//  1. Check(client, "") before relaying the AUTH command when the
//     username is not yet known (PLAIN without an initial response, LOGIN
//     before its first answer); Check(client, user) as soon as it is.
//  2. After the upstream's verdict: Failed on 535, Succeeded on 235.
//     Nothing for a 4xx, or an exchange the client cancelled.
//
// All methods are safe for concurrent use; on Redis, several moat
// instances share the counters and locks.
//
// A success resets only the client's own address counters: network
// counters stay, so one valid account in a /26 does not reset a
// network's count of an attack from its other hosts. (An attacker with
// one valid account can reset its own address's counters with its own
// logins; the network and user limits still hold it.) A success also
// makes the client a known client of the username, and a username
// locked by failures from elsewhere stays usable from its known clients:
// spraying one username cannot lock its owner out.
//
// Usernames are folded to lower case for counting. SASL identities are
// case-sensitive in general (RFC 4422 §3.4.1 leaves comparison to the
// mechanism and server), but most mail servers fold them (Dovecot's
// default auth_username_format %Lu, Postfix's SASL lookups): counting
// exact bytes would let a bot try Alice, ALICE and aLiCe as three
// usernames, each with its own limit. Folding can only merge counters
// the upstream keeps apart, and the known-client rule covers their
// owners.
//
// The guard decides; it does not reply. A store failure fails open: the
// error wraps state.ErrUnavailable and the Decision does not lock.
package authguard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"moat/internal/state"
)

// The key namespaces.
const (
	nsFail   = "authfail"   // counters: scope, window, value
	nsLock   = "authlock"   // values: scope, value → the cooldown in ms
	nsKnown  = "authknown"  // values: user, client prefix
	nsSpray  = "authspray"  // values: kind, group, member (first sightings)
	nsSprayN = "authsprayn" // counters: kind, group
	nsSprayR = "authsprayr" // values: kind, group (reported this window)
)

// maxUser is the longest username kept as it is in keys and decisions;
// a longer one (hostile: a SASL response may be 12 kB) becomes '#' and a
// SHA-256 prefix.
const maxUser = 256

// Decision is whether an AUTH attempt is locked out.
type Decision struct {
	Locked bool
	// Scope and Key name the lock: Key is the client prefix
	// ("192.0.2.0/26", "2001:db8:1::/48") or the username (lower case,
	// hashed when longer than 256 bytes). Never a password.
	Scope Scope
	Key   string
	// RetryAfter is how long the lock still holds.
	RetryAfter time.Duration
}

// Spray reports password spraying detected by one failure, each kind at
// most once per spray window and group.
type Spray struct {
	// UsersPerNetwork: this failure made spray.users distinct usernames
	// fail from the client's /24 (IPv6 /64).
	UsersPerNetwork bool
	// NetworksPerUser: this failure made spray.networks distinct /24
	// (IPv6 /64) networks fail this username.
	NetworksPerUser bool
}

// Any reports whether any spraying was detected.
func (s Spray) Any() bool { return s.UsersPerNetwork || s.NetworksPerUser }

// Guard counts failed AUTH attempts and keeps the locks. It is safe for
// concurrent use.
type Guard struct {
	store  state.Store
	cfg    Config
	m      *Metrics
	scopes []Scope // the scopes with a limit, most specific first
}

// New builds a Guard on store; cfg must pass Validate after Defaults. A
// nil store makes a Guard that allows everything and counts nothing
// (moat without a state section). m may be nil.
func New(store state.Store, cfg Config, m *Metrics) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{store: store, cfg: cfg, m: m}
	for _, s := range Scopes {
		for _, l := range cfg.Limits {
			if l.Scope == s {
				g.scopes = append(g.scopes, s)
				break
			}
		}
	}
	return g, nil
}

// userKey is the username as counted: lower case, bounded.
func userKey(user string) string {
	u := strings.ToLower(user)
	if len(u) > maxUser {
		sum := sha256.Sum256([]byte(u))
		return "#" + hex.EncodeToString(sum[:16])
	}
	return u
}

// value is the scope value of (client, user): the client's prefix for a
// client scope, the username for the user scope; "" when unknown.
func value(s Scope, client netip.Addr, user string) string {
	if s == ScopeUser {
		if user == "" {
			return ""
		}
		return userKey(user)
	}
	if !client.IsValid() {
		return ""
	}
	p, _ := client.Prefix(s.bits(client.Is4()))
	return p.String()
}

// sprayNetwork is the client's /24 (IPv6 /64): how spraying groups
// clients, like greylisting and rate limits.
func sprayNetwork(client netip.Addr) string {
	if !client.IsValid() {
		return ""
	}
	p, _ := client.Prefix(pick(client.Is4(), 24, 64))
	return p.String()
}

// failed wraps a store error for the caller: always ErrUnavailable, so
// that one errors.Is tells every store trouble (a wrong kind or an
// invalid key is a bug, but the caller's answer is the same: fail open).
func (g *Guard) failed(err error) error {
	g.m.storeError()
	if errors.Is(err, state.ErrUnavailable) {
		return fmt.Errorf("auth guard: %w", err)
	}
	return fmt.Errorf("auth guard: %w: %w", state.ErrUnavailable, err)
}

// lockTTL reads the lock of (s, v): locked, and how long it still holds.
// A lock's value is its cooldown in milliseconds, so that the time left
// is right across a reload that changed the cooldown.
func (g *Guard) lockTTL(ctx context.Context, s Scope, v string) (bool, time.Duration, error) {
	val, age, found, err := g.store.Get(ctx, state.NewKey(nsLock, string(s), v))
	if err != nil || !found {
		return false, 0, err
	}
	ms, perr := strconv.ParseInt(string(val), 10, 64)
	if perr != nil {
		ms = g.cfg.Cooldown.Milliseconds()
	}
	return true, max(time.Duration(ms)*time.Millisecond-age, 0), nil
}

// known reports whether client is a known client of user.
func (g *Guard) known(ctx context.Context, client netip.Addr, user string) (bool, error) {
	c := value(ScopeIP, client, "")
	if c == "" {
		return false, nil
	}
	_, _, found, err := g.store.Get(ctx, state.NewKey(nsKnown, userKey(user), c))
	return found, err
}

// Check reports whether an AUTH attempt from client as user is locked
// out. user is "" while not yet known: then only the client scopes are
// looked at; call Check again once the username is known. A lock of the
// username does not hold for its known clients. Check counts a Locked
// decision as an attempt with outcome locked. A store failure returns an
// error wrapping state.ErrUnavailable and a Decision that does not lock.
func (g *Guard) Check(ctx context.Context, client netip.Addr, user string) (Decision, error) {
	if g.store == nil {
		return Decision{}, nil
	}
	client = client.Unmap()
	for _, s := range g.scopes {
		v := value(s, client, user)
		if v == "" {
			continue
		}
		locked, left, err := g.lockTTL(ctx, s, v)
		if err != nil {
			return Decision{}, g.failed(err)
		}
		if !locked {
			continue
		}
		if s == ScopeUser {
			known, err := g.known(ctx, client, user)
			if err != nil {
				return Decision{}, g.failed(err)
			}
			if known {
				continue
			}
		}
		return Decision{Locked: true, Scope: s, Key: v, RetryAfter: left}, nil
	}
	return Decision{}, nil
}

// Failed records a failed attempt (the upstream said 535) from client as
// user ("" when the exchange failed before a username was known: only
// the client scopes count). Every limit's counter of the scope values
// gets one more; a count that reaches its limit's Max locks the scope
// value for the cooldown (counted in moat_smtp_auth_lockouts_total once
// per lock). The Decision tells what this failure reached, without
// reading the other locks: Locked, by the most specific scope, when it
// made a count of the client's scopes (or of the username, unless the
// client is a known one) reach its limit. (Check is the authority: a
// lock set earlier, whose counts a success since reset, is Check's to
// report.) Spray tells whether this failure completed a spraying
// pattern.
func (g *Guard) Failed(ctx context.Context, client netip.Addr, user string) (Decision, Spray, error) {
	if g.store == nil {
		return Decision{}, Spray{}, nil
	}
	client = client.Unmap()
	var d Decision
	for _, s := range g.scopes {
		v := value(s, client, user)
		if v == "" {
			continue
		}
		reached := false
		for _, l := range g.cfg.Limits {
			if l.Scope != s {
				continue
			}
			// Every limit counts, also after one is reached: the
			// longer windows must see every failure.
			n, err := g.store.Add(ctx, state.NewKey(nsFail, string(s), l.Window.String(), v), 1, l.Window)
			if err != nil {
				return Decision{}, Spray{}, g.failed(err)
			}
			reached = reached || n >= l.Max
		}
		if !reached {
			continue
		}
		left, err := g.lock(ctx, s, v)
		if err != nil {
			return Decision{}, Spray{}, g.failed(err)
		}
		if d.Locked {
			continue // a more specific scope already answers
		}
		if s == ScopeUser {
			known, err := g.known(ctx, client, user)
			if err != nil {
				return Decision{}, Spray{}, g.failed(err)
			}
			if known {
				continue
			}
		}
		d = Decision{Locked: true, Scope: s, Key: v, RetryAfter: left}
	}
	sp, err := g.spraying(ctx, client, user)
	if err != nil {
		return Decision{}, Spray{}, g.failed(err)
	}
	return d, sp, nil
}

// lock locks (s, v) for the cooldown unless it is locked already, and
// returns how long the lock holds. A lock is never extended: a cooldown
// ends when it said it would, and the next failure after it, still over
// a limit, locks again.
func (g *Guard) lock(ctx context.Context, s Scope, v string) (time.Duration, error) {
	cd := g.cfg.Cooldown
	set, err := g.store.SetNX(ctx, state.NewKey(nsLock, string(s), v), []byte(strconv.FormatInt(cd.Milliseconds(), 10)), cd)
	if err != nil {
		return 0, err
	}
	if set {
		g.m.lockout(s)
		return cd, nil
	}
	locked, left, err := g.lockTTL(ctx, s, v)
	if err != nil || !locked {
		// Expired between the two calls: it held until just now.
		return 0, err
	}
	return left, nil
}

// spraying records (network, user) and (user, network) as first
// sightings within the spray window and reports a spray when a distinct
// count reaches its threshold. A marker per group makes the report once
// per window: a sliding count may touch the threshold twice.
func (g *Guard) spraying(ctx context.Context, client netip.Addr, user string) (Spray, error) {
	var sp Spray
	network := sprayNetwork(client)
	if user == "" || network == "" {
		return sp, nil
	}
	u := userKey(user)
	var err error
	if g.cfg.Spray.Users > 0 {
		if sp.UsersPerNetwork, err = g.distinct(ctx, KindUsersPerNetwork, network, u, g.cfg.Spray.Users); err != nil {
			return Spray{}, err
		}
	}
	if g.cfg.Spray.Networks > 0 {
		if sp.NetworksPerUser, err = g.distinct(ctx, KindNetworksPerUser, u, network, g.cfg.Spray.Networks); err != nil {
			return Spray{}, err
		}
	}
	return sp, nil
}

// distinct counts member in group once per spray window and reports
// whether the group's distinct count just reached threshold.
func (g *Guard) distinct(ctx context.Context, kind, group, member string, threshold int) (bool, error) {
	w := g.cfg.Spray.Window
	fresh, err := g.store.SetNX(ctx, state.NewKey(nsSpray, kind, group, member), nil, w)
	if err != nil || !fresh {
		return false, err
	}
	n, err := g.store.Add(ctx, state.NewKey(nsSprayN, kind, group), 1, w)
	if err != nil || n < int64(threshold) {
		return false, err
	}
	first, err := g.store.SetNX(ctx, state.NewKey(nsSprayR, kind, group), nil, w)
	if err != nil || !first {
		return false, err
	}
	g.m.spray(kind)
	return true, nil
}

// Succeeded records a successful login (the upstream said 235) from
// client as user: the client address's own failure counters start over
// (the network and username counters do not, and no lock is lifted),
// and the client (its /32, IPv6 /64) becomes a known client of user for
// KnownClientTTL.
func (g *Guard) Succeeded(ctx context.Context, client netip.Addr, user string) error {
	if g.store == nil {
		return nil
	}
	client = client.Unmap()
	ip := value(ScopeIP, client, "")
	if ip == "" {
		return nil
	}
	var keys []state.Key
	for _, l := range g.cfg.Limits {
		if l.Scope == ScopeIP {
			keys = append(keys, state.NewKey(nsFail, string(ScopeIP), l.Window.String(), ip))
		}
	}
	if err := g.store.Remove(ctx, keys...); err != nil {
		return g.failed(err)
	}
	if user == "" {
		return nil
	}
	if err := g.store.Set(ctx, state.NewKey(nsKnown, userKey(user), ip), []byte("1"), g.cfg.KnownClientTTL); err != nil {
		return g.failed(err)
	}
	return nil
}
