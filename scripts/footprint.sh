#!/usr/bin/env bash
# Measures pinion's footprint and writes it as markdown (docs/footprint.md
# by default): text sizes of nostd-echo and echo_server per backend and
# target, the bytes a Builder reserves (IoContext::memory), RSS per idle
# and per active connection, and heap allocations after start-up; the same
# for the peer servers of ../shared/bench where their binaries are given.
#
#     scripts/footprint.sh [OUT.md]
#
# Environment:
#   PEERS_DIR   the peer harness's build directory (BENCH_BUILD of
#               ../shared/bench, e.g. /tmp/bench-build, with bin/ and
#               cargo/release/); without it the peers' rows say "not
#               measured".
#   TARGETS     targets for the text sizes (default: the five below); one
#               that cannot be built here says so in its cell.
#   IDLE_CONNS  connections for the RSS figures (default 1000; nostd-echo
#               serves at most 256, so it gets 250).
#
# Needs: the cross setup of ci/cross-env.sh (`cross_install` once, as
# root), rustup's x86_64-unknown-linux-musl target, python3, valgrind
# (DHAT), ss and prlimit. Takes about 15 minutes on 2 busy cores, most of
# it the fat-LTO release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/footprint.md}
PEERS_DIR=${PEERS_DIR:-}
IDLE_CONNS=${IDLE_CONNS:-1000}
TARGETS=${TARGETS:-"x86_64-unknown-linux-gnu i686-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu x86_64-unknown-linux-musl"}
# shellcheck source=../ci/cross-env.sh
source ci/cross-env.sh
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# What is measured, stated before this script writes anything.
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' with local changes')"
MEASURE=scripts/footprint_measure.py
HOST=x86_64-unknown-linux-gnu
# 1000 connections plus the client's own ends, in one process tree.
ulimit -n 8192

log() { echo "footprint: $*" >&2; }

# text BINARY: bytes of its .text section (`size -A`), or "-".
text() {
    [[ -f $1 ]] || {
        echo "-"
        return
    }
    size -A "$1" | awk '$1 == ".text" { print $2 }'
}

# kib BYTES: "N (K.K KiB)", or the text unchanged when not a number.
kib() {
    if [[ $1 =~ ^[0-9]+$ ]]; then
        awk -v b="$1" 'BEGIN { printf "%d (%.1f KiB)", b, b / 1024 }'
    else
        echo "$1"
    fi
}

# build_nostd TARGET: copies nostd-echo for TARGET into $WORK.
build_nostd() {
    local t=$1
    if (cd examples/nostd-echo && cargo build --release --quiet --target "$t") >&2; then
        cp "examples/nostd-echo/target/$t/release/nostd-echo" "$WORK/nostd-echo-$t"
    else
        log "nostd-echo for $t: build failed"
    fi
}

# build_echo TARGET BACKEND: copies echo_server for TARGET into $WORK.
build_echo() {
    local t=$1 backend=$2 features=()
    [[ $backend == uring ]] && features=(--no-default-features --features uring)
    if cargo build --release --quiet --target "$t" "${features[@]}" --example echo_server >&2; then
        cp "target/$t/release/examples/echo_server" "$WORK/echo_server-$backend-$t"
    else
        log "echo_server $backend for $t: build failed"
    fi
}

for t in $TARGETS; do
    log "building for $t"
    build_nostd "$t"
    build_echo "$t" epoll
    build_echo "$t" uring
done

# Peers, where given.
declare -A PEER_CMD=()
PEERS=(tokio-ct monoio asio-epoll asio-uring raw-epoll)
if [[ -n $PEERS_DIR ]]; then
    PEER_CMD=(
        [tokio-ct]="$PEERS_DIR/cargo/release/tokio-echo {port}"
        [monoio]="$PEERS_DIR/cargo/release/monoio-echo {port}"
        [asio-epoll]="$PEERS_DIR/bin/asio-epoll {port}"
        [asio-uring]="$PEERS_DIR/bin/asio-uring {port}"
        [raw-epoll]="$PEERS_DIR/bin/raw-epoll {port}"
    )
