package capture

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// OpenLive captures from a network interface with an AF_PACKET socket
// (pure Go, no libpcap; needs CAP_NET_RAW). Frames are read as Ethernet,
// which Linux gives for the loopback interface too. Close ends the
// capture and makes Next return io.EOF within the socket's read timeout.
func OpenLive(iface string) (Source, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A blocked recvfrom is not woken by close(2) on Linux: a read
	// timeout lets Next notice Close.
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &liveSource{fd: fd, buf: make([]byte, MaxPacketLen), loopback: ifi.Flags&net.FlagLoopback != 0}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

type liveSource struct {
	fd       int
	buf      []byte
	loopback bool
	closed   atomic.Bool
}

// Next reads the next frame. It is called from one goroutine, which also
// releases the socket once Close was called.
func (l *liveSource) Next() (Packet, error) {
	for {
		if l.closed.Load() {
			if l.fd >= 0 {
				unix.Close(l.fd)
				l.fd = -1
			}
			return Packet{}, io.EOF
		}
		n, from, err := unix.Recvfrom(l.fd, l.buf, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return Packet{}, err
		}
		if sa, ok := from.(*unix.SockaddrLinklayer); ok && l.loopback && sa.Pkttype == unix.PACKET_OUTGOING {
			// Loopback shows every packet twice, outgoing and incoming:
			// keep one copy.
			continue
		}
		capLen := min(n, len(l.buf))
		data := append([]byte(nil), l.buf[:capLen]...)
		ci := gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: capLen, Length: n}
		return Packet{Data: data, Info: ci, LinkType: layers.LinkTypeEthernet}, nil
	}
}

// Close stops the capture: Next notices within its read timeout, returns
// io.EOF and releases the socket.
func (l *liveSource) Close() error {
	l.closed.Store(true)
	return nil
}
