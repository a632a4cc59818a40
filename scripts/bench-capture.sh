#!/usr/bin/env bash
# bench-capture.sh — the analyzer benchmark: records 10,000 SMTP sessions
# from smtp-source to smtp-sink on lo with dumpcap, then times
# `moat analyze` on one core and on all cores against tshark extracting
# the same envelope fields (bench/e2e TestAnalyzer; BENCHMARKS.md,
# "Analyzer"). Results go to bench/out/analyzer.md.
#
# Usage: scripts/bench-capture.sh [-rounds N] [-analyzer-capture FILE] [-out DIR]
# Needs: go, postfix (smtp-source, smtp-sink), tshark (dumpcap), root or
# CAP_NET_RAW for capturing on lo; scripts/install-test-deps.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test -tags e2ebench -count=1 -v -run '^TestAnalyzer$' -timeout 30m ./bench/e2e -args "$@"
