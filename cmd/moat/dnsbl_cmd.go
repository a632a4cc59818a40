package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"text/tabwriter"

	"moat/dnsbl"
)

const dnsblUsage = `Usage:
  moat dnsbl check IP|DOMAIN [--config FILE] [--health]

Looks IP (IPv4 or IPv6) or DOMAIN up on every configured list that takes
it — ip and uri lists for an address, domain and uri lists for a domain —
and prints what each list answered and why: the answers, the reasons and
weights from its code table, its TXT. Run it when a sender says moat
rejects them. The cache is not used.

Exits 0 when every list answered (listed or not), 1 when a lookup failed,
2 for a usage or configuration error.
`

func cmdDnsbl(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat dnsbl check", dnsblUsage, stderr)
	configPath := fs.String("config", "", "configuration `FILE` (default: built-in defaults, which have no lists)")
	health := fs.Bool("health", false, "probe every list with its RFC 5782 test entries first")
	keys, ok, code := parseSubcommand(fs, args, "check", stdout)
	if !ok {
		return code
	}
	if len(keys) != 1 {
		fmt.Fprintln(stderr, "moat dnsbl check: want one IP address or domain")
		fs.Usage()
		return exitUsage
	}
	key := keys[0]

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return exitCode(stderr, err)
	}
	name := *configPath
	if name == "" {
		name = "built-in default config"
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	chk, err := dnsbl.New(cfg.DNSBL, dnsbl.Deps{Logger: log})
	if err != nil {
		return exitCode(stderr, &configError{fmt.Errorf("%s: %v", name, err)})
	}

	kinds := []dnsbl.Kind{dnsbl.KindDomain, dnsbl.KindURI}
	if _, err := netip.ParseAddr(strings.Trim(key, "[]")); err == nil {
		kinds = []dnsbl.Kind{dnsbl.KindIP, dnsbl.KindURI}
	}
	n := 0
	for _, l := range chk.Lists() {
		if l.Kind == kinds[0] || l.Kind == kinds[1] {
			n++
		}
	}
	if n == 0 {
		fmt.Fprintf(stderr, "moat dnsbl check: %s has no %s or %s lists for %q\n", name, kinds[0], kinds[1], key)
		return exitFailure
	}

	ctx := context.Background()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if *health {
		fmt.Fprintln(tw, "LIST\tHEALTH\t")
		for _, h := range chk.CheckHealth(ctx) {
			state := "healthy"
			switch {
			case h.Skipped:
				state = "not probed (health_check: false)"
			case !h.Healthy:
				state = "UNHEALTHY: " + h.Problem
			}
			fmt.Fprintf(tw, "%s\t%s\t\n", h.List, state)
		}
		fmt.Fprintln(tw, "\t\t")
	}
	// Both kinds are asked at once, as moat does.
	pending := make([]*dnsbl.Pending, len(kinds))
	for i, k := range kinds {
		pending[i] = chk.Lookup(ctx, k, key)
	}
	failed := false
	fmt.Fprintln(tw, "LIST\tKIND\tZONE\tKEY\tRESULT\t")
	for _, p := range pending {
		for _, r := range p.Wait(ctx) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.List, r.Kind, r.Zone, r.Key, explain(r))
			failed = failed || r.Err != nil
		}
	}
	tw.Flush()
	if failed {
		return exitFailure
	}
	return 0
}

// explain says what a list answered, for an operator: more than Describe,
// which is for clients.
func explain(r dnsbl.Result) string {
	answers := func() string {
		s := make([]string, len(r.Answers))
		for i, a := range r.Answers {
			s[i] = a.String()
		}
		return strings.Join(s, ",")
	}
	var b strings.Builder
	switch {
	case r.Err != nil:
		fmt.Fprintf(&b, "ERROR %s: %v", r.ErrKind, r.Err)
		if r.OnErrorClosed {
			b.WriteString(" (on_error: closed — moat defers the session)")
		}
		return b.String()
	case r.Listed && r.Allow:
		b.WriteString("ALLOWLISTED")
	case r.Listed:
		b.WriteString("LISTED")
	case len(r.Answers) > 0:
		return "not listed (answer " + answers() + " matches no code)"
	default:
		return "not listed"
	}
	fmt.Fprintf(&b, " %s, weight %g, answer %s", strings.Join(r.Reasons, ","), r.Weight, answers())
	if r.TXT != "" {
		fmt.Fprintf(&b, ", TXT %q", r.TXT)
	}
	return b.String()
}
