#!/usr/bin/env python3
"""Load client of scripts/soak.sh: connection cycles against an echo server
on loopback, each checking every echoed byte.

Each cycle connects, sends a random payload and ends in one of five ways:
  echo   read it all back, close;
  half   shut down writing, read everything back to end-of-stream;
  reset  read back a random prefix, then reset (SO_LINGER 0);
  slow   a larger payload read back in small pieces with pauses;
  burst  hold the connection while the other workers' cycles go on (pushes
         the server to its --max-conns: its pool-full moments).
A connection the server refuses (closed or reset before any byte came
back) is counted as refused; any byte that differs from what was sent, or
an echo cut short, is an error. Reproducible from --seed (per worker).
Prints one JSON line of counts; exits 1 on any error.
"""
import argparse
import errno
import json
import random
import socket
import struct
import sys
import threading
import time

MODES = ["echo"] * 50 + ["half"] * 15 + ["reset"] * 15 + ["slow"] * 10 + ["burst"] * 10


def recv_exact(s, n, pieces=None, pause=0.0):
    """Up to n bytes (fewer only at end-of-stream)."""
    got = bytearray()
    while len(got) < n:
        want = n - len(got) if pieces is None else min(pieces, n - len(got))
        chunk = s.recv(want)
        if not chunk:
            break
        got += chunk
        if pause:
            time.sleep(pause)
    return bytes(got)


class Worker(threading.Thread):
    def __init__(self, idx, args, stats, lock, held):
        super().__init__(daemon=True)
        self.idx, self.args, self.stats, self.lock, self.held = idx, args, stats, lock, held
        self.rng = random.Random(args.seed * 1000 + idx)

    def count(self, key, n=1):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def error(self, cycle, mode, what):
        with self.lock:
            self.stats["errors"] = self.stats.get("errors", 0) + 1
            if len(self.stats["error_samples"]) < 10:
                self.stats["error_samples"].append(
                    f"worker {self.idx} cycle {cycle} ({mode}, seed {self.args.seed}): {what}")

    def run(self):
        for cycle in range(self.args.cycles_per_worker):
            mode = self.rng.choice(MODES)
            size = self.rng.randint(1, 65536 if mode == "slow" else 8192)
            payload = self.rng.randbytes(size)
            try:
                self.cycle(cycle, mode, payload)
            except (ConnectionResetError, BrokenPipeError):
                self.count("refused")
            except OSError as e:
                self.error(cycle, mode, repr(e))

    def cycle(self, cycle, mode, payload):
        s = socket.create_connection((self.args.host, self.args.port), timeout=30)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A few writes, so the server sees the payload in pieces.
            cuts = sorted(self.rng.sample(range(1, len(payload)), min(3, len(payload) - 1)))
            for a, b in zip([0] + cuts, cuts + [len(payload)]):
                s.sendall(payload[a:b])
            if mode == "half":
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError as e:
                    if e.errno != errno.ENOTCONN:
                        raise
                    # Already reset: the server refused it (pool full).
                    return self.count("refused")
            if mode == "reset":
                n = self.rng.randint(0, len(payload))
                back = recv_exact(s, n)
                if back != payload[:len(back)] or (len(back) < n and back):
                    return self.error(cycle, mode, f"{len(back)} of {n} bytes back, or other bytes")
                if not back and n:
                    return self.count("refused")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.count(mode)
                return
            if mode == "slow":
                back = recv_exact(s, len(payload), pieces=1024, pause=0.0005)
            else:
                back = recv_exact(s, len(payload))
            if not back:
                return self.count("refused")
            if back != payload:
                return self.error(cycle, mode, f"{len(back)} of {len(payload)} bytes back, or other bytes")
            if mode == "half":
                rest = s.recv(1)
                if rest:
                    return self.error(cycle, mode, "bytes after the echo of a half-closed stream")
            if mode == "burst":
                # Hold it while others cycle: with the other bursts held,
                # the server's connection pool fills up now and then.
                with self.lock:
                    self.held.append(s)
                    release = self.held[:-self.args.hold] if len(self.held) > self.args.hold else []
                    del self.held[:len(release)]
                for h in release:
                    h.close()
                s = None
            self.count(mode)
        finally:
            if s is not None:
                s.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cycles", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--hold", type=int, default=48, help="burst connections held at once")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.cycles_per_worker = args.cycles // args.workers
    stats = {"error_samples": []}
    lock, held = threading.Lock(), []
    t0 = time.monotonic()
    workers = [Worker(i, args, stats, lock, held) for i in range(args.workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for h in held:
        h.close()
    stats["cycles"] = args.cycles_per_worker * args.workers
    stats["seconds"] = round(time.monotonic() - t0, 1)
    stats["seed"] = args.seed
    print(json.dumps(stats, sort_keys=True))
    return 1 if stats.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
