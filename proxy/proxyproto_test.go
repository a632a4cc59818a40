package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

// ppV2 builds a v2 header: signature, version/command byte, family/protocol
// byte, the length of body, then body.
func ppV2(verCmd, famProto byte, body ...[]byte) string {
	b := []byte(ppV2Sig)
	b = append(b, verCmd, famProto)
	joined := bytes.Join(body, nil)
	b = binary.BigEndian.AppendUint16(b, uint16(len(joined)))
	return string(append(b, joined...))
}

// ppV2Len builds a v2 header that announces n bytes but carries body.
func ppV2Len(verCmd, famProto byte, n uint16, body string) string {
	b := []byte(ppV2Sig)
	b = append(b, verCmd, famProto)
	b = binary.BigEndian.AppendUint16(b, n)
	return string(append(b, body...))
}

// ppTLV builds one v2 TLV.
func ppTLV(typ byte, value string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	return append(b, value...)
}

func ppAddrs4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func ppAddrs6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func ppHdr(version int, src, dst string) ProxyHeader {
	return ProxyHeader{Version: version, Source: netip.MustParseAddrPort(src), Dest: netip.MustParseAddrPort(dst)}
}

// ppCase is one ReadProxyHeader input. A valid case has err == nil and
// errText == ""; rest is what must remain in the reader afterwards.
type ppCase struct {
	name    string
	in      string
	want    ProxyHeader
	rest    string
	err     error  // errors.Is target, if any
	errText string // substring of the error message, if any
}

var ppLong6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

