package capture

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/pcapgo"

	"moat/internal/postfixtest"
)

// Captures the suite makes itself: tshark records real clients — swaks,
// Python's smtplib and a BDAT sender — talking to a real Postfix on
// loopback, and the reconstruction must give back what the clients sent.
func TestSelfMadeCapture(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	cert, key := selfSigned(t, dir)
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"smtpd_tls_security_level = may", "smtpd_tls_cert_file = " + cert, "smtpd_tls_key_file = " + key,
	}})
	_, port, _ := net.SplitHostPort(pf.Addr)
	pcap := filepath.Join(dir, "selfmade.pcapng")
	stop := startTshark(t, "tcp port "+port, pcap)

	swaks := func(args ...string) {
		t.Helper()
		out, err := exec.Command("swaks", append([]string{"--server", pf.Addr, "--helo", "swaks.test",
			"--from", "ana@client.test", "--to", "bo@example.net"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", args, err, out)
		}
	}
	swaks("--header", "Subject: swaks plain", "--body", "Grüße, 8-bit body\n..dot line\n")
	swaks("--pipeline", "--header", "Subject: swaks pipelined", "--to", "cy@example.net")
	swaks("--tls", "--header", "Subject: secret over tls")
	host, _, _ := net.SplitHostPort(pf.Addr)
	script := `
import smtplib, sys
with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="py.test", timeout=30) as s:
    for i, subj in enumerate(["py one", "py two"]):
        s.sendmail("py@client.test", ["dee@example.net"], ("Subject: %s\r\n\r\nGr\u00fc\u00dfe %d\r\n" % (subj, i)).encode(), mail_options=["BODY=8BITMIME"])
`
	if out, err := exec.Command("python3", "-c", script, host, port).CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	sendBDAT(t, pf.Addr)
	pf.WaitMessages(t, 6, 30*time.Second)
	stop()

	sessions, _ := analyzeFile(t, pcap, Config{}, Deps{})
	bySubject := map[string]Record{}
	var tlsRecords []Record
	for _, s := range sessions {
		for _, r := range s.Records {
			if r.Subject != "" {
				bySubject[r.Subject] = r
			}
			if r.TLS {
				tlsRecords = append(tlsRecords, r)
			}
		}
	}
	check := func(subject, helo, from string, rcpts []string, depth int) {
		t.Helper()
		r, ok := bySubject[subject]
		if !ok {
			t.Errorf("no record with subject %q; have %v", subject, keys(bySubject))
			return
		}
		if r.Helo != helo || r.MailFrom != from || strings.Join(r.RcptTo, ",") != strings.Join(rcpts, ",") ||
			!strings.HasPrefix(r.LastReply, "250 2.0.0 Ok: ") || !strings.Contains(r.LastReply, "queued as ") || depth != 0 && r.TransDepth != depth {
			t.Errorf("%q: helo %q from %q rcpt %v depth %d reply %q", subject, r.Helo, r.MailFrom, r.RcptTo, r.TransDepth, r.LastReply)
		}
	}
	check("swaks plain", "swaks.test", "ana@client.test", []string{"bo@example.net"}, 1)
	check("swaks pipelined", "swaks.test", "ana@client.test", []string{"cy@example.net"}, 1)
	check("py one", "py.test", "py@client.test", []string{"dee@example.net"}, 1)
	check("py two", "py.test", "py@client.test", []string{"dee@example.net"}, 2)
	check("bdat chunks", "bdat.test", "bdat@client.test", []string{"eve@example.net"}, 1)
	if r := bySubject["swaks plain"]; r.Size == 0 {
		t.Errorf("swaks plain: no message size")
	}
	if _, ok := bySubject["secret over tls"]; ok {
		t.Error("the message sent after STARTTLS was read from the capture")
	}
	if len(tlsRecords) != 1 || tlsRecords[0].Helo != "swaks.test" {
		t.Errorf("TLS sessions: %+v", tlsRecords)
	}

	// Mangled copies: duplicated packets change nothing; a truncated file
	// parses without panic and loses only what it lost.
	pkts := readPackets(t, pcap)
	var dup []capturedPacket
	for i, p := range pkts {
		dup = append(dup, p)
		if i%3 == 0 {
			dup = append(dup, p)
		}
	}
	got, _ := analyzeFile(t, writePackets(t, dir, "dup.pcap", dup), Config{}, Deps{})
	if a, b := subjects(got), subjects(sessions); a != b {
		t.Errorf("duplicated packets changed the result:\n got %s\nwant %s", a, b)
	}
	data, _ := os.ReadFile(pcap)
	for _, cut := range []int{len(data) / 4, len(data) / 2, len(data) - 100} {
		trunc := filepath.Join(dir, fmt.Sprintf("trunc-%d.pcapng", cut))
		os.WriteFile(trunc, data[:cut], 0o644)
		src, err := OpenFile(trunc)
		if err != nil {
			continue // cut inside the file header: refused, which is fine
		}
		a, _ := New(Config{}, Deps{})
		a.Run(t.Context(), src, func(*Session) error { return nil })
		src.Close()
		if a.Panics() > 0 {
			t.Fatalf("panic on a capture truncated at %d", cut)
		}
	}
}

func keys(m map[string]Record) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func subjects(ss []*Session) string {
	var out []string
	for _, s := range ss {
		for _, r := range s.Records {
			out = append(out, fmt.Sprintf("%s|%s|%s|%v", r.Subject, r.MailFrom, r.LastReply, r.TLS))
		}
	}
	return strings.Join(out, "\n")
}

// startTshark captures loopback traffic matching filter into file and
// returns a function that stops it and waits for the file to be complete.
func startTshark(t *testing.T, filter, file string) func() {
	t.Helper()
	cmd := exec.Command("tshark", "-i", "lo", "-f", filter, "-w", file, "-q")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("tshark: %v", err)
	}
	ready := make(chan struct{})
	var log bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "Capturing on") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("tshark did not start capturing:\n%s", log.String())
	}
	time.Sleep(300 * time.Millisecond) // the capture filter is live
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		time.Sleep(500 * time.Millisecond) // let the last packets in
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("tshark did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// sendBDAT sends one message in two BDAT chunks (Postfix offers CHUNKING).
func sendBDAT(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, code) {
				t.Fatalf("BDAT session: got %q (%v), want %s", line, err, code)
			}
			if line[3] != '-' {
				return
			}
		}
	}
	part1 := "Subject: bdat chunks\r\n\r\nfirst chunk\r\n"
	part2 := "second chunk\r\n"
	expect("220")
	for _, step := range []struct{ send, want string }{
		{"EHLO bdat.test\r\n", "250"}, {"MAIL FROM:<bdat@client.test>\r\n", "250"},
		{"RCPT TO:<eve@example.net>\r\n", "250"},
		{fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1), "250"},
		{fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2), "250"},
		{"QUIT\r\n", "221"},
	} {
		io.WriteString(c, step.send)
		expect(step.want)
	}
}

type capturedPacket struct {
	ci   gopacket.CaptureInfo
	data []byte
}

func readPackets(t *testing.T, file string) []capturedPacket {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	var out []capturedPacket
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		out = append(out, capturedPacket{ci, append([]byte(nil), data...)})
	}
	if len(out) == 0 {
		t.Fatal("empty capture")
	}
	return out
}

func writePackets(t *testing.T, dir, name string, pkts []capturedPacket) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, _ := os.Open(filepath.Join(dir, "selfmade.pcapng"))
	ng, err := pcapgo.NewNgReader(src, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	w.WriteFileHeader(65535, ng.LinkType())
	src.Close()
	for _, p := range pkts {
		if err := w.WritePacket(p.ci, p.data); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// selfSigned writes a certificate and key for Postfix's STARTTLS.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"upstream.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o644)
	return certFile, keyFile
}