fi
peer_bin() { echo "${PEER_CMD[$1]%% *}"; }

# The servers measured running, all on this machine's target.
SERVERS=(nostd-echo echo_server-epoll echo_server-uring "${PEERS[@]}")
server_cmd() {
    case $1 in
    nostd-echo) echo "$WORK/nostd-echo-$HOST {port}" ;;
    echo_server-*) echo "$WORK/$1-$HOST {port}" ;;
    *) echo "${PEER_CMD[$1]:-}" ;;
    esac
}

# The pools echo_server and nostd-echo build (their Builder calls).
ECHO_POOLS="--ops $((4 * 1024 + 64)) --descriptors $((1024 + 16)) --timers 8"
NOSTD_POOLS="--ops $((2 * 256 + 16)) --descriptors $((256 + 8)) --timers 2"
log "memory reports"
cargo build --release --quiet --features uring --example memory_report >&2
# shellcheck disable=SC2086 # word lists on purpose
ECHO_REPORT=$(target/release/examples/memory_report $ECHO_POOLS)
# shellcheck disable=SC2086
NOSTD_REPORT=$(target/release/examples/memory_report $NOSTD_POOLS | sed '/io_uring/,$d')

declare -A RSS=() ALLOCS=()
for s in "${SERVERS[@]}"; do
    cmd=$(server_cmd "$s")
    if [[ -z $cmd || ! -x ${cmd%% *} ]]; then
        RSS[$s]="not measured"
        ALLOCS[$s]="not measured"
        continue
    fi
    n=$IDLE_CONNS
    [[ $s == nostd-echo ]] && ((n > 250)) && n=250
    log "RSS of $s over $n connections"
    # shellcheck disable=SC2086
    RSS[$s]=$(python3 "$MEASURE" rss "$n" $cmd || echo "failed")
    log "heap allocations of $s under DHAT"
    # shellcheck disable=SC2086
    ALLOCS[$s]=$(python3 "$MEASURE" allocs $cmd 2>/dev/null ||
        echo "not measured: under valgrind it did not serve or did not stop on SIGTERM")
done

log "the counting-allocator tests"
NOALLOC_LOG=$WORK/no_alloc.log
cargo test -p pinion --features uring,stats --test no_alloc -- --test-threads 1 \
    >"$NOALLOC_LOG" 2>&1 || true
NOALLOC_RESULT=$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$NOALLOC_LOG" | tail -1 || echo "did not run (see cargo test)")

# field KEY LINE: the value of KEY=... in a footprint_measure.py line.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

