#!/usr/bin/env bash
# Makes one capture per consumer/connection failure mode against the real RabbitMQ
# on 127.0.0.1:5672, with real clients (pika, aio-pika, lapin, Node's amqplib, Ruby's
# Bunny, and Dramatiq and Celery workers through their CLIs), and
# writes beside each capture the verdicts the analyzer must give:
#
#   captures/failures/NAME.pcapng        the traffic of that scenario only
#   captures/failures/NAME.expect.json   the expected verdicts, derived from the
#                                        capture by scripts/scenarios/expect.py
#
# Usage: scripts/make-failure-captures.sh [SCENARIO...]   (default: all; --list names them)
#
# The broker is put back as it was even when a scenario fails: the memory
# watermark and consumer_timeout are read before anything runs and restored in
# the EXIT trap; every queue a scenario declares has a unique name and is deleted.
# Needs root (tcpdump on lo), rabbitmqctl, tshark, editcap, python3; node/npm and
# ruby-bunny for the amqplib-*/bunny-* scenarios (amqplib is installed, pinned, into
# target/node).
. "$(dirname "$0")/lib.sh"

SCENARIOS_DIR="$ROOT/scripts/scenarios"
OUT="$CAPTURES/failures"
ALL=(healthy slow-but-healthy prefetch-exhausted wrong-queue missing-queue-404 blocked
    ack-timeout heartbeat-timeout queue-deleted-cancel nack-requeue-loop
    three-consumers-one-stalls dramatiq-healthy dramatiq-wrong-queue mid-connection
    lapin-prefetch-exhausted
    amqplib-prefetch-quiet bunny-prefetch-quiet amqplib-wrong-queue-quiet bunny-wrong-queue-quiet
    peers-settle-prefetch aio-pika-wrong-queue dramatiq-helpers-idle slow-mid-message
    celery-wrong-queue celery-healthy
    unknown-tag-double-ack unknown-tag-wrong-channel unknown-tag-after-reconnect exclusive-consumer-403 exclusive-queue-405 inequivalent-args-406 vhost-not-allowed-530 fork-interleaved channel-max-530 frame-too-large-501 unexpected-frame-505 amqp-1-0-header amqp-1-0-sasl-header amqp-0-10-header)
ALL+=(sac-standby quorum-delivery-limit stream-no-qos stream-window-full celery-eta consumer-timeout-near dead-letter-ttl) # issue 15, items 4-5
ALL+=(publish-returned publish-unroutable publish-nacked publish-unconfirmed consumer-not-restored blocked-unannounced) # issue 15, items 1-2
AMQPLIB_VERSION=0.10.9