var ppCases = []ppCase{
	// v1 (proxy-protocol.txt §2.1).
	{name: "v1 TCP4", in: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n", want: ppHdr(1, "192.0.2.1:56324", "198.51.100.2:25")},
	{name: "v1 TCP4 pipelined EHLO", in: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n", want: ppHdr(1, "192.0.2.1:56324", "198.51.100.2:25"), rest: "EHLO x\r\n"},
	{name: "v1 TCP4 ports 0 and 65535", in: "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", want: ppHdr(1, "0.0.0.0:0", "255.255.255.255:65535")},
	{name: "v1 TCP6", in: "PROXY TCP6 2001:db8::1 2001:db8::2 56324 25\r\n", want: ppHdr(1, "[2001:db8::1]:56324", "[2001:db8::2]:25")},
	{name: "v1 TCP6 longest", in: "PROXY TCP6 " + ppLong6 + " " + ppLong6 + " 65535 65535\r\n", want: ppHdr(1, "["+ppLong6+"]:65535", "["+ppLong6+"]:65535")},
	{name: "v1 TCP6 both mapped is v4", in: "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 1 2\r\n", want: ppHdr(1, "192.0.2.1:1", "198.51.100.2:2")},
	{name: "v1 TCP6 one mapped stays v6", in: "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n", want: ppHdr(1, "[::ffff:192.0.2.1]:1", "[2001:db8::2]:2")},
	{name: "v1 UNKNOWN", in: "PROXY UNKNOWN\r\nEHLO x\r\n", want: ProxyHeader{Version: 1, Local: true}, rest: "EHLO x\r\n"},
	{name: "v1 UNKNOWN longest ignores the rest", in: "PROXY UNKNOWN " + ppLong6 + " " + ppLong6 + " 65535 65535\r\n", want: ProxyHeader{Version: 1, Local: true}},
	{name: "v1 UNKNOWN garbage", in: "PROXY UNKNOWN \x00 whatever\r\n", want: ProxyHeader{Version: 1, Local: true}},

	{name: "v1 IPv4 octet 256", in: "PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n", errText: "bad address"},
	{name: "v1 IPv4 leading zero", in: "PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n", errText: "bad address"},
	{name: "v1 IPv4 three octets", in: "PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n", errText: "bad address"},
	{name: "v1 IPv6 under TCP4", in: "PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n", errText: "not IPv4"},
	{name: "v1 IPv4 under TCP6", in: "PROXY TCP6 2001:db8::1 198.51.100.2 1 2\r\n", errText: "not IPv6"},
	{name: "v1 IPv6 zone", in: "PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n", errText: "zone"},
	{name: "v1 hostname", in: "PROXY TCP4 localhost 198.51.100.2 1 2\r\n", errText: "bad address"},
	{name: "v1 port 65536", in: "PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n", errText: "out of range"},
	{name: "v1 port 99999", in: "PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n", errText: "out of range"},
	{name: "v1 port leading zero", in: "PROXY TCP4 192.0.2.1 198.51.100.2 0080 25\r\n", errText: "bad port"},
	{name: "v1 port plus sign", in: "PROXY TCP4 192.0.2.1 198.51.100.2 +80 25\r\n", errText: "bad port"},
	{name: "v1 port minus", in: "PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n", errText: "bad port"},
	{name: "v1 port hex", in: "PROXY TCP4 192.0.2.1 198.51.100.2 0x50 25\r\n", errText: "bad port"},
	{name: "v1 port six digits", in: "PROXY TCP4 192.0.2.1 198.51.100.2 000025 25\r\n", errText: "bad port"},
	{name: "v1 missing port", in: "PROXY TCP4 192.0.2.1 198.51.100.2 25\r\n", errText: "4 fields"},
	{name: "v1 missing everything", in: "PROXY TCP4\r\n", errText: "4 fields"},
	{name: "v1 trailing space", in: "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n", errText: "4 fields"},
	{name: "v1 extra field", in: "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n", errText: "4 fields"},
	{name: "v1 double space", in: "PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n", errText: "4 fields"},
	{name: "v1 empty port", in: "PROXY TCP4 192.0.2.1 198.51.100.2  2\r\n", errText: "bad port"},
	{name: "v1 protocol UDP4", in: "PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n", errText: "not TCP4"},
	{name: "v1 protocol lower case", in: "PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n", errText: "not TCP4"},
	{name: "v1 UNKNOWNX", in: "PROXY UNKNOWNX\r\n", errText: "not TCP4"},
	{name: "v1 empty protocol", in: "PROXY \r\n", errText: "not TCP4"},
	{name: "v1 too long", in: "PROXY UNKNOWN " + strings.Repeat("x", 93) + "\r\n", errText: "no CRLF within"},
	{name: "v1 CR at 107", in: "PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n", errText: "no CRLF within"},
	{name: "v1 no line end", in: "PROXY UNKNOWN " + strings.Repeat("x", 200), errText: "no CRLF within"},
	{name: "v1 LF without CR", in: "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\nEHLO x\r\n", errText: "LF without CR"},
	{name: "v1 CR without LF", in: "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rEHLO x\r\n", errText: "CR not followed by LF"},
	{name: "v1 truncated", in: "PROXY TCP4 192.0.2.1 198.51.100.2 1 2", err: io.ErrUnexpectedEOF},

	// Not a PROXY header at all.
	{name: "EHLO", in: "EHLO x\r\n", err: ErrNoProxyHeader},
	{name: "HELO", in: "HELO x\r\n", err: ErrNoProxyHeader},
	{name: "lower-case proxy", in: "proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n", err: ErrNoProxyHeader},
	{name: "PROXY without space", in: "PROXYTCP4 192.0.2.1 198.51.100.2 1 2\r\n", err: ErrNoProxyHeader},
	{name: "PROXY CRLF", in: "PROXY\r\n", err: ErrNoProxyHeader},
	{name: "P then SMTP", in: "PING\r\n", err: ErrNoProxyHeader},
	{name: "bare CRLF then SMTP", in: "\r\nEHLO x\r\n", err: ErrNoProxyHeader},
	{name: "v2 signature off by one", in: "\r\n\r\n\x00\r\nQUIT\r" + strings.Repeat("\x00", 20), err: ErrNoProxyHeader},
	{name: "TLS ClientHello", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", err: ErrNoProxyHeader},
	{name: "empty", in: "", err: io.EOF},

	// v2 (proxy-protocol.txt §2.2).
	{name: "v2 TCP4", in: ppV2(0x21, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 56324, 25)), want: ppHdr(2, "192.0.2.1:56324", "198.51.100.2:25")},
	// Captured from HAProxy in front of netcat (172.19.0.1:42578 -> 172.19.0.3:80).
	{name: "v2 TCP4 from HAProxy", in: "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xac\x13\x00\x01\xac\x13\x00\x03\xa6\x52\x00\x50GET / HTTP/1.1\r\n", want: ppHdr(2, "172.19.0.1:42578", "172.19.0.3:80"), rest: "GET / HTTP/1.1\r\n"},
	{name: "v2 TCP4 pipelined EHLO", in: ppV2(0x21, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)) + "EHLO x\r\n", want: ppHdr(2, "192.0.2.1:1", "198.51.100.2:2"), rest: "EHLO x\r\n"},
	{name: "v2 TCP4 with TLVs", in: ppV2(0x21, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2), ppTLV(0x01, "smtp"), ppTLV(0x04, ""), ppTLV(0xe0, strings.Repeat("v", 300))) + "EHLO x\r\n", want: ppHdr(2, "192.0.2.1:1", "198.51.100.2:2"), rest: "EHLO x\r\n"},
	{name: "v2 TCP6", in: ppV2(0x21, 0x21, ppAddrs6("2001:db8::1", "2001:db8::2", 56324, 25)), want: ppHdr(2, "[2001:db8::1]:56324", "[2001:db8::2]:25")},
	{name: "v2 TCP6 with TLV", in: ppV2(0x21, 0x21, ppAddrs6("2001:db8::1", "2001:db8::2", 1, 2), ppTLV(0x02, "mx.example")) + "EHLO x\r\n", want: ppHdr(2, "[2001:db8::1]:1", "[2001:db8::2]:2"), rest: "EHLO x\r\n"},
	{name: "v2 TCP6 both mapped is v4", in: ppV2(0x21, 0x21, ppAddrs6("::ffff:192.0.2.1", "::ffff:198.51.100.2", 1, 2)), want: ppHdr(2, "192.0.2.1:1", "198.51.100.2:2")},
	{name: "v2 LOCAL", in: ppV2(0x20, 0x00) + "EHLO x\r\n", want: ProxyHeader{Version: 2, Local: true}, rest: "EHLO x\r\n"},
	{name: "v2 LOCAL with TCP4 block and TLV", in: ppV2(0x20, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2), ppTLV(0x04, "pad")), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 LOCAL ignores family", in: ppV2(0x20, 0xff, []byte("junk")), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 LOCAL at length cap", in: ppV2(0x20, 0x00, make([]byte, ppV2MaxLen)), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 PROXY AF_UNSPEC", in: ppV2(0x21, 0x00), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 PROXY INET over UNSPEC", in: ppV2(0x21, 0x10, []byte("anything")), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 UDP4 falls back", in: ppV2(0x21, 0x12, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 UDP6 falls back", in: ppV2(0x21, 0x22, ppAddrs6("2001:db8::1", "2001:db8::2", 1, 2)), want: ProxyHeader{Version: 2, Local: true}},
	{name: "v2 UNIX stream falls back", in: ppV2(0x21, 0x31, make([]byte, 216), ppTLV(0x01, "smtp")) + "EHLO x\r\n", want: ProxyHeader{Version: 2, Local: true}, rest: "EHLO x\r\n"},

	{name: "v2 version 1", in: ppV2(0x11, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), errText: "version 1"},
	{name: "v2 version 3", in: ppV2(0x31, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), errText: "version 3"},
	{name: "v2 command 2", in: ppV2(0x22, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), errText: "unknown command"},
	{name: "v2 command 15", in: ppV2(0x2f, 0x00), errText: "unknown command"},
	{name: "v2 family 4", in: ppV2(0x21, 0x41, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), errText: "unknown address family"},
	{name: "v2 transport 3", in: ppV2(0x21, 0x13, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), errText: "unknown transport"},
	{name: "v2 over length cap", in: ppV2Len(0x21, 0x11, ppV2MaxLen+1, ""), errText: "more than"},
	{name: "v2 length 65535", in: ppV2Len(0x20, 0x00, 65535, ""), errText: "more than"},
	{name: "v2 TCP4 block short", in: ppV2(0x21, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)[:11]), errText: "needs 12"},
	{name: "v2 TCP6 block short", in: ppV2(0x21, 0x21, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2)), errText: "needs 36"},
	{name: "v2 UNIX block short", in: ppV2(0x21, 0x31, make([]byte, 100)), errText: "needs 216"},
	{name: "v2 TLV overruns", in: ppV2(0x21, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2), ppTLV(0x01, "smtp")[:5]), errText: "overruns"},
	{name: "v2 TLV too short", in: ppV2(0x21, 0x11, ppAddrs4("192.0.2.1", "198.51.100.2", 1, 2), []byte{0x04, 0x00}), errText: "too short for a TLV"},
	{name: "v2 body missing", in: ppV2Len(0x21, 0x11, 12, "\xc0\x00\x02\x01"), err: io.ErrUnexpectedEOF},
	{name: "v2 fixed part cut", in: ppV2Sig + "\x21", err: io.ErrUnexpectedEOF},
}

