package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/miekg/dns"
)

func TestAnalyzeSharedCapture(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"analyze", sharedSMTPCapture}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d records, want 2:\n%s", len(lines), out.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["helo"] != "GP" || rec["mailfrom"] != "gurpartap@patriots.in" || rec["verdict"] == nil || rec["auth_mech"] != "LOGIN" {
		t.Errorf("first record: %v", rec)
	}
	if !strings.Contains(errb.String(), "sessions:      2") || !strings.Contains(errb.String(), "not queried") {
		t.Errorf("summary:\n%s", errb.String())
	}
}

// Offline, greylisting never touches a store, not even the configured
// one: the decision is unknown and the mail is judged by the other rules.
func TestAnalyzeGreylistUnknown(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesFile, []byte("rules:\n  - {name: GREY_DATA, stage: data, when: {size: {gt: 0}}, action: greylist}\n"), 0o644)
	cfg := filepath.Join(dir, "moat.yaml")
	stateDir := filepath.Join(dir, "state")
	os.WriteFile(cfg, []byte("rules:\n  file: "+rulesFile+"\nstate:\n  dir: "+stateDir+"\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"analyze", "--quiet", "--config", cfg, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(strings.Split(out.String(), "\n")[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["greylist"] != "unknown" || rec["verdict"] != "accept" {
		t.Errorf("greylist %v verdict %v, want unknown and accept: %v", rec["greylist"], rec["verdict"], rec)
	}
	if _, err := os.Stat(stateDir); err == nil {
		t.Errorf("analyze created the state directory %s", stateDir)
	}
}

func TestAnalyzeUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"analyze"}, &out, &errb); code != exitUsage {
		t.Errorf("no file: exit %d", code)
	}
	if code := run([]string{"analyze", "--dnsbl", "sometimes", "x.pcap"}, &out, &errb); code != exitUsage {
		t.Errorf("bad --dnsbl: exit %d", code)
	}
	if code := run([]string{"analyze", "--quiet", "does-not-exist.pcap"}, &out, &errb); code != exitFailure {
		t.Errorf("missing file: exit %d", code)
	}
}

// TestAnalyzeRecordedDNSBL builds a capture in which the MTA's resolver
// answered its blocklist lookup of the client (192.0.2.99 listed on
// zen.test with 127.0.0.2): --dnsbl recorded must judge the session by
// that answer, --dnsbl off must not call it clean.
func TestAnalyzeRecordedDNSBL(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "moat.yaml")
	rulesFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesFile, []byte(`thresholds: {tag: 5, reject: 10}
rules:
  - name: CLIENT_LISTED
    stage: connect
    when: {dnsbl: zen}
    score: 10
`), 0o644)
	// A generous lookup timeout: under a loaded -race run a 2 s default
	// could expire and turn the recorded listing into a failed lookup.
	os.WriteFile(cfg, []byte("dnsbl:\n  timeout: 20s\n  lists:\n    - name: zen\n      zone: zen.test\n      kind: ip\nrules:\n  file: "+rulesFile+"\n"), 0o644)
	pcap := filepath.Join(dir, "dnsbl.pcap")
	writeDNSBLCapture(t, pcap)

	analyze := func(mode string) map[string]any {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run([]string{"analyze", "--quiet", "--config", cfg, "--dnsbl", mode, pcap}, &out, &errb); code != 0 {
			t.Fatalf("--dnsbl %s: exit %d: %s", mode, code, errb.String())
		}
		var rec map[string]any
		if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &rec); err != nil {
			t.Fatalf("--dnsbl %s: %v: %s", mode, err, out.String())
		}
		return rec
	}
	rec := analyze("recorded")
	if rec["verdict"] != "reject" || rec["stage"] != "connect" {
		t.Errorf("recorded: verdict %v at %v, want reject at connect: %v", rec["verdict"], rec["stage"], rec)
	}
	rec = analyze("off")
	if rec["verdict"] == "reject" {
		t.Errorf("off: a list that was not queried decided the verdict: %v", rec)
	}
}

// writeDNSBLCapture writes the resolver's answer and one SMTP session.
func writeDNSBLCapture(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	ts := time.Unix(1736157600, 0)
	put := func(ls ...gopacket.SerializableLayer) {
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		ts = ts.Add(time.Millisecond)
		w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}, buf.Bytes())
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := func(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
		return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	}

	// The answer: 99.2.0.192.zen.test. A 127.0.0.2.
	m := new(dns.Msg)
	m.SetQuestion("99.2.0.192.zen.test.", dns.TypeA)
	m.Response = true
	rr, _ := dns.NewRR("99.2.0.192.zen.test. 300 IN A 127.0.0.2")
	m.Answer = []dns.RR{rr}
	wire, _ := m.Pack()
	i4 := ip("192.0.2.53", "192.0.2.25", layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: 53, DstPort: 40000}
	udp.SetNetworkLayerForChecksum(i4)
	put(eth, i4, udp, gopacket.Payload(wire))

	// The session.
	cseq, sseq := uint32(100), uint32(900)
	seg := func(fromClient bool, data string, mod func(*layers.TCP)) {
		src, dst, sp, dp, seq, ack := "192.0.2.99", "192.0.2.25", 41000, 25, cseq, sseq
		if !fromClient {
			src, dst, sp, dp, seq, ack = "192.0.2.25", "192.0.2.99", 25, 41000, sseq, cseq
		}
		i := ip(src, dst, layers.IPProtocolTCP)
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Seq: seq, Ack: ack, ACK: true, Window: 65535}
		if mod != nil {
			mod(tcp)
		}
		tcp.SetNetworkLayerForChecksum(i)
		put(eth, i, tcp, gopacket.Payload(data))
		n := uint32(len(data))
		if tcp.SYN || tcp.FIN {
			n++
		}
		if fromClient {
			cseq += n
		} else {
			sseq += n
		}
	}
	seg(true, "", func(tc *layers.TCP) { tc.SYN, tc.ACK = true, false })
	seg(false, "", func(tc *layers.TCP) { tc.SYN = true })
	for _, x := range [][2]string{
		{"", "220 mx.test ESMTP\r\n"},
		{"EHLO client.test\r\n", "250 mx.test\r\n"},
		{"MAIL FROM:<a@client.test>\r\n", "250 ok\r\n"},
		{"RCPT TO:<b@mx.test>\r\n", "250 ok\r\n"},
		{"DATA\r\n", "354 go\r\n"},
		{"Subject: hi\r\n\r\nhello\r\n.\r\n", "250 queued\r\n"},
		{"QUIT\r\n", "221 bye\r\n"},
	} {
		if x[0] != "" {
			seg(true, x[0], nil)
		}
		seg(false, x[1], nil)
	}
	seg(true, "", func(tc *layers.TCP) { tc.FIN = true })
	seg(false, "", func(tc *layers.TCP) { tc.FIN = true })
}
