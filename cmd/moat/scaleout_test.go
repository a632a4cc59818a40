package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/haproxytest"
	"moat/internal/postfixtest"
	"moat/internal/redistest"
)

// scaleOut is three moat instances sharing one Redis behind HAProxy (PROXY
// v2), in front of one real Postfix: the layout of README's "Several
// instances".
type scaleOut struct {
	pf    *postfixtest.Postfix
	redis *redistest.Server
	moats []*moatProc
	lb    *haproxytest.Server
}

func startScaleOut(t *testing.T, rules, extra string) *scaleOut {
	t.Helper()
	so := &scaleOut{pf: postfixtest.Start(t, postfixtest.Options{}), redis: redistest.Start(t)}
	rulesPath := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for i := 0; i < 3; i++ {
		cfg := configFor(t, so.pf.Addr, fmt.Sprintf(`listen_proxy_protocol: ["127.0.0.1"]   # HAProxy
rules:
  file: %q
state:
  backend: redis
  redis:
    address: %q
%s`, rulesPath, so.redis.Addr, extra))
		m := startMoat(t, "--config", cfg)
		so.moats = append(so.moats, m)
		addrs = append(addrs, m.smtp)
	}
	so.lb = haproxytest.Start(t, addrs)
	deadline := time.Now().Add(20 * time.Second)
	for {
		up := so.lb.Up(t)
		if up["m0"] && up["m1"] && up["m2"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy does not see the three moats up: %v", up)
		}
		time.Sleep(50 * time.Millisecond) // polling HAProxy's health checks
	}
	return so
}

// instanceWith returns the index of the moat whose log has a line
// containing all of subs, -1 if none.
func (so *scaleOut) instanceWith(subs ...string) int {
	for i, m := range so.moats {
		for _, line := range strings.Split(m.log.String(), "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				return i
			}
		}
	}
	return -1
}

// Greylisting across instances (issue 15): a client greylisted through
// one instance retries after the delay, lands on another instance, and is
// let through, because the instances share the entry in Redis.
func TestScaleOutGreylisting(t *testing.T) {
	so := startScaleOut(t, "rules:\n  - {name: GREYLIST_ALL, stage: rcpt, when: {rcpt: {ends_with: \"@example.net\"}}, action: greylist}\n",
		"greylist:\n  delay: 1s\n")
	first := time.Now()
	out, err := swaks(t, so.lb.Addr, "--to", "bo@example.net", "--from", "ana@client.test")
	if err == nil || !strings.Contains(out, "<** 451 4.7.1 Greylisted") {
		t.Fatalf("first attempt through HAProxy: %v\n%s", err, out)
	}
	for time.Since(first) < 1200*time.Millisecond { // wait out the configured delay
		time.Sleep(50 * time.Millisecond)
	}
	out, err = swaks(t, so.lb.Addr, "--to", "bo@example.net", "--from", "ana@client.test")
	if err != nil || !strings.Contains(out, "<-  250") {
		t.Fatalf("retry after the delay: %v\n%s", err, out)
	}
	so.pf.WaitMessages(t, 1, 20*time.Second)
	greyed := so.instanceWith(`"reason":"greylisted"`)
	passed := so.instanceWith(`"verdict":"delivered"`)
	t.Logf("greylisted by moat %d, let through by moat %d; HAProxy sessions %v", greyed, passed, so.lb.Sessions(t))
	if greyed < 0 || passed < 0 {
		t.Fatalf("decisions not found in the logs (greylisted %d, delivered %d)", greyed, passed)
	}
	if greyed == passed {
		t.Errorf("both attempts landed on moat %d: round-robin should have moved the retry", greyed)
	}
	// Each moat saw the real client through the PROXY header.
	if so.instanceWith(`"client_ip":"127.0.0.1"`) < 0 {
		t.Errorf("no transaction line names the client's address")
	}
}
