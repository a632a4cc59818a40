package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"moat/internal/pcaptest"
)

// TestMain fails the run if any session was lost to a recovered panic:
// recovery keeps a bad capture from ending an analysis, it must never
// hide a bug from the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := panicsRecovered.Load(); n > 0 && code == 0 {
		os.Stderr.WriteString("capture: panics were recovered during the tests\n")
		code = 1
	}
	os.Exit(code)
}

// runBytes analyses a capture held in memory, with a small budget so
// that fuzzing also walks the spill paths.
func runBytes(t testing.TB, data []byte) []*Session {
	src, err := NewReader(bytes.NewReader(data), "fuzz", nil)
	if err != nil {
		return nil
	}
	a, err := New(Config{Shards: 1, FlowMemory: 4096, Memory: 64 << 10, SpoolDir: t.TempDir()}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*Session
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(context.Background(), src, func(s *Session) error { out = append(out, s); return nil })
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		// A hang is a bug: keep the input and every goroutine's stack.
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		os.WriteFile(filepath.Join(os.TempDir(), "moat-capture-hang.pcap"), data, 0o644)
		os.WriteFile(filepath.Join(os.TempDir(), "moat-capture-hang.txt"), buf[:n], 0o644)
		t.Fatalf("analysis did not end in 20s; input and stacks in %s/moat-capture-hang.*", os.TempDir())
	}
	if a.Panics() > 0 {
		t.Fatalf("%d panics recovered", a.Panics())
	}
	return out
}

// FuzzReadPcap feeds random bytes as a capture file. Properties: no
// panic, no hang, and every record belongs to a session whose endpoints
// are valid addresses.
func FuzzReadPcap(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(testdata, "pcap/*/*.pcap*"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil || len(data) > 64<<10 {
			continue
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range runBytes(t, data) {
			if !s.Client.IsValid() || !s.Server.IsValid() || len(s.Records) == 0 {
				t.Fatalf("session without endpoints or records: %+v", s)
			}
			for _, r := range s.Records {
				if r.UID != s.UID {
					t.Fatalf("record of another session")
				}
			}
		}
	})
}

// FuzzSMTPStream feeds random bytes as the two directions of one TCP
// connection on port 25 (client bytes, then server bytes, each cut into
// segments). Properties: no panic, exactly one session, a record for
// it, and a smuggling flag only with an EOD that says why.
func FuzzSMTPStream(f *testing.F) {
	f.Add([]byte("EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhi\n.\nMAIL FROM:<e@f>\r\n.\r\nQUIT\r\n"),
		[]byte("220 x\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n"))
	f.Add([]byte("EHLO a\r\nBDAT 5 LAST\r\nhelloQUIT\r\n"), []byte("220 x\r\n250 x\r\n250 ok\r\n221 bye\r\n"))
	f.Add([]byte("AUTH PLAIN AGZvbwBiYXI=\r\nSTARTTLS\r\n\x16\x03\x01"), []byte("220 x\r\n235 ok\r\n220 go\r\n"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"), []byte{})
	f.Fuzz(func(t *testing.T, client, server []byte) {
		data := tcpCapture(t, client, server, 536)
		ss := runBytes(t, data)
		if len(client)+len(server) == 0 {
			return
		}
		if len(ss) != 1 {
			t.Fatalf("%d sessions, want 1", len(ss))
		}
		if len(ss[0].Records) == 0 {
			t.Fatal("session without a record")
		}
		for _, r := range ss[0].Records {
			if r.Smuggling && (r.EOD == nil || !(r.EOD.LF >= 0 && r.EOD.LF < r.EOD.Strict || r.EOD.CR >= 0 && r.EOD.CR < r.EOD.Strict)) {
				t.Fatalf("smuggling flagged without a divergence: %+v", r.EOD)
			}
		}
	})
}

// tcpCapture writes a pcap of one TCP connection 10.0.0.1:40000 →
// 10.0.0.2:25 with a handshake, the client's bytes and the server's bytes
// interleaved in segments of at most mss bytes, and FINs.
func tcpCapture(t testing.TB, client, server []byte, mss int) []byte {
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	c := netip.MustParseAddrPort("10.0.0.1:40000")
	s := netip.MustParseAddrPort("10.0.0.2:25")
	conn := &fakeConn{w: w, t: t, ts: time.Unix(1700000000, 0), cseq: 1000, sseq: 5000, c: c, s: s}
	conn.handshake()
	for len(client) > 0 || len(server) > 0 {
		if len(server) > 0 {
			n := min(mss, len(server))
			conn.send(false, server[:n], false)
			server = server[n:]
		}
		if len(client) > 0 {
			n := min(mss, len(client))
			conn.send(true, client[:n], false)
			client = client[n:]
		}
	}
	conn.send(true, nil, true)
	conn.send(false, nil, true)
	return buf.Bytes()
}

// fakeConn writes the packets of one TCP connection.
type fakeConn struct {
	w          *pcapgo.Writer
	t          testing.TB
	ts         time.Time
	cseq, sseq uint32
	c, s       netip.AddrPort
}

func (f *fakeConn) handshake() {
	f.packet(true, nil, func(tcp *layers.TCP) { tcp.SYN = true; tcp.ACK = false })
	f.cseq++
	f.packet(false, nil, func(tcp *layers.TCP) { tcp.SYN = true })
	f.sseq++
	f.packet(true, nil, nil)
}

func (f *fakeConn) send(fromClient bool, data []byte, fin bool) {
	f.packet(fromClient, data, func(tcp *layers.TCP) { tcp.FIN = fin; tcp.PSH = len(data) > 0 })
	n := uint32(len(data))
	if fin {
		n++
	}
	if fromClient {
		f.cseq += n
	} else {
		f.sseq += n
	}
}

func (f *fakeConn) packet(fromClient bool, data []byte, mod func(*layers.TCP)) {
	f.ts = f.ts.Add(time.Millisecond)
	src, dst := f.c, f.s
	seq, ack := f.cseq, f.sseq
	if !fromClient {
		src, dst = f.s, f.c
		seq, ack = f.sseq, f.cseq
	}
	f.write(pcaptest.Frame(src, dst, seq, ack, data, mod))
}

func (f *fakeConn) write(b []byte) {
	ci := gopacket.CaptureInfo{Timestamp: f.ts, CaptureLength: len(b), Length: len(b)}
	if err := f.w.WritePacket(ci, b); err != nil {
		f.t.Fatal(err)
	}
}

// Fuzz input helpers are also used by the mangling tests.
var _ = io.EOF
var _ = strings.Repeat
var _ = binary.BigEndian
