// Package dnsbl will hold moat's DNS blocklist and allowlist client: query
// building for ip, domain and uri lists, return-code maps with reasons and
// weights, parallel lookups started early and awaited late, a TTL-honouring
// cache and health probes (RFC 5782), on top of github.com/miekg/dns.
//
// It plugs into inspect.Engine with the "DNS blocklists" issue.
package dnsbl
