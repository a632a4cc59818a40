package capture

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"moat/internal/pcaptest"
)

// Mangled copies of a generated capture — packets dropped, reordered,
// duplicated, the file cut short — must parse without panic, and the
// sessions the damage did not touch must come out exactly as from the
// intact capture.

// recordKey is what must not change: a record without its time, ID and
// problems.
func recordKey(r Record) string {
	r.TS, r.UID, r.Problems = Epoch{}, "", nil
	return fmt.Sprintf("%+v", r)
}

// byClient indexes sessions by client address.
func byClient(ss []*Session) map[string]*Session {
	m := map[string]*Session{}
	for _, s := range ss {
		m[s.Client.String()] = s
	}
	return m
}

func sessionOf(pkts []pcaptest.Packet, i int) (client string) {
	for _, p := range pkts {
		if p.Sess == i {
			pk := gopacket.NewPacket(p.Data, layers.LinkTypeEthernet, gopacket.Default)
			ip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
			return fmt.Sprintf("%s:%d", ip.SrcIP, tcp.SrcPort)
		}
	}
	return ""
}

func payloadLen(p pcaptest.Packet) int {
	pk := gopacket.NewPacket(p.Data, layers.LinkTypeEthernet, gopacket.Default)
	if tcp, ok := pk.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		return len(tcp.Payload)
	}
	return 0
}

func TestGeneratedCaptureReconstruction(t *testing.T) {
	const n = 30
	pkts := pcaptest.Capture(n, 6, 1)
	ss := runBytes(t, pcaptest.Write(t, pkts))
	if len(ss) != n {
		t.Fatalf("%d sessions, want %d", len(ss), n)
	}
	seen := map[string]bool{}
	for _, s := range ss {
		if len(s.Records) != 1 || len(s.Problems) != 0 {
			t.Fatalf("session %s: %d records, problems %v", s.Client, len(s.Records), s.Problems)
		}
		r := s.Records[0]
		var i int
		if _, err := fmt.Sscanf(r.Subject, "generated message %d", &i); err != nil {
			t.Fatalf("subject %q", r.Subject)
		}
		seen[r.Subject] = true
		wantFrom := fmt.Sprintf("sender%d@example.org", i)
		if r.MailFrom != wantFrom || len(r.RcptTo) != 1 || r.RcptTo[0] != fmt.Sprintf("rcpt%d@example.net", i) ||
			r.Helo != fmt.Sprintf("client%d.example.org", i) || r.LastReply != fmt.Sprintf("250 2.0.0 Ok: queued as Q%06d", i) ||
			r.MsgID != fmt.Sprintf("<%d@gen.example.org>", i) {
			t.Errorf("session %d: %+v", i, r)
		}
		body := pcaptest.Message(i, nil2(i))
		_ = body
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages, want %d", len(seen), n)
	}
}

// nil2 is a placeholder random source for genMessage when only the
// header matters.
func nil2(i int) *rand.Rand { return rand.New(rand.NewPCG(uint64(i), 2)) }

func TestMangledCaptures(t *testing.T) {
	const n = 30
	pkts := pcaptest.Capture(n, 6, 7)
	base := byClient(runBytes(t, pcaptest.Write(t, pkts)))
	if len(base) != n {
		t.Fatalf("intact capture: %d sessions, want %d", len(base), n)
	}
	r := rand.New(rand.NewPCG(42, 42))

	// same checks that every session not in damaged is unchanged.
	same := func(t *testing.T, got []*Session, damaged map[string]bool) {
		t.Helper()
		g := byClient(got)
		for client, want := range base {
			if damaged[client] {
				continue
			}
			s, ok := g[client]
			if !ok {
				t.Errorf("session %s missing", client)
				continue
			}
			if len(s.Records) != len(want.Records) {
				t.Errorf("session %s: %d records, want %d", client, len(s.Records), len(want.Records))
				continue
			}
			for i := range s.Records {
				if a, b := recordKey(s.Records[i]), recordKey(want.Records[i]); a != b {
					t.Errorf("session %s record %d:\n got %s\nwant %s", client, i, a, b)
				}
			}
		}
	}

	t.Run("dropped", func(t *testing.T) {
		damaged := map[string]bool{}
		var out []pcaptest.Packet
		drop := map[int]bool{3: true, 11: true, 20: true}
		dropped := map[int]bool{}
		for _, p := range pkts {
			// Drop one full-size client segment of the chosen sessions:
			// a hole in the message.
			if drop[p.Sess] && !dropped[p.Sess] && payloadLen(p) == 1460 {
				dropped[p.Sess] = true
				damaged[sessionOf(pkts, p.Sess)] = true
				continue
			}
			out = append(out, p)
		}
		got := runBytes(t, pcaptest.Write(t, out))
		same(t, got, damaged)
		for _, s := range got {
			if damaged[s.Client.String()] && !strings.Contains(strings.Join(s.Problems, ","), "gap_client") {
				t.Errorf("session %s lost a segment but reports %v", s.Client, s.Problems)
			}
		}
	})
	t.Run("reordered", func(t *testing.T) {
		out := append([]pcaptest.Packet(nil), pkts...)
		for i := 0; i+1 < len(out); i++ {
			// Swap neighbours carrying data, keeping handshakes first.
			if payloadLen(out[i]) > 0 && payloadLen(out[i+1]) > 0 && r.IntN(3) == 0 {
				out[i], out[i+1] = out[i+1], out[i]
				i++
			}
		}
		same(t, runBytes(t, pcaptest.Write(t, out)), nil)
	})
	t.Run("duplicated", func(t *testing.T) {
		var out []pcaptest.Packet
		for _, p := range pkts {
			out = append(out, p)
			if r.IntN(4) == 0 {
				out = append(out, p) // a retransmission
			}
		}
		same(t, runBytes(t, pcaptest.Write(t, out)), nil)
	})
	t.Run("truncated", func(t *testing.T) {
		data := pcaptest.Write(t, pkts)
		for _, cut := range []int{0, 10, 24, 25, 100, len(data) / 3, len(data) / 2, len(data) - 7} {
			keep := data[:cut]
			got := runBytes(t, keep)
			// Sessions whose every packet lies before the cut are intact.
			damaged := map[string]bool{}
			size := 24
			for _, p := range pkts {
				size += 16 + len(p.Data)
				if size > cut {
					damaged[sessionOf(pkts, p.Sess)] = true
				}
			}
			g := byClient(got)
			for client := range base {
				if !damaged[client] {
					if _, ok := g[client]; !ok {
						t.Errorf("cut %d: complete session %s missing", cut, client)
					}
				}
			}
			same(t, got, damaged)
		}
	})
}
