#!/usr/bin/env bash
# Sensor benchmark (not a test): offline throughput of `ja4sensor read` against
# `tshark -r F -T fields -e tls.handshake.ja3` on the same pcaps, in the same run, plus
# handshakes/s and peak RSS on a generated pcap of COUNT handshakes (default 100 000) made of
# real corpus hellos (scripts/bench/sensor_gen_pcap.py). Then the same generated pcap through
# huginn-net (crates.io; its analyzer with TCP SYN OS matching and TLS JA4, HTTP off), built
# from scripts/bench/huginn/ (bench-only, not shipped), against `ja4sensor read` with its OS
# guess: hellos/s, peak RSS, and whether the JA4 values agree. Prints Markdown tables for
# BENCHMARKS.md. Needs a release build: `cargo build --release -p ja4sensor -p ja4sensor-pcap`.
set -euo pipefail
cd "$(dirname "$0")/../.."
SENSOR=${SENSOR:-target/release/ja4sensor}
HUGINN=${HUGINN:-target/bench-huginn/release/huginn-bench}
COUNT=${COUNT:-100000}
OUT=${OUT:-target/bench-sensor}
mkdir -p "$OUT"
big="$OUT/handshakes-$COUNT.pcap"
[ -s "$big" ] || python3 scripts/bench/sensor_gen_pcap.py "$big" --count "$COUNT" >&2

# measure OUTFILE CMD...: runs CMD with stdout to OUTFILE (stderr to OUTFILE.err); sets WALL
# (s), CPU (user + system s) and RSS (KiB).
measure() {
    local outfile=$1
    shift
    /usr/bin/time -f "%e %U %S %M" -o "$OUT/time.txt" "$@" >"$outfile" 2>"$outfile.err"
    read -r WALL USER SYS RSS <"$OUT/time.txt"
    CPU=$(python3 -c "print($USER + $SYS)")
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

# huginn-net on the generated pcap (its pcap reader takes classic pcap only, so not tls3.pcapng).
[ -x "$HUGINN" ] || cargo build --release --manifest-path scripts/bench/huginn/Cargo.toml \
    --target-dir target/bench-huginn >&2
measure "$OUT/sensor.jsonl" "$SENSOR" read "$big"
s_wall=$WALL s_cpu=$CPU s_rss=$RSS
measure "$OUT/huginn.txt" "$HUGINN" "$big"
h_wall=$WALL h_cpu=$CPU h_rss=$RSS
echo
echo "| capture | hellos (sensor / huginn-net) | ja4sensor read, OS guess on | CPU | peak RSS | huginn-net | CPU | peak RSS | huginn / sensor (wall) | sensor hellos/s | huginn hellos/s | JA4 agree | OS guessed (sensor records / huginn SYNs) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
python3 - "$big" "$OUT/sensor.jsonl" "$OUT/huginn.txt" "$s_wall" "$s_cpu" "$s_rss" "$h_wall" "$h_cpu" "$h_rss" <<'PY'
import collections, json, os, re, sys
big, sensor, huginn, sw, sc, sr, hw, hc, hr = sys.argv[1:]
sw, sc, hw, hc = map(float, (sw, sc, hw, hc))
sr, hr = int(sr), int(hr)
records = [json.loads(l) for l in open(sensor) if l.strip()]
ours = collections.Counter(r["ja4"] for r in records)
theirs = collections.Counter(l.strip() for l in open(huginn) if l.strip())
stats = open(huginn + ".err").read()
m = re.search(r"hellos (\d+) syns (\d+) os_matched (\d+)", stats)
h_os = m.group(3) if m else "?"
s_os = sum(1 for r in records if r.get("tcp_os"))
missed, extra = sum((ours - theirs).values()), sum((theirs - ours).values())
if not missed and not extra:
    agree = "yes"
elif not extra:
    # Every fourth generated hello is split over two segments: huginn-net does not reassemble.
    agree = f"yes on all {sum(theirs.values()):,} it read; it misses {missed:,} (split hellos)"
else:
    agree = f"no: {missed:,} of ours not theirs, {extra:,} of theirs not ours"
n_s, n_h = sum(ours.values()), sum(theirs.values())
size = os.path.getsize(big) / 1e6
print(f"| {os.path.basename(big)} ({size:.0f} MB) | {n_s:,} / {n_h:,} | {sw:.2f} s | {sc:.2f} s | {sr / 1024:.0f} MiB "
      f"| {hw:.2f} s | {hc:.2f} s | {hr / 1024:.0f} MiB | {hw / sw:.1f}× | {n_s / sw:,.0f} | {n_h / hw:,.0f} | {agree} "
      f"| {s_os:,} / {h_os} |")
PY