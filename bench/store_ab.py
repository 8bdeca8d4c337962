#!/usr/bin/env python3
"""Two builds of the store A/B, interleaved: `store-bench` (hold + settle pairs against the store
alone, no HTTP) from each build, pinned to CPU 0, alternating rounds, each on a fresh SQLite file
(or PostgreSQL database URL given), medians of pairs per second and of CPU per pair. For one
change at a time on the database thread's path, where a few microseconds are lost in the whole
gateway's noise (`bench/ab.py`) but not here.

    cp .build/release/store-bench /tmp/before/     # then change, rebuild
    python3 bench/store_ab.py --before /tmp/before --after .build/release [--tasks 16] [--rounds 6]

CPU per pair is the store-bench process's user + system time over its pairs (its own thread
plus SQLite's, on one core); with `--url postgresql://...` it is the client's side only.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile


def one_round(binary, url, tasks, pairs, customers):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["taskset", "-c", "0", binary, url, "--tasks", str(tasks), "--pairs", str(pairs),
                          "--customers", str(customers)], capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"store_ab: {binary} failed: {out.stderr.strip()}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return result["pairs_per_second"], cpu / pairs * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="directory holding `store-bench` before the change")
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--customers", type=int, default=1)
    ap.add_argument("--url", help="a PostgreSQL URL (each round uses it as it is); default: a fresh SQLite file per round")
    args = ap.parse_args()
    results = {"before": [], "after": []}
    for _ in range(args.rounds):
        for name in ("before", "after"):
            binary = os.path.join(getattr(args, name), "store-bench")
            work = tempfile.mkdtemp(prefix="store-ab-")
            try:
                url = args.url or f"sqlite:///{work}/store.db"
                results[name].append(one_round(binary, url, args.tasks, args.pairs, args.customers))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    for name in ("before", "after"):
        rounds = results[name]
        print(f"{name:6} {statistics.median(r[0] for r in rounds):>9,.0f} pairs/s  "
              f"CPU/pair {statistics.median(r[1] for r in rounds):6.1f} us  "
              f"(rounds: {', '.join(f'{r[1]:.0f}' for r in rounds)})")


if __name__ == "__main__":
    main()
