#!/usr/bin/env python3
"""Memory and heap figures of one echo server, for scripts/footprint.sh.

    footprint_measure.py rss N CMD...     # RSS idle and active over N connections
    footprint_measure.py allocs CMD...    # heap blocks per message and per connection

CMD is the server's command line; "{port}" in it is replaced by a free
loopback port. Every server speaks the benchmark echo protocol (every byte
sent comes back). Output: one line of key=value pairs.

rss: VmRSS of the server at start, after N idle connections were accepted
(its listen queue is empty), and after each of them echoed 64 bytes once;
per-connection figures are the growth divided by N.

allocs: the server under valgrind's DHAT (no LD_PRELOAD: valgrind replaces
malloc itself), three runs: 8 connections x 100 round trips, 8 x 600, and
40 x 100. Heap blocks per message = (B - A) / 4,000; per connection =
(C - A - 3,200 x per message) / 32. Both are 0 for a server that allocates
nothing after start-up.
"""

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

MSG = bytes(range(64))
LIMIT = 60.0  # seconds for any one wait (valgrind is slow)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd, port, **kw):
    argv = [a.replace("{port}", str(port)) for a in cmd]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kw)
    end = time.monotonic() + LIMIT
    while time.monotonic() < end:
        if p.poll() is not None:
            sys.exit(f"footprint_measure: {argv[0]} exited with {p.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    sys.exit(f"footprint_measure: {argv[0]} never listened on {port}")


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(LIMIT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def accept_queue(port):
    """Connections waiting in the listen queue (ss: Recv-Q of LISTEN)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True
    ).stdout.split()
    return int(out[1]) if len(out) > 1 else 0


def connect_all(port, n):
    conns = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(c)
    end = time.monotonic() + LIMIT
    while accept_queue(port) > 0:
        if time.monotonic() > end:
            sys.exit("footprint_measure: the server left connections unaccepted")
        time.sleep(0.02)
    return conns


def echo_once(conns):
    for c in conns:
        c.sendall(MSG)
    for c in conns:
        got = b""
        while len(got) < len(MSG):
            part = c.recv(len(MSG) - len(got))
            if not part:
                sys.exit("footprint_measure: the server closed a connection")
            got += part
        if got != MSG:
            sys.exit("footprint_measure: the echo differs")


def rss(n, cmd):
    port = free_port()
    p = start(cmd, port, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    r0 = rss_kib(p.pid)
    conns = connect_all(port, n)
    time.sleep(0.3)
    r1 = rss_kib(p.pid)
    echo_once(conns)
    time.sleep(0.3)
    r2 = rss_kib(p.pid)
    for c in conns:
        c.close()
    stop(p)
    print(
        f"conns={n} rss_start_kib={r0} rss_idle_kib={r1} rss_active_kib={r2} "
        f"idle_bytes_per_conn={(r1 - r0) * 1024 // n} "
        f"active_bytes_per_conn={(r2 - r0) * 1024 // n}"
    )


def dhat_blocks(cmd, conns, rounds):
    port = free_port()
    vg = ["valgrind", "--tool=dhat", "--dhat-out-file=/dev/null"]
    p = start(vg + cmd, port, stderr=subprocess.PIPE)
    cs = connect_all(port, conns)
    for _ in range(rounds):
        echo_once(cs)
    for c in cs:
        c.close()
    # Let the server see every close before it is stopped.
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    # A server blocked in io_uring_enter does not see the signal under
    # valgrind until the call returns: a connection wakes it.
    for _ in range(20):
        if p.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        time.sleep(0.1)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    err = err.decode(errors="replace")
    m = re.search(r"Total:\s+([\d,]+) bytes in ([\d,]+) blocks", err)
    if not m:
        sys.exit("footprint_measure: no DHAT total in:\n" + err[-2000:])
    return int(m.group(2).replace(",", ""))


def allocs(cmd):
    a = dhat_blocks(cmd, 8, 100)
    b = dhat_blocks(cmd, 8, 600)
    c = dhat_blocks(cmd, 40, 100)
    per_msg = (b - a) / (8 * 500)
    per_conn = (c - a - per_msg * 32 * 100) / 32
    print(
        f"blocks_a={a} blocks_b={b} blocks_c={c} "
        f"per_msg={per_msg:.3f} per_conn={per_conn:.2f}"
    )


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "rss":
        rss(int(sys.argv[2]), sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "allocs":
        allocs(sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