if [ "${1:-}" = --list ]; then printf '%s\n' "${ALL[@]}"; exit 0; fi
SELECTED=("$@")
[ ${#SELECTED[@]} -eq 0 ] && SELECTED=("${ALL[@]}")
for s in "${SELECTED[@]}"; do
    printf '%s\n' "${ALL[@]}" | grep -qx -- "$s" || { log "unknown scenario $s (see --list)"; exit 2; }
done

WORK=$(mktemp -d /tmp/amqptrace-failures.XXXXXX)
export AMQPTRACE_QUEUE_LIST="$WORK/created-queues"
export AMQPTRACE_BROKER_STATE="$WORK/broker-state.json"
# The scenario modules are imported from the source tree: leave no __pycache__ there.
export PYTHONDONTWRITEBYTECODE=1
BG_PIDS=()
FAILED=()

cleanup() {
    local rc=$?
    set +e
    if [ -n "${CAPTURE_PID:-}" ] && kill -0 "$CAPTURE_PID" 2>/dev/null; then capture_stop; fi
    for pid in "${BG_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    # A frozen heartbeat client whose parent died is still SIGSTOPped: end it.
    for f in "$WORK"/*/child-pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
    if [ -f "$AMQPTRACE_BROKER_STATE" ]; then
        "$PY" "$SCENARIOS_DIR/broker.py" restore "$AMQPTRACE_BROKER_STATE" \
            || { log "COULD NOT RESTORE the broker settings saved in $AMQPTRACE_BROKER_STATE"; rc=1; }
    fi
    "$PY" "$SCENARIOS_DIR/broker.py" delete-queues "$AMQPTRACE_QUEUE_LIST" || log "some queues were not deleted"
    if [ "$rc" -eq 0 ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else log "work files kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_venv
# The Rust client for the lapin-* scenarios (LAPIN_CLIENT=path skips the build).
if printf '%s\n' "${SELECTED[@]}" | grep -q '^lapin-' && [ -z "${LAPIN_CLIENT:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet --example lapin_client)
    export LAPIN_CLIENT="$ROOT/target/release/examples/lapin_client"
fi
# Node's amqplib for the amqplib-* scenarios, pinned, installed once into target/node.
export NODE_PATH="$ROOT/target/node/node_modules"
if printf '%s\n' "${SELECTED[@]}" | grep -q '^amqplib-'; then
    if [ "$(node -p 'require("amqplib/package.json").version' 2>/dev/null)" != "$AMQPLIB_VERSION" ]; then
        log "installing amqplib@$AMQPLIB_VERSION into target/node"
        npm install --prefix "$ROOT/target/node" --no-audit --no-fund --silent "amqplib@$AMQPLIB_VERSION"
    fi
fi
"$PY" "$SCENARIOS_DIR/broker.py" save "$AMQPTRACE_BROKER_STATE" >/dev/null
log "broker settings saved: $(cat "$AMQPTRACE_BROKER_STATE")"
mkdir -p "$OUT"

# wait_for FILE PID SECONDS: until FILE exists or PID has exited (0), or the time is up (1).
wait_for() {
    local file=$1 pid=$2 limit=$3 i
    for ((i = 0; i < limit * 10; i++)); do
        [ -e "$file" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# run_scenario NAME: captures the scenario, then derives its expectations.
run_scenario() {
    local name=$1 dir="$WORK/$1" prog=pika_scenarios.py limit=60 run pid rc=0 early=
    run=$(unique r)
    run=${run#r-} # "PID-RANDOM": queue and connection names carry it
    mkdir -p "$dir"
    case $name in
    dramatiq-*) prog=dramatiq_scenario.py ;;
    sac-* | quorum-* | stream-* | dead-letter-*) prog=queue_scenarios.py ;;
    consumer-timeout-near) prog=queue_scenarios.py limit=200 ;;
    celery-eta) prog=celery_eta_scenario.py ;;
    celery-*) prog=celery_scenario.py ;;
    publish-* | consumer-not-restored | blocked-unannounced) prog=publisher_scenarios.py ;;
    lapin-*) prog=lapin_scenario.py ;;
    amqplib-* | bunny-* | aio-pika-*) prog=foreign_scenario.py ;;
    unknown-tag-* | exclusive-* | inequivalent-* | *-530 | *-501 | *-505 | fork-* | amqp-*-header) prog=error_scenarios.py ;;
    ack-timeout) limit=200 ;; # the broker notices on its channel tick, up to a minute or two
    esac
    if [ "$name" = mid-connection ]; then
        # The consumer connects and consumes before the capture starts.
        "$PY" "$SCENARIOS_DIR/$prog" mid-connection-consumer --dir "$dir/consumer" --run "$run" &
        early=$!
        BG_PIDS+=("$early")
        wait_for "$dir/consumer/consumer-ready" "$early" 30 && kill -0 "$early" 2>/dev/null \
            || { log "$name: the early consumer did not start"; return 1; }
    fi
    # A 64 MiB kernel buffer: with the default, tcpdump on lo drops packets even in small runs.
    capture_start "$dir/raw.pcap" 'tcp port 5672' --time-stamp-precision=nano -B 65536
    "$PY" "$SCENARIOS_DIR/$prog" "$name" --dir "$dir" --run "$run" &
    pid=$!
    BG_PIDS+=("$pid")
    if ! wait_for "$dir/done" "$pid" "$limit"; then
        log "$name: no result within $limit s"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    capture_stop
    touch "$dir/stop"
    mkdir -p "$dir/consumer" && touch "$dir/consumer/stop"
    wait "$pid" || rc=$?
    [ -n "$early" ] && { wait "$early" || rc=$?; }
    # Queues are deleted after each scenario so none piles up on the broker.
    "$PY" "$SCENARIOS_DIR/broker.py" delete-queues "$AMQPTRACE_QUEUE_LIST" || true
    if [ "$rc" -ne 0 ]; then
        log "$name: the scenario failed (exit $rc); $OUT/$name.* left as they were"
        return 1
    fi
    "$PY" "$SCENARIOS_DIR/expect.py" "$name" --dir "$dir" --pcap "$dir/raw.pcap" --out "$OUT"
}

T0=$(date +%s)
for name in "${SELECTED[@]}"; do
    t=$(date +%s)
    log "=== $name"
    if run_scenario "$name"; then
        log "=== $name done in $(($(date +%s) - t)) s"
    else
        FAILED+=("$name")
    fi
done
log "all done in $(($(date +%s) - T0)) s; failed: ${FAILED[*]:-none}"
[ ${#FAILED[@]} -eq 0 ]
