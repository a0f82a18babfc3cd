# Shared helpers for the scripts that make captures against the real RabbitMQ.
# Source it: `. "$(dirname "$0")/lib.sh"`. Needs tcpdump, python3, rabbitmqctl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAPTURES="$ROOT/captures"
# The virtualenv with the Python clients people use (pika, dramatiq).
VENV="${AMQPTRACE_VENV:-$ROOT/target/venv}"
PY="$VENV/bin/python"
# Only one capture runs at a time on this machine: two scenarios capturing
# port 5672 on lo at once would see each other's connections.
CAPTURE_LOCK=/tmp/amqptrace-capture.lock

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Creates the virtualenv once; pins the client versions the captures were made with
# (Celery brings kombu and py-amqp, its own AMQP client; aio-pika brings aiormq).
# Re-created only when one of them does not import.
ensure_venv() {
    if [ ! -x "$PY" ] || ! "$PY" -c 'import pika, dramatiq, celery, aio_pika' 2>/dev/null; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q 'pika==1.3.2' 'dramatiq[rabbitmq]==1.17.1' 'celery==5.5.3' 'aio-pika==9.5.5'
    fi
}

# capture_start FILE FILTER [extra tcpdump args...]
# Starts tcpdump on lo (unless -i is given in the extra args) writing FILE, waits
# until it is listening, and holds the capture lock until capture_stop.
# CAPTURE_PREFIX and CAPTURE_BUFFERED (both unset by default) are described below.
capture_start() {
    local file=$1 filter=$2
    shift 2
    exec 9>"$CAPTURE_LOCK"
    flock 9
    local iface=(-i lo)
    for a in "$@"; do [ "$a" = -i ] && iface=(); done
    local errlog
    errlog=$(mktemp)
    # CAPTURE_BUFFERED=1 (optional) drops -U --immediate-mode: at tens of
    # thousands of packets a second, waking tcpdump for every packet makes the
    # kernel drop a quarter of them; buffered, none.
    local live=(-U --immediate-mode)
    [ -n "${CAPTURE_BUFFERED:-}" ] && live=()
    # CAPTURE_PREFIX (optional, unset by default) runs tcpdump through a wrapper,
    # e.g. CAPTURE_PREFIX="ip netns exec NS" to capture inside a network namespace.
    # shellcheck disable=SC2086 # the prefix is a command line, split on purpose
    ${CAPTURE_PREFIX:-} tcpdump "${iface[@]}" "${live[@]}" -w "$file" "$@" "$filter" 2>"$errlog" &
    CAPTURE_PID=$!
    CAPTURE_ERR=$errlog
    for _ in $(seq 100); do
        grep -q 'listening on' "$errlog" && return 0
        kill -0 "$CAPTURE_PID" 2>/dev/null || { cat "$errlog" >&2; return 1; }
        sleep 0.05
    done
    cat "$errlog" >&2
    return 1
}

# Stops the capture started by capture_start, letting tcpdump flush, and frees the lock.
capture_stop() {
    sleep 0.3 # let the last packets reach the capture buffer
    kill -INT "$CAPTURE_PID" 2>/dev/null || true
    wait "$CAPTURE_PID" 2>/dev/null || true
    grep -E 'captured|dropped' "$CAPTURE_ERR" >&2 || true
    rm -f "$CAPTURE_ERR"
    flock -u 9
}

# Unique names per run, so scenarios never collide with each other or with leftovers.
unique() { printf '%s-%s-%s' "$1" "$$" "$RANDOM"; }
