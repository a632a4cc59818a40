package capture

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
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
			g := &genConn{c: netip.MustParseAddrPort("127.0.0.1:40000"), s: netip.MustParseAddrPort("127.0.0.1:25"),
				ts: time.Unix(1736157600, 0)}
			var out []genPacket
			const n = 3
			for i := range n {
				g.cseq, g.sseq, g.sess = r.Uint32(), r.Uint32(), i
				g.ts = g.ts.Add(time.Millisecond)
				greeting, steps := genSession(i, r)
				g.handshake(&out)
				g.send(&out, false, []byte(greeting))
				for k, st := range steps {
					if ending == "rst-reordered-last" && k == 2 && i == n-1 {
						// The message's first two segments swapped.
						at := len(out)
						g.send(&out, true, []byte(st[0]))
						out[at], out[at+1] = out[at+1], out[at]
					} else {
						g.send(&out, true, []byte(st[0]))
					}
					g.send(&out, false, []byte(st[1]))
				}
				if ending == "fin" {
					g.fin(&out)
				} else {
					g.frame(&out, true, nil, func(t *layers.TCP) { t.RST = true })
				}
			}
			ss := runBytes(t, writePcap(t, out))
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
