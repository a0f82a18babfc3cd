#!/usr/bin/env bash
# Time to interactive of a report.html with N drawn events (default 1 million) in
# headless Chromium. Not a timed test: it prints the figure.
#
# The timeline is synthesised (JSON Lines, docs/events.md): 8 connections with one
# consumer each (prefetch 50), publishes, deliveries and multiple-acks, one consumer
# stalling half-way. Every one of its events is a drawn mark (no content frames), so N
# is the number of marks the page holds. When target/captures/large.pcap exists (made
# by the capture script), its report is measured too.
#
# "Interactive" is the page's own mark: window.__amqptrace.ready = performance.now()
# (also written to <body data-ready-ms>) once the data is decoded, the swimlanes and
# charts are drawn and the zoom/pan/hover handlers are installed; performance.now()
# counts from navigation start, so the figure includes reading and parsing the file.
#
# Usage: scripts/bench-report.sh [N]     (CHROMIUM=/path/to/chromium to override)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
RUNS=${RUNS:-3}
work=target/bench-report
mkdir -p "$work"

cargo build --release --quiet
bin=target/release/amqptrace

timeline="$work/timeline-$N.jsonl"
if [ ! -s "$timeline" ]; then
    echo "synthesising $N events into $timeline" >&2
    python3 - "$N" > "$timeline.tmp" <<'PY'
import sys, datetime
n = int(sys.argv[1])
conns, prefetch = 8, 50
t0 = datetime.datetime(2026, 11, 25, 12, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
w = sys.stdout.write
frame = written = 0
def emit(us, c, d, body):
    global frame, written
    frame += 1; written += 1
    s, u = divmod(int(us), 1_000_000)
    ts = datetime.datetime.fromtimestamp(t0 + s, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S') + '.%06dZ' % u
    w('{"frame":%d,"ts":"%s","conn":"127.0.0.1:%d->127.0.0.1:5672","dir":"%s",%s}\n' % (frame, ts, 40000 + c, d, body))
us = 0
for c in range(conns):
    for d, body in [('c2s', '"event":"tcp.open"'),
                    ('c2s', '"event":"frame","channel":1,"method":"channel.open"'),
                    ('s2c', '"event":"frame","channel":1,"method":"channel.open-ok"'),
                    ('c2s', '"event":"frame","channel":1,"method":"basic.qos","prefetch_count":%d,"prefetch_size":0,"global":false' % prefetch),
                    ('s2c', '"event":"frame","channel":1,"method":"basic.qos-ok"'),
                    ('c2s', '"event":"frame","channel":1,"method":"basic.consume","queue":"work-%d","consumer_tag":"worker-%d","no_ack":false' % (c, c)),
                    ('s2c', '"event":"frame","channel":1,"method":"basic.consume-ok","consumer_tag":"worker-%d"' % c)]:
        us += 10; emit(us, c, d, body)
tags, unacked, stalled, i = [0] * conns, [[] for _ in range(conns)], conns - 1, 0
while written < n - 3:
    c = i % conns; i += 1; us += 7
    emit(us, c, 'c2s', '"event":"frame","channel":2,"method":"basic.publish","exchange":"","routing_key":"work-%d","mandatory":false,"immediate":false' % c)
    stalling = c == stalled and written > n // 2
    if stalling and len(unacked[c]) >= prefetch:
        continue
    tags[c] += 1; us += 5
    emit(us, c, 's2c', '"event":"frame","channel":1,"method":"basic.deliver","consumer_tag":"worker-%d","delivery_tag":%d,"redelivered":false,"exchange":"","routing_key":"work-%d"' % (c, tags[c], c))
    unacked[c].append(tags[c])
    if not stalling and len(unacked[c]) >= 3:
        us += 5
        emit(us, c, 'c2s', '"event":"frame","channel":1,"method":"basic.ack","delivery_tag":%d,"multiple":true' % unacked[c][-1])
        unacked[c].clear()
us += 10_000_000  # enough quiet time after the stall for the verdict to be certain
for c in range(min(3, conns)):
    emit(us, c, 's2c', '"event":"frame","channel":0,"method":"heartbeat"')
PY
    mv "$timeline.tmp" "$timeline"
fi

tti() { # HTML file -> prints the page's ready figure of each run, then the median
    local html=$1 figures=()
    for _ in $(seq "$RUNS"); do
        local profile
        profile=$(mktemp -d)
        local ms
        ms=$(timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
            --disable-background-networking --disable-component-update --disable-sync \
            --user-data-dir="$profile" --window-size=1400,1000 --dump-dom "file://$PWD/$html" 2>/dev/null \
            | grep -o 'data-ready-ms="[^"]*"' | grep -o '[0-9.]*' || echo "none")
        rm -rf "$profile"
        figures+=("$ms")
    done
    local median
    median=$(printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "  runs (ms): ${figures[*]}"
    echo "  median time to interactive: $median ms"
}

report() { # input html
    local start end code=0
    start=$(date +%s.%N)
    "$bin" report "$1" -o "$2" || code=$?
    end=$(date +%s.%N)
    [ "$code" -le 1 ] || { echo "amqptrace report failed ($code)" >&2; exit 1; }
    printf '  built in %s s, %s bytes; %s\n' "$(awk "BEGIN { printf \"%.1f\", $end - $start }")" "$(stat -c %s "$2")" \
        "$(grep -o '[0-9]* events ([0-9]* marks drawn' "$2" | head -1))"
}

echo "report of $timeline"
report "$timeline" "$work/report-$N.html"
tti "$work/report-$N.html"

if [ -s target/captures/large.pcap ]; then
    echo "report of target/captures/large.pcap"
    report target/captures/large.pcap "$work/report-large.html"
    tti "$work/report-large.html"
fi
echo "chromium: $("$CHROMIUM" --version 2>/dev/null); load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
