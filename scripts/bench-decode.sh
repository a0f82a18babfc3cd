#!/usr/bin/env bash
# Offline decode benchmark: amqptrace against tshark on the same capture, in one run.
#
#   scripts/bench-decode.sh [CAPTURE...] [--scale]
#
# Without CAPTURE: target/captures/large.pcap, its variant made of segments of at most
# 100 bytes, target/captures/large-small-segments.pcap, and the nack/requeue storm of tiny
# frames, target/captures/storm.pcap (all made by scripts/make-captures.sh when absent),
# one table each, after what moving data between the cores costs (scripts/cross-core.c).
# For each tool/mode it prints wall time, MB/s, packets/s,
# AMQP frames/s, peak RSS, CPU seconds (user + system, every thread) and the ratio of
# amqptrace's MB/s to tshark's in the same table. Each amqptrace format runs twice: with
# --threads 1 (everything on one thread, the default) and with one worker per core.
# The file is read once beforehand so every run finds it in the page cache. Each figure is
# the median of RUNS runs (default 3). With --scale it also runs amqptrace at 1x, 2x and 4x
# the length of the first capture (examples/scale_capture.rs), with one thread and with all,
# to show how time and memory grow.
# The small-segments capture is of the broker leg behind two socats, on port 5684.
# BASELINE=path/to/an/older/amqptrace adds its rows under each of ours, measured in the
# same run (how a refactor shows it is not slower).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# Without a CAPTURE argument: the three captures above, one table each.
CAPTURES=()
SCALE=0
for a in "$@"; do
    case "$a" in
        --scale) SCALE=1 ;;
        *) CAPTURES+=("$a") ;;
    esac
done
if [ ${#CAPTURES[@]} -eq 0 ]; then
    CAPTURES=(target/captures/large.pcap target/captures/large-small-segments.pcap
        target/captures/storm.pcap)
fi
for c in "${CAPTURES[@]}"; do
    if [ ! -f "$c" ]; then
        case "$c" in
            target/captures/large.pcap) flag=--large ;;
            target/captures/large-small-segments.pcap) flag=--large-small-segments ;;
            target/captures/storm.pcap) flag=--storm ;;
            *) echo "no such capture: $c" >&2; exit 2 ;;
        esac
        echo "no $c: making it with scripts/make-captures.sh $flag" >&2
        scripts/make-captures.sh "$flag"
    fi
done
cargo build --release --quiet
cargo build --release --quiet --example scale_capture
BIN=target/release/amqptrace
# The sharded rows: one worker per core (`analyze` itself defaults to --threads 1).
THREADS=$(nproc)
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
# What moving data between cores costs here, the yardstick of the --threads rows (it
# changes with where the host puts the vCPUs): scripts/cross-core.c, when gcc is there.
if [ "$THREADS" -ge 2 ] && command -v gcc >/dev/null; then
    gcc -O2 -pthread scripts/cross-core.c -o target/cross-core \
        && target/cross-core | sed 's/^/cores: /'
fi

# run LIMIT LABEL CMD...: times CMD (stdout discarded), prints a row. The first row of a
# table (tshark) is the anchor of the x_tshark column. Wall time comes from bash's
# EPOCHREALTIME (microseconds; GNU time's %e moves in 10 ms steps, a tenth of an amqptrace
# run), peak RSS from GNU time. A run longer than LIMIT seconds is stopped (tshark:
# TSHARK_TIMEOUT, default 600): its time is then a lower bound, shown as '>T', and every
# ratio against it is a lower bound too, shown as '>=R'.
TSHARK_MBS=
TSHARK_CUT=
run() {
    local limit=$1 label=$2
    shift 2
    # The median of RUNS runs (default 3): single runs on a shared machine vary by 30%.
    local log walls=() cpus=() rss=0 w r t0 t1 st cut=
    log=$(mktemp)
    for _ in $(seq "${RUNS:-3}"); do
        t0=$EPOCHREALTIME
        : > "$log"
        st=0
        timeout "$limit" "$TIME" -f '%e %M %U %S' -o "$log" "$@" > /dev/null 2>/dev/null || st=$?
        [ "$st" -eq 124 ] && cut=1
        t1=$EPOCHREALTIME
        w=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        # The last line: GNU time says "Command exited with non-zero status" before it.
        r=$(tail -n 1 "$log" | awk '{ print $2 }' 2>/dev/null || true)
        walls+=("$w")
        cpus+=("$(tail -n 1 "$log" | awk 'NF >= 4 { printf "%.2f", $3 + $4 }' 2>/dev/null || true)")
        [ -n "$r" ] && [ "$r" -gt "$rss" ] && rss=$r
        [ -n "$cut" ] && break # one stopped run is enough to know it is slower than that
    done
    rm -f "$log"
    wall=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    local cpu
    cpu=$(printf '%s\n' "${cpus[@]}" | awk 'NF' | sort -n | awk '{ a[NR] = $1 } END { print NR ? a[int((NR + 1) / 2)] : "-" }')
    local mbs pps fps ratio shown=$wall
    mbs=$(awk -v s="$size" -v w="$wall" 'BEGIN { printf "%.1f", s / 1e6 / (w > 0 ? w : 0.001) }')
    pps=$(awk -v p="$packets" -v w="$wall" 'BEGIN { printf "%.0f", p / (w > 0 ? w : 0.001) }')
    fps=$(awk -v f="$frames" -v w="$wall" 'BEGIN { printf "%.0f", f / (w > 0 ? w : 0.001) }')
    if [ -z "$TSHARK_MBS" ]; then
        TSHARK_MBS=$mbs
        TSHARK_CUT=$cut
    fi
    local rates=("$mbs" "$pps" "$fps")
    [ -n "$cut" ] && shown=">$wall" && rates=("<$mbs" "<$pps" "<$fps")
    ratio=$(awk -v a="$mbs" -v t="$TSHARK_MBS" 'BEGIN { printf "%.1f", a / t }')
    [ -n "$TSHARK_CUT" ] && ratio=">=$ratio"
    local rss_mb=$((rss / 1024))
    [ "$rss" -eq 0 ] && rss_mb=- # stopped before GNU time could report it
    printf '%-38s %9s %9s %11s %12s %10s %7s %8s\n' "$label" "$shown" "${rates[@]}" "$rss_mb" "$cpu" "$ratio"
}

