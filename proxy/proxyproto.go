package proxy

// The HAProxy PROXY protocol (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt,
// cited below as "proxy-protocol.txt") lets a TCP relay tell the next hop who
// the real client is: before any payload, the relay writes one header naming
// the original source and destination. Version 1 (§2.1) is a single text
// line, version 2 (§2.2) a binary block that may carry extra TLVs.
//
// moat uses it both ways: it reads a header from a trusted load balancer in
// front of its listeners, and it writes one to the upstream MTA (Postfix's
// smtpd_upstream_proxy_protocol = haproxy) so that the MTA logs and checks
// the real client, not moat.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ProxyHeader is a PROXY protocol header: the original connection's endpoints.
//
// Source and Dest are both IPv4 or both IPv6. A header read from the wire
// never holds a pair of IPv4-mapped IPv6 addresses: those are unmapped, so a
// v4 client behind a dual-stack balancer is seen as the v4 client it is.
type ProxyHeader struct {
	Version int            // 1 or 2
	Local   bool           // v2 LOCAL command or v1 "UNKNOWN": no address information; use the real connection's addresses
	Source  netip.AddrPort // the original client
	Dest    netip.AddrPort // the address the client connected to
}

// ErrNoProxyHeader reports that the input does not start with a PROXY header
// signature at all (neither v1's "PROXY " nor v2's 12-byte signature). Nothing
// has been consumed from the reader when it is returned.
var ErrNoProxyHeader = errors.New("proxy protocol: no PROXY header")

const (
	// ppV1Prefix starts every v1 header: "PROXY" and exactly one space
	// (proxy-protocol.txt §2.1).
	ppV1Prefix = "PROXY "
	// ppV1MaxLen is the longest v1 line, CRLF included: "PROXY UNKNOWN"
	// followed by two full IPv6 addresses and ports (§2.1).
	ppV1MaxLen = 107

	// ppV2Sig is the constant 12-byte block that starts a v2 header (§2.2).
	// It contains a NUL and is built to be rejected by most protocols.
	ppV2Sig = "\r\n\r\n\x00\r\nQUIT\n"
	// ppV2MaxLen caps the length a v2 header may announce after its fixed
	// 16 bytes. The field allows 65535; real headers are an address block of
	// at most 216 bytes (AF_UNIX) plus a few TLVs, so anything beyond this is
	// refused before a byte of it is read.
	ppV2MaxLen = 4096

	// v2 command nibbles (§2.2).
	ppV2Local = 0x0
	ppV2Proxy = 0x1

	// v2 address family nibbles (§2.2).
	ppV2Unspec = 0x0
	ppV2Inet   = 0x1
	ppV2Inet6  = 0x2
	ppV2Unix   = 0x3

	// v2 transport protocol nibbles (§2.2).
	ppV2Stream = 0x1
	ppV2Dgram  = 0x2
)

