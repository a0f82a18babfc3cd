#!/usr/bin/env bash
# Checksums of every output amqptrace makes from every committed capture, one line each:
#
#   scripts/output-checksums.sh [BIN] > after.txt
#   diff before.txt after.txt          # empty: every output is byte-identical
#
# BIN defaults to target/release/amqptrace (built when absent). A line is
# `SHA256 EXIT CAPTURE OUTPUT`: the checksum covers the output file and standard error,
# so a changed message shows too. Outputs: analyze in each format (text plain and coloured
# and verbose, jsonl with and without a body prefix, json, counts, chrome-trace), report.html
# from the capture and from the jsonl timeline, and one analyze of two captures merged.
# Paths inside outputs are the same from run to run (a fixed work folder under target/).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${1:-target/release/amqptrace}
if [ ! -x "$BIN" ]; then
    cargo build --release --quiet --bin amqptrace || exit 2
fi
BIN=$(realpath "$BIN")
WORK=target/checksums-work
rm -rf "$WORK"
mkdir -p "$WORK"

# line CAPTURE NAME CMD...: runs CMD with stdout to $WORK/out and stderr to $WORK/err,
# prints the checksum of both, the exit code, the capture and the output's name.
line() {
    local capture=$1 name=$2
    shift 2
    "$@" >"$WORK/out" 2>"$WORK/err"
    local rc=$?
    local sum
    sum=$(cat "$WORK/out" "$WORK/err" | sha256sum | cut -d' ' -f1)
    printf '%s %s %s %s\n' "$sum" "$rc" "$capture" "$name"
}

# report CAPTURE NAME INPUT: report.html from INPUT; the checksum covers the html and stderr.
report() {
    local capture=$1 name=$2 input=$3
    rm -f "$WORK/report.html"
    "$BIN" report "$input" -o "$WORK/report.html" >"$WORK/err" 2>&1
    local rc=$?
    local sum
    sum=$(cat "$WORK/report.html" "$WORK/err" 2>/dev/null | sha256sum | cut -d' ' -f1)
    printf '%s %s %s %s\n' "$sum" "$rc" "$capture" "$name"
}

mapfile -t CAPTURES < <(git ls-files 'captures/*.pcap' 'captures/*.pcapng' | sort)
for c in "${CAPTURES[@]}"; do
    line "$c" text "$BIN" analyze "$c" --color never
    line "$c" text-color-verbose "$BIN" analyze "$c" --color always --verbose
    line "$c" jsonl "$BIN" analyze "$c" -f jsonl
    line "$c" jsonl-bodies-64 "$BIN" analyze "$c" -f jsonl --bodies 64
    line "$c" json "$BIN" analyze "$c" -f json
    line "$c" counts "$BIN" analyze "$c" -f counts
    line "$c" chrome-trace "$BIN" analyze "$c" -f chrome-trace
    report "$c" report-from-capture "$c"
    "$BIN" analyze "$c" -f jsonl >"$WORK/timeline.jsonl" 2>/dev/null
    report "$c" report-from-jsonl "$WORK/timeline.jsonl"
done
line "captures/lapin-basic.pcap+captures/pika-basic.pcapng" text-merged \
    "$BIN" analyze captures/lapin-basic.pcap captures/pika-basic.pcapng --color never
line "captures/lapin-basic.pcap+captures/pika-basic.pcapng" json-merged \
    "$BIN" analyze captures/lapin-basic.pcap captures/pika-basic.pcapng -f json