table() {
    CAPTURE=$1
    TSHARK_MBS=
    size=$(stat -L -c %s "$CAPTURE")
    mb=$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')
    cat "$CAPTURE" > /dev/null # page cache
    packets=$(capinfos -c -M "$CAPTURE" | awk -F: '/Number of packets/ { gsub(/ /, "", $2); print $2 }')
    local port=5672
    case "$CAPTURE" in *small-segments*) port=5684 ;; esac
    frames=$($BIN analyze --port "$port" --format counts "$CAPTURE" 2>/dev/null | awk 'NR > 1 && $2 !~ /^(tcp\.|gap|error)/ { n += $1 } END { print n }')
    echo
    echo "capture: $CAPTURE  ${mb} MB  ${packets} packets  ${frames} AMQP frames  ($(nproc) cores)"
    printf '%-38s %9s %9s %11s %12s %10s %7s %8s\n' tool/mode wall_s MB/s packets/s frames/s peak_RSS_MB cpu_s x_tshark
    run "${TSHARK_TIMEOUT:-600}" "tshark -T fields (5 fields)" tshark -n -r "$CAPTURE" -d "tcp.port==$port,amqp" -Y amqp -T fields \
        -e frame.time_epoch -e tcp.srcport -e amqp.channel -e amqp.method.class -e amqp.method.method
    local format bin
    for format in jsonl "json (verdicts)" counts; do
        run 600 "amqptrace --format $format -t1" "$BIN" analyze --port "$port" \
            --format "${format%% *}" -o /dev/null --threads 1 "$CAPTURE"
        run 600 "amqptrace --format $format -t$THREADS" "$BIN" analyze --port "$port" \
            --format "${format%% *}" -o /dev/null --threads "$THREADS" "$CAPTURE"
        if [ -n "${BASELINE:-}" ]; then
            # An older binary may not know --threads: its own default.
            run 600 "baseline --format $format" "$BASELINE" analyze --port "$port" \
                --format "${format%% *}" -o /dev/null "$CAPTURE"
        fi
    done
}

for c in "${CAPTURES[@]}"; do
    table "$c"
done

if [ "$SCALE" = 1 ]; then
    echo
    echo "scaling (amqptrace --format json): ${CAPTURES[0]}, its traffic repeated as new connections"
    for n in 1 2 4; do
        f=target/captures/scaled-$(basename "${CAPTURES[0]}" .pcap)-${n}x.pcap
        [ -f "$f" ] || target/release/examples/scale_capture "${CAPTURES[0]}" "$f" "$n"
        for threads in 1 "$THREADS"; do
            log=$(mktemp)
            "$TIME" -f '%e %M %U %S' -o "$log" "$BIN" analyze --format json -o /dev/null \
                --threads "$threads" "$f" > /dev/null 2>&1 || true
            read -r wall rss user sys < <(tail -n 1 "$log")
            rm -f "$log"
            printf '  %sx  %6.0f MB  --threads %-2s wall %6ss  cpu %6ss  peak RSS %5s MB\n' "$n" \
                "$(awk -v s="$(stat -L -c %s "$f")" 'BEGIN { print s / 1e6 }')" "$threads" "$wall" \
                "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" "$((rss / 1024))"
        done
    done
fi
