#!/usr/bin/env bash
# Runs the cargo-fuzz targets for N seconds each (default 60):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Targets: frame_decoder (the sans-IO decoder), capture_reader (pcap/pcapng
# reading), analyzer (a capture file through reading, reassembly, decoding and
# the analyzer), proxy_tracer (the proxy's trace path: trace messages through
# Tracer::handle, the analyzer and the --pcap recorder).
# Seeds the corpora (fuzz/corpus/, gitignored) from captures/: the capture files
# themselves for capture_reader and analyzer, and their TCP payloads (via
# tshark, when installed) for frame_decoder (plus a few hand-made frames) and,
# as whole conversations, for proxy_tracer. Crashes and inputs slower than
# -timeout (10 s: a hang, e.g. exponential work) land in fuzz/artifacts/TARGET/;
# the script exits non-zero when a target finds one.
#
# Needs cargo-fuzz (installed with `cargo install cargo-fuzz --locked` when
# missing; FUZZ_NO_INSTALL=1 refuses instead). The toolchain is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only sanitizer flags.
# Built optimised with debug assertions (-O -a) so arithmetic overflow is a crash.
set -euo pipefail

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decoder capture_reader analyzer proxy_tracer)

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
export RUSTC_BOOTSTRAP=1
# Other builds share this machine: one job unless told otherwise.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

# A fresh machine has no cargo-fuzz: install it from crates.io (a few minutes,
# once), unless told not to.
if ! command -v cargo-fuzz >/dev/null; then
    if [ "${FUZZ_NO_INSTALL:-0}" = 1 ]; then
        echo "fuzz.sh: cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2
        exit 2
    fi
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

seed_capture_reader() {
    local dir="$fuzz/corpus/capture_reader"
    mkdir -p "$dir"
    # Keep seeds small: libFuzzer mutates within -max_len anyway.
    find "$root/captures" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -256k \
        -exec cp -n {} "$dir/" \; 2>/dev/null || true
}

seed_analyzer() {
    local dir="$fuzz/corpus/analyzer" f
    mkdir -p "$dir"
    # First byte: --stall-after in ms (100 here); then the capture file.
    while IFS= read -r -d '' f; do
        [ -e "$dir/seed-$(basename "$f")" ] ||
            { printf '\x64'; cat "$f"; } >"$dir/seed-$(basename "$f")"
    done < <(find "$root/captures" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -256k -print0)
}

seed_proxy_tracer() {
    local dir="$fuzz/corpus/proxy_tracer"
    mkdir -p "$dir"
    command -v tshark >/dev/null || return 0
    # Each capture's conversations as trace ops (see fuzz_targets/proxy_tracer.rs):
    # one data op per TCP payload, slot = stream % 4, direction from the port.
    local f
    while IFS= read -r -d '' f; do
        local out
        out="$dir/seed-$(basename "$f")"
        [ -e "$out" ] && continue
        tshark -r "$f" -Y 'tcp.len > 0' -T fields -e tcp.stream -e tcp.srcport -e tcp.payload 2>/dev/null | head -n 400 |
            while IFS=$'\t' read -r stream sport hex; do
                hex=${hex//:/}
                local len=$((${#hex} / 2)) dir_bit=0
                [ "$sport" = 5672 ] && dir_bit=4
                [ "$len" -gt 65535 ] && continue
                printf "\\x$(printf %02x $(((stream % 4) | dir_bit)))\\x$(printf %02x $((len >> 8)))\\x$(printf %02x $((len & 255)))"
                printf '%s' "$hex" | xxd -r -p
            done >"$out" || true
        [ -s "$out" ] || rm -f "$out"
    done < <(find "$root/captures" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -256k -print0)
}

seed_frame_decoder() {
    local dir="$fuzz/corpus/frame_decoder"
    mkdir -p "$dir"
    # First byte steers the target (chunk size, gaps...); then the stream.
    # Protocol header, heartbeat, connection.tune, basic.ack, basic.publish
    # with a content header and a body.
    printf '\x07AMQP\x00\x00\x09\x01\x08\x00\x00\x00\x00\x00\x00\xce' >"$dir/seed-header-heartbeat"
    printf '\x03\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c\xce' >"$dir/seed-tune"
    printf '\x41\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x07\x01\xce' >"$dir/seed-ack"
    printf '\x22\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x28\x00\x00\x04\x74\x65\x73\x74\x00\xce\x02\x00\x01\x00\x00\x00\x0e\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\xce\x03\x00\x01\x00\x00\x00\x05hello\xce' >"$dir/seed-publish"
    command -v tshark >/dev/null || return 0
    local f n=0
    while IFS= read -r -d '' f; do
        # One seed per TCP payload of each capture (AMQP segments mostly hold whole frames).
        tshark -r "$f" -Y 'tcp.len > 0' -T fields -e tcp.payload 2>/dev/null | head -n 200 |
            while IFS= read -r hex; do
                n=$((n + 1))
                { printf '\x00'; printf '%s' "${hex//:/}" | xxd -r -p; } >"$dir/seed-$(basename "$f")-$n"
            done || true # head closing the pipe early is expected
    done < <(find "$root/captures" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -8M -print0)
}

status=0
for t in "${targets[@]}"; do
    "seed_$t"
    echo "== $t: ${secs}s"
    (cd "$fuzz" && cargo fuzz run -O -a "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) || status=1
    # The analyzer target's scratch file (libFuzzer exits without cleaning up).
    rm -f /dev/shm/amqptrace-fuzz-analyzer-*.pcap "${TMPDIR:-/tmp}"/amqptrace-fuzz-analyzer-*.pcap
    echo "== $t: corpus $(find "$fuzz/corpus/$t" -type f | wc -l) inputs; artifacts: $(find "$fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)"
done
exit $status
