package dnsbl

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Health is the outcome of one list's health probe.
type Health struct {
	List    string
	Healthy bool
	// Problem says what is wrong with an unhealthy list.
	Problem string
	// Skipped is true for a list with health_check: false, and for
	// every list when the context ended before the probe did.
	Skipped bool
}

// Start is the Checker's start hook: it probes every list now and then
// every health_interval, in the background, until ctx ends. It returns at
// once; until the first probe finishes, lists count as healthy.
func (c *Checker) Start(ctx context.Context) {
	go func() {
		t := time.NewTicker(c.healthInterval)
		defer t.Stop()
		for {
			c.CheckHealth(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// CheckHealth probes every list once, in parallel, with its test entries
// (RFC 5782 §5: an ip list must list 127.0.0.2 and must not list
// 127.0.0.1; a domain list must list "test" and must not list "invalid"),
// and marks each list healthy or not. A list is unhealthy when its listed
// entry gets no answer (the list answers nothing: dead, or a resolver
// that cannot reach it), when its unlisted entry is listed (the list lists
// everything, as lists do when they shut down), or when it answers with
// its error codes (queries through a public resolver, over quota). An
// unhealthy list's lookups are not sent and their results carry ErrKind
// "unhealthy" until a later probe passes. Turning unhealthy is logged at
// Error level, every failed probe again, recovery at Info.
//
// Probes bypass the cache and do not count in the query metrics.
func (c *Checker) CheckHealth(ctx context.Context) []Health {
	out := make([]Health, len(c.lists))
	var wg sync.WaitGroup
	for i, l := range c.lists {
		out[i] = Health{List: l.name, Healthy: true, Skipped: !l.health}
		if !l.health {
			continue
		}
		wg.Go(func() {
			problem := c.probe(ctx, l)
			if ctx.Err() != nil {
				// Stopping: no verdict on the list, which keeps
				// the state it had.
				out[i].Healthy, out[i].Skipped = l.healthy.Load(), true
				return
			}
			out[i].Healthy, out[i].Problem = problem == "", problem
			c.setHealth(l, problem)
		})
	}
	wg.Wait()
	return out
}

// probe asks l about its two test entries and returns what is wrong, or "".
func (c *Checker) probe(ctx context.Context, l *list) string {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var listed, unlisted Result
	var wg sync.WaitGroup
	wg.Go(func() { listed, _ = c.lookupList(ctx, l, l.testListed) })
	wg.Go(func() { unlisted, _ = c.lookupList(ctx, l, l.testUnlisted) })
	wg.Wait()
	for _, r := range []Result{listed, unlisted} {
		if r.ErrKind == ErrKindBlockedResolver {
			return fmt.Sprintf("the list refuses our queries (answer %s for test entry %s): a public resolver, or over quota", joinAddrs(r.Answers), r.Key)
		}
	}
	switch {
	case listed.Err != nil:
		return fmt.Sprintf("test entry %s: %s: the list answers nothing", listed.Key, listed.ErrKind)
	case len(listed.Answers) == 0:
		return fmt.Sprintf("test entry %s is not listed: the list answers nothing", listed.Key)
	case unlisted.Err != nil:
		return fmt.Sprintf("test entry %s: %s", unlisted.Key, unlisted.ErrKind)
	case len(unlisted.Answers) > 0:
		return fmt.Sprintf("test entry %s is listed (%s): the list lists everything", unlisted.Key, joinAddrs(unlisted.Answers))
	}
	return ""
}

func (c *Checker) setHealth(l *list, problem string) {
	ok := problem == ""
	was := l.healthy.Swap(ok)
	if ok {
		l.m.healthy.Set(1)
		if !was {
			c.log.Info("dnsbl list healthy again", "list", l.name, "zone", l.zone)
		}
		return
	}
	l.m.healthy.Set(0)
	c.log.Error("dnsbl list unhealthy: its answers are ignored until it recovers",
		"list", l.name, "zone", l.zone, "problem", problem)
}

func joinAddrs[T fmt.Stringer](as []T) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
