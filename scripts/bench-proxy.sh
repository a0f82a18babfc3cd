#!/usr/bin/env bash
# Benchmark of `amqptrace proxy` against its anchors, in one run on this machine:
#   (a) direct       clients straight to RabbitMQ,
#   (b) socat        a plain TCP forwarder (one process per connection),
#       haproxy      a plain TCP forwarder (haproxy 2.6, `mode tcp`, its default
#                    of one thread per core, config written to a temp dir),
#       haproxy1     the same with `nbthread 1` (one forwarding thread, as
#                    amqptrace proxy has),
#   (c) proxy-jsonl  `amqptrace proxy` writing the JSONL timeline to a file,
#   (d) proxy-pcap   the same with --pcap,
#       proxy-quiet  `amqptrace proxy --quiet`: every byte decoded and
#                    analysed (live verdicts), no timeline written; the
#                    difference to proxy-jsonl is the cost of the timeline,
# for 100-byte and 64 KiB messages: throughput (msg/s) and publish->deliver
# latency p50/p99 from examples/bench_load.rs (one publisher and one consumer
# connection, at most 200 messages in flight, acks).
#
# cpu_s/GB is the forwarder's CPU time (user + system, the whole process tree:
# socat's forked children are included) per GB forwarded (each message crosses
# a forwarder twice: publish in, deliver out). For amqptrace it is split into
# the forwarding threads (fwd) and the tracer thread (trace: decode, analysis,
# JSONL, pcapng). Since batching makes a busy forwarder cheaper per message, a
# second table sends the same paced traffic (FIXED_RATE msg/s, default 4000,
# 100 B) through every mode: CPU per GB and added latency at equal load. Then
# the proxy's CPU per GB and its RSS over a run 4x longer (mode proxy-jsonl,
# 64 KiB).
#
#   scripts/bench-proxy.sh                        # SECS=8 per run, 3 runs (long run: 32 s)
#   SECS=20 scripts/bench-proxy.sh
#   RUNS=1 MODES="haproxy1 proxy-jsonl" SIZES=100 LONG=0 scripts/bench-proxy.sh
#
# MODES and SIZES pick rows (vs_a needs direct in the same run; SIZES= skips
# the first table); each figure is the median of RUNS runs (default 3; modes
# alternate; VERBOSE=1 lists each run); FIXED_RATE=0 skips the fixed-rate
# table; LONG=0 skips the long run; AMQPTRACE=path measures another build;
# BASELINE=path adds the modes base-quiet, base-jsonl and base-pcap (the proxy-*
# modes with that build), to compare two builds in one run:
#   BASELINE=/tmp/old/amqptrace MODES="proxy-jsonl base-jsonl proxy-quiet base-quiet" scripts/bench-proxy.sh
#
# Needs the real RabbitMQ on 127.0.0.1:5672 (guest/guest), socat and haproxy
# (installed from Debian's packages when missing). Not a test: timing figures
# only; the load is CPU-bound, so anything else running on the machine moves
# them.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-8}
LONG=${LONG:-$((SECS * 4))}
MODES=${MODES:-direct socat haproxy haproxy1 proxy-quiet proxy-jsonl proxy-pcap}
SIZES=${SIZES-100 65536}
RUNS=${RUNS:-3}
FIXED_RATE=${FIXED_RATE:-4000}
BIN=${CARGO_TARGET_DIR:-target}/release
# AMQPTRACE=path measures another build of the proxy (e.g. before a change).
AMQPTRACE=${AMQPTRACE:-$BIN/amqptrace}
BASELINE=${BASELINE:-}
PORT_SOCAT=${PORT_SOCAT:-25681}
PORT_PROXY=${PORT_PROXY:-25682}
PORT_HAPROXY=${PORT_HAPROXY:-25683}

for tool in socat haproxy; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
        echo "installing $tool"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    fi
done
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
rabbitmqctl -q await_startup
cargo build --release --quiet --bin amqptrace --example bench_load

