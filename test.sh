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
