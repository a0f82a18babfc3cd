#!/usr/bin/env bash
# Makes the captures under captures/ (not captures/failures/) against the real
# RabbitMQ on 127.0.0.1:5672 with real clients: lapin (examples/lapin_client.rs)
# and pika (scripts/clients/, from the virtualenv lib.sh makes). Idempotent:
# each run rewrites the same files; what each file shows is in captures/README.md.
#
#   scripts/make-captures.sh                  every committed capture
#   scripts/make-captures.sh NAME...          only these, e.g. `lossy ipv6`
#   scripts/make-captures.sh --large          target/captures/large.pcap, >= 200 MiB
#   scripts/make-captures.sh --large-small-segments
#                                             target/captures/large-small-segments.pcap
#   scripts/make-captures.sh --storm          target/captures/storm.pcap, >= 100 MiB: a
#                                             nack/requeue storm of tiny frames
#
# Needs root (tcpdump, ip netns, nft), socat, and tshark, editcap, mergecap and
# capinfos to build and check the files. LAPIN_CLIENT=PATH runs an already built
# lapin_client instead of building it; LARGE_BYTES overrides the large size,
# STORM_SECONDS (8) and STORM_BYTES (100 MiB) the storm's.
. "$(dirname "$0")/lib.sh"

WORK=$(mktemp -d /tmp/amqptrace-captures.XXXXXX)
BROKER_URI="amqp://guest:guest@127.0.0.1:5672/%2f"
SOCAT_PIDS=()
NETNS=()
# A 64 MiB kernel buffer (-B, KiB): with the default one, tcpdump here drops
# packets ("dropped by kernel") even from a 150-packet run.
BUF=(-B 65536)
ALL=(lapin-basic pika-basic mid-connection any-sll2 mixed-linktypes ipv6 port-15672 lossy snaplen-80)

cleanup() {
    local rc=$?
    [ -n "${CAPTURE_PID:-}" ] && kill -INT "$CAPTURE_PID" 2>/dev/null || true
    for pid in "${SOCAT_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lapin_client() {
    if [ -z "${LAPIN_CLIENT:-}" ]; then
        log "building examples/lapin_client.rs"
        (cd "$ROOT" && cargo build --quiet --release --example lapin_client)
        LAPIN_CLIENT="$ROOT/target/release/examples/lapin_client"
    fi
    "$LAPIN_CLIENT" "$@"
}

# start_socat LISTEN ARGS...: starts socat in the background and waits until
# it listens on LISTEN: a TCP port (PORT, or PORT@NETNS inside a namespace) or
# a UNIX socket (a path).
start_socat() {
    local listen=$1 ss=(ss)
    shift
    "$@" &
    SOCAT_PIDS+=("$!")
    local pid=$!
    if [[ $listen == *@* ]]; then
        ss=(ip netns exec "${listen#*@}" ss)
        listen=${listen%@*}
    fi
    for _ in $(seq 100); do
        if [[ $listen =~ ^[0-9]+$ ]]; then
            "${ss[@]}" -ltnH "sport = :$listen" | grep -q . && return 0
        else
            [ -S "$listen" ] && return 0
        fi
        kill -0 "$pid" 2>/dev/null || { log "socat for $listen exited"; return 1; }
        sleep 0.05
    done
    log "socat never listened on $listen"
    return 1
}

stop_socats() {
    for pid in "${SOCAT_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SOCAT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    SOCAT_PIDS=()
}

port_is_free() { ! ss -ltnH "sport = :$1" | grep -q .; }

# Lost segments in a capture (tcpdump drops, not the lossy link's own drops).
holes_in() {
    tshark -r "$1" -Y 'tcp.analysis.lost_segment or tcp.analysis.ack_lost_segment' 2>/dev/null | wc -l
}

# The number of TCP connections in a capture: a capture picks up whatever else
# talks to the broker at that moment, so each one is checked and made again.
streams_in() { tshark -r "$1" -T fields -e tcp.stream 2>/dev/null | sort -u | grep -c . || true; }

# --- the scenarios; each writes the capture to the path given as $1 ---------

cap_lapin_basic() {
    capture_start "$1" "tcp port 5672" "${BUF[@]}"
    lapin_client basic --uri "$BROKER_URI" --queue "$(unique amqptrace-lapin-basic)"
    capture_stop
}

cap_pika_basic() {
    # tcpdump writes pcap only; editcap turns it into pcapng keeping the
    # nanosecond resolution (if_tsresol = 9).
    capture_start "$WORK/pika.pcap" "tcp port 5672" --time-stamp-precision=nano "${BUF[@]}"
    "$PY" "$ROOT/scripts/clients/pika_basic.py" --queue "$(unique amqptrace-pika-basic)"
    capture_stop
    editcap -F pcapng "$WORK/pika.pcap" "$1"
}

