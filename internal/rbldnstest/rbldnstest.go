// Package rbldnstest runs a throwaway rbldnsd — the DNS server most
// DNSBLs are served with — for tests: zone files written from Go values
// into a temp dir, a free loopback UDP port, and the process stopped when
// the test ends.
//
// rbldnsd serves each zone from a dataset file of one type: ip4set for
// IPv4 addresses and ranges, ip6trie for IPv6 prefixes, dnset for domain
// names (see rbldnsd(8)). Every entry answers an A record (127.0.0.2 unless
// given) and, when a TXT template is given, a TXT record in which "$"
// stands for the listed key. rbldnsd speaks UDP only.
package rbldnstest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/syncbuf"
)

// Binary is the rbldnsd executable (Debian package rbldnsd).
var Binary = "/usr/sbin/rbldnsd"

// Zone is one DNSBL zone.
type Zone struct {
	// Type is the rbldnsd dataset type: "ip4set" (default), "ip6trie",
	// "ip6tset" or "dnset".
	Type string
	// Default is the A value and TXT template of entries that give
	// none, like "127.0.0.2" or "127.0.0.2:Listed, see https://bl.test/$".
	Default string
	// Entries are the listings.
	Entries []Entry
	// TTL of positive answers; default 60s.
	TTL time.Duration
	// NegativeTTL is the SOA minimum, the TTL of NXDOMAIN answers
	// (RFC 2308); default 30s.
	NegativeTTL time.Duration
}

// Entry is one listing: Key is an address, range or prefix ("192.0.2.1",
// "10.0.0.0/8", "2001:db8::/32"), or a domain ("example.com",
// "*.example.com" for its subdomains, ".example.com" for both). A is the
// answer ("127.0.0.4"; default the zone's Default), TXT the TXT template
// ("$" is the key; default the zone's Default). ip6tset entries take
// neither.
type Entry struct {
	Key, A, TXT string
}

// Server is a running rbldnsd.
type Server struct {
	// Addr is the UDP address it serves, "127.0.0.1:PORT".
	Addr string

	dir string
}

// Start writes zones (by zone name, e.g. "bl.test") and starts rbldnsd on
// them. It fails the test when rbldnsd is not installed
// (scripts/install-test-deps.sh installs it) and stops it in t.Cleanup.
func Start(t testing.TB, zones map[string]Zone) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("rbldnsd not installed (%v): run scripts/install-test-deps.sh (make test does)", err)
	}
	// rbldnsd started as root drops to the rbldns user before it reads
	// the zone files and opens its log, so they live in a directory of
	// their own that the world may read (t.TempDir's is private).
	dir, err := os.MkdirTemp("", "rbldnstest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var specs []string
	i := 0
	for _, name := range sortedKeys(zones) {
		z := zones[name]
		if z.Type == "" {
			z.Type = "ip4set"
		}
		file := fmt.Sprintf("zone%d", i)
		i++
		if err := os.WriteFile(filepath.Join(dir, file), z.data(name), 0o644); err != nil {
			t.Fatal(err)
		}
		specs = append(specs, fmt.Sprintf("%s:%s:%s", strings.TrimSuffix(name, "."), z.Type, file))
	}
	log := filepath.Join(dir, "query.log")
	if err := os.WriteFile(log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(log, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}

	// A free port can be taken between our probe and rbldnsd's bind:
	// try a few.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freeUDPPort()
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
		args := []string{
			"-n",      // stay in the foreground, so Cleanup can stop it
			"-a",      // no AUTH section in positive answers
			"-c", "0", // no reload checks: the zones do not change
			"-b", fmt.Sprintf("127.0.0.1/%d", port),
			"-w", dir,
			"-l", "+" + log, // every query, unbuffered: Queries reads it
		}
		cmd := exec.Command(Binary, append(args, specs...)...)
		var out lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := s.waitReady(exited, specs); err != nil {
			cmd.Process.Kill()
			<-exited
			lastErr = fmt.Errorf("%v\n%s", err, out.String())
			continue
		}
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		})
		return s
	}
	t.Fatalf("rbldnsd did not start: %v", lastErr)
	return nil
}

func sortedKeys(m map[string]Zone) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// data renders z as an rbldnsd dataset file for zone name.
func (z Zone) data(name string) []byte {
	ttl, neg := z.TTL, z.NegativeTTL
	if ttl == 0 {
		ttl = time.Minute
	}
	if neg == 0 {
		neg = 30 * time.Second
	}
	name = dns.Fqdn(name)
	var b bytes.Buffer
	// The SOA makes NXDOMAIN answers carry the negative TTL (RFC 2308).
	fmt.Fprintf(&b, "$SOA %d ns.%s hostmaster.%s 1 600 600 86400 %d\n",
		int(ttl.Seconds()), name, name, int(neg.Seconds()))
	fmt.Fprintf(&b, "$TTL %d\n", int(ttl.Seconds()))
	if z.Default != "" {
		fmt.Fprintf(&b, ":%s\n", z.Default)
	}
	for _, e := range z.Entries {
		b.WriteString(e.Key)
		switch {
		case e.A != "" && e.TXT != "":
			fmt.Fprintf(&b, " :%s:%s", e.A, e.TXT)
		case e.A != "":
			fmt.Fprintf(&b, " :%s", e.A) // and the default TXT
		case e.TXT != "":
			fmt.Fprintf(&b, " %s", e.TXT)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// waitReady asks the server for each zone's SOA until every zone answers
// with one, the process exits, or 10 seconds pass.
func (s *Server) waitReady(exited <-chan error, specs []string) error {
	deadline := time.Now().Add(10 * time.Second)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	for _, spec := range specs {
		zone := dns.Fqdn(strings.SplitN(spec, ":", 2)[0])
		for {
			select {
			case err := <-exited:
				return fmt.Errorf("rbldnsd exited: %v", err)
			default:
			}
			m := new(dns.Msg)
			m.SetQuestion(zone, dns.TypeSOA)
			r, _, err := c.Exchange(m, s.Addr)
			if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("zone %s not served on %s (last: %v)", zone, s.Addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// Queries returns the names rbldnsd was asked, with their type, in order:
// "5.0.0.10.bl.test A". The readiness probes (SOA) are left out.
func (s *Server) Queries(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.dir, "query.log"))
	if err != nil {
		t.Fatal(err)
	}
	// Lines: "TIME CLIENT NAME TYPE CLASS: RESULT".
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] == "SOA" {
			continue
		}
		out = append(out, f[2]+" "+f[3])
	}
	return out
}

// Count returns how many times rbldnsd was asked name (any type but SOA).
func (s *Server) Count(t testing.TB, name string) int {
	t.Helper()
	n := 0
	name = strings.TrimSuffix(name, ".")
	for _, q := range s.Queries(t) {
		if strings.EqualFold(strings.Fields(q)[0], name) {
			n++
		}
	}
	return n
}

// lockedBuffer collects a child process's output.
type lockedBuffer = syncbuf.Buffer