WORK=$(mktemp -d)
FWD_PID=""
cleanup() {
    if [ -n "$FWD_PID" ]; then kill "$FWD_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# haproxy_cfg THREADS: a minimal TCP-mode haproxy (THREADS empty: its default,
# one thread per core).
haproxy_cfg() {
    cat <<EOF
global
    maxconn 4096
${1:+    nbthread $1}
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
listen amqp
    bind 127.0.0.1:$PORT_HAPROXY
    server rabbit 127.0.0.1:5672
EOF
}
haproxy_cfg "" >"$WORK/haproxy.cfg"
haproxy_cfg 1 >"$WORK/haproxy1.cfg"

CLK=$(getconf CLK_TCK)
# CPU seconds of a process and its children, live (utime + stime) or reaped
# (cutime + cstime).
cpu_tree_secs() {
    local pid=$1 ticks
    ticks=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pid/stat")
    for child in $(pgrep -P "$pid" || true); do
        ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$child/stat" 2>/dev/null || echo 0)))
    done
    awk -v t="$ticks" -v clk="$CLK" 'BEGIN { printf "%.2f", t / clk }'
}
# CPU seconds of the tracer thread of an amqptrace process.
tracer_secs() {
    local t
    for t in /proc/"$1"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = amqptrace-trace ]; then
            awk -v clk="$CLK" '{ printf "%.2f", ($14 + $15) / clk }' "$t/stat"
            return
        fi
    done
    echo 0
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
per_gb() { python3 -c "print(f'{$1 / (2 * $2 / 1e9):.3f}')"; }

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}

start_forwarder() { # mode -> sets FWD_PID and PORT
    # base-quiet, base-jsonl, base-pcap: the proxy-* modes with the BASELINE build.
    local bin=$AMQPTRACE mode=$1
    case "$mode" in base-*) bin=$BASELINE mode=proxy-${mode#base-} ;; esac
    local proxy=("$bin" proxy --listen "127.0.0.1:$PORT_PROXY" --upstream 127.0.0.1:5672)
    case "$mode" in
        direct) PORT=5672 ;;
        socat)
            PORT=$PORT_SOCAT
            socat "TCP-LISTEN:$PORT,bind=127.0.0.1,fork,reuseaddr" TCP:127.0.0.1:5672 &
            FWD_PID=$!
            ;;
        haproxy | haproxy1)
            PORT=$PORT_HAPROXY
            "$HAPROXY" -db -f "$WORK/$1.cfg" 2>"$WORK/haproxy.err" &
            FWD_PID=$!
            ;;
        proxy-quiet)
            PORT=$PORT_PROXY
            "${proxy[@]}" --quiet -o "$WORK/verdicts.txt" 2>"$WORK/proxy.err" &
            FWD_PID=$!
            ;;
        proxy-jsonl)
            PORT=$PORT_PROXY
            "${proxy[@]}" --format jsonl -o "$WORK/trace.jsonl" 2>"$WORK/proxy.err" &
            FWD_PID=$!
            ;;
        proxy-pcap)
            PORT=$PORT_PROXY
            "${proxy[@]}" --format jsonl -o "$WORK/trace.jsonl" --pcap "$WORK/trace.pcapng" 2>"$WORK/proxy.err" &
            FWD_PID=$!
            ;;
        *)
            echo "unknown mode $1" >&2
            exit 2
            ;;
    esac
    wait_port "$PORT"
}

stop_forwarder() {
    if [ -n "$FWD_PID" ]; then
        # TERM, not INT: background jobs of a script start with SIGINT ignored,
        # and haproxy keeps it so.
        kill -TERM "$FWD_PID" 2>/dev/null || true
        wait "$FWD_PID" 2>/dev/null || true
        FWD_PID=""
    fi
}

dropped() {
    if [ -f "$WORK/proxy.err" ]; then
        grep -o '[0-9]* trace events dropped' "$WORK/proxy.err" | awk '{ print $1 }' || true
    fi
}

