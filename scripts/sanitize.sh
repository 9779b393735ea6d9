#!/usr/bin/env bash
# The workspace's tests under AddressSanitizer and ThreadSanitizer
# (nightly, -Zbuild-std so that std is instrumented too), both backends.
#
#   scripts/sanitize.sh            # address, then thread
#   scripts/sanitize.sh thread     # one of them
#
# Each sanitizer builds into its own target dir (target/san-<name>): the
# instrumented std is rebuilt once per sanitizer, then reused. Doctests and
# the example-process tests are left out (the former are not instrumented
# by -Zbuild-std, the latter start the examples as separate processes), and
# so is tests/memory.rs, which measures the process's memory.
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(rustc -vV | sed -n 's/^host: //p')
sanitizers=("${@:-address thread}")
# shellcheck disable=SC2206
sanitizers=(${sanitizers[*]})

# Integration tests of the pinion crate that run in-process.
pinion_tests=()
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    # example_*: separate processes; memory: RSS and locked-memory
    # figures, which the sanitizer's shadow memory swamps.
    case "$t" in example_* | memory) continue ;; esac
    pinion_tests+=(--test "$t")
done

# Symbolising a backtrace of an instrumented binary takes seconds per
# panic, and some tests panic on purpose (with watchdogs running).
export RUST_BACKTRACE=0

for san in "${sanitizers[@]}"; do
    echo "== sanitize: $san"
    export RUSTFLAGS="-Zsanitizer=$san"
    # TSan cannot see the io_uring hand-over through the kernel: this cfg
    # tells it (backend-uring, `tsan` module).
    [ "$san" = thread ] && RUSTFLAGS="$RUSTFLAGS --cfg pinion_tsan"
    export RUSTDOCFLAGS="$RUSTFLAGS"
    export CARGO_TARGET_DIR="target/san-$san"
    case "$san" in
    address)
        # Leaks are the intended kind in a few tests (leaked contexts,
        # 'static pools): not what this step looks for.
        export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
        ;;
    thread)
        # tsan.supp says why each entry is there.
        export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp"
        ;;
    esac
    cargo +nightly test -Zbuild-std --target "$target" \
        -p pinion-sys -p pinion-core -p pinion-sync -p pinion-epoll --lib --tests
    cargo +nightly test -Zbuild-std --target "$target" \
        -p pinion --features uring,stats --lib "${pinion_tests[@]}"
done
echo "sanitize: ${sanitizers[*]} clean"
