// Package pcaptest writes SMTP captures for tests: pcap files of
// Ethernet/IPv4/TCP frames, built connection by connection (handshake,
// segments of at most 1460 bytes, FINs), either scripted exchange by
// exchange or generated — sessions of real shape (greeting, EHLO with
// PIPELINING, a pipelined MAIL/RCPT/DATA batch, a message of one to
// several kilobytes in full-sized segments, QUIT), several open at a time.
// capture's reconstruction tests and benchmark and internal/replay's
// tests share it.
package pcaptest

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

// Packet is one frame and the session it belongs to.
type Packet struct {
	TS   time.Time
	Data []byte
	Sess int
}

// Message is the message of generated session i: a header whose Subject
// is "generated message i", and ten to seventy lines, some dot-stuffed.
func Message(i int, r *rand.Rand) string {
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

// Session returns the exchanges of generated session i: client and
// server byte strings, alternating, client first after the greeting.
func Session(i int, r *rand.Rand) (greeting string, steps [][2]string) {
	greeting = "220 mx.example.net ESMTP\r\n"
	msg := Message(i, r)
	steps = [][2]string{
		{fmt.Sprintf("EHLO client%d.example.org\r\n", i), "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"},
		{fmt.Sprintf("MAIL FROM:<sender%d@example.org>\r\nRCPT TO:<rcpt%d@example.net>\r\nDATA\r\n", i, i),
			"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"},
		{msg + ".\r\n", fmt.Sprintf("250 2.0.0 Ok: queued as Q%06d\r\n", i)},
		{"QUIT\r\n", "221 2.0.0 Bye\r\n"},
	}
	return greeting, steps
}

// Capture generates n sessions, with up to concurrent open at once, as
// frames in time order; the same seed gives the same capture. Session i
// comes from 10.x.y.z (i in the address) to 192.0.2.25:25.
func Capture(n, concurrent int, seed uint64) []Packet {
	r := rand.New(rand.NewPCG(seed, 1))
	type live struct {
		conn  *Conn
		steps [][2]string
		next  int
		state int // 0 handshake+greeting pending, 1 steps, 2 done
	}
	var out []Packet
	ts := time.Unix(1736157600, 0)
	var open []*live
	started := 0
	for started < n || len(open) > 0 {
		for len(open) < concurrent && started < n {
			i := started
			started++
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000))
			s := netip.MustParseAddrPort("192.0.2.25:25")
			open = append(open, &live{conn: &Conn{Client: c, Server: s, ClientSeq: r.Uint32(), ServerSeq: r.Uint32(), Sess: i}})
		}
		// Advance a random open session by one exchange.
		k := r.IntN(len(open))
		l := open[k]
		ts = ts.Add(time.Duration(50+r.IntN(500)) * time.Microsecond)
		l.conn.TS = ts
		switch l.state {
		case 0:
			g, steps := Session(l.conn.Sess, r)
			l.steps = steps
			l.conn.Handshake(&out)
			l.conn.Send(&out, false, []byte(g))
			l.state = 1
		case 1:
			st := l.steps[l.next]
			l.conn.Send(&out, true, []byte(st[0]))
			l.conn.Send(&out, false, []byte(st[1]))
			if l.next++; l.next == len(l.steps) {
				l.conn.Fin(&out)
				l.state = 2
				open = append(open[:k], open[k+1:]...)
			}
		}
	}
	return out
}

// Scripted is one connection from client to 192.0.2.25:25 starting at
// ts: the handshake, a greeting, then each step's client bytes and, 10µs
// later, the server's, the steps gap apart; FINs at the end.
func Scripted(client netip.AddrPort, ts time.Time, gap time.Duration, steps [][2]string) []Packet {
	var out []Packet
	g := &Conn{Client: client, Server: netip.MustParseAddrPort("192.0.2.25:25"), ClientSeq: 1000, ServerSeq: 5000, TS: ts}
	g.Handshake(&out)
	g.Send(&out, false, []byte("220 mx.example.net ESMTP\r\n"))
	for _, st := range steps {
		g.TS = g.TS.Add(gap)
		g.Send(&out, true, []byte(st[0]))
		g.Send(&out, false, []byte(st[1]))
	}
	g.Fin(&out)
	return out
}

// Conn writes one connection's frames, each 10µs after the one before.
type Conn struct {
	Client, Server       netip.AddrPort
	ClientSeq, ServerSeq uint32 // the next sequence number of each side
	TS                   time.Time
	Sess                 int // copied into each Packet
}

// Frame appends one frame; mod, when set, changes its TCP header (flags).
// The sequence numbers do not move: Send moves them.
func (g *Conn) Frame(out *[]Packet, fromClient bool, data []byte, mod func(*layers.TCP)) {
	src, dst, seq, ack := g.Client, g.Server, g.ClientSeq, g.ServerSeq
	if !fromClient {
		src, dst, seq, ack = g.Server, g.Client, g.ServerSeq, g.ClientSeq
	}
	g.TS = g.TS.Add(10 * time.Microsecond)
	*out = append(*out, Packet{TS: g.TS, Data: Frame(src, dst, seq, ack, data, mod), Sess: g.Sess})
}

// Handshake appends SYN, SYN-ACK, ACK.
func (g *Conn) Handshake(out *[]Packet) {
	g.Frame(out, true, nil, func(t *layers.TCP) { t.SYN, t.ACK = true, false })
	g.ClientSeq++
	g.Frame(out, false, nil, func(t *layers.TCP) { t.SYN = true })
	g.ServerSeq++
	g.Frame(out, true, nil, nil)
}

// Send appends data in segments of at most 1460 bytes.
func (g *Conn) Send(out *[]Packet, fromClient bool, data []byte) {
	for len(data) > 0 {
		n := min(1460, len(data))
		g.Frame(out, fromClient, data[:n], func(t *layers.TCP) { t.PSH = true })
		if fromClient {
			g.ClientSeq += uint32(n)
		} else {
			g.ServerSeq += uint32(n)
		}
		data = data[n:]
	}
}

// Fin appends the server's FIN, the client's, and the last ACK.
func (g *Conn) Fin(out *[]Packet) {
	g.Frame(out, false, nil, func(t *layers.TCP) { t.FIN = true })
	g.ServerSeq++
	g.Frame(out, true, nil, func(t *layers.TCP) { t.FIN = true })
	g.ClientSeq++
	g.Frame(out, false, nil, nil)
}

// Frame serialises an Ethernet/IPv4/TCP frame with correct lengths and
// checksums; mod, when set, changes the TCP header before.
func Frame(src, dst netip.AddrPort, seq, ack uint32, data []byte, mod func(*layers.TCP)) []byte {
	eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, ACK: true, Window: 65535}
	if mod != nil {
		mod(tcp)
	}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(data))
	return buf.Bytes()
}

// Write writes frames as a pcap file (Ethernet link type).
func Write(t testing.TB, pkts []Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: p.TS, CaptureLength: len(p.Data), Length: len(p.Data)}
		if err := w.WritePacket(ci, p.Data); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}
