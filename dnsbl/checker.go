package dnsbl

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Deps are what a Checker needs from its surroundings.
type Deps struct {
	// Logger gets health changes (Error when a list turns unhealthy) and
	// warnings. Nil discards them.
	Logger *slog.Logger
	// Registerer gets the Checker's metrics (see metrics.go). Nil keeps
	// them unregistered.
	Registerer prometheus.Registerer
}

// Checker looks keys up on the configured lists.
//
// Call order: New, then Start once (it returns at once; health probes run
// in the background until its context ends); then any number of Lookup
// calls from any number of goroutines, each followed by Wait on its
// Pending. List and Lists may be called at any time. A Checker is safe for
// concurrent use; a Pending belongs to the goroutine that called Lookup.
type Checker struct {
	lists          []*list
	byKind         [KindURI + 1][]*list
	resolvers      []string
	healthInterval time.Duration
	log            *slog.Logger
	next           atomic.Uint32 // rotates the first resolver asked
	now            func() time.Time

	mu        sync.Mutex
	cache     map[cacheKey]*entry
	cacheSize int

	rdns rdnsCache // the reverse resolver's answers
}

// list is one configured list, with defaults and its profile applied.
type list struct {
	idx     int
	name    string
	zone    string // as configured, for results and texts
	fqdn    string // dns.Fqdn(zone), for queries
	kind    Kind
	allow   bool
	codes   Codes
	listing bool // codes has entries that are not errors
	txt     bool
	timeout time.Duration
	closed  bool // on_error: closed
	hide    bool

	health                   bool
	testListed, testUnlisted queryKey
	healthy                  atomic.Bool

	m listMetrics
}

// ListInfo describes a configured list, for the rules validator and the
// command line.
type ListInfo struct {
	Name, Zone string
	Kind       Kind
	Allow      bool
	// Reasons are the reasons the list's results can carry, in code
	// table order ("listed" for a list without a code table).
	Reasons []string
}

// New builds a Checker from cfg: it applies defaults and profiles,
// validates, and reads /etc/resolv.conf when no resolver is configured.
// It starts no goroutine and sends no query.
func New(cfg Config, deps Deps) (*Checker, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{
		healthInterval: cfg.HealthInterval,
		log:            log,
		cache:          make(map[cacheKey]*entry),
		cacheSize:      cfg.CacheSize,
		now:            time.Now,
	}
	for _, r := range cfg.Resolver {
		c.resolvers = append(c.resolvers, string(r))
	}
	// The resolvers serve the rDNS facts too, which the rules may use
	// with no list configured at all: fall back to the system's.
	if len(c.resolvers) == 0 {
		c.resolvers = systemResolvers(log)
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	for i, lc := range cfg.Lists {
		l, err := buildList(i, lc, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		l.m = m.forList(l)
		l.healthy.Store(true)
		l.m.healthy.Set(1)
		c.lists = append(c.lists, l)
		c.byKind[l.kind] = append(c.byKind[l.kind], l)
	}
	return c, nil
}

// systemResolvers reads the nameservers of /etc/resolv.conf, falling back
// to 127.0.0.1:53 as the C library does.
func systemResolvers(log *slog.Logger) []string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		log.Warn("dnsbl: no resolver configured and none in /etc/resolv.conf; using 127.0.0.1:53", "err", err)
		return []string{"127.0.0.1:53"}
	}
	out := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		out[i] = net.JoinHostPort(s, cc.Port)
	}
	return out
}

func buildList(i int, lc ListConfig, timeout time.Duration) (*list, error) {
	key := fmt.Sprintf("dnsbl.lists[%d]", i)
	p := profiles[lc.Profile]
	l := &list{
		idx:     i,
		name:    lc.Name,
		zone:    strings.TrimSuffix(lc.Zone, "."),
		kind:    lc.Kind,
		allow:   p.allow,
		codes:   p.codes.merge(lc.Codes),
		txt:     lc.TXT,
		timeout: lc.Timeout,
		closed:  lc.OnError == "closed",
		hide:    lc.HideZone,
		health:  lc.HealthCheck == nil || *lc.HealthCheck,
	}
	if l.zone == "" {
		l.zone = p.zone
	}
	l.fqdn = dns.Fqdn(l.zone)
	if l.kind == 0 {
		l.kind = p.kind
	}
	if l.kind == 0 {
		l.kind = KindIP
	}
	if lc.Allow != nil {
		l.allow = *lc.Allow
	}
	if l.timeout == 0 {
		l.timeout = timeout
	}
	for _, r := range l.codes {
		l.listing = l.listing || !r.Error
	}
	// Health test entries: the list's, the profile's, RFC 5782 §5's.
	listed, unlisted := "127.0.0.2", "127.0.0.1"
	if l.kind != KindIP {
		listed, unlisted = "test", "invalid"
	}
	for _, s := range []struct {
		key       string
		dst       *queryKey
		cfg, prof string
		def       string
	}{
		{"test_listed", &l.testListed, lc.TestListed, p.testListed, listed},
		{"test_unlisted", &l.testUnlisted, lc.TestUnlisted, p.testUnlisted, unlisted},
	} {
		if s.cfg != "" {
			k, ok := parseKey(l.kind, s.cfg)
			if !ok {
				return nil, fmt.Errorf("%s.%s: %q is not a key for a list of kind %s", key, s.key, s.cfg, l.kind)
			}
			*s.dst = k
			continue
		}
		// The profile's entry fits the profile's kind; a list of
		// another kind falls back to RFC 5782's.
		k, ok := parseKey(l.kind, s.prof)
		if !ok {
			k, _ = parseKey(l.kind, s.def)
		}
		*s.dst = k
	}
	return l, nil
}

func (l *list) info() ListInfo {
	li := ListInfo{Name: l.name, Zone: l.zone, Kind: l.kind, Allow: l.allow}
	if !l.listing {
		li.Reasons = []string{"listed"}
	}
	for _, r := range l.codes {
		if !r.Error && !contains(li.Reasons, r.Reason) {
			li.Reasons = append(li.Reasons, r.Reason)
		}
	}
	return li
}

// List describes the list called name.
func (c *Checker) List(name string) (ListInfo, bool) {
	for _, l := range c.lists {
		if l.name == name {
			return l.info(), true
		}
	}
	return ListInfo{}, false
}

// Lists describes every list, in configuration order.
func (c *Checker) Lists() []ListInfo {
	out := make([]ListInfo, len(c.lists))
	for i, l := range c.lists {
		out[i] = l.info()
	}
	return out
}
