#!/usr/bin/env bash
# Soak benchmark (not a test): `amqptrace proxy` forwarding many short-lived
# connections and a long stream of deliveries (examples/soak_client.rs), with
# its JSON Lines timeline going to a file, while the proxy's RSS is sampled
# every 2 s and its live analysis reports how long each once-a-second tick
# took (AMQPTRACE_LOG=amqptrace::tick=debug). Memory must be bounded by what is
# in flight, and the tick must not grow with history: the script compares the
# first and the last tenth of the run (medians) and fails when either grew by
# more than 10 %.
#
#   scripts/bench-soak.sh [CONNECTIONS] [DELIVERIES] [MAX_SECONDS]
#   (defaults 200000 5000000 780)
#
# The broker is a private RabbitMQ node started here on free ports, with its
# own cookie, data and log directories (stopped on exit): the shared node on
# 5672 is not loaded. SOAK_UPSTREAM=host:port uses a broker of your own
# instead. Results go to target/soak/: rss.tsv, ticks.tsv, client.jsonl,
# proxy.stderr, summary.json (the timeline itself is deleted after its size is
# noted; SOAK_KEEP=1 keeps it).
set -euo pipefail

connections=${1:-200000}
deliveries=${2:-5000000}
max_secs=${3:-780}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/soak"
rm -rf "$out"
mkdir -p "$out"
bin="$root/target/release/amqptrace"
client="$root/target/release/examples/soak_client"
(cd "$root" && cargo build --release --quiet --bin amqptrace --example soak_client)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

node_pid=""
proxy_pid=""
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
    if [ -n "$node_pid" ]; then
        kill -TERM "$node_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$node_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [ -n "${SOAK_UPSTREAM:-}" ]; then
    upstream=$SOAK_UPSTREAM
else
    node="$out/node"
    mkdir -p "$node/home" "$node/mnesia" "$node/log"
    echo '[].' >"$node/enabled_plugins"
    : >"$node/env.conf"
    printf 'log.console = false\nlog.file.level = warning\n' >"$node/rabbitmq.conf"
    printf 'amqptracesoak%s' "$$" >"$node/home/.erlang.cookie"
    chmod 400 "$node/home/.erlang.cookie"
    port=$(free_port)
    dist=$(free_port)
    HOME="$node/home" RABBITMQ_CONF_ENV_FILE="$node/env.conf" \
        RABBITMQ_NODENAME="amqptrace-soak-$$@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" \
        RABBITMQ_CONFIG_FILE="$node/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$node/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$node/mnesia" RABBITMQ_LOG_BASE="$node/log" RABBITMQ_PID_FILE="$node/pid" \
        ERL_EPMD_ADDRESS=127.0.0.1 ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        /usr/lib/rabbitmq/bin/rabbitmq-server -detached
    for _ in $(seq 1 450); do
        [ -s "$node/pid" ] && node_pid=$(cat "$node/pid")
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
    [ -s "$node/pid" ] && node_pid=$(cat "$node/pid")
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "bench-soak: the private RabbitMQ did not start" >&2; exit 1; }
    upstream="127.0.0.1:$port"
fi
echo "bench-soak: broker $upstream"

# Four loopback listen addresses: four times the TCP 4-tuples for the churn.
AMQPTRACE_LOG=warn,amqptrace::tick=debug "$bin" proxy --upstream "$upstream" \
    --listen 127.0.0.1:0 --listen 127.0.0.2:0 --listen 127.0.0.3:0 --listen 127.0.0.4:0 \
    --format jsonl -o "$out/timeline.jsonl" --stall-after 600 2>"$out/proxy.stderr" &
proxy_pid=$!
for _ in $(seq 1 100); do
    [ "$(grep -c 'listening on' "$out/proxy.stderr" || true)" -ge 4 ] && break
    sleep 0.1
