// Package capture is moat's offline front end: it reads pcap and pcapng
// captures (and live interfaces), reassembles every TCP connection,
// rebuilds the SMTP sessions in them, and judges each one with the same
// inspect.Engine, stage by stage, that the live proxy uses.
//
// # From packets to sessions
//
// Frames are decoded with gopacket's DecodingLayerParser — Ethernet,
// 802.1Q VLAN tags, Linux cooked capture (v1 and v2), raw IP and BSD
// loopback; IPv4 and IPv6 — into preallocated layers, so decoding costs no
// allocation per packet. pcap and pcapng files are read with pure-Go
// pcapgo (no cgo, no libpcap), behind guards that stop at a corrupt
// record instead of allocating what it claims; gzip-compressed files and
// standard input work too, and several files are merged in time order.
//
// TCP is reassembled by gopacket/reassembly: retransmissions and
// overlapping segments are dropped, out-of-order segments wait (in capture
// time, GapTimeout) for the missing ones, and a hole that never fills is
// skipped and remembered as a gap. A connection whose handshake was not
// captured starts at its first segment. Connections end at FIN or RST,
// after IdleTimeout of capture time, or at the end of the input; memory
// stays bounded (pages per connection and in total, streams spilled to
// unlinked temporary files beyond a budget). Connections are hashed to
// shards, one per core, each with its own assembler.
//
// A connection is SMTP when either port is one of Config.Ports (25, 465,
// 587, 2525), or — with Config.Detect — when the server's first lines
// include a 220 greeting and the client says HELO or EHLO, which also
// finds SMTP behind an HTTP CONNECT proxy.
//
// # From bytes to transactions
//
// When a connection is over, its two directions are walked in step with
// the wire grammar of package inspect/smtp — the code the proxy parses
// with: smtp.ReadLine and smtp.ParseCommand for commands, smtp.ReadReply
// for replies, smtp.DataReader for DATA, exact octet counts for BDAT.
// Every command is paired with the server's next reply (replies keep
// command order under PIPELINING, RFC 2920), DATA with two. STARTTLS
// accepted with 220 makes the rest opaque; a connection that opens with
// a TLS ClientHello is implicit TLS (port 465). AUTH yields the mechanism
// and, for PLAIN, LOGIN, CRAM-MD5 and XOAUTH2, the user name — never the
// password. A gap breaks a command line or a message; reading resumes at
// the next line, or the next CR LF "." CR LF, and the session says so in
// its Problems.
//
// Each transaction becomes a Record with the field names of Zeek's
// smtp.log and moat's verdict. A second state machine follows the proxy's
// (proxy/conn.go) and calls the engine's Connect, Helo, Mail, Rcpt and
// Data under the same preconditions: a rule behaves the same live and
// offline. Every DATA body is also scanned for where a strict, an
// LF-tolerant and a CR-tolerant parser would see its end; where they
// differ the record is flagged as SMTP smuggling.
package capture
