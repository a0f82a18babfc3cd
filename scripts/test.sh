#!/usr/bin/env bash
# The README's test command, and all that CI runs (.ci/run): on a Debian machine,
# installs what the tests need when it is missing, starts RabbitMQ when it is not
# running, makes the Python virtualenv of the real clients, then runs the whole suite.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh --test tests livecap::  # extra arguments go to `cargo test`
#
# Installing needs root (or sudo); with everything present it needs neither. The
# tests never skip for a missing tool: they fail with the command that installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

have() { command -v "$1" >/dev/null 2>&1; }
need=()
have tshark || need+=(tshark)                       # the decoding oracle
have tcpdump || need+=(tcpdump)                     # makes captures in scripts and tests
{ have mergecap && have editcap && have dumpcap; } || need+=(wireshark-common)
have amqp-publish || need+=(amqp-tools)             # rabbitmq-c, a strict client
have socat || need+=(socat)
have nft || need+=(nftables)
have chromium || [ -n "${CHROMIUM:-}" ] || need+=(chromium) # report.html in a real browser
[ -x /usr/bin/time ] || need+=(time)
have python3 || need+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
# capture -i loads libpcap at run time: the library only, never libpcap-dev.
/sbin/ldconfig -p 2>/dev/null | grep -qE 'libpcap\.so\.(0\.8|1) ' || need+=(libpcap0.8)
have rabbitmqctl || need+=(rabbitmq-server)

if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | "${SUDO[@]}" debconf-set-selections
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# RabbitMQ: start it when it is not answering.
if ! "${SUDO[@]}" rabbitmqctl -q status >/dev/null 2>&1; then
    echo "test.sh: starting rabbitmq-server"
    "${SUDO[@]}" rabbitmq-server -detached
    for _ in $(seq 60); do
        "${SUDO[@]}" rabbitmqctl -q await_startup >/dev/null 2>&1 && break
        sleep 1
    done
fi
"${SUDO[@]}" rabbitmqctl -q await_startup

# The real Python clients (pika, Dramatiq, …), in target/venv.
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_venv

echo "tshark: $(tshark --version | head -1)"
echo "rabbitmq: $("${SUDO[@]}" rabbitmqctl -q version)"

cargo test --release --locked "$@"
