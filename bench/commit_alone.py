#!/usr/bin/env python3
"""The durable commit alone: what one fsync'd commit of one small row costs on this machine.

    bench/commit_alone.py sqlite PATH [--count 1000]
    bench/commit_alone.py postgres URL [--seconds 3]

Issue 14's latency goal is "added p50 at c=1 at most 0.3 ms beyond the one durable commit the
settle needs"; this measures that commit with nothing of lmsvr around it, one after another
(concurrency 1), so bench/run.py can report both figures and the difference.

- sqlite: Python's `sqlite3` (the same system libsqlite3 lmsvr links), a file in the directory
  given, WAL with `synchronous = FULL` as lmsvr opens it; each commit is BEGIN, one INSERT of a
  100-byte row, COMMIT, timed on this side.
- postgres: `pgbench` over TCP, one client, one INSERT of a 100-byte row per transaction (an
  autocommit, `synchronous_commit` as the server has it); per-transaction latencies from its log.

Prints one JSON object: count, p50_us, p99_us, mean_us. Run it pinned (`taskset -c 0`) where the
system under test runs.
"""
import argparse
import glob
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROW = "x" * 100


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def summary(latencies_us):
    return dict(count=len(latencies_us), p50_us=percentile(latencies_us, 50), p99_us=percentile(latencies_us, 99),
                mean_us=round(statistics.fmean(latencies_us), 1))


def sqlite_commits(directory, count):
    path = os.path.join(directory, "commit-alone.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS commit_alone (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    latencies = []
    for n in range(count + count // 10):
        start = time.perf_counter_ns()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO commit_alone (payload) VALUES (?)", (ROW,))
        db.execute("COMMIT")
        if n >= count // 10:  # the first tenth warms the file and the page cache
            latencies.append((time.perf_counter_ns() - start) / 1000)
    db.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    return summary(latencies)


def postgres_commits(url, seconds):
    psql = ["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    subprocess.run(psql + ["CREATE TABLE IF NOT EXISTS commit_alone (id bigserial PRIMARY KEY, payload text NOT NULL)"],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="lmsvr-commit-alone.") as work:
        script = os.path.join(work, "insert.sql")
        with open(script, "w") as f:
            f.write(f"INSERT INTO commit_alone (payload) VALUES ('{ROW}');\n")
        # -n: no vacuum of pgbench's own tables (there are none); --log: one line per transaction,
        # its third field the latency in microseconds.
        subprocess.run(["pgbench", "-n", "-c", "1", "-T", "1", "-f", script, url], check=True, capture_output=True)
        subprocess.run(["pgbench", "-n", "-c", "1", "-T", str(seconds), "-f", script, "--log",
                        f"--log-prefix={work}/tx", url], check=True, capture_output=True, cwd=work)
        latencies = []
        for log in glob.glob(f"{work}/tx*"):
            with open(log) as f:
                latencies += [int(line.split()[2]) for line in f if line.strip()]
    subprocess.run(psql + ["DROP TABLE IF EXISTS commit_alone"], capture_output=True)
    if not latencies:
        sys.exit("commit_alone: pgbench logged no transactions")
    return summary(latencies)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("database", choices=["sqlite", "postgres"])
    ap.add_argument("where", help="sqlite: a directory on the disk the gateway's file is on; postgres: a URL")
    ap.add_argument("--count", type=int, default=1000, help="sqlite: commits timed")
    ap.add_argument("--seconds", type=int, default=3, help="postgres: seconds of pgbench")
    args = ap.parse_args()
    if args.database == "sqlite":
        result = sqlite_commits(args.where, args.count)
    else:
        result = postgres_commits(args.where, args.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
