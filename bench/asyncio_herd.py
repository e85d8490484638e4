#!/usr/bin/env python3
"""A one-server herd in stdlib asyncio, as a point of comparison for herd-bench.

It speaks the client side of shared/protocol.md in the style of the original
asyncio assignment: asyncio.start_server, StreamReader.readline for every
line, StreamWriter.write for every reply.

  IAMAT <client> <location> <time>  ->  AT <name> <diff> <client> <location> <time>
      diff = receive time - client time, in integer nanoseconds, printed as
      +S.NNNNNNNNN / -S.NNNNNNNNN; the other fields are echoed verbatim. The
      AT line with the newest client time is stored per client.
  WHATSAT <client> <radius> <bound> ->  the stored AT line, then
      {"html_attributions":[],"results":[],"status":"ZERO_RESULTS"} and an
      empty line (there is no Places upstream here).
  anything else                     ->  "? " + the line as received
  blank lines                       ->  no reply

There are no peers: nothing is flooded. Stdlib only.

usage: python3 bench/asyncio_herd.py --port N [--name Ref] [--host 127.0.0.1]
"""

import argparse
import asyncio
import re
import signal
import socket
import sys
import time

PLACES_JSON = b'{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}'

# bytes.split() with no argument splits on exactly the six ASCII white-space
# bytes of the protocol (space, \t, \n, \v, \f, \r), never on Unicode space.
COORD = re.compile(rb"([+-])(\d+(?:\.\d+)?)([+-])(\d+(?:\.\d+)?)\Z")
TIME = re.compile(rb"(\d+)(?:\.(\d+))?\Z")
RADIUS = re.compile(rb"(\d+)(?:\.(\d+))?\Z")
BOUND = re.compile(rb"\d+\Z")

HIGH_WATER = 64 * 1024  # drain once this much output is buffered


def within(text, limit):
    """Exact check that |value| <= limit for decimal text (no float)."""
    whole, _, frac = text.partition(b".")
    w = int(whole)
    return w < limit or (w == limit and frac.strip(b"0") == b"")


def parse_location(text):
    m = COORD.match(text)
    if not m:
        return False
    return within(m.group(2), 90) and within(m.group(4), 180)


def parse_time_ns(text):
    m = TIME.match(text)
    if not m:
        return None
    frac = (m.group(2) or b"")[:9].ljust(9, b"0")
    return int(m.group(1)) * 1_000_000_000 + int(frac)


def valid_radius(text):
    m = RADIUS.match(text)
    if not m:
        return False
    whole, frac = int(m.group(1)), (m.group(2) or b"").rstrip(b"0")
    if whole == 0 and frac.strip(b"0") == b"":
        return False  # must be > 0
    return whole < 50 or (whole == 50 and frac == b"")


def format_diff(diff_ns):
    sign = "+" if diff_ns >= 0 else "-"
    s, ns = divmod(abs(diff_ns), 1_000_000_000)
    return "%s%d.%09d" % (sign, s, ns)


class Herd:
    def __init__(self, name):
        self.name = name.encode()
        self.clients = {}  # client id (bytes) -> (time_ns, AT line bytes)

    def answer(self, raw):
        """The reply bytes for one received line (terminator included)."""
        fields = raw.split()
        if not fields:
            return b""
        cmd = fields[0]
        if cmd == b"IAMAT" and len(fields) == 4:
            now = time.time_ns()
            client, where, when = fields[1], fields[2], fields[3]
            t = parse_time_ns(when)
            if t is not None and parse_location(where):
                at = b"AT %s %s %s %s %s" % (
                    self.name, format_diff(now - t).encode(), client, where, when)
                old = self.clients.get(client)
                if old is None or t > old[0]:
                    self.clients[client] = (t, at)
                return at + b"\n"
        elif cmd == b"WHATSAT" and len(fields) == 4:
            client, radius, bound = fields[1], fields[2], fields[3]
            stored = self.clients.get(client)
            if (stored is not None and valid_radius(radius)
                    and BOUND.match(bound) and int(bound) <= 20):
                return stored[1] + b"\n" + PLACES_JSON + b"\n\n"
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r") and raw.endswith(b"\n"):
            line = line[:-1]
        return b"? " + line + b"\n"

    async def serve(self, reader, writer):
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    break  # a line over the StreamReader limit: give up
                if not raw:
                    break
                reply = self.answer(raw)
                if reply:
                    writer.write(reply)
                    if writer.transport.get_write_buffer_size() > HIGH_WATER:
                        await writer.drain()
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="TCP port (0: any free one)")
    ap.add_argument("--name", default="Ref", help="server name in AT lines (default Ref)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = ap.parse_args()
    herd = Herd(args.name)
    # The listen backlog of the other servers (asyncio's default is 100: a
    # burst of connects beyond it waits for SYN retransmissions).
    server = await asyncio.start_server(herd.serve, args.host, args.port,
                                        backlog=socket.SOMAXCONN)
    port = server.sockets[0].getsockname()[1]
    print("asyncio_herd: %s listening on %s:%d" % (args.name, args.host, port), flush=True)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None))
    async with server:
        await stop


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
