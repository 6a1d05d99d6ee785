#!/usr/bin/env bash
# The shipper catching up a 1M-line file against the server's best insert rate for the same
# schema, measured in the same run (shipper/tests/clickhouse.rs,
# catch_up_1m_lines_against_the_servers_best_insert_rate). SHIP_BENCH_LINES=200000 for a short run.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -p reqin-shipper --release --test clickhouse -- --ignored --nocapture catch_up
