// bench_public_client: the benchmark's clients all connect from 127.0.0.1,
// which Haraka marks as a private address, and dns-list skips private
// clients. moat looks the client up whatever its address, so this plugin,
// listed before dns-list, clears the mark: both proxies then ask the same
// zone for the same client on every connection.
exports.hook_connect = function (next, connection) {
  connection.remote.is_private = false
  next()
}
