// Package e2e is moat's end-to-end performance benchmark: Postfix's
// smtp-source sends a fixed workload to smtp-sink over loopback, directly
// and through three proxies — a plain TCP relay (the floor any proxy pays
// for the extra hop), moat with its default rules, 200 generated regex
// rules and a DNS blocklist on a local rbldnsd, and Haraka, the peer — and
// reports messages per second, the ratios between the paths, and each
// proxy's CPU time per message and peak memory.
//
// The harness is a test behind the e2ebench build tag, so that go vet and
// go test never build or run it. BENCHMARKS.md at the repository root has
// the results and the way to rerun; in short:
//
//	make bench                                   # micro-benchmarks, then this
//	go test -tags e2ebench -v -run TestEndToEnd -timeout 3h ./bench/e2e -args -quick
//
// It needs the Debian packages postfix (smtp-source, smtp-sink) and
// rbldnsd, and for the Haraka path node and `npm ci` in bench/haraka.
package e2e