cap_mid_connection() {
    local ready="$WORK/mid.ready" go="$WORK/mid.go"
    rm -f "$ready" "$go"
    # Hold the capture lock while the client sets up, so its first packets do
    # not land in someone else's capture; the client must not inherit fd 9.
    exec 9>"$CAPTURE_LOCK"
    flock 9
    lapin_client wait-then-run --uri "$BROKER_URI" --queue "$(unique amqptrace-mid)" \
        --ready "$ready" --go "$go" --messages 15 9>&- &
    local client=$!
    for _ in $(seq 600); do
        [ -e "$ready" ] && break
        kill -0 "$client" 2>/dev/null || break
        sleep 0.05
    done
    [ -e "$ready" ] || { wait "$client" || true; log "mid-connection client never got ready"; return 1; }
    capture_start "$1" "tcp port 5672" "${BUF[@]}"
    touch "$go"
    wait "$client"
    capture_stop
}

cap_any_sll2() {
    # `-i any` writes LINUX_SLL2 (276) with this tcpdump/libpcap; -y makes it certain.
    capture_start "$1" "tcp port 5672" -i any -y LINUX_SLL2 "${BUF[@]}"
    lapin_client simple --uri "$BROKER_URI" --queue "$(unique amqptrace-sll2)" --messages 10 --size 200
    capture_stop
}

cap_mixed_linktypes() {
    capture_start "$WORK/mixed-sll2.pcap" "tcp port 5672" -i any -y LINUX_SLL2 "${BUF[@]}"
    "$PY" "$ROOT/scripts/clients/pika_simple.py" --queue "$(unique amqptrace-mixed-a)" --messages 5
    capture_stop
    capture_start "$WORK/mixed-eth.pcap" "tcp port 5672" "${BUF[@]}"
    lapin_client simple --uri "$BROKER_URI" --queue "$(unique amqptrace-mixed-b)" --messages 5
    capture_stop
    mergecap -F pcapng -w "$1" "$WORK/mixed-sll2.pcap" "$WORK/mixed-eth.pcap"
}

cap_ipv6() {
    # lapin's URI parser maps IP literals to "localhost", so pika drives this one.
    port_is_free 5682 || { log "port 5682 is taken"; return 1; }
    start_socat 5682 socat TCP6-LISTEN:5682,bind=[::1],reuseaddr,fork TCP4:127.0.0.1:5672
    capture_start "$1" "ip6 and tcp port 5682" "${BUF[@]}"
    "$PY" "$ROOT/scripts/clients/pika_simple.py" --host ::1 --port 5682 \
        --queue "$(unique amqptrace-ipv6)" --messages 10 --size 300
    capture_stop
    stop_socats
}

cap_port_15672() {
    port_is_free 15672 || { log "port 15672 is taken"; return 1; }
    start_socat 15672 socat TCP4-LISTEN:15672,bind=127.0.0.1,reuseaddr,fork TCP4:127.0.0.1:5672
    capture_start "$1" "tcp port 15672" "${BUF[@]}"
    lapin_client basic --uri "amqp://guest:guest@127.0.0.1:15672/%2f" --queue "$(unique amqptrace-port)"
    capture_stop
    stop_socats
}

