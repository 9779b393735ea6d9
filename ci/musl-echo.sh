#!/usr/bin/env bash
# Static musl builds of examples/echo_server, one per backend: each is
# built, checked to be statically linked, and run briefly against a
# loopback client (one message echoed back, then SIGTERM, which it must
# obey). .ci/run calls it; it needs `rustup target add
# x86_64-unknown-linux-musl` (Rust's musl targets bring their own libc
# and crt files, so no musl-gcc is needed). See ci/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=echo-once.sh
source ci/echo-once.sh

TARGET=x86_64-unknown-linux-musl
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/examples/echo_server

# musl_check NAME: the binary just built must be static and echo.
musl_check() {
    local name=$1
    file "$BIN"
    # `file` says "statically linked" or "static-pie linked"; ldd prints
    # "not a dynamic executable" or "statically linked" for both.
    file "$BIN" | grep -Eq 'static(-pie)? linked' || {
        echo "musl $name: echo_server is not static" >&2
        exit 1
    }
    if ldd "$BIN" 2>&1 | grep -q '=>'; then
        echo "musl $name: echo_server links shared libraries:" >&2
        ldd "$BIN" >&2
        exit 1
    fi
    # A kernel or sandbox without io_uring: the run is skipped, loudly.
    echo_once "musl $name" io_uring "$BIN"
    echo "musl $name: static"
}

cargo build --release --target "$TARGET" --example echo_server
musl_check epoll
cargo build --release --target "$TARGET" --no-default-features --features uring --example echo_server
musl_check uring
