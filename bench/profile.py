#!/usr/bin/env python3
"""Where the gateway's CPU goes on the request path: `perf record -g` on the pinned lmsvr under wrk.

Sets up exactly what bench/run.py measures (nginx mock on CPU 1, lmsvr pinned to CPU 0, the
small `/api/chat` body, a customer with a budget and per-token prices), warms up, then records
the gateway while wrk drives it, and prints the CPU per request of that run with perf's flat
(self) and inclusive (children) top entries. The perf data stays in --out for `perf report -i`.

    python3 bench/profile.py --bin-dir .build/release            # SQLite, c=64, 10 s
    python3 bench/profile.py --rung postgres -c 1 --seconds 20

Needs what bench/run.sh installs (wrk, nginx, PostgreSQL for the postgres rung) and `perf`.
Release binaries built with debug info resolve best: `swift build -c release -Xswiftc -g`.
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: mocks, tenants, gateways, wrk)


def report(data, children, limit):
    args = ["perf", "report", "-i", data, "--stdio", "--sort", "symbol", "--percent-limit", str(limit), "-g", "none"]
    args += ["--children"] if children else ["--no-children"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line.strip() and not line.startswith("#"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(run.ROOT, ".build/release"))
    ap.add_argument("--rung", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--body", choices=["small", "big", "openai"], default="small")
    ap.add_argument("--frequency", type=int, default=1999, help="perf samples per second")
    ap.add_argument("--percent-limit", type=float, default=0.8)
    ap.add_argument("--out", default="/tmp/lmsvr-perf.data")
    args = ap.parse_args()
    for tool in ("wrk", "taskset", "perf", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"profile: {tool} is missing")
    harness = run.tool_harness(args.bin_dir)
    try:
        rung, _ = run.start_one_rung(harness, args.rung)
        if args.body == "openai":
            harness.rungs[rung]["path"] = "/v1/chat/completions"
        harness.wrk(rung, args.body, args.concurrency, 3)  # warm-up: caches, connections, JIT-free but page-ins
        pid = harness.rungs[rung]["pids"][0]
        perf = subprocess.Popen(["perf", "record", "-F", str(args.frequency), "-g", "-p", str(pid), "-o", args.out,
                                 "--", "sleep", str(args.seconds + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        result = harness.wrk(rung, args.body, args.concurrency, args.seconds)
        perf.wait(timeout=args.seconds + 60)
        print(f"{rung}, {args.body} body, c={args.concurrency}, {args.seconds} s: {result['rps']:,.0f} req/s, "
              f"p50 {result['p50_us']:,} us, gateway CPU {result.get('cpu_us_per_req', 0):,.0f} us per request"
              + (f" (+{result['db_cpu_us_per_req']:,.0f} us PostgreSQL)" if "db_cpu_us_per_req" in result else ""))
        print("\n== self (where the samples are) ==")
        print(report(args.out, children=False, limit=args.percent_limit))
        print("\n== children (what each function costs with what it calls) ==")
        print(report(args.out, children=True, limit=max(args.percent_limit, 2.0)))
        print(f"\nperf data: {args.out}")
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
