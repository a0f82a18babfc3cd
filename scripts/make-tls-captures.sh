#!/usr/bin/env bash
# Makes the AMQP-over-TLS captures that `amqptrace analyze --tls-keylog` is tested on:
# pika over TLS 1.2 and TLS 1.3 to a PRIVATE RabbitMQ node with a TLS listener, with
# the key log Python writes for SSLKEYLOGFILE.
#
#   captures/tls/NAME.pcapng          the scenario's traffic, encrypted
#   captures/tls/NAME.keylog          its NSS key log (test keys of a throw-away CA
#                                     and of this run only)
#   captures/tls/NAME.secrets.pcapng  the same capture with the key log injected as a
#                                     Decryption Secrets Block (editcap --inject-secrets)
#   captures/tls/NAME.expect.json     the expected verdicts, derived by
#                                     scripts/scenarios/expect.py with tshark decrypting
#                                     the capture with the key log as the oracle
#
# Usage: scripts/make-tls-captures.sh [NAME...]   (default: all; --list names them)
#
# Expectations are re-derived from a committed capture, without a broker, with
#   AMQPTRACE_BROKER_PORT=5681 AMQPTRACE_TLS_KEYLOG=captures/tls/NAME.keylog \
#       target/venv/bin/python scripts/scenarios/expect.py NAME --committed --out captures/tls
#
# The node is this script's own: certificates made by openssl in a temp dir, its own
# node name, ports, Erlang cookie (its own HOME), data and log directories, started
# with /usr/lib/rabbitmq/bin/rabbitmq-server -detached (the /usr/sbin wrapper switches
# user) and stopped in the EXIT trap, whatever happens. The node on 5672 is never
# touched. Needs root (tcpdump on lo), rabbitmq-server, openssl, tshark, editcap.
. "$(dirname "$0")/lib.sh"

SCENARIOS_DIR="$ROOT/scripts/scenarios"
OUT="$CAPTURES/tls"
RABBITMQ_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
# A fixed port (not 5671), so that the expectations name the same connection every
# run, and the captures need tshark's `-d tcp.port==P,tls -d tls.port==P,amqp`.
TLS_PORT=${AMQPTRACE_TLS_PORT:-5681}
# NAME -> TLS version and, for TLS 1.2, the one cipher suite the client offers
# (OpenSSL names): every record protection amqptrace decrypts has a capture.
declare -A VERSION=(
    [tls12-prefetch-exhausted]=1.2
    [tls12-aes128-healthy]=1.2
    [tls12-chacha20-healthy]=1.2
    [tls13-prefetch-exhausted]=1.3
    [tls13-healthy]=1.3
)
declare -A CIPHERS=(
    [tls12-prefetch-exhausted]=ECDHE-RSA-AES256-GCM-SHA384
    [tls12-aes128-healthy]=ECDHE-RSA-AES128-GCM-SHA256
    [tls12-chacha20-healthy]=ECDHE-RSA-CHACHA20-POLY1305
)
ALL=(tls12-prefetch-exhausted tls12-aes128-healthy tls12-chacha20-healthy
    tls13-prefetch-exhausted tls13-healthy)

