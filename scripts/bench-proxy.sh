#!/usr/bin/env bash
# Benchmark of `amqptrace proxy` against its anchors, in one run on this machine:
#   (a) clients straight to RabbitMQ, (b) through socat (a plain TCP forwarder),
#   (c) through `amqptrace proxy` writing the JSONL timeline to a file,
#   (d) the same with --pcap,
# for 100-byte and 64 KiB messages: throughput (msg/s) and publish->deliver
# latency p50/p99 from examples/bench_load.rs (one publisher and one consumer
# connection, at most 200 messages in flight, acks). Then the proxy's CPU
# seconds per GB forwarded and its RSS over a run 4x longer (mode c, 64 KiB).
#
#   scripts/bench-proxy.sh            # SECS=8 per run (long run: 32 s)
#   SECS=20 scripts/bench-proxy.sh
#
# Needs the real RabbitMQ on 127.0.0.1:5672 (guest/guest) and socat (installed
# from Debian's packages when missing). Not a test: timing figures only.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-8}
LONG=$((SECS * 4))
BIN=${CARGO_TARGET_DIR:-target}/release
PORT_SOCAT=${PORT_SOCAT:-25681}
PORT_PROXY=${PORT_PROXY:-25682}

if ! command -v socat >/dev/null; then
    echo "installing socat"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
fi
rabbitmqctl -q await_startup
cargo build --release --quiet --bin amqptrace --example bench_load

WORK=$(mktemp -d)
FWD_PID=""
cleanup() {
    if [ -n "$FWD_PID" ]; then kill "$FWD_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

CLK=$(getconf CLK_TCK)
cpu_secs() { awk -v clk="$CLK" '{ printf "%.2f", ($14 + $15) / clk }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}

start_forwarder() { # mode -> sets FWD_PID and PORT
    case "$1" in
        direct) PORT=5672 ;;
        socat)
            PORT=$PORT_SOCAT
            socat "TCP-LISTEN:$PORT,bind=127.0.0.1,fork,reuseaddr" TCP:127.0.0.1:5672 &
            FWD_PID=$!
            ;;
        proxy-jsonl)
            PORT=$PORT_PROXY
            "$BIN/amqptrace" proxy --listen "127.0.0.1:$PORT" --upstream 127.0.0.1:5672 \
                --format jsonl -o "$WORK/trace.jsonl" 2>"$WORK/proxy.err" &
            FWD_PID=$!
            ;;
        proxy-pcap)
            PORT=$PORT_PROXY
            "$BIN/amqptrace" proxy --listen "127.0.0.1:$PORT" --upstream 127.0.0.1:5672 \
                --format jsonl -o "$WORK/trace.jsonl" --pcap "$WORK/trace.pcapng" 2>"$WORK/proxy.err" &
            FWD_PID=$!
            ;;
    esac
    wait_port "$PORT"
}

stop_forwarder() {
    if [ -n "$FWD_PID" ]; then
        kill -INT "$FWD_PID" 2>/dev/null || true
        wait "$FWD_PID" 2>/dev/null || true
        FWD_PID=""
    fi
}

dropped() {
    if [ -f "$WORK/proxy.err" ]; then
        grep -o '[0-9]* trace events dropped' "$WORK/proxy.err" | awk '{ print $1 }' || true
    fi
}

declare -A RATE
printf '%-12s %7s %10s %9s %9s %8s %10s %8s\n' mode size msg/s p50_ms p99_ms vs_a cpu_s/GB dropped
for size in 100 65536; do
    for mode in direct socat proxy-jsonl proxy-pcap; do
        rm -f "$WORK/proxy.err"
        start_forwarder "$mode"
        out=$("$BIN/examples/bench_load" --uri "amqp://guest:guest@127.0.0.1:$PORT/%2f" --size "$size" --seconds "$SECS")
        cpu="-"
        if [[ $mode == proxy-* ]]; then
            secs=$(cpu_secs "$FWD_PID")
            bytes=$(field "$out" bytes)
            # Every message crosses the proxy twice (publish in, deliver out).
            cpu=$(python3 -c "print(f'{$secs / (2 * $bytes / 1e9):.1f}')")
        fi
        stop_forwarder
        rate=$(field "$out" msg_per_s)
        RATE[$mode$size]=$rate
        vs=$(python3 -c "print(f'{100 * $rate / ${RATE[direct$size]}:.0f}%')")
        d=$(dropped)
        printf '%-12s %7s %10s %9s %9s %8s %10s %8s\n' "$mode" "$size" "$rate" \
            "$(field "$out" p50_ms)" "$(field "$out" p99_ms)" "$vs" "$cpu" "${d:-0}"
    done
done

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
secs=$(cpu_secs "$FWD_PID")
hwm=$(hwm_kb "$FWD_PID")
stop_forwarder
bytes=$(field "$out" bytes)
echo "  load: $out"
echo "  proxy CPU: ${secs} s for $(python3 -c "print(f'{2 * $bytes / 1e9:.2f}')") GB forwarded = $(python3 -c "print(f'{$secs / (2 * $bytes / 1e9):.1f}')") CPU s/GB"
echo "  RSS samples (MiB): $(for s in "${samples[@]}"; do printf '%s ' $((s / 1024)); done)"
echo "  peak RSS (VmHWM): $((hwm / 1024)) MiB; trace events dropped: $(d=$(dropped); echo "${d:-0}")"