// ppReaders are the ways each case is fed to ReadProxyHeader: whole, and a
// byte at a time into bufio's smallest buffer, which proves the parser never
// Peeks more than 16 bytes.
var ppReaders = []struct {
	name string
	wrap func(io.Reader) *bufio.Reader
}{
	{"default buffer", func(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }},
	{"one byte into 16", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.OneByteReader(r), 16) }},
	{"half reads into 16", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.HalfReader(r), 16) }},
}

func TestProxyHeaderRead(t *testing.T) {
	for _, tc := range ppCases {
		for _, rd := range ppReaders {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				r := rd.wrap(bytes.NewReader([]byte(tc.in)))
				h, err := ReadProxyHeader(r)
				rest, rerr := io.ReadAll(r)
				if rerr != nil {
					t.Fatalf("reading the rest: %v", rerr)
				}
				if tc.err == nil && tc.errText == "" {
					if err != nil {
						t.Fatalf("ReadProxyHeader(%q): %v", tc.in, err)
					}
					if h != tc.want {
						t.Errorf("ReadProxyHeader(%q) = %+v, want %+v", tc.in, h, tc.want)
					}
					if string(rest) != tc.rest {
						t.Errorf("left %q in the reader, want %q", rest, tc.rest)
					}
					return
				}
				if err == nil {
					t.Fatalf("ReadProxyHeader(%q) = %+v, want an error", tc.in, h)
				}
				if h != (ProxyHeader{}) {
					t.Errorf("header %+v returned with error %v", h, err)
				}
				if tc.err != nil && !errors.Is(err, tc.err) {
					t.Errorf("error %q, want %q", err, tc.err)
				}
				if tc.errText != "" && !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("error %q, want it to mention %q", err, tc.errText)
				}
				if !strings.HasPrefix(err.Error(), "proxy protocol: ") {
					t.Errorf("error %q does not say it is about the PROXY protocol", err)
				}
				if errors.Is(tc.err, ErrNoProxyHeader) != errors.Is(err, ErrNoProxyHeader) {
					t.Errorf("error %q: ErrNoProxyHeader only for input matching neither signature", err)
				}
				if errors.Is(err, ErrNoProxyHeader) && string(rest) != tc.in {
					t.Errorf("ErrNoProxyHeader consumed input: left %q of %q", rest, tc.in)
				}
			})
		}
	}
}