if [ "${1:-}" = --list ]; then printf '%s\n' "${ALL[@]}"; exit 0; fi
SELECTED=("$@")
[ ${#SELECTED[@]} -eq 0 ] && SELECTED=("${ALL[@]}")
for s in "${SELECTED[@]}"; do
    [ -n "${VERSION[$s]:-}" ] || { log "unknown capture $s (see --list)"; exit 2; }
done

WORK=$(mktemp -d /tmp/amqptrace-tls.XXXXXX)
NODE="$WORK/node"
export PYTHONDONTWRITEBYTECODE=1
# The scenarios list the queues they declare here; they vanish with the private node.
export AMQPTRACE_QUEUE_LIST="$WORK/created-queues"
BG_PIDS=()
FAILED=()

node_pid() { cat "$NODE/pid" 2>/dev/null || true; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "${CAPTURE_PID:-}" ] && kill -0 "$CAPTURE_PID" 2>/dev/null; then capture_stop; fi
    for pid in "${BG_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    local pid
    pid=$(node_pid)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "stopping the private node (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    # epmd was started by the node for its own name only; the node on 5672 keeps its own registration.
    if [ "$rc" -eq 0 ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else log "work files kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

make_certificates() {
    local d=$1
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=amqptrace test CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/san.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 3650 -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null
    chmod 644 "$d"/*.key
}

start_node() {
    mkdir -p "$NODE"/{home,mnesia,log,certs}
    make_certificates "$NODE/certs"
    printf '[].\n' >"$NODE/enabled_plugins"
    : >"$NODE/env.conf"
    cat >"$NODE/rabbitmq.conf" <<CONF
listeners.tcp = none
listeners.ssl.1 = 127.0.0.1:$TLS_PORT
ssl_options.cacertfile = $NODE/certs/ca.pem
ssl_options.certfile = $NODE/certs/server.pem
ssl_options.keyfile = $NODE/certs/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
log.console = false
log.file.level = warning
CONF
    printf 'amqptracetls%s' "$$" >"$NODE/home/.erlang.cookie"
    chmod 400 "$NODE/home/.erlang.cookie"
    local dist
    dist=$(free_port)
    log "starting a private RabbitMQ node, TLS on 127.0.0.1:$TLS_PORT (dist $dist)"
    env HOME="$NODE/home" RABBITMQ_CONF_ENV_FILE="$NODE/env.conf" \
        RABBITMQ_NODENAME="amqptrace-tls-$$@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(free_port)" RABBITMQ_DIST_PORT="$dist" \
        RABBITMQ_CONFIG_FILE="$NODE/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$NODE/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$NODE/mnesia" RABBITMQ_LOG_BASE="$NODE/log" RABBITMQ_PID_FILE="$NODE/pid" \
        ERL_EPMD_ADDRESS=127.0.0.1 ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$RABBITMQ_SERVER" -detached </dev/null >/dev/null
    # Ready when it answers the protocol header with connection.start over TLS.
    for _ in $(seq 180); do
        if "$PY" - "$TLS_PORT" "$NODE/certs/ca.pem" <<'PY' 2>/dev/null; then return 0; fi
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        sys.exit(0 if s.recv(1) == b"\x01" else 1)
PY
        sleep 0.5
    done
    log "the private node did not start:"
    tail -n 30 "$NODE"/log/*.log >&2 || true
    return 1
}

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

run_capture() {
    local name=$1 dir="$WORK/$1" run pid rc=0
    run=$(unique r)
    run=${run#r-}
    mkdir -p "$dir"
    # A 64 MiB kernel buffer: with the default, tcpdump on lo drops packets even in small runs.
    capture_start "$dir/raw.pcap" "tcp port $TLS_PORT" --time-stamp-precision=nano -B 65536
    SSLKEYLOGFILE="$dir/keylog" AMQPTRACE_BROKER_PORT="$TLS_PORT" AMQPTRACE_TLS_CA="$NODE/certs/ca.pem" \
        AMQPTRACE_TLS_VERSION="${VERSION[$name]}" AMQPTRACE_TLS_CIPHERS="${CIPHERS[$name]:-}" \
        "$PY" "$SCENARIOS_DIR/tls_scenario.py" "$name" --dir "$dir" --run "$run" &
    pid=$!
    BG_PIDS+=("$pid")
    if ! wait_for "$dir/done" "$pid" 60; then
        log "$name: no result within 60 s"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    capture_stop
    touch "$dir/stop"
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "$name: the scenario failed (exit $rc); $OUT/$name.* left as they were"
        return 1
    fi
    # tshark decrypts with the key log (the oracle); the expectations name the TLS port.
    cp "$dir/keylog" "$OUT/$name.keylog"
    AMQPTRACE_BROKER_PORT="$TLS_PORT" AMQPTRACE_TLS_KEYLOG="$OUT/$name.keylog" \
        "$PY" "$SCENARIOS_DIR/expect.py" "$name" --dir "$dir" --pcap "$dir/raw.pcap" --out "$OUT"
    editcap --inject-secrets "tls,$OUT/$name.keylog" "$OUT/$name.pcapng" "$OUT/$name.secrets.pcapng"
}

ensure_venv
mkdir -p "$OUT"
start_node
T0=$(date +%s)
for name in "${SELECTED[@]}"; do
    t=$(date +%s)
    log "=== $name"
    if run_capture "$name"; then
        log "=== $name done in $(($(date +%s) - t)) s"
    else
        FAILED+=("$name")
    fi
done
log "all done in $(($(date +%s) - T0)) s; failed: ${FAILED[*]:-none}"
[ ${#FAILED[@]} -eq 0 ]
