#!/usr/bin/env bash
# The conformance suite (both backends) under seeded kernel faults
# (feature `fault-injection`, tests/util/faults.rs, sys/src/fault.rs).
#
# Seeds FIRST_SEED .. FIRST_SEED+SEEDS-1 (default: 200 seeds from a random
# start, printed). The suite's tests are partitioned across the seeds: seed
# s runs TESTS_PER_SEED tests, the next ones round-robin, each test in its
# own process (so the fd count and the panic verdict are its own), its
# schedule armed on the test's thread. A test passes, or fails with the
# error a surfacing fault injected ("FAULT SURFACED", accepted), or fails
# the run: its output and the command that replays it are printed.
#
#   scripts/faults.sh                     # 200 seeds, random start
#   FIRST_SEED=1234 SEEDS=10 scripts/faults.sh
#   ONLY=epoll::tcp SEEDS=50 scripts/faults.sh   # tests whose name contains it
#   SKIP= scripts/faults.sh                       # the race tests too
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-200}
FIRST_SEED=${FIRST_SEED:-$(( (RANDOM << 15 | RANDOM) ))}
TESTS_PER_SEED=${TESTS_PER_SEED:-6}
ONLY=${ONLY:-}
# The race tests hammer stale handles from several threads for seconds
# each; the schedule is armed on the test's thread only, so they add time
# and little else here.
SKIP=${SKIP:-::race::}
FEATURES=${FEATURES:-uring,stats,fault-injection}
out=${FAULTS_OUT:-$(mktemp -d /tmp/pinion-faults.XXXXXX)}
mkdir -p "$out"

bin=$(cargo test -p pinion --features "$FEATURES" --test conformance --no-run \
    --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "faults: could not build the conformance suite" >&2; exit 1; }

mapfile -t tests < <("$bin" --list 2>/dev/null | sed -n 's/: test$//p' | grep -F -- "$ONLY" | { if [ -n "$SKIP" ]; then grep -vF -- "$SKIP"; else cat; fi; })
n=${#tests[@]}
[ "$n" -gt 0 ] || { echo "faults: no test matches '$ONLY'" >&2; exit 1; }
echo "faults: seeds $FIRST_SEED..$((FIRST_SEED + SEEDS - 1)), $TESTS_PER_SEED of $n tests each, outputs in $out"

runs=0 passed=0 surfaced=0 failed=0 injected=0 start=$SECONDS
uring_enter=0 uring_late=0 uring_cancelled=0 uring_tiny=0
for ((i = 0; i < SEEDS; i++)); do
    seed=$((FIRST_SEED + i))
    for ((j = 0; j < TESTS_PER_SEED && j < n; j++)); do
        t=${tests[$(((i * TESTS_PER_SEED + j) % n))]}
        log="$out/$seed-${t//::/-}.log"
        runs=$((runs + 1))
        if PINION_FAULT_SEED=$seed timeout 120 "$bin" --exact "$t" --test-threads=1 >"$log" 2>&1; then
            passed=$((passed + 1))
        elif grep -q "FAULT SURFACED:" "$log" && ! grep -q "AUDIT FAILED" "$log"; then
            surfaced=$((surfaced + 1))
        else
            failed=$((failed + 1))
            echo "---- FAILED: $t under seed $seed ($log)"
            tail -40 "$log"
            echo "replay: PINION_FAULT_SEED=$seed $bin --exact $t --test-threads=1 --nocapture"
        fi
        # The FAULTS line may follow libtest's "test ... " on one line.
        k=$(sed -n 's/.*FAULTS .* seed [0-9]*: \([0-9]*\) injected.*/\1/p' "$log" | awk '{n += $1} END {print n + 0}')
        injected=$((injected + k))
        u=$(sed -n 's/.*io_uring: \([0-9]*\) enter faults, \([0-9]*\) late, \([0-9]*\) cancelled, tiny ring \([0-9]*\).*/\1 \2 \3 \4/p' "$log" |
            awk '{e += $1; l += $2; c += $3; t += $4} END {print e + 0, l + 0, c + 0, t + 0}')
        read -r ue ul uc ut <<<"$u"
        uring_enter=$((uring_enter + ue)) uring_late=$((uring_late + ul))
        uring_cancelled=$((uring_cancelled + uc)) uring_tiny=$((uring_tiny + ut))
    done
done
echo "faults: $runs runs in $((SECONDS - start)) s: $passed passed, $surfaced failed with the injected error (accepted), $failed failed; $injected faults injected"
echo "faults: io_uring: $uring_enter io_uring_enter faults, $uring_late late completions, $uring_cancelled completions turned -ECANCELED, $uring_tiny tiny rings"
[ "$failed" -eq 0 ]
