#!/usr/bin/env python3
"""Sustained load: the same closed loop as bench/run.py, round after round, for minutes.

    python3 bench/soak.py --bin-dir .build/release [--database postgres] [-c 64] [--rounds 10] [--seconds 15]

The full run's phases last seconds, too short to see what builds up under load that never stops:
on PostgreSQL every request inserts a hold and deletes it, so between two autovacuum runs (a
minute apart by default) the holds table keeps tens of thousands of dead rows. Each round prints
requests/s, p50, the gateway's and PostgreSQL's CPU per request, and the holds table's dead rows,
heap and index sizes and autovacuum count (on SQLite: the database's and its WAL's sizes), so a
slope shows. (Migration 0012 came from this: a sequential scan in the batch settle read the whole
bloated heap once per batch, and throughput fell ~40 % within a minute.)

Sets up what bench/run.py does (nginx mock on CPU 1, lmsvr pinned to CPU 0, the small
`/api/chat` body, a customer with a budget and per-token prices, PostgreSQL of its own, defaults
with fsync, pinned to CPU 0 with the gateway).
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def holds_state(url):
    """dead rows, heap bytes, index bytes and autovacuum runs of the holds table."""
    out = subprocess.run(["psql", url, "-Atc",
                          "SELECT n_dead_tup, pg_relation_size('holds'), pg_indexes_size('holds'), autovacuum_count "
                          "FROM pg_stat_user_tables WHERE relname = 'holds'"], capture_output=True, text=True).stdout
    dead, heap, index, vacuums = (int(x) for x in out.strip().split("|"))
    return f"holds: {dead:>7,} dead, heap {heap / 2**20:5.1f} MiB, index {index / 2**20:5.1f} MiB, autovacuums {vacuums}"


def sqlite_state(path):
    """the database file's and its write-ahead log's sizes."""
    size = lambda p: os.path.getsize(p) / 2**20 if os.path.exists(p) else 0.0  # noqa: E731
    return f"database {size(path):6.1f} MiB, WAL {size(path + '-wal'):6.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=".build/release")
    ap.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=15)
    args = ap.parse_args()
    h = run.tool_harness(args.bin_dir)
    try:
        rung, url = run.start_one_rung(h, args.database)
        for i in range(args.rounds):
            r = h.wrk(rung, "small", args.concurrency, args.seconds)
            line = (f"round {i:>2}: {r['rps']:>6,.0f} req/s  p50 {r['p50_us'] / 1000:6.2f} ms  "
                    f"CPU/req {r.get('cpu_us_per_req', 0):4.0f} us")
            if args.database == "postgres":
                line += f" + db {r.get('db_cpu_us_per_req', 0):4.0f} us  {holds_state(url)}"
            else:
                line += f"  {sqlite_state(os.path.join(h.work, 'lmsvr.db'))}"
            print(line, flush=True)
    finally:
        h.stop()


if __name__ == "__main__":
    main()