// ReadProxyHeader reads one v1 or v2 PROXY header from the start of r and
// nothing more: bytes after the header stay in r, since SMTP commands may be
// pipelined right behind it. It never asks r for a byte the header does not
// need, so it cannot block on a client that sent only the header. It works
// with any buffer size, including bufio's minimum of 16 bytes.
//
// Set a read deadline on the connection first: a relay sends the whole header
// at once (§2.2), so a slow header is an attack or a misconfiguration.
//
// Errors:
//   - ErrNoProxyHeader when the input diverges from both signatures; r is
//     untouched then. A receiver must not guess whether a header is present
//     (proxy-protocol.txt §1), so callers drop the connection.
//   - an error wrapping io.EOF when r is empty, and io.ErrUnexpectedEOF when
//     it ends inside a header.
//   - otherwise a descriptive error for a malformed header (§2.1 and §2.2:
//     "Any sequence which does not exactly match the protocol must be
//     discarded and cause the receiver to abort the connection"). Part of the
//     header may have been consumed; the connection is unusable.
//
// A v2 header whose addresses moat cannot use is returned as Local, which
// means "use the real connection's addresses": the LOCAL command, AF_UNSPEC
// or an UNSPEC transport (§2.2: the receiver may accept and use the real
// endpoints), and AF_UNIX or UDP (DGRAM), for which §2.2 requires a receiver
// that does not implement them to fall back to UNSPEC mode. Callers should
// therefore not grant trust to a Local connection just because the balancer's
// own address is trusted. Unassigned version, command, family or transport
// values are errors, as §2.2 mandates. TLVs are length-checked and skipped;
// a CRC32C TLV is not verified (§2.2.3 makes that optional).
func ReadProxyHeader(r *bufio.Reader) (ProxyHeader, error) {
	b, err := r.Peek(1)
	if len(b) == 0 {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: reading header: %w", err)
	}
	switch b[0] {
	case ppV1Prefix[0]:
		if err := ppMatch(r, ppV1Prefix); err != nil {
			return ProxyHeader{}, err
		}
		return ppReadV1(r)
	case ppV2Sig[0]:
		if err := ppMatch(r, ppV2Sig); err != nil {
			return ProxyHeader{}, err
		}
		return ppReadV2(r)
	}
	return ProxyHeader{}, ErrNoProxyHeader
}

// ppMatch checks that r starts with sig without consuming anything. It peeks
// one more byte at a time, so input that diverges early (an SMTP command,
// say) is refused at once instead of waiting for len(sig) bytes that a
// client may never send.
func ppMatch(r *bufio.Reader, sig string) error {
	for n := 2; n <= len(sig); n++ {
		b, err := r.Peek(n)
		if len(b) < n {
			return fmt.Errorf("proxy protocol: reading signature: %w", ppUnexpected(err))
		}
		if b[n-1] != sig[n-1] {
			return ErrNoProxyHeader
		}
	}
	return nil
}

// ppUnexpected turns io.EOF into io.ErrUnexpectedEOF: it is called only once
// a header has begun, when a clean end of input is itself the error.
func ppUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ppReadV1 reads a v1 line whose "PROXY " prefix has been checked. It takes
// one byte at a time because only the CRLF tells where the line ends, and
// nothing after the LF may be consumed.
func ppReadV1(r *bufio.Reader) (ProxyHeader, error) {
	var line [ppV1MaxLen]byte
	n := 0 // bytes consumed, CR and LF included
	for {
		// §2.1: "If the CRLF sequence is not found in the first 107
		// characters, the receiver should declare the line invalid."
		if n == ppV1MaxLen {
			return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: no CRLF within the first %d bytes", ppV1MaxLen)
		}
		c, err := r.ReadByte()
		if err != nil {
			return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: reading header line: %w", ppUnexpected(err))
		}
		n++
		switch c {
		case '\n':
			// §2.1: "The receiver must not tolerate a single CR or LF
			// character to end the line when a complete CRLF sequence is
			// expected."
			return ProxyHeader{}, errors.New("proxy protocol: v1: line ends in LF without CR")
		case '\r':
			if n == ppV1MaxLen {
				return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: no CRLF within the first %d bytes", ppV1MaxLen)
			}
			c, err = r.ReadByte()
			if err != nil {
				return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: reading header line: %w", ppUnexpected(err))
			}
			if c != '\n' {
				return ProxyHeader{}, errors.New("proxy protocol: v1: CR not followed by LF")
			}
			return ppParseV1(line[len(ppV1Prefix) : n-1])
		}
		line[n-1] = c
	}
}

