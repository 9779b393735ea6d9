#!/usr/bin/env bash
# The project's test command (README's second command; CI runs it too).
# Runs the whole suite on every backend and feature set users build.
set -euo pipefail
cd "$(dirname "$0")"

echo "== workspace, default features (epoll), with reactor counters"
cargo test --workspace --features stats

echo "== epoll with the pipe interrupter"
cargo test -p pinion --features pipe-interrupter,stats --test conformance

echo "== both backends side by side (conformance suite runs once per backend), heapless buffers, embedded-io, the examples against real peers"
cargo test -p pinion --features uring,stats,heapless,embedded-io

echo "== io_uring alone"
cargo test -p pinion --no-default-features --features uring,stats

echo "== the fault injector's schedule (reproducible, per site, within budget)"
cargo test -p pinion-sys --features fault-injection --lib fault

echo "== io_uring closes parked by failed submissions, forced with the fault injector (the features scripts/faults.sh builds)"
cargo test -p pinion --features uring,stats,fault-injection --test uring_parked_close

echo "== miri: the backends' parts that need no kernel (descriptor states, SQE and CQE layouts), the fault schedule"
if cargo +nightly miri --version >/dev/null 2>&1; then
    cargo +nightly miri test -p pinion-epoll --lib
    cargo +nightly miri test -p pinion-uring --lib
    cargo +nightly miri test -p pinion-sys --features fault-injection --lib fault
else
    echo "SKIPPED miri: no nightly toolchain with miri here (rustup toolchain install nightly --component miri rust-src)"
fi
