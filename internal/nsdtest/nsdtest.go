// Package nsdtest runs a throwaway NSD — an authoritative DNS server from
// NLnet Labs, Debian package nsd — for tests: zone files written by the
// test into a temp dir, a free loopback port (UDP and TCP), and the
// process stopped when the test ends. Sender-authentication tests publish
// their SPF, DKIM, DMARC and ARC records in it, so that moat's resolver
// asks a real DNS server exactly as it does in production.
package nsdtest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/syncbuf"
)

// Binary is the nsd executable.
var Binary = "/usr/sbin/nsd"

// Server is a running NSD.
type Server struct {
	// Addr is the address it serves on UDP and TCP, "127.0.0.1:PORT".
	Addr string
	dir  string
}

// Start writes one zone file per zone and starts NSD on them. zones maps
// a zone name ("example.test") to its records in zone-file syntax,
// relative to the zone's origin, one per line:
//
//	"@ TXT \"v=spf1 ip4:127.0.0.1 -all\""
//	"sel._domainkey TXT " + nsdtest.TXT("v=DKIM1; k=rsa; p=...")
//
// The SOA (negative TTL 30 s) and NS records are added. Start fails the
// test when NSD is not installed (scripts/install-test-deps.sh installs
// it) and stops the server in t.Cleanup.
func Start(t testing.TB, zones map[string][]string) *Server {
	t.Helper()
	return start(t, zones, freePort)
}

// StartPort53 is Start on port 53 — the DNS port, where a capture of the
// traffic shows the queries as DNS (moat analyze --dns recorded reads
// port 53) — of a random address in 127.53.0.0/16, so that tests in
// parallel and a resolver on 127.0.0.1:53 do not collide.
func StartPort53(t testing.TB, zones map[string][]string) *Server {
	t.Helper()
	return start(t, zones, func() (string, error) {
		var b [2]byte
		rand.Read(b[:])
		return fmt.Sprintf("127.53.%d.%d:53", b[0], max(b[1], 1)), nil
	})
}

func start(t testing.TB, zones map[string][]string, pick func() (string, error)) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("nsd not installed (%v): run scripts/install-test-deps.sh (make test does)", err)
	}
	dir := t.TempDir()
	names := make([]string, 0, len(zones))
	for name := range zones {
		names = append(names, strings.TrimSuffix(strings.ToLower(name), "."))
	}
	sort.Strings(names)
	var zoneConf strings.Builder
	for i, name := range names {
		file := fmt.Sprintf("zone%d", i)
		recs := zones[name]
		if recs == nil {
			recs = zones[name+"."]
		}
		if err := os.WriteFile(filepath.Join(dir, file), zoneFile(name, recs), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&zoneConf, "zone:\n\tname: %q\n\tzonefile: %q\n", name+".", filepath.Join(dir, file))
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := pick()
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(addr)
		conf := fmt.Sprintf(`server:
	ip-address: %s@%s
	port: %s
	do-ip6: no
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	logfile: %q
	server-count: 1
	verbosity: 1
	hide-version: yes
	refuse-any: no
remote-control:
	control-enable: no
%s`, host, port, port, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"),
			dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"), zoneConf.String())
		confFile := filepath.Join(dir, "nsd.conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(Binary, "-d", "-c", confFile)
		var out lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		s := &Server{Addr: addr, dir: dir}
		if err := s.waitReady(exited, names); err != nil {
			cmd.Process.Kill()
			<-exited
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			lastErr = fmt.Errorf("%v\n%s%s", err, out.String(), log)
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
	t.Fatalf("nsd did not start: %v", lastErr)
	return nil
}

// zoneFile is the text of a zone: SOA, NS and the given records.
func zoneFile(name string, recs []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 60\n", name)
	fmt.Fprintf(&b, "@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 30\n", name, name)
	fmt.Fprintf(&b, "@ IN NS ns.%s.\n", name)
	for _, r := range recs {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TXT quotes s as the data of a TXT record, split into character-strings
// of at most 255 bytes (RFC 1035 §3.3.14), as long DKIM keys must be.
func TXT(s string) string {
	var parts []string
	for len(s) > 0 {
		n := min(len(s), 255)
		parts = append(parts, `"`+strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s[:n])+`"`)
		s = s[n:]
	}
	if len(parts) == 0 {
		return `""`
	}
	return strings.Join(parts, " ")
}

// waitReady asks for every zone's SOA until NSD answers all of them, or
// it exits, or 10 s pass.
func (s *Server) waitReady(exited <-chan error, zones []string) error {
	deadline := time.Now().Add(10 * time.Second)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	for _, z := range zones {
		for {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(z), dns.TypeSOA)
			r, _, err := c.Exchange(m, s.Addr)
			if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
				break
			}
			select {
			case err := <-exited:
				return fmt.Errorf("nsd exited: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nsd did not answer for %s: %v", z, err)
			}
		}
	}
	return nil
}

// freePort finds a loopback port free for both UDP and TCP.
func freePort() (string, error) {
	for i := 0; i < 20; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err != nil {
			continue
		}
		ln.Close()
		return addr, nil
	}
	return "", fmt.Errorf("no free loopback port for UDP and TCP")
}

// lockedBuffer collects a child process's output.
type lockedBuffer = syncbuf.Buffer
