package capture

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// OpenLive captures from a network interface with an AF_PACKET socket
// (pcapgo.EthernetHandle: pure Go, no libpcap; needs CAP_NET_RAW).
// Frames are read as Ethernet, which Linux gives for the loopback
// interface too. Close ends the capture and makes Next return io.EOF.
func OpenLive(iface string) (Source, error) {
	h, err := pcapgo.NewEthernetHandle(iface)
	if err != nil {
		return nil, err
	}
	if err := h.SetCaptureLength(MaxPacketLen); err != nil {
		h.Close()
		return nil, err
	}
	return &liveSource{h: h}, nil
}

type liveSource struct {
	h      *pcapgo.EthernetHandle
	mu     sync.Mutex
	closed bool
}

func (l *liveSource) Next() (Packet, error) {
	data, ci, err := l.h.ReadPacketData()
	if err != nil {
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed || errors.Is(err, net.ErrClosed) {
			return Packet{}, io.EOF
		}
		return Packet{}, err
	}
	return Packet{Data: data, Info: ci, LinkType: layers.LinkTypeEthernet}, nil
}

func (l *liveSource) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.h.Close()
	return nil
}
