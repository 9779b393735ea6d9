#!/usr/bin/env bash
# examples/nostd-echo, the no_std no_main echo server: built with a plain
# `cargo build --release` in its folder for x86-64 and for armv7, each
# checked against its text size goal (the .text section, `size -A`), and
# each run once against a loopback client (one message echoed, then
# SIGTERM, which must end it with status 0); armv7 under qemu-user.
# .ci/run calls it after `cross_install`; see ci/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross-env.sh
source ci/cross-env.sh

DIR=examples/nostd-echo
ARMV7=armv7-unknown-linux-gnueabihf

# check_text NAME BINARY LIMIT_BYTES: the .text section fits the goal.
check_text() {
    local name=$1 bin=$2 limit=$3 text
    text=$(size -A "$bin" | awk '$1 == ".text" { print $2 }')
    echo "nostd-echo $name: .text $text bytes (goal <= $limit)"
    ((text <= limit)) || {
        echo "nostd-echo $name: .text $text bytes is over its goal of $limit" >&2
        exit 1
    }
}

# echo_once NAME COMMAND...: runs the server on a free port, echoes one
# message through it, stops it with SIGTERM; it must exit 0.
echo_once() {
    local name=$1 log port pid reply status=0
    shift
    log=$(mktemp)
    "$@" 0 2>"$log" &
    pid=$!
    port=
    for _ in $(seq 100); do # bounded: 10 s
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        cat "$log" >&2
        echo "nostd-echo $name: did not start" >&2
        exit 1
    fi
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'pinion-nostd-%s' "$name" >&3
    reply=
    read -r -t 10 -N $((13 + ${#name})) reply <&3 || true
    exec 3<&-
    kill -TERM "$pid"
    wait "$pid" || status=$?
    cat "$log"
    rm -f "$log"
    [[ $reply == "pinion-nostd-$name" ]] || {
        echo "nostd-echo $name: echoed '$reply'" >&2
        exit 1
    }
    ((status == 0)) || {
        echo "nostd-echo $name: exit status $status after SIGTERM" >&2
        exit 1
    }
    echo "nostd-echo $name: echoes, stops on SIGTERM with status 0"
}

(cd "$DIR" && cargo build --release)
check_text x86_64 "$DIR/target/release/nostd-echo" $((48 * 1024))
echo_once x86_64 "$DIR/target/release/nostd-echo"

(cd "$DIR" && cargo build --release --target "$ARMV7")
check_text armv7 "$DIR/target/$ARMV7/release/nostd-echo" $((32 * 1024))
# shellcheck disable=SC2086 # the runner is a command line
echo_once armv7 $CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER "$DIR/target/$ARMV7/release/nostd-echo"