done
mapfile -t listen < <(sed -n 's/^amqptrace: listening on \([^,]*\),.*/\1/p' "$out/proxy.stderr")
[ ${#listen[@]} -eq 4 ] || { echo "bench-soak: proxy did not start:" >&2; cat "$out/proxy.stderr" >&2; exit 1; }
uris=()
for a in "${listen[@]}"; do uris+=(--uri "amqp://guest:guest@$a/%2f"); done

start=$(date +%s.%N)
(
    while kill -0 "$proxy_pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$proxy_pid/status" 2>/dev/null || true)
        [ -n "$rss" ] && printf '%.1f\t%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$rss"
        sleep 2
    done
) >"$out/rss.tsv" &
sampler=$!

# SOAK_DELIVERY_RATE (messages/s, default: the deliveries spread over 90 % of
# MAX_SECONDS) keeps the load even, so the first and last tenth are comparable.
rate=${SOAK_DELIVERY_RATE:-$((deliveries * 10 / (max_secs * 9)))}
"$client" "${uris[@]}" --connections "$connections" --deliveries "$deliveries" \
    --delivery-rate "$rate" --seconds "$max_secs" | tee "$out/client.jsonl"
secs=$(echo "$(date +%s.%N) - $start" | bc)
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$proxy_pid/stat")
kill -INT "$proxy_pid"
wait "$proxy_pid" || true
proxy_pid=""
wait "$sampler" 2>/dev/null || true

# Tick lines: "... DEBUG amqptrace::tick: live analysis micros=123 verdicts=4".
sed 's/\x1b\[[0-9;]*m//g' "$out/proxy.stderr" |
    sed -n 's/^\([^ ]*\) .*amqptrace::tick: live analysis micros=\([0-9]*\) verdicts=\([0-9]*\).*/\1\t\2\t\3/p' >"$out/ticks.tsv"
timeline_bytes=$(stat -c %s "$out/timeline.jsonl")
timeline_lines=$(wc -l <"$out/timeline.jsonl")
[ "${SOAK_KEEP:-0}" = 1 ] || rm -f "$out/timeline.jsonl"

python3 - "$out" "$secs" "$cpu" "$timeline_bytes" "$timeline_lines" <<'EOF'
import json, statistics, sys
out, secs, cpu, tl_bytes, tl_lines = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rss = [int(l.split('\t')[1]) for l in open(f"{out}/rss.tsv") if '\t' in l]
ticks = [(int(l.split('\t')[1]), int(l.split('\t')[2])) for l in open(f"{out}/ticks.tsv") if l.count('\t') == 2]
client = json.loads(open(f"{out}/client.jsonl").read().strip().splitlines()[-1])
def tenths(xs):
    n = max(1, len(xs) // 10)
    return statistics.median(xs[:n]), statistics.median(xs[-n:])
r0, r1 = tenths(rss)
t0, t1 = tenths([t for t, _ in ticks])
summary = {
    "secs": round(secs, 1), "proxy_cpu_s": cpu,
    "connections": client["connections"], "connect_errors": client["connect_errors"],
    "deliveries": client["deliveries"],
    "timeline_lines": tl_lines, "timeline_bytes": tl_bytes,
    "rss_samples": len(rss), "rss_first_tenth_kb": r0, "rss_last_tenth_kb": r1, "rss_max_kb": max(rss),
    "rss_growth_pct": round(100 * (r1 - r0) / r0, 1),
    "ticks": len(ticks), "tick_first_tenth_us": t0, "tick_last_tenth_us": t1, "tick_max_us": max(t for t, _ in ticks),
    "tick_growth_pct": round(100 * (t1 - t0) / max(t0, 1), 1),
    "verdicts_last_tick": ticks[-1][1] if ticks else None,
}
summary["flat"] = summary["rss_growth_pct"] <= 10 and summary["tick_growth_pct"] <= 10
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(summary))
sys.exit(0 if summary["flat"] else 1)
EOF
