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
# shellcheck source=echo-once.sh
source ci/echo-once.sh

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

(cd "$DIR" && cargo build --release)
check_text x86_64 "$DIR/target/release/nostd-echo" $((48 * 1024))
echo_once "nostd-echo x86_64" "" "$DIR/target/release/nostd-echo"

(cd "$DIR" && cargo build --release --target "$ARMV7")
check_text armv7 "$DIR/target/$ARMV7/release/nostd-echo" $((32 * 1024))
# shellcheck disable=SC2086 # the runner is a command line
echo_once "nostd-echo armv7" "" $CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER \
    "$DIR/target/$ARMV7/release/nostd-echo"
