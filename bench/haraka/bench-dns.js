// Preloaded into Haraka's node (node --require) by moat's end-to-end
// benchmark: points every DNS resolver of the process — the core's rDNS
// lookup and dns-list's own Resolver — at the benchmark's rbldnsd
// (MOAT_BENCH_DNS, "127.0.0.1:PORT") instead of /etc/resolv.conf's.
'use strict'
const dns = require('node:dns')
const server = process.env.MOAT_BENCH_DNS
if (server) {
  dns.setServers([server])
  const Base = dns.promises.Resolver
  dns.promises.Resolver = class extends Base {
    constructor(options) {
      super(options)
      this.setServers([server])
    }
  }
}
