#!/usr/bin/env bash
# Soak: each backend's echo_server under mixed load on loopback, then its
# RSS and descriptor count compared before, during and after; writes
# docs/soak.md. Bounded: minutes (two release builds, then CYCLES
# connection cycles per backend; every wait has a limit).
#
#   scripts/soak.sh            # 100,000 cycles per backend
#   CYCLES=5000 scripts/soak.sh  # a short run
#
# The load client (scripts/soak_client.py, Python stdlib) checks every
# echoed byte; see its header for the five kinds of cycle. The server
# runs with a small --max-conns so that connections held by the client
# fill its pool now and then (refusals are counted, not errors).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
CYCLES=${CYCLES:-100000}
WORKERS=${WORKERS:-32}
MAX_CONNS=${MAX_CONNS:-64}
SEED=${SEED:-1}
# Connections the client holds open at once (its "burst" cycles): with
# the workers' own, a little over MAX_CONNS, so the pool fills now and then.
HOLD=${HOLD:-36}
out=$(mktemp -d /tmp/pinion-soak.XXXXXX)
trap 'kill "${server_pid:-}" 2>/dev/null || true' EXIT

echo "soak: building echo_server for both backends (release)"
cargo build -q --release --example echo_server
cp target/release/examples/echo_server "$out/echo_epoll"
CARGO_TARGET_DIR=target/soak-uring cargo build -q --release --no-default-features --features uring --example echo_server
cp target/soak-uring/release/examples/echo_server "$out/echo_uring"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

rows=()
for backend in epoll uring; do
    log="$out/$backend.log"
    "$out/echo_$backend" 0 --threads 2 --max-conns "$MAX_CONNS" 2>"$log" &
    server_pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "soak: $backend server did not start: $(cat "$log")"
        rows+=("| $backend | did not start: $(tr '\n' ' ' <"$log") | | | | | |")
        continue
    fi
    rss0=$(rss "$server_pid"); fd0=$(fds "$server_pid")
    echo "soak: $backend on port $port: $CYCLES cycles, $WORKERS workers, --max-conns $MAX_CONNS"
    python3 scripts/soak_client.py --port "$port" --cycles "$CYCLES" --workers "$WORKERS" \
        --seed "$SEED" --hold "$HOLD" >"$out/$backend.json" &
    client=$!
    rss_peak=$rss0; fd_peak=$fd0; samples=0
    while kill -0 "$client" 2>/dev/null; do
        r=$(rss "$server_pid"); f=$(fds "$server_pid")
        ((r > rss_peak)) && rss_peak=$r
        ((f > fd_peak)) && fd_peak=$f
        samples=$((samples + 1))
        sleep 1
    done
    client_rc=0; wait "$client" || client_rc=$?
    # After: the server closes what the client closed; wait (bounded) for
    # its descriptors to come back to where they started.
    for _ in $(seq 100); do
        [ "$(fds "$server_pid")" -le "$fd0" ] && break
        sleep 0.1
    done
    rss1=$(rss "$server_pid"); fd1=$(fds "$server_pid")
    kill -TERM "$server_pid"; server_rc=0; wait "$server_pid" || server_rc=$?
    server_pid=""
    stats=$(cat "$out/$backend.json")
    echo "soak: $backend: $stats"
    get() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))" <<<"$stats"; }
    rows+=("| $backend | $(get cycles) | $(get seconds) | $(get echo) / $(get half) / $(get reset) / $(get slow) / $(get burst) | $(get refused) | $(get errors) | $rss0 / $rss_peak / $rss1 | $fd0 / $fd_peak / $fd1 | $server_rc |")
    if [ "$client_rc" != 0 ] || [ "$server_rc" != 0 ] || [ "$fd1" -gt "$fd0" ]; then
        failed="$backend"
        python3 -c "import json,sys; [print('  ', e) for e in json.load(sys.stdin)['error_samples']]" <<<"$stats"
    fi
done

{
    echo "# Soak: both backends' echo servers under mixed load"
    echo
    echo "Written by \`scripts/soak.sh\` ($(date -u +%Y-%m-%d), $(uname -r), $(nproc) cores, commit $(git rev-parse --short HEAD))."
    echo "Each backend's \`echo_server\` (release, \`--threads 2 --max-conns $MAX_CONNS\`) on loopback, against"
    echo "\`scripts/soak_client.py\` ($WORKERS workers, seed $SEED): connection cycles that echo and close, half-close,"
    echo "reset mid-echo, read slowly, or hold the connection so the server's pool fills (refusals counted)."
    echo "Every echoed byte is checked. RSS (KiB) and open descriptors of the server are sampled before the load,"
    echo "every second during it (peak shown), and after it once the client has closed everything."
    echo
    echo "| backend | cycles | s | echo / half / reset / slow / burst | refused | errors | RSS KiB before / peak / after | fds before / peak / after | exit on SIGTERM |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    if [ -n "${failed:-}" ]; then
        echo "**Failed** on $failed (errors, a descriptor not given back, or a bad exit); logs in \`$out\`."
    else
        echo "No echo error, no descriptor left open after the load, and a clean exit on SIGTERM on both."
    fi
} >docs/soak.md
cat docs/soak.md
[ -z "${failed:-}" ]