cap_lossy() {
    # Client and broker sides in network namespaces of their own, joined by a
    # router namespace whose nftables forward hook drops ~4% of the packets of
    # port 5682. A drop in the sender's own output hook would not do: TCP hears
    # of it at once and sends the segment again as if for the first time, so
    # no loss shows. The capture is on the router's interface to the broker
    # side: client->broker packets there have passed the drops (holes, then
    # the retransmissions); broker->client ones have not yet (a dropped one
    # shows, then shows again). The broker is reached through a UNIX socket,
    # which crosses namespaces. pika is the client: lapin's URI parser maps IP
    # literals to "localhost".
    local c s r ns sock="$WORK/lossy.sock"
    c=$(unique amqptrace-lossy-c)
    r=$(unique amqptrace-lossy-r)
    s=$(unique amqptrace-lossy-s)
    for ns in "$c" "$r" "$s"; do
        ip netns add "$ns"
        NETNS+=("$ns")
    done
    ip link add c0 netns "$c" type veth peer name rc netns "$r"
    ip link add s0 netns "$s" type veth peer name rs netns "$r"
    ip -n "$c" addr add 10.77.1.2/24 dev c0
    ip -n "$r" addr add 10.77.1.1/24 dev rc
    ip -n "$r" addr add 10.77.2.1/24 dev rs
    ip -n "$s" addr add 10.77.2.2/24 dev s0
    ip -n "$c" link set lo up # pika makes its wake-up socket pair on 127.0.0.1
    ip -n "$c" link set c0 up
    ip -n "$r" link set rc up
    ip -n "$r" link set rs up
    ip -n "$s" link set s0 up
    ip -n "$c" route add default via 10.77.1.1
    ip -n "$s" route add default via 10.77.2.1
    ip netns exec "$r" sysctl -q -w net.ipv4.ip_forward=1
    ip netns exec "$r" nft -f - <<'EOF'
table inet lossy {
    chain forward {
        type filter hook forward priority 0; policy accept;
        tcp dport 5682 numgen random mod 100 < 4 drop
        tcp sport 5682 numgen random mod 100 < 4 drop
    }
}
EOF
    start_socat "$sock" socat "UNIX-LISTEN:$sock,fork" TCP4:127.0.0.1:5672
    # `ip netns exec` execs socat in place, so its pid is socat's.
    start_socat "5682@$s" ip netns exec "$s" socat \
        TCP4-LISTEN:5682,bind=10.77.2.2,reuseaddr,fork "UNIX-CONNECT:$sock"
    CAPTURE_PREFIX="ip netns exec $r" capture_start "$1" "tcp port 5682" -i rs "${BUF[@]}"
    ip netns exec "$c" "$PY" "$ROOT/scripts/clients/pika_simple.py" --host 10.77.2.2 --port 5682 \
        --queue "$(unique amqptrace-lossy)" --messages 120 --size 2000
    capture_stop
    stop_socats
    for ns in "${NETNS[@]}"; do ip netns del "$ns"; done
    NETNS=()
}

cap_snaplen_80() {
    capture_start "$1" "tcp port 5672" -s 80 "${BUF[@]}"
    lapin_client simple --uri "$BROKER_URI" --queue "$(unique amqptrace-snaplen)" --messages 10 --size 500
    capture_stop
}

# make_capture NAME FILE STREAMS: runs cap_NAME until its capture holds exactly
# STREAMS TCP connections and no packet tcpdump missed (3 tries), then moves it
# into captures/. A failing client or tool stops the script (set -e).
make_capture() {
    local name=$1 file=$2 want=$3 got holes
    local fn="cap_${name//-/_}"
    for attempt in 1 2 3; do
        log "$name (attempt $attempt)"
        rm -f "$WORK/$file"
        "$fn" "$WORK/$file"
        got=$(streams_in "$WORK/$file")
        holes=$(holes_in "$WORK/$file")
        if [ "$got" != "$want" ]; then
            log "$name: $got TCP connections, expected $want (someone else used the broker?)"
        elif [ "$name" = lossy ]; then
            local retrans
            retrans=$(tshark -r "$WORK/$file" -Y tcp.analysis.retransmission 2>/dev/null | wc -l)
            log "lossy: $retrans retransmissions, $holes segments seen missing"
            if [ "$retrans" -ge 5 ]; then
                mv "$WORK/$file" "$CAPTURES/$file"
                return 0
            fi
        elif [ "$holes" != 0 ]; then
            log "$name: tcpdump missed packets"
        else
            mv "$WORK/$file" "$CAPTURES/$file"
            return 0
        fi
    done
    log "$name: giving up"
    return 1
}

capture_file() {
    case $1 in
        lapin-basic) echo "lapin-basic.pcap 1" ;;
        pika-basic) echo "pika-basic.pcapng 1" ;;
        mid-connection) echo "mid-connection.pcap 1" ;;
        any-sll2) echo "any-sll2.pcap 1" ;;
        mixed-linktypes) echo "mixed-linktypes.pcapng 2" ;;
        ipv6) echo "ipv6.pcap 1" ;;
        port-15672) echo "port-15672.pcap 1" ;;
        lossy) echo "lossy.pcap 1" ;;
        snaplen-80) echo "snaplen-80.pcap 1" ;;
        *) return 1 ;;
    esac
}

# --- the large captures, for the benchmark (not committed) -------------------

