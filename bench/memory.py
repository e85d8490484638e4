#!/usr/bin/env python3
"""Resident memory of a herd server: per idle connection and per stored client.

Usage: memory.py --port PORT --pid PID [--idle N] [--clients M] [--name NAME]

Opens N idle TCP connections to the server on 127.0.0.1:PORT and reports the
growth of the server's VmRSS per connection; then closes them, sends one IAMAT
for each of M distinct clients (pipelined over a few connections, every reply
read and checked) and reports the growth per client. Prints one line of JSON
at the end, prefixed with RESULT. Works against any server of the protocol
(herd-node, bench/asyncio_herd.py, ...). Every wait is bounded.
"""

import argparse
import json
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def settle(pid, seconds=1.0):
    """RSS after it stops moving (bounded): the server may still be
    accepting or freeing when the client side is done."""
    deadline = time.monotonic() + seconds * 5
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(seconds / 4)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def open_idle(port, n, hello):
    socks = []
    t = time.time()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if hello:
            # One request first: the connection then holds a session too.
            s.sendall(b"IAMAT idle-%d +34.068930-118.445127 %.9f\n" % (i, t))
            if not s.recv(200).startswith(b"AT "):
                raise RuntimeError("unexpected reply to IAMAT")
        socks.append(s)
    # A round trip on the last one proves the server has accepted them all
    # (accepts are served in order on one listener).
    probe = socket.create_connection(("127.0.0.1", port), timeout=5)
    probe.sendall(b"PING\n")
    probe.recv(100)
    probe.close()
    return socks


def store_clients(port, m, name_prefix):
    conns = 8
    per = (m + conns - 1) // conns
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30)
             for _ in range(conns)]
    t = time.time()
    for c, s in enumerate(socks):
        lo, hi = c * per, min(m, (c + 1) * per)
        batch = []
        for i in range(lo, hi):
            batch.append("IAMAT %s%07d +34.068930-118.445127 %.9f\n"
                         % (name_prefix, i, t))
            if len(batch) == 2000 or i == hi - 1:
                data = "".join(batch).encode()
                s.sendall(data)
                expect = len(batch)
                got, buf = 0, b""
                while got < expect:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        raise RuntimeError("server closed the connection")
                    buf += chunk
                    got = buf.count(b"\n")
                if not buf.startswith(b"AT "):
                    raise RuntimeError("unexpected reply: %r" % buf[:80])
                batch = []
    for s in socks:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=0)
    ap.add_argument("--name", default="server")
    ap.add_argument("--hello", action="store_true",
                    help="send one IAMAT on each connection before idling")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    result = {"server": args.name}
    if args.idle:
        before = settle(args.pid)
        socks = open_idle(args.port, args.idle, args.hello)
        after = settle(args.pid)
        per = (after - before) * 1024 / args.idle
        result.update(idle_connections=args.idle, hello=args.hello,
                      rss_before_kib=before,
                      rss_idle_kib=after, bytes_per_idle_connection=round(per))
        print("%s: %d idle connections%s: RSS %d -> %d KiB, %.0f bytes each"
              % (args.name, args.idle,
                 " (after one IAMAT each)" if args.hello else "", before,
                 after, per))
        for s in socks:
            s.close()
    if args.clients:
        before = settle(args.pid)
        t0 = time.monotonic()
        store_clients(args.port, args.clients, "mem-client-")
        secs = time.monotonic() - t0
        after = settle(args.pid)
        per = (after - before) * 1024 / args.clients
        result.update(clients=args.clients, rss_before_clients_kib=before,
                      rss_clients_kib=after, bytes_per_client=round(per),
                      store_seconds=round(secs, 2))
        print("%s: %d clients stored in %.1f s: RSS %d -> %d KiB, %.0f bytes "
              "each" % (args.name, args.clients, secs, before, after, per))
    print("RESULT " + json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