// ppParseV1 parses what follows "PROXY " on a v1 line, CRLF removed:
// "TCP4 src dst sport dport", the same with TCP6, or "UNKNOWN" and anything
// (proxy-protocol.txt §2.1).
func ppParseV1(line []byte) (ProxyHeader, error) {
	s := string(line)
	proto, rest, _ := strings.Cut(s, " ")
	switch proto {
	case "UNKNOWN":
		// §2.1: "the receiver must ignore anything presented before the
		// CRLF is found" and should use the real connection's parameters.
		return ProxyHeader{Version: 1, Local: true}, nil
	case "TCP4", "TCP6":
	default:
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: protocol %q is not TCP4, TCP6 or UNKNOWN", proto)
	}
	// Exactly one space between fields (§2.1): an empty field from a double
	// space fails below like any other bad value.
	var f [4]string
	for i := range f {
		var more bool
		f[i], rest, more = strings.Cut(rest, " ")
		if more != (i < len(f)-1) {
			return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: %s wants 4 fields (source, destination, source port, destination port)", proto)
		}
	}
	v6 := proto == "TCP6"
	src, err := ppParseV1Addr(f[0], v6)
	if err != nil {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: source: %w", err)
	}
	dst, err := ppParseV1Addr(f[1], v6)
	if err != nil {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: destination: %w", err)
	}
	sport, err := ppParsePort(f[2])
	if err != nil {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: source port: %w", err)
	}
	dport, err := ppParsePort(f[3])
	if err != nil {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v1: destination port: %w", err)
	}
	src, dst = ppUnmapPair(src, dst)
	return ProxyHeader{
		Version: 1,
		Source:  netip.AddrPortFrom(src, sport),
		Dest:    netip.AddrPortFrom(dst, dport),
	}, nil
}

// ppParseV1Addr parses an address of the family the line announced. IPv4
// must be four decimal numbers without leading zeroes (§2.1, which
// netip.ParseAddr enforces); a zone is no part of either format.
func ppParseV1Addr(s string, v6 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("bad address %q", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address %q has a zone", s)
	case v6 && !a.Is6():
		return netip.Addr{}, fmt.Errorf("address %q is not IPv6 as TCP6 requires", s)
	case !v6 && !a.Is4():
		return netip.Addr{}, fmt.Errorf("address %q is not IPv4 as TCP4 requires", s)
	}
	return a, nil
}

// ppParsePort parses a decimal port in [0..65535]. §2.1: "Heading zeroes are
// not permitted in front of numbers in order to avoid any possible confusion
// with octal numbers"; signs are no part of the format either.
func ppParsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad port %q", s)
	}
	p := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad port %q", s)
		}
		p = p*10 + int(s[i]-'0')
	}
	if p > 65535 {
		return 0, fmt.Errorf("port %s is out of range", s)
	}
	return uint16(p), nil
}

// ppUnmapPair unmaps an address pair when both are IPv4-mapped IPv6, as a
// dual-stack relay reports a v4 client. A pair with one mapped and one true
// IPv6 address is left alone so that it encodes back to the same TCP6 line.
func ppUnmapPair(src, dst netip.Addr) (netip.Addr, netip.Addr) {
	if src.Is4In6() && dst.Is4In6() {
		return src.Unmap(), dst.Unmap()
	}
	return src, dst
}

