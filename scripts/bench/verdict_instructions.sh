#!/usr/bin/env bash
# Instructions per verdict-table lookup (what mod_reqin_log adds per request when it looks the
# client up), under callgrind: the example run with N = 0 and N = 1 000 000 lookups, the
# difference of their instruction counts divided by N. Empty table, hit and miss in a table
# with 32 768 live verdicts. Target: <= 300 per request.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p correlate-lib --example verdict_lookups
bin=${CARGO_TARGET_DIR:-target}/release/examples/verdict_lookups
n=1000000
ir() { # kind count
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for kind in empty hit miss; do
    base=$(ir "$kind" 0)
    full=$(ir "$kind" "$n")
    echo "verdict lookup, $kind: $(((full - base) / n)) instructions per lookup"
done
