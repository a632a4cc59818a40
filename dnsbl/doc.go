// Package dnsbl is moat's DNS blocklist and allowlist client, on top of
// github.com/miekg/dns.
//
// A DNSBL (RFC 5782) publishes a list as a DNS zone. To ask whether the
// IPv4 address 192.0.2.99 is on zen.spamhaus.org, reverse its octets and
// look up the A record of 99.2.0.192.zen.spamhaus.org; an IPv6 address is
// asked as its 32 nibbles reversed; a domain (an RHSBL, or a URI list such
// as SURBL, URIBL or Spamhaus DBL) is asked as it is:
// example.com.dbl.spamhaus.org. NXDOMAIN means "not listed". An answer in
// 127.0.0.0/8 means "listed", and which address says why: Spamhaus answers
// 127.0.0.2 for SBL and 127.0.0.4 for XBL; SURBL and URIBL set bits in the
// last octet, one per sub-list; dnswl.org answers 127.0.C.T with a category
// and a trust level. The TXT record of the same name often carries the
// list's own explanation. Some answers are not listings at all but the
// list telling the querier off: Spamhaus answers 127.255.255.254 to
// queries that come through a public resolver and 127.255.255.255 to
// those over quota, URIBL and SURBL answer 127.0.0.1. An allowlist
// (DNSWL) works the same way, but listed is good news.
//
// This package turns that into Results: per list, listed or not, the
// reasons and weight from the list's code table (configured, or from a
// built-in profile), the TXT, or an error that is never a listing. Lookups
// for all the lists of a kind start in parallel the moment a key is known
// (Lookup) and are collected only when a rule needs them (Pending.Wait), so
// DNS latency overlaps the SMTP dialogue. Answers are cached for their TTL,
// "not listed" for the SOA minimum (RFC 2308), and concurrent lookups of
// one key share one query. Every list is probed with its RFC 5782 test
// entries at start-up and periodically; a list that fails is ignored until
// it recovers.
//
// Config is the dnsbl section of moat's config file (see README.md);
// metrics.go lists the Prometheus metrics.
package dnsbl
