package capture

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"moat/internal/pcaptest"
)

// TestPortReuse: Linux reuses a client port in TIME_WAIT for a new
// connection to the same server (tcp_tw_reuse, on for loopback), so one
// 4-tuple carries several connections in a row. smtp-source ends its
// sessions with a RST after the 221 reply, before the server's FIN. Each
// connection must come out as its own session, whether the one before it
// ended with FINs or with a RST alone. (One that went out of order and
// was handed to gopacket/reassembly keeps the 4-tuple until it times out:
// a known limit.)
func TestPortReuse(t *testing.T) {
	for _, ending := range []string{"fin", "rst", "rst-reordered-last"} {
		t.Run(ending, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 4))
			g := &pcaptest.Conn{Client: netip.MustParseAddrPort("127.0.0.1:40000"), Server: netip.MustParseAddrPort("127.0.0.1:25"),
				TS: time.Unix(1736157600, 0)}
			var out []pcaptest.Packet
			const n = 3
			for i := range n {
				g.ClientSeq, g.ServerSeq, g.Sess = r.Uint32(), r.Uint32(), i
				g.TS = g.TS.Add(time.Millisecond)
				greeting, steps := pcaptest.Session(i, r)
				g.Handshake(&out)
				g.Send(&out, false, []byte(greeting))
				for k, st := range steps {
					if ending == "rst-reordered-last" && k == 2 && i == n-1 {
						// The message's first two segments swapped.
						at := len(out)
						g.Send(&out, true, []byte(st[0]))
						out[at], out[at+1] = out[at+1], out[at]
					} else {
						g.Send(&out, true, []byte(st[0]))
					}
					g.Send(&out, false, []byte(st[1]))
				}
				if ending == "fin" {
					g.Fin(&out)
				} else {
					g.Frame(&out, true, nil, func(t *layers.TCP) { t.RST = true })
				}
			}
			ss := runBytes(t, pcaptest.Write(t, out))
			if len(ss) != n {
				t.Fatalf("%d sessions, want %d", len(ss), n)
			}
			for i, s := range ss {
				if len(s.Records) != 1 || s.Records[0].Subject != fmt.Sprintf("generated message %d", i) || len(s.Problems) != 0 {
					t.Errorf("session %d: problems %v, records %+v", i, s.Problems, s.Records)
				}
			}
		})
	}
}