// ppReadV2 reads a v2 header whose 12-byte signature has been checked: the
// 16-byte fixed part, then exactly the announced number of bytes
// (proxy-protocol.txt §2.2: "the length of the protocol header in bytes is
// always exactly 16 + this value").
func ppReadV2(r *bufio.Reader) (ProxyHeader, error) {
	var fixed [16]byte
	if err := ppReadFull(r, fixed[:]); err != nil {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: reading header: %w", err)
	}
	verCmd, famProto := fixed[12], fixed[13]
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	// §2.2: the version "must always be sent as \x2 and the receiver must
	// only accept this value"; unassigned commands "must" be dropped.
	if v := verCmd >> 4; v != 2 {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: version %d, want 2", v)
	}
	cmd := verCmd & 0xf
	if cmd != ppV2Local && cmd != ppV2Proxy {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: unknown command %#x", cmd)
	}
	if n > ppV2MaxLen {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: header announces %d bytes, more than the %d accepted", n, ppV2MaxLen)
	}
	if cmd == ppV2Local {
		// §2.2: for LOCAL the receiver "must use the real connection
		// endpoints and discard the protocol block including the family
		// which is ignored", and must not assume the length is zero.
		if err := ppDiscard(r, n); err != nil {
			return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: reading LOCAL block: %w", err)
		}
		return ProxyHeader{Version: 2, Local: true}, nil
	}

	fam, proto := famProto>>4, famProto&0xf
	var addrLen int
	switch fam {
	case ppV2Unspec:
	case ppV2Inet:
		addrLen = 2*4 + 2*2
	case ppV2Inet6:
		addrLen = 2*16 + 2*2
	case ppV2Unix:
		addrLen = 2 * 108
	default:
		// §2.2: other values "must be rejected as invalid by receivers".
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: unknown address family %#x", fam)
	}
	if proto > ppV2Dgram {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: unknown transport protocol %#x", proto)
	}
	if fam == ppV2Unspec || proto == 0 {
		// §2.2 (AF_UNSPEC, UNSPEC): "The receiver is free to accept the
		// connection anyway and use the real endpoint addresses ... The
		// receiver should ignore address information."
		if err := ppDiscard(r, n); err != nil {
			return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: reading address block: %w", err)
		}
		return ProxyHeader{Version: 2, Local: true}, nil
	}
	if n < addrLen {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: address block of %d bytes, family %#x needs %d", n, fam, addrLen)
	}
	var addr [2*16 + 2*2]byte
	var err error
	if fam == ppV2Unix {
		err = ppDiscard(r, addrLen)
	} else {
		err = ppReadFull(r, addr[:addrLen])
	}
	if err != nil {
		return ProxyHeader{}, fmt.Errorf("proxy protocol: v2: reading address block: %w", err)
	}
	if err := ppSkipTLVs(r, n-addrLen); err != nil {
		return ProxyHeader{}, err
	}
	if fam == ppV2Unix || proto == ppV2Dgram {
		// §2.2: a receiver need not implement these "provided that it
		// automatically falls back to the UNSPEC mode". An SMTP session
		// cannot have come over UDP, and a UNIX socket has no IP address
		// for moat's checks; the real endpoints are all there is.
		return ProxyHeader{Version: 2, Local: true}, nil
	}
	var src, dst netip.Addr
	var ports []byte
	if fam == ppV2Inet {
		src = netip.AddrFrom4([4]byte(addr[0:4]))
		dst = netip.AddrFrom4([4]byte(addr[4:8]))
		ports = addr[8:12]
	} else {
		src, dst = ppUnmapPair(netip.AddrFrom16([16]byte(addr[0:16])), netip.AddrFrom16([16]byte(addr[16:32])))
		ports = addr[32:36]
	}
	return ProxyHeader{
		Version: 2,
		Source:  netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports[0:2])),
		Dest:    netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:4])),
	}, nil
}

// ppSkipTLVs skips n bytes of TLVs (type, 2-byte length, value; §2.2),
// checking that they tile the rest of the header exactly: a TLV that runs
// past the announced length means the sender and moat disagree about where
// the header ends.
func ppSkipTLVs(r *bufio.Reader, n int) error {
	for n > 0 {
		if n < 3 {
			return fmt.Errorf("proxy protocol: v2: %d trailing bytes are too short for a TLV", n)
		}
		var tl [3]byte
		if err := ppReadFull(r, tl[:]); err != nil {
			return fmt.Errorf("proxy protocol: v2: reading TLV: %w", err)
		}
		l := int(binary.BigEndian.Uint16(tl[1:]))
		n -= 3
		if l > n {
			return fmt.Errorf("proxy protocol: v2: TLV %#x of %d bytes overruns the header (%d bytes left)", tl[0], l, n)
		}
		if err := ppDiscard(r, l); err != nil {
			return fmt.Errorf("proxy protocol: v2: reading TLV %#x: %w", tl[0], err)
		}
		n -= l
	}
	return nil
}