// ppHeaderOnly returns exactly the bytes of the header from a valid case's
// input, or "" if the case is not valid.
func ppHeaderOnly(tc ppCase) string {
	if tc.err != nil || tc.errText != "" {
		return ""
	}
	return strings.TrimSuffix(tc.in, tc.rest)
}

// ppStrict hands out data and fails the test if it is asked for more: a
// reader that proves ReadProxyHeader never waits for bytes after the header.
type ppStrict struct {
	t    *testing.T
	data []byte
}

func (s *ppStrict) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		s.t.Errorf("read past the end of the header")
		return 0, errors.New("read past the end of the header")
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

func TestProxyHeaderNoReadPastHeader(t *testing.T) {
	for _, tc := range ppCases {
		hdr := ppHeaderOnly(tc)
		if hdr == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			for _, size := range []int{16, 4096} {
				for _, one := range []bool{false, true} {
					var src io.Reader = &ppStrict{t: t, data: []byte(hdr)}
					if one {
						src = iotest.OneByteReader(src)
					}
					h, err := ReadProxyHeader(bufio.NewReaderSize(src, size))
					if err != nil || h != tc.want {
						t.Errorf("size %d, one byte %v: got %+v, %v; want %+v", size, one, h, err, tc.want)
					}
				}
			}
		})
	}
}

func TestProxyHeaderTruncated(t *testing.T) {
	for _, tc := range ppCases {
		hdr := ppHeaderOnly(tc)
		if hdr == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			for n := range len(hdr) {
				for _, rd := range ppReaders {
					h, err := ReadProxyHeader(rd.wrap(bytes.NewReader([]byte(hdr[:n]))))
					want := io.ErrUnexpectedEOF
					if n == 0 {
						want = io.EOF
					}
					if !errors.Is(err, want) {
						t.Errorf("%s: %d of %d bytes: got %+v, %v; want %v", rd.name, n, len(hdr), h, err, want)
					}
				}
			}
		})
	}
}

