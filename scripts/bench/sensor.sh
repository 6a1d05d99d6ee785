#!/usr/bin/env bash
# Sensor benchmark (not a test): offline throughput of `ja4sensor read` against
# `tshark -r F -T fields -e tls.handshake.ja3` on the same pcaps, in the same run, plus
# handshakes/s and peak RSS on a generated pcap of COUNT handshakes (default 100 000) made of
# real corpus hellos (scripts/bench/sensor_gen_pcap.py). Prints a Markdown table for
# BENCHMARKS.md. Needs a release build: `cargo build --release -p ja4sensor`.
set -euo pipefail
cd "$(dirname "$0")/../.."
SENSOR=${SENSOR:-target/release/ja4sensor}
COUNT=${COUNT:-100000}
OUT=${OUT:-target/bench-sensor}
mkdir -p "$OUT"
big="$OUT/handshakes-$COUNT.pcap"
[ -s "$big" ] || python3 scripts/bench/sensor_gen_pcap.py "$big" --count "$COUNT" >&2

# measure OUTFILE CMD...: runs CMD with stdout to OUTFILE; sets WALL (s) and RSS (KiB).
measure() {
    local outfile=$1
    shift
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" >"$outfile" 2>/dev/null
    read -r WALL RSS <"$OUT/time.txt"
}

# tshark also prints JA3 for QUIC Initials (tls3.pcapng has 6); the sensor reads TCP only, so
# "JA3 agree" compares TCP hellos only there.
echo "| capture | hellos | ja4sensor read | peak RSS | tshark ja3 | peak RSS | tshark / sensor | sensor hellos/s | JA3 agree |"
echo "|---|---|---|---|---|---|---|---|---|"
for pcap in tests/data/ja4/pcap/tls3.pcapng "$big"; do
    measure "$OUT/sensor.jsonl" "$SENSOR" read "$pcap"
    s_wall=$WALL s_rss=$RSS
    measure "$OUT/tshark.txt" tshark -r "$pcap" -T fields -e tls.handshake.ja3 -e tcp.srcport
    t_wall=$WALL t_rss=$RSS
    hellos=$(wc -l <"$OUT/sensor.jsonl")
    # tshark prints one line per frame (empty for non-hellos): compare the multisets of hashes.
    agree=$(python3 - "$OUT/sensor.jsonl" "$OUT/tshark.txt" <<'PY'
import collections, json, sys
ours = collections.Counter(json.loads(l)["ja3_hash"] for l in open(sys.argv[1]) if l.strip())
theirs = collections.Counter()
for l in open(sys.argv[2]):
    ja3, _, tcp = l.rstrip("\n").partition("\t")
    if tcp:  # a TCP frame (QUIC Initials have no TCP port)
        theirs.update(h for h in ja3.split(",") if h)
print("yes" if ours == theirs else f"no ({sum(ours.values())} vs {sum(theirs.values())})")
PY
)
    python3 - "$pcap" "$hellos" "$s_wall" "$s_rss" "$t_wall" "$t_rss" "$agree" <<'PY'
import os, sys
pcap, hellos, sw, sr, tw, tr, agree = sys.argv[1:]
hellos, sw, sr, tw, tr = int(hellos), float(sw), int(sr), float(tw), int(tr)
ratio = f"{tw / sw:.1f}×" if sw > 0 else "n/a"
rate = f"{hellos / sw:,.0f}" if sw > 0 else "n/a"
size = os.path.getsize(pcap) / 1e6
print(f"| {os.path.basename(pcap)} ({size:.0f} MB) | {hellos:,} | {sw:.2f} s | {sr / 1024:.0f} MiB "
      f"| {tw:.2f} s | {tr / 1024:.0f} MiB | {ratio} | {rate} | {agree} |")
PY
done
