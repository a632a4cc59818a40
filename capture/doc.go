// Package capture will hold moat's offline front end: reading pcap and
// pcapng files and live interfaces in pure Go (gopacket/pcapgo), TCP
// reassembly, and turning the two byte streams of each SMTP connection into
// the same session events the proxy produces, judged by inspect.Engine.
//
// It arrives with the "Offline analysis" issue.
package capture