func TestProxyHeaderRoundTrip(t *testing.T) {
	local := func(v int) ProxyHeader { return ProxyHeader{Version: v, Local: true} }
	tests := []struct {
		name   string
		h      ProxyHeader
		v1, v2 ProxyHeader // what reading AppendV1 and AppendV2 back gives
	}{
		{name: "v4", h: ppHdr(0, "192.0.2.1:56324", "198.51.100.2:25"), v1: ppHdr(1, "192.0.2.1:56324", "198.51.100.2:25"), v2: ppHdr(2, "192.0.2.1:56324", "198.51.100.2:25")},
		{name: "v6", h: ppHdr(0, "[2001:db8::1]:56324", "[2001:db8::2]:25"), v1: ppHdr(1, "[2001:db8::1]:56324", "[2001:db8::2]:25"), v2: ppHdr(2, "[2001:db8::1]:56324", "[2001:db8::2]:25")},
		{name: "v6 longest", h: ppHdr(0, "["+ppLong6+"]:65535", "["+ppLong6+"]:65535"), v1: ppHdr(1, "["+ppLong6+"]:65535", "["+ppLong6+"]:65535"), v2: ppHdr(2, "["+ppLong6+"]:65535", "["+ppLong6+"]:65535")},
		{name: "ports zero", h: ppHdr(0, "0.0.0.0:0", "0.0.0.0:0"), v1: ppHdr(1, "0.0.0.0:0", "0.0.0.0:0"), v2: ppHdr(2, "0.0.0.0:0", "0.0.0.0:0")},
		{name: "mapped v4 is sent as TCP4", h: ppHdr(0, "[::ffff:192.0.2.1]:1", "[::ffff:198.51.100.2]:25"), v1: ppHdr(1, "192.0.2.1:1", "198.51.100.2:25"), v2: ppHdr(2, "192.0.2.1:1", "198.51.100.2:25")},
		{name: "v4 with mapped dest", h: ppHdr(0, "192.0.2.1:1", "[::ffff:198.51.100.2]:25"), v1: ppHdr(1, "192.0.2.1:1", "198.51.100.2:25"), v2: ppHdr(2, "192.0.2.1:1", "198.51.100.2:25")},
		{name: "mapped with true v6", h: ppHdr(0, "[::ffff:192.0.2.1]:1", "[2001:db8::2]:25"), v1: ppHdr(1, "[::ffff:192.0.2.1]:1", "[2001:db8::2]:25"), v2: ppHdr(2, "[::ffff:192.0.2.1]:1", "[2001:db8::2]:25")},
		{name: "zone dropped", h: ppHdr(0, "[fe80::1%eth0]:1", "[fe80::2%eth0]:25"), v1: ppHdr(1, "[fe80::1]:1", "[fe80::2]:25"), v2: ppHdr(2, "[fe80::1]:1", "[fe80::2]:25")},
		{name: "local", h: ProxyHeader{Local: true, Source: netip.MustParseAddrPort("192.0.2.1:1")}, v1: local(1), v2: local(2)},
		{name: "mixed families", h: ppHdr(0, "192.0.2.1:1", "[2001:db8::2]:25"), v1: local(1), v2: local(2)},
		{name: "zero value", h: ProxyHeader{}, v1: local(1), v2: local(2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, enc := range []struct {
				name string
				b    []byte
				want ProxyHeader
			}{
				{"v1", tc.h.AppendV1([]byte("x")), tc.v1},
				{"v2", tc.h.AppendV2([]byte("x")), tc.v2},
			} {
				if enc.b[0] != 'x' {
					t.Fatalf("%s: Append overwrote its argument", enc.name)
				}
				r := bufio.NewReader(bytes.NewReader(append(enc.b[1:], "EHLO x\r\n"...)))
				h, err := ReadProxyHeader(r)
				if err != nil || h != enc.want {
					t.Errorf("%s: read back %q: %+v, %v; want %+v", enc.name, enc.b[1:], h, err, enc.want)
				}
				if rest, _ := io.ReadAll(r); string(rest) != "EHLO x\r\n" {
					t.Errorf("%s: left %q after the header", enc.name, rest)
				}
			}
		})
	}
}

