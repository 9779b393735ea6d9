#!/usr/bin/env bash
# Static musl builds of examples/echo_server, one per backend: each is
# built, checked to be statically linked, and run briefly against a
# loopback client (one message echoed back, then SIGTERM, which it must
# obey). .ci/run calls it; it needs `rustup target add
# x86_64-unknown-linux-musl` (Rust's musl targets bring their own libc
# and crt files, so no musl-gcc is needed). See ci/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/examples/echo_server

# musl_check NAME: the binary just built must be static and echo.
musl_check() {
    local name=$1 log port pid reply
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
    log=$(mktemp)
    "$BIN" 0 2>"$log" &
    pid=$!
    # Bounded wait for the "listening on 127.0.0.1:PORT" line (port 0:
    # the kernel picks a free one, nothing collides with other jobs).
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        if grep -q "io_uring" "$log"; then
            # A kernel or sandbox without io_uring: say so, loudly.
            echo "SKIPPED musl $name run: $(cat "$log")"
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            rm -f "$log"
            return 0
        fi
        cat "$log" >&2
        echo "musl $name: echo_server did not start" >&2
        exit 1
    fi
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'pinion-musl-%s' "$name" >&3
    reply=
    read -r -t 10 -N $((12 + ${#name})) reply <&3 || true
    exec 3<&-
    kill -TERM "$pid"
    wait "$pid"
    cat "$log"
    rm -f "$log"
    [[ $reply == "pinion-musl-$name" ]] || {
        echo "musl $name: echoed '$reply'" >&2
        exit 1
    }
    echo "musl $name: static, echoes, stops on SIGTERM"
}

cargo build --release --target "$TARGET" --example echo_server
musl_check epoll
cargo build --release --target "$TARGET" --no-default-features --features uring --example echo_server
musl_check uring
