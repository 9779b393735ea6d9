# shellcheck shell=bash
# echo_once, for the CI scripts that check a built echo server: source it.
#
#     echo_once NAME SKIP_PATTERN COMMAND...
#
# Runs COMMAND with port 0 as its last argument (the kernel picks a free
# port, so nothing collides with other jobs), waits (bounded, 10 s) for its
# "listening on 127.0.0.1:PORT" line, echoes one message through it, stops
# it with SIGTERM, and fails unless the message came back and the exit
# status is 0. A server that did not start fails too, unless its log
# matches SKIP_PATTERN (e.g. "io_uring" where a kernel or sandbox lacks
# it): then it says SKIPPED, loudly, and returns 0.
echo_once() {
    local name=$1 skip=$2 log port pid msg reply status=0
    shift 2
    log=$(mktemp)
    "$@" 0 2>"$log" &
    pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
        [[ -n $port ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [[ -n $skip ]] && grep -q "$skip" "$log"; then
            echo "SKIPPED $name run: $(cat "$log")"
            rm -f "$log"
            return 0
        fi
        cat "$log" >&2
        echo "$name: did not start" >&2
        exit 1
    fi
    msg="pinion-echo-once-${name// /-}"
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '%s' "$msg" >&3
    reply=
    read -r -t 10 -N ${#msg} reply <&3 || true
    exec 3<&-
    kill -TERM "$pid"
    wait "$pid" || status=$?
    cat "$log"
    rm -f "$log"
    [[ $reply == "$msg" ]] || {
        echo "$name: echoed '$reply'" >&2
        exit 1
    }
    ((status == 0)) || {
        echo "$name: exit status $status after SIGTERM" >&2
        exit 1
    }
    echo "$name: echoes, stops on SIGTERM with status 0"
}