# make_large FILE FILTER URI: runs the lapin load (8 busy + 2 idle connections,
# heartbeat 5 s) under tcpdump until FILE reaches LARGE_BYTES.
make_large() {
    local file=$1 filter=$2 uri=$3
    local want=${LARGE_BYTES:-$((200 * 1024 * 1024))}
    local stop="$WORK/large.stop"
    mkdir -p "$(dirname "$file")"
    rm -f "$file" "$stop"
    # Buffered, with a big kernel buffer (-B, KiB): at this rate tcpdump in
    # immediate mode drops a quarter of the packets.
    CAPTURE_BUFFERED=1 capture_start "$file" "$filter" -B 262144
    local start=$SECONDS
    lapin_client load --uri "$uri" --connections 8 --idle-connections 2 --size 100 \
        --large-every 100 --large-size 32768 --stop-file "$stop" --seconds 600 \
        --queue-prefix "$(unique amqptrace-large)" &
    local client=$!
    while kill -0 "$client" 2>/dev/null; do
        [ "$(stat -c %s "$file")" -ge "$want" ] && touch "$stop"
        sleep 0.2
    done
    wait "$client"
    capture_stop
    log "$file: $(stat -c %s "$file") bytes in $((SECONDS - start)) s"
    capinfos -c -E "$file" >&2
}

large() {
    make_large "$ROOT/target/captures/large.pcap" "tcp port 5672" "$BROKER_URI?heartbeat=5"
}

large_small_segments() {
    # Two socats in a row copy at most 100 bytes a write with TCP_NODELAY, so on
    # the middle leg (port 5684) both directions come in segments of <= 100
    # bytes: frames split across many segments, the worst case for reassembly.
    local p
    for p in 5683 5684; do port_is_free "$p" || { log "port $p is taken"; return 1; }; done
    start_socat 5684 socat -b 100 TCP4-LISTEN:5684,bind=127.0.0.1,reuseaddr,fork,nodelay \
        TCP4:127.0.0.1:5672,nodelay
    start_socat 5683 socat -b 100 TCP4-LISTEN:5683,bind=127.0.0.1,reuseaddr,fork,nodelay \
        TCP4:127.0.0.1:5684,nodelay
    make_large "$ROOT/target/captures/large-small-segments.pcap" "tcp port 5684" \
        "amqp://guest:guest@127.0.0.1:5683/%2f?heartbeat=5"
    stop_socats
}

# The storm: 12 connections, each publishing 3 small messages and answering every
# delivery with basic.nack(requeue=true) for STORM_SECONDS, so the broker redelivers
# them at once, tens of thousands of times: many tiny frames in each packet, the
# opposite of large.pcap. The run is then repeated in time (examples/scale_capture.rs,
# each copy on new ports) until it holds STORM_BYTES.
storm() {
    local file="$ROOT/target/captures/storm.pcap" once="$WORK/storm-once.pcap"
    local want=${STORM_BYTES:-$((100 * 1024 * 1024))}
    mkdir -p "$(dirname "$file")"
    CAPTURE_BUFFERED=1 capture_start "$once" "tcp port 5672" -B 262144
    lapin_client load --uri "$BROKER_URI?heartbeat=5" --connections 12 --idle-connections 0 \
        --size 20 --batch 3 --nack-storm --seconds "${STORM_SECONDS:-8}" \
        --queue-prefix "$(unique amqptrace-storm)"
    capture_stop
    local size copies
    size=$(stat -c %s "$once")
    copies=$(((want + size - 1) / size))
    (cd "$ROOT" && cargo build --quiet --release --example scale_capture)
    "$ROOT/target/release/examples/scale_capture" "$once" "$file" "$copies"
    log "$file: $(stat -c %s "$file") bytes, $copies copies of $size"
    capinfos -c -E "$file" >&2
}

main() {
    if [[ ${1:-} == --large* || ${1:-} == --storm ]]; then
        lapin_client --help >/dev/null # build before the capture starts
    fi
    if [ "${1:-}" = --large ]; then
        large
        return
    fi
    if [ "${1:-}" = --storm ]; then
        storm
        return
    fi
    if [ "${1:-}" = --large-small-segments ]; then
        large_small_segments
        return
    fi
    local names=("$@")
    [ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
    for n in "${names[@]}"; do
        capture_file "$n" >/dev/null || { log "unknown capture $n (known: ${ALL[*]})"; return 2; }
    done
    ensure_venv
    # Build before the first capture, so no capture waits on cargo.
    lapin_client --help >/dev/null
    mkdir -p "$CAPTURES"
    local started=$SECONDS n file streams
    for n in "${names[@]}"; do
        read -r file streams < <(capture_file "$n")
        make_capture "$n" "$file" "$streams"
    done
    log "made ${#names[@]} captures in $((SECONDS - started)) s"
    local files=()
    for n in "${names[@]}"; do
        read -r file _ < <(capture_file "$n")
        files+=("$CAPTURES/$file")
    done
    capinfos -T -c -E -s "${files[@]}" >&2
}

main "$@"