# measure MODE SIZE RATE FILE: one load run through MODE, appended to FILE as
# "mode size msg/s p50 p99 cpu fwd trace dropped" ("-" where none).
measure() {
    local mode=$1 size=$2 rate=$3 file=$4 out cpu="-" fwd="-" trace="-" bytes secs tsecs d
    rm -f "$WORK/proxy.err"
    start_forwarder "$mode"
    out=$("$BIN/examples/bench_load" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" \
        --size "$size" --seconds "$SECS" --rate "$rate")
    if [ "$mode" != direct ]; then
        # socat's per-connection children end (and are reaped) with the load's connections.
        sleep 0.3
        bytes=$(field "$out" bytes)
        secs=$(cpu_tree_secs "$FWD_PID")
        cpu=$(per_gb "$secs" "$bytes")
        if [[ $mode == proxy-* || $mode == base-* ]]; then
            tsecs=$(tracer_secs "$FWD_PID")
            trace=$(per_gb "$tsecs" "$bytes")
            fwd=$(per_gb "$(python3 -c "print($secs - $tsecs)")" "$bytes")
        fi
    fi
    stop_forwarder
    d=$(dropped)
    echo "$mode $size $(field "$out" msg_per_s) $(field "$out" p50_ms) $(field "$out" p99_ms) $cpu $fwd $trace ${d:-0}" >>"$file"
}

# table FILE: each figure is the median of its runs, taken separately.
table() {
    python3 - "$1" <<'PY'
import os, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
keys = list(dict.fromkeys((r[0], r[1]) for r in rows))
fmt = "%-12s %6s %9s %8s %8s %5s %9s %7s %7s %8s"
print(fmt % ("mode", "size", "msg/s", "p50_ms", "p99_ms", "vs_a", "cpu_s/GB", "fwd", "trace", "dropped"))
def med(rs, i, digits):
    v = [float(r[i]) for r in rs if r[i] != "-"]
    if not v:
        return "-"
    m = statistics.median(v)
    return f"{m:.{digits if m >= 10 else digits + 1}f}"
for mode, size in keys:
    rs = [r for r in rows if (r[0], r[1]) == (mode, size)]
    direct = [float(r[2]) for r in rows if (r[0], r[1]) == ("direct", size)]
    rate = statistics.median(float(r[2]) for r in rs)
    vs = f"{100 * rate / statistics.median(direct):.0f}%" if direct else "-"
    print(fmt % (mode, size, f"{rate:.0f}", med(rs, 3, 2), med(rs, 4, 2), vs,
                 med(rs, 5, 1), med(rs, 6, 1), med(rs, 7, 1), max(int(r[8]) for r in rs)))
if len(rows) > len(keys):
    print(f"(median of {len(rows) // len(keys)} runs per figure; dropped: the largest count)")
if os.environ.get("VERBOSE"):
    for r in rows:
        print("  run:", " ".join(r))
PY
}

if [ -n "$SIZES" ]; then
    echo "as fast as the window allows (${SECS} s per run):"
    : >"$WORK/runs"
    for size in $SIZES; do
        # Modes alternate within each round, so a drift in the machine's load
        # touches every mode alike.
        for _ in $(seq "$RUNS"); do
            for mode in $MODES; do measure "$mode" "$size" 0 "$WORK/runs"; done
        done
    done
    table "$WORK/runs"
fi

if [ "$FIXED_RATE" != 0 ]; then
    echo
    echo "the same traffic through every forwarder: ${FIXED_RATE} msg/s of 100 bytes (${SECS} s per run):"
    : >"$WORK/fixed"
    for _ in $(seq "$RUNS"); do
        for mode in $MODES; do measure "$mode" 100 "$FIXED_RATE" "$WORK/fixed"; done
    done
    table "$WORK/fixed"
fi

if [ "$LONG" = 0 ]; then exit 0; fi
echo
echo "long run: proxy-jsonl, 65536-byte messages, ${LONG} s (RSS sampled every 2 s)"
rm -f "$WORK/proxy.err"
start_forwarder proxy-jsonl
"$BIN/examples/bench_load" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" --size 65536 --seconds "$LONG" >"$WORK/long.json" &
LOAD=$!
samples=()
while kill -0 "$LOAD" 2>/dev/null; do
    samples+=("$(rss_kb "$FWD_PID")")
    sleep 2
done
wait "$LOAD"
out=$(cat "$WORK/long.json")
secs=$(cpu_tree_secs "$FWD_PID")
hwm=$(hwm_kb "$FWD_PID")
stop_forwarder
bytes=$(field "$out" bytes)
echo "  load: $out"
echo "  proxy CPU: ${secs} s for $(python3 -c "print(f'{2 * $bytes / 1e9:.2f}')") GB forwarded = $(per_gb "$secs" "$bytes") CPU s/GB"
echo "  RSS samples (MiB): $(for s in "${samples[@]}"; do printf '%s ' $((s / 1024)); done)"
echo "  peak RSS (VmHWM): $((hwm / 1024)) MiB; trace events dropped: $(d=$(dropped); echo "${d:-0}")"