// TestProxyHeaderWire pins the exact bytes Postfix will receive.
func TestProxyHeaderWire(t *testing.T) {
	h4 := ppHdr(0, "172.19.0.1:42578", "172.19.0.3:80")
	h6 := ppHdr(0, "[2001:db8::1]:56324", "[2001:db8::2]:25")
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"v1 TCP4", h4.AppendV1(nil), "PROXY TCP4 172.19.0.1 172.19.0.3 42578 80\r\n"},
		{"v1 TCP6", h6.AppendV1(nil), "PROXY TCP6 2001:db8::1 2001:db8::2 56324 25\r\n"},
		{"v1 UNKNOWN", ProxyHeader{Local: true}.AppendV1(nil), "PROXY UNKNOWN\r\n"},
		{"v2 TCP4", h4.AppendV2(nil), "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xac\x13\x00\x01\xac\x13\x00\x03\xa6\x52\x00\x50"},
		{"v2 TCP6", h6.AppendV2(nil), ppV2(0x21, 0x21, ppAddrs6("2001:db8::1", "2001:db8::2", 56324, 25))},
		{"v2 LOCAL", ProxyHeader{Local: true}.AppendV2(nil), "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"},
	}
	for _, tc := range tests {
		if string(tc.got) != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func FuzzProxyHeader(f *testing.F) {
	for _, tc := range ppCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var hs [2]ProxyHeader
		var errs [2]error
		var consumed [2]int
		for i, size := range []int{16, 4096} {
			br := bytes.NewReader(in)
			r := bufio.NewReaderSize(br, size)
			hs[i], errs[i] = ReadProxyHeader(r)
			consumed[i] = len(in) - br.Len() - r.Buffered()
			if consumed[i] < 0 || consumed[i] > len(in) {
				t.Fatalf("consumed %d of %d bytes", consumed[i], len(in))
			}
			if errors.Is(errs[i], ErrNoProxyHeader) && consumed[i] != 0 {
				t.Fatalf("ErrNoProxyHeader after consuming %d bytes", consumed[i])
			}
		}
		if hs[0] != hs[1] || (errs[0] == nil) != (errs[1] == nil) {
			t.Fatalf("buffer size changes the result: %+v, %v vs %+v, %v", hs[0], errs[0], hs[1], errs[1])
		}
		h, err := hs[0], errs[0]
		if err != nil {
			return
		}
		if consumed[0] != consumed[1] {
			t.Fatalf("buffer size changes the header length: %d vs %d", consumed[0], consumed[1])
		}
		switch {
		case h.Version != 1 && h.Version != 2:
			t.Fatalf("version %d", h.Version)
		case h.Local && (h.Source.IsValid() || h.Dest.IsValid()):
			t.Fatalf("Local header with addresses: %+v", h)
		case !h.Local && !(h.Source.Addr().Is4() && h.Dest.Addr().Is4()) && !(h.Source.Addr().Is6() && h.Dest.Addr().Is6()):
			t.Fatalf("addresses of mixed or invalid families: %+v", h)
		case !h.Local && h.Source.Addr().Is4In6() && h.Dest.Addr().Is4In6():
			t.Fatalf("mapped pair not unmapped: %+v", h)
		}
		// The header delimits itself: its bytes alone give the same result.
		alone, err := ReadProxyHeader(bufio.NewReader(bytes.NewReader(in[:consumed[0]])))
		if err != nil || alone != h {
			t.Fatalf("header bytes alone: %+v, %v; want %+v", alone, err, h)
		}
		var enc []byte
		if h.Version == 1 {
			enc = h.AppendV1(nil)
		} else {
			enc = h.AppendV2(nil)
		}
		r := bufio.NewReader(bytes.NewReader(enc))
		again, err := ReadProxyHeader(r)
		if err != nil || again != h {
			t.Fatalf("re-encoded %q reads as %+v, %v; want %+v", enc, again, err, h)
		}
		if r.Buffered() != 0 {
			t.Fatalf("re-encoded %q not fully consumed", enc)
		}
	})
}

func BenchmarkProxyHeaderV2(b *testing.B) {
	in := []byte(ppV2(0x21, 0x21, ppAddrs6("2001:db8::1", "2001:db8::2", 56324, 25), ppTLV(0x01, "smtp")))
	br := bytes.NewReader(in)
	r := bufio.NewReader(br)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		br.Reset(in)
		r.Reset(br)
		if _, err := ReadProxyHeader(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProxyHeaderV1(b *testing.B) {
	in := []byte("PROXY TCP6 2001:db8::1 2001:db8::2 56324 25\r\n")
	br := bytes.NewReader(in)
	r := bufio.NewReader(br)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		br.Reset(in)
		r.Reset(br)
		if _, err := ReadProxyHeader(r); err != nil {
			b.Fatal(err)
		}
	}
}
