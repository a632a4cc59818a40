package capture

import (
	"encoding/binary"
	"errors"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Link types gopacket v1.1.19 has no constant for. Its LinkType is one
// byte, and pcapgo truncates the file's 32-bit value into it: Linux
// cooked capture v2 (LINKTYPE_LINUX_SLL2, 276; tcpdump -i any with
// libpcap >= 1.10) arrives as 276 & 0xff = 20, a value no other link
// type has.
const (
	linkTypeLinuxSLL2 layers.LinkType = 276 & 0xff
	linkTypeRawAlt1   layers.LinkType = 12 // raw IP on OpenBSD
	linkTypeRawAlt2   layers.LinkType = 14 // raw IP on some BSDs
)

// layerTypeLink is the layer type of linkHeader. It is used only inside
// this package's DecodingLayerParser and deliberately not registered with
// gopacket, which would be a global side effect.
const layerTypeLink gopacket.LayerType = 1999

// linkHeader decodes the link layers that carry IP without an Ethernet
// header: raw IP, BSD loopback ("null") and Linux cooked v2. The next
// layer is found from the EtherType where there is one, else from the IP
// version nibble.
type linkHeader struct {
	kind    layers.LinkType
	next    gopacket.LayerType
	payload []byte
}

func (l *linkHeader) CanDecode() gopacket.LayerClass    { return layerTypeLink }
func (l *linkHeader) NextLayerType() gopacket.LayerType { return l.next }
func (l *linkHeader) LayerPayload() []byte              { return l.payload }
func (l *linkHeader) DecodeFromBytes(data []byte, _ gopacket.DecodeFeedback) error {
	hdr := 0
	switch l.kind {
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		hdr = 4
	case linkTypeLinuxSLL2:
		// RFC-less but documented (tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2):
		// protocol type (2), reserved (2), interface index (4), ARPHRD
		// type (2), packet type (1), address length (1), address (8).
		if len(data) < 20 {
			return errors.New("SLL2 header too short")
		}
		l.payload = data[20:]
		l.next = layers.EthernetType(binary.BigEndian.Uint16(data[:2])).LayerType()
		return nil
	}
	if len(data) <= hdr {
		return errors.New("link header too short")
	}
	l.payload = data[hdr:]
	switch l.payload[0] >> 4 {
	case 4:
		l.next = layers.LayerTypeIPv4
	case 6:
		l.next = layers.LayerTypeIPv6
	default:
		l.next = gopacket.LayerTypePayload
	}
	return nil
}

// decoder turns frames into the TCP and UDP segments capture looks at,
// with gopacket's DecodingLayerParser: the layers are decoded into
// preallocated structs, so a packet costs no allocation.
type decoder struct {
	eth     layers.Ethernet
	sll     layers.LinuxSLL
	link    linkHeader
	vlan    layers.Dot1Q
	ip4     layers.IPv4
	ip6     layers.IPv6
	ip6ext  layers.IPv6ExtensionSkipper
	tcp     layers.TCP
	udp     layers.UDP
	payload gopacket.Payload

	parsers map[layers.LinkType]*gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

func newDecoder() *decoder {
	d := &decoder{parsers: make(map[layers.LinkType]*gopacket.DecodingLayerParser)}
	d.decoded = make([]gopacket.LayerType, 0, 8)
	return d
}

// parser returns the DecodingLayerParser for frames of link type lt, nil
// for a link type capture cannot read.
func (d *decoder) parser(lt layers.LinkType) *gopacket.DecodingLayerParser {
	if p, ok := d.parsers[lt]; ok {
		return p
	}
	var first gopacket.LayerType
	switch lt {
	case layers.LinkTypeEthernet:
		first = layers.LayerTypeEthernet
	case layers.LinkTypeLinuxSLL:
		first = layers.LayerTypeLinuxSLL
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, linkTypeRawAlt1, linkTypeRawAlt2,
		layers.LinkTypeNull, layers.LinkTypeLoop, linkTypeLinuxSLL2:
		first = layerTypeLink
	default:
		d.parsers[lt] = nil
		return nil
	}
	// Each link type gets its own linkHeader so that its kind is fixed.
	link := &linkHeader{kind: lt}
	p := gopacket.NewDecodingLayerParser(first, &d.eth, &d.sll, link, &d.vlan, &d.ip4, &d.ip6, &d.ip6ext,
		&d.tcp, &d.udp, &d.payload)
	p.IgnoreUnsupported = true
	d.parsers[lt] = p
	return p
}

// segment is what decode found in a frame.
type segment struct {
	net       gopacket.Flow // network endpoints
	tcp       bool          // d.tcp holds the segment; else d.udp
	fragment  bool          // an IPv4 fragment: not reassembled
	supported bool          // the link type is one capture reads
}

// decode decodes a frame. ok is false when it holds no TCP or UDP.
func (d *decoder) decode(p Packet) (seg segment, ok bool) {
	parser := d.parser(p.LinkType)
	if parser == nil {
		return seg, false
	}
	seg.supported = true
	d.decoded = d.decoded[:0]
	// Errors are expected (truncated snapshots, unsupported protocols);
	// what decoded before them still counts.
	_ = parser.DecodeLayers(p.Data, &d.decoded)
	var haveNet bool
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeIPv4:
			seg.net = d.ip4.NetworkFlow()
			haveNet = true
			if d.ip4.Flags&layers.IPv4MoreFragments != 0 || d.ip4.FragOffset != 0 {
				seg.fragment = true
				return seg, false
			}
		case layers.LayerTypeIPv6:
			seg.net = d.ip6.NetworkFlow()
			haveNet = true
		case layers.LayerTypeTCP:
			seg.tcp = true
			return seg, haveNet
		case layers.LayerTypeUDP:
			return seg, haveNet
		}
	}
	return seg, false
}
