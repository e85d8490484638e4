#!/usr/bin/env python3
"""Plots the sweep section of scripts/bench.sh.

Usage: plot_bench.py [--results bench/results] [--out docs/bench-throughput.png]

Reads <results>/sweep-<server>-d<depth>.json (and machine.json, for the
title) and draws IAMAT throughput (log scale) against requests in flight per
connection, one line per server. Needs matplotlib (Debian: python3-matplotlib).
"""

import argparse
import glob
import json
import os
import re
import sys

LABELS = {
    "node": "herd-node (log off, 1 thread)",
    "node-log": "herd-node (log on, 1 thread)",
    "epoll": "epoll-reference (C, no validation)",
    "asyncio": "asyncio (Python)",
}
STYLE = {"node": "o-", "node-log": "v-", "epoll": "s--", "asyncio": "^-"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--out", default="docs/bench-throughput.png")
    args = ap.parse_args()

    runs = {}
    for path in glob.glob(os.path.join(args.results, "sweep-*-d*.json")):
        m = re.fullmatch(r"sweep-(.+)-d(\d+)\.json", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            r = json.load(f)
        runs.setdefault(m.group(1), []).append(r)
    if not runs:
        print("plot_bench: no sweep-*.json in %s" % args.results,
              file=sys.stderr)
        return 1

    machine = {}
    try:
        with open(os.path.join(args.results, "machine.json")) as f:
            machine = json.load(f)
    except (OSError, ValueError):
        pass

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench: needs matplotlib (Debian: python3-matplotlib, for "
              "/usr/bin/python3)", file=sys.stderr)
        return 1

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    order = [s for s in ("epoll", "node", "node-log", "asyncio") if s in runs]
    order += sorted(s for s in runs if s not in order)
    conns = set()
    for server in order:
        pts = sorted(runs[server], key=lambda r: r["depth"])
        conns.update(r["connections"] for r in pts)
        label = LABELS.get(server, server)
        threads = pts[0].get("node_threads")
        if threads:
            label = label.replace("1 thread", "%d thread%s" % (
                threads, "" if threads == 1 else "s"))
        ax.plot([r["depth"] for r in pts], [r["throughput"] for r in pts],
                STYLE.get(server, "o-"), label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    depths = sorted({r["depth"] for rs in runs.values() for r in rs})
    ax.set_xticks(depths)
    ax.set_xticklabels([str(d) for d in depths])
    ax.set_xlabel("requests in flight per connection (depth)")
    ax.set_ylabel("IAMAT replies per second (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    title = "IAMAT throughput vs pipelining depth, %s connections, loopback" % (
        "/".join(str(c) for c in sorted(conns)))
    any_run = next(iter(runs.values()))[0]
    pinning = ("server on core %s, herd-bench on core %s" % (
        any_run["server_pinning"].split()[-1],
        any_run["bench_pinning"].split()[-1])
               if any_run.get("server_pinning", "unpinned") != "unpinned"
               and any_run.get("bench_pinning", "unpinned") != "unpinned"
               else "not pinned")
    if machine:
        title += "\n%s, %s cores, Linux %s; %s" % (
            machine.get("cpu", "?"), machine.get("cores", "?"),
            machine.get("kernel", "?"), pinning)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out)
    print("plot_bench: wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