{
    echo "# Footprint"
    echo
    echo "Produced by \`scripts/footprint.sh\` (rerun it to refresh this file) on"
    echo "$(date -u +%Y-%m-%d), commit $COMMIT,"
    echo "$(rustc --version), Linux $(uname -r), $(nproc) cores shared with other jobs."
    echo "Peers: ${PEERS_DIR:-not given (set PEERS_DIR)}."
    echo
    echo "## Text size"
    echo
    echo "Bytes of the \`.text\` section (\`size -A\`): machine code only, without"
    echo "read-only data, unwind tables or relocations, and without shared"
    echo "libraries (glibc targets link libc dynamically; musl builds are static,"
    echo "libc included). Release builds: echo_server with the workspace's profile"
    echo "(fat LTO, \`panic = \"abort\"\`, opt-level 3), nostd-echo with its own"
    echo "(\`opt-level = \"z\"\`). Goals for nostd-echo: 48 KiB on x86-64, 32 KiB on"
    echo "armv7."
    echo
    printf '| binary |'
    for t in $TARGETS; do printf ' %s |' "$t"; done
    echo
    printf '|---|'
    for _ in $TARGETS; do printf -- '---|'; done
    echo
    for row in nostd-echo echo_server-epoll echo_server-uring; do
        case $row in
        nostd-echo) printf '| nostd-echo (epoll, no_std, no_main) |' ;;
        echo_server-epoll) printf '| echo_server, epoll |' ;;
        echo_server-uring) printf '| echo_server, io_uring |' ;;
        esac
        for t in $TARGETS; do printf ' %s |' "$(kib "$(text "$WORK/$row-$t")")"; done
        echo
    done
    echo
    echo "Peers, x86-64 (their own binary; shared libraries such as Asio's"
    echo "libstdc++ and liburing, or libc, not counted):"
    echo
    echo "| peer | .text |"
    echo "|---|---|"
    for p in "${PEERS[@]}"; do
        b=$(peer_bin "$p")
        if [[ -n $b && -f $b ]]; then
            echo "| $p | $(kib "$(text "$b")") |"
        else
            echo "| $p | not measured |"
        fi
    done
    echo
    echo "## Reserved by the Builder"
    echo
    echo "\`IoContext::memory()\` for the pools echo_server builds"
    echo "(\`$ECHO_POOLS\`: 1024 connections):"
    echo
    echo '```text'
    echo "$ECHO_REPORT"
    echo '```'
    echo
    echo "and for nostd-echo's (\`$NOSTD_POOLS\`: 256 connections, in"
    echo "\`static\`s):"
    echo
    echo '```text'
    echo "$NOSTD_REPORT"
    echo '```'
    echo
    echo "Not in the report: the programs' own buffers, one 16 KiB buffer per"
    echo "connection (echo_server: a boxed pool of 1024, 16 MiB, written when it"
    echo "is made; nostd-echo: 256 in \`.bss\`, 4 MiB, touched as used)."
    echo
    echo "## Memory per connection, measured"
    echo
    echo "Resident memory (VmRSS) of the running server at start, then with N idle"
    echo "connections accepted (its listen queue empty), then after each of them"
    echo "echoed 64 bytes once; per connection = growth / N. Pages a server"
    echo "touched before the first connection (echo_server's buffer pool) are in"
    echo "the start figure, not per connection."
    echo
    echo "| server | N | RSS at start | per idle connection | per active connection |"
    echo "|---|---|---|---|---|"
    for s in "${SERVERS[@]}"; do
        r=${RSS[$s]}
        if [[ $r == *rss_start_kib=* ]]; then
            echo "| $s | $(field conns "$r") | $(field rss_start_kib "$r") KiB | $(field idle_bytes_per_conn "$r") B | $(field active_bytes_per_conn "$r") B |"
        else
            echo "| $s | | $r | | |"
        fi
    done
    echo
    echo "## Heap allocations after start-up"
    echo
    echo "**pinion, in-process** (a counting global allocator, each test after a"
    echo "warm-up, on both backends): \`cargo test -p pinion --features uring,stats"
    echo "--test no_alloc\`: $NOALLOC_RESULT; every test asserts 0 allocations:"
    echo
    grep -E '^test .* \.\.\. ' "$NOALLOC_LOG" | sed 's/^test \(.*\) \.\.\. \(.*\)$/- `\1`: \2/' || true
    echo
    echo "**Every server, from outside** (valgrind's DHAT counts every malloc; no"
    echo "LD_PRELOAD): heap blocks allocated in three runs, 8 connections x 100"
    echo "round trips (A), 8 x 600 (B), 40 x 100 (C); per message = (B - A) / 4000,"
    echo "per connection = (C - A - 3200 x per message) / 32."
    echo
    echo "| server | blocks A / B / C | per message | per connection |"
    echo "|---|---|---|---|"
    for s in "${SERVERS[@]}"; do
        a=${ALLOCS[$s]}
        if [[ $a == *per_msg=* ]]; then
            echo "| $s | $(field blocks_a "$a") / $(field blocks_b "$a") / $(field blocks_c "$a") | $(field per_msg "$a") | $(field per_conn "$a") |"
        else
            echo "| $s | $a | | |"
        fi
    done
} >"$OUT"
log "wrote $OUT"
