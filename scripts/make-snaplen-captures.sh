#!/usr/bin/env bash
# Makes captures/snaplen/: a healthy flow (200 deliveries, 200 acks) and a
# prefetch stall (prefetch 5, no ack) with pika against the real RabbitMQ on
# 127.0.0.1:5672, each as a full-snaplen capture and the same packets cut to 80
# and 128 bytes:
#
#   captures/snaplen/NAME.pcap        tcpdump on lo, default snaplen, this run's
#                                     connections only (by their client ports)
#   captures/snaplen/NAME-s80.pcap    editcap -s 80 of NAME.pcap
#   captures/snaplen/NAME-s128.pcap   editcap -s 128 of NAME.pcap
#
# The short captures are cut by editcap from the full one rather than recorded by
# a second `tcpdump -s` at the same time (lo takes one capture at a time here,
# see capture_start): the same packets then exist whole and cut, which is what
# the comparison needs. editcap -s cuts each packet exactly as `tcpdump -s` does
# (the first N bytes from the link header kept, the original length recorded,
# the file's snaplen set to N).
#
# Usage: scripts/make-snaplen-captures.sh [healthy|prefetch...]   (default: both)
# Needs root (tcpdump on lo), tshark, editcap, python3 (the venv: ensure_venv).
. "$(dirname "$0")/lib.sh"

SCENARIOS_DIR="$ROOT/scripts/scenarios"
OUT="$CAPTURES/snaplen"
ALL=(healthy prefetch)
SELECTED=("$@")
[ ${#SELECTED[@]} -eq 0 ] && SELECTED=("${ALL[@]}")

WORK=$(mktemp -d /tmp/amqptrace-snaplen.XXXXXX)
export AMQPTRACE_QUEUE_LIST="$WORK/created-queues"
export PYTHONDONTWRITEBYTECODE=1
PID=

cleanup() {
    local rc=$?
    set +e
    if [ -n "${CAPTURE_PID:-}" ] && kill -0 "$CAPTURE_PID" 2>/dev/null; then capture_stop; fi
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
    [ -f "$AMQPTRACE_QUEUE_LIST" ] && "$PY" "$SCENARIOS_DIR/broker.py" delete-queues "$AMQPTRACE_QUEUE_LIST"
    if [ "$rc" -eq 0 ]; then rm -rf "$WORK"; else log "work files kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_venv
mkdir -p "$OUT"

for name in "${SELECTED[@]}"; do
    case $name in healthy | prefetch) ;; *) log "unknown run $name"; exit 2 ;; esac
    dir="$WORK/$name"
    run=$(unique r)
    run=${run#r-}
    mkdir -p "$dir"
    log "=== $name (run $run)"
    capture_start "$dir/raw.pcap" 'tcp port 5672' -B 65536
    "$PY" "$SCENARIOS_DIR/snaplen_scenario.py" "$name" --dir "$dir" --run "$run" &
    PID=$!
    for _ in $(seq 600); do
        [ -e "$dir/done" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    capture_stop
    touch "$dir/stop"
    wait "$PID"
    PID=
    "$PY" "$SCENARIOS_DIR/broker.py" delete-queues "$AMQPTRACE_QUEUE_LIST"
    # Only this run's two connections (other clients of the broker share lo).
    keep=$("$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(" || ".join(f"tcp.port=={p}" for p in m["ports"].values()))' "$dir/meta.json")
    tshark -r "$dir/raw.pcap" -Y "$keep" -F pcap -w "$dir/$name.pcap" 2>/dev/null
    got=$(tshark -r "$dir/$name.pcap" -T fields -e tcp.stream 2>/dev/null | sort -u | wc -l)
    [ "$got" = 2 ] || { log "$name: $got TCP connections kept, expected 2"; exit 1; }
    for snap in 80 128; do editcap -F pcap -s "$snap" "$dir/$name.pcap" "$dir/$name-s$snap.pcap"; done
    mv "$dir/$name.pcap" "$dir/$name-s80.pcap" "$dir/$name-s128.pcap" "$OUT/"
    log "=== $name: $(tshark -r "$OUT/$name.pcap" 2>/dev/null | wc -l) packets"
done