// ppReadFull fills dst from r. Unlike io.ReadFull it copies out of r's
// buffer, so dst does not escape to the heap and any buffer size works.
func ppReadFull(r *bufio.Reader, dst []byte) error {
	for len(dst) > 0 {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				return ppUnexpected(err)
			}
		}
		b, _ := r.Peek(min(len(dst), r.Buffered()))
		n := copy(dst, b)
		_, _ = r.Discard(n) // n bytes are buffered: cannot fail
		dst = dst[n:]
	}
	return nil
}

// ppDiscard skips exactly n bytes of r.
func ppDiscard(r *bufio.Reader, n int) error {
	if d, err := r.Discard(n); d < n {
		return ppUnexpected(err)
	}
	return nil
}

// AppendV1 appends h as a v1 line (proxy-protocol.txt §2.1) to b:
// "PROXY TCP4 src dst sport dport\r\n", or TCP6 for IPv6. IPv4-mapped IPv6
// addresses are unmapped first, so a v4 client on a dual-stack socket is
// sent as TCP4; zones are dropped. When h is Local, or its addresses are
// invalid or of mixed families, the line is "PROXY UNKNOWN\r\n", which tells
// the receiver to use the real connection's addresses. h.Version is ignored.
func (h ProxyHeader) AppendV1(b []byte) []byte {
	src, dst, ok := h.ppWireAddrs()
	if !ok {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	if src.Is4() {
		b = append(b, "PROXY TCP4 "...)
	} else {
		b = append(b, "PROXY TCP6 "...)
	}
	b = src.AppendTo(b)
	b = append(b, ' ')
	b = dst.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Source.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Dest.Port()), 10)
	return append(b, "\r\n"...)
}

// AppendV2 appends h as a v2 header (proxy-protocol.txt §2.2) to b: the
// PROXY command with AF_INET or AF_INET6 over STREAM and no TLVs, addresses
// normalised as for AppendV1. When h is Local, or its addresses are invalid
// or of mixed families, it is the LOCAL command with AF_UNSPEC and no
// address block: §2.2 obliges every receiver to accept that and use the real
// endpoints, whereas PROXY with AF_UNSPEC may be refused (Postfix does).
// h.Version is ignored.
func (h ProxyHeader) AppendV2(b []byte) []byte {
	b = append(b, ppV2Sig...)
	src, dst, ok := h.ppWireAddrs()
	switch {
	case !ok:
		return append(b, 0x20|ppV2Local, ppV2Unspec<<4, 0, 0)
	case src.Is4():
		b = append(b, 0x20|ppV2Proxy, ppV2Inet<<4|ppV2Stream, 0, 2*4+2*2)
		s, d := src.As4(), dst.As4()
		b = append(append(b, s[:]...), d[:]...)
	default:
		b = append(b, 0x20|ppV2Proxy, ppV2Inet6<<4|ppV2Stream, 0, 2*16+2*2)
		s, d := src.As16(), dst.As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	return binary.BigEndian.AppendUint16(b, h.Dest.Port())
}

// ppWireAddrs returns the addresses to send for h, both IPv4 or both IPv6,
// or ok false when h has none to send.
func (h ProxyHeader) ppWireAddrs() (src, dst netip.Addr, ok bool) {
	if h.Local {
		return netip.Addr{}, netip.Addr{}, false
	}
	src, dst = h.Source.Addr().WithZone(""), h.Dest.Addr().WithZone("")
	switch {
	case !src.IsValid() || !dst.IsValid():
		return netip.Addr{}, netip.Addr{}, false
	case src.Unmap().Is4() && dst.Unmap().Is4():
		return src.Unmap(), dst.Unmap(), true
	case src.Is6() && dst.Is6():
		return src, dst, true
	}
	return netip.Addr{}, netip.Addr{}, false
}
