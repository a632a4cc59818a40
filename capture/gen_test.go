package capture

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// A generator of SMTP captures for the mangling tests and the benchmark:
// sessions of real shape (greeting, EHLO with PIPELINING, a pipelined
// MAIL/RCPT/DATA batch, a message of one to several kilobytes in
// full-sized segments, QUIT, FINs), several open at a time.

// genPacket is one generated frame and the session it belongs to.
type genPacket struct {
	ts   time.Time
	data []byte
	sess int
}

// genMessage is the message of session i.
func genMessage(i int, r *rand.Rand) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\nTo: rcpt%d@example.net\r\n", i, i, i)
	fmt.Fprintf(&b, "Subject: generated message %d\r\nMessage-ID: <%d@gen.example.org>\r\n", i, i)
	fmt.Fprintf(&b, "Date: Mon, 6 Jan 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n")
	lines := 10 + r.IntN(60)
	for l := 0; l < lines; l++ {
		fmt.Fprintf(&b, "Line %d of message %d: the quick brown fox jumps over the lazy dog.\r\n", l, i)
		if l%17 == 5 {
			b.WriteString("..a line that starts with a dot, stuffed\r\n")
		}
	}
	return b.String()
}

// genSession returns the exchanges of session i: client and server
// byte strings, alternating, client first after the greeting.
func genSession(i int, r *rand.Rand) (greeting string, steps [][2]string) {
	greeting = "220 mx.example.net ESMTP\r\n"
	msg := genMessage(i, r)
	steps = [][2]string{
		{fmt.Sprintf("EHLO client%d.example.org\r\n", i), "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"},
		{fmt.Sprintf("MAIL FROM:<sender%d@example.org>\r\nRCPT TO:<rcpt%d@example.net>\r\nDATA\r\n", i, i),
			"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"},
		{msg + ".\r\n", fmt.Sprintf("250 2.0.0 Ok: queued as Q%06d\r\n", i)},
		{"QUIT\r\n", "221 2.0.0 Bye\r\n"},
	}
	return greeting, steps
}

// genCapture generates n sessions, with up to concurrent open at once,
// as frames in time order.
func genCapture(n, concurrent int, seed uint64) []genPacket {
	r := rand.New(rand.NewPCG(seed, 1))
	type live struct {
		conn  *genConn
		steps [][2]string
		next  int
		state int // 0 handshake+greeting pending, 1 steps, 2 done
	}
	var out []genPacket
	ts := time.Unix(1736157600, 0)
	var open []*live
	started := 0
	for started < n || len(open) > 0 {
		for len(open) < concurrent && started < n {
			i := started
			started++
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000))
			s := netip.MustParseAddrPort("192.0.2.25:25")
			open = append(open, &live{conn: &genConn{c: c, s: s, cseq: r.Uint32(), sseq: r.Uint32(), sess: i}})
		}
		// Advance a random open session by one exchange.
		k := r.IntN(len(open))
		l := open[k]
		ts = ts.Add(time.Duration(50+r.IntN(500)) * time.Microsecond)
		l.conn.ts = ts
		switch l.state {
		case 0:
			g, steps := genSession(l.conn.sess, r)
			l.steps = steps
			l.conn.handshake(&out)
			l.conn.send(&out, false, []byte(g))
			l.state = 1
		case 1:
			st := l.steps[l.next]
			l.conn.send(&out, true, []byte(st[0]))
			l.conn.send(&out, false, []byte(st[1]))
			if l.next++; l.next == len(l.steps) {
				l.conn.fin(&out)
				l.state = 2
				open = append(open[:k], open[k+1:]...)
			}
		}
	}
	return out
}

// genConn writes one connection's frames.
type genConn struct {
	c, s       netip.AddrPort
	cseq, sseq uint32
	ts         time.Time
	sess       int
}

func (g *genConn) frame(out *[]genPacket, fromClient bool, data []byte, mod func(*layers.TCP)) {
	src, dst, seq, ack := g.c, g.s, g.cseq, g.sseq
	if !fromClient {
		src, dst, seq, ack = g.s, g.c, g.sseq, g.cseq
	}
	g.ts = g.ts.Add(10 * time.Microsecond)
	*out = append(*out, genPacket{ts: g.ts, data: packetBytes(src, dst, seq, ack, data, mod), sess: g.sess})
}

func (g *genConn) handshake(out *[]genPacket) {
	g.frame(out, true, nil, func(t *layers.TCP) { t.SYN, t.ACK = true, false })
	g.cseq++
	g.frame(out, false, nil, func(t *layers.TCP) { t.SYN = true })
	g.sseq++
	g.frame(out, true, nil, nil)
}

// send writes data in segments of at most 1460 bytes.
func (g *genConn) send(out *[]genPacket, fromClient bool, data []byte) {
	for len(data) > 0 {
		n := min(1460, len(data))
		g.frame(out, fromClient, data[:n], func(t *layers.TCP) { t.PSH = true })
		if fromClient {
			g.cseq += uint32(n)
		} else {
			g.sseq += uint32(n)
		}
		data = data[n:]
	}
}

func (g *genConn) fin(out *[]genPacket) {
	g.frame(out, false, nil, func(t *layers.TCP) { t.FIN = true })
	g.sseq++
	g.frame(out, true, nil, func(t *layers.TCP) { t.FIN = true })
	g.cseq++
	g.frame(out, false, nil, nil)
}

// writePcap writes frames as a pcap file.
func writePcap(t testing.TB, pkts []genPacket) []byte {
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: p.ts, CaptureLength: len(p.data), Length: len(p.data)}
		if err := w.WritePacket(ci, p.data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}
