#!/usr/bin/env python3
"""The floors of the libraries lmsvr is built on, measured as bench/run.py measures lmsvr: the
system under test pinned to CPU 0, wrk and the nginx mock on CPU 1, interleaved rounds, CPU per
request from /proc.

Rungs: nginx `proxy_pass` (R1); `bench-floor` (a 40-line Hummingbird app) answering `GET /`
alone; the same app forwarding `POST /api/chat` with AsyncHTTPClient and returning the answer
whole, with Swift Concurrency on its default executor and on NIO's event loops; the same forward
with lmsvr's lean client (`HTTP1Pool`, NIO executor), and again with jobs run as the generic
executor on those loops (`--loop-executor`, as `lmsvr serve` runs them); and lmsvr on SQLite (R2: auth, price,
hold, settle, ledger row).

    swift build -c release --product bench-floor      # with lmsvr, bench-driver, lmsvr-fake-upstream
    python3 bench/floors.py --bin-dir .build/release [--rounds 5] [--seconds 4]
"""
import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def wrk_get(url, pids, concurrency, seconds):
    """wrk's own GET (no script), with the pids' CPU over the run."""
    before = run.cpu_ticks(pids)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    after = run.cpu_ticks(pids)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p50_us = float(p50.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[p50.group(2)]
    return dict(rps=rps, p50_us=p50_us, cpu_us_per_req=(after - before) * 1e6 / run.TICKS / max(1, requests))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(run.ROOT, ".build/release"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=4)
    args = ap.parse_args()
    h = run.tool_harness(args.bin_dir)
    try:
        h.start_mocks()
        h.start_proxy()
        h.create_tenant("R2 sqlite", f"sqlite:///{h.work}/lmsvr.db")
        h.set_phase("answers")
        upstream = f"http://127.0.0.1:{h.answer_mock}"
        for name, extra in (("forward, default executor", []), ("forward, NIO executor", ["--nio-executor"]),
                            ("forward, lean client", ["--nio-executor", "--lean"]),
                            ("forward, lean client, generic", ["--loop-executor", "--lean"])):
            port = run.free_port()
            proc = h.spawn([f"{args.bin_dir}/bench-floor", str(port), upstream, *extra], cpu=0, log_name=f"floor-{port}.log")
            run.wait_http(f"http://127.0.0.1:{port}/")
            h.rungs[name] = dict(url=f"http://127.0.0.1:{port}", pids=[proc.pid])
        get_url = h.rungs["forward, NIO executor"]["url"] + "/"
        get_pids = h.rungs["forward, NIO executor"]["pids"]
        post_rungs = ["R1 nginx", "forward, default executor", "forward, NIO executor", "forward, lean client",
                      "forward, lean client, generic", "R2 sqlite"]
        for c in (1, 64):
            results = {name: [] for name in ["Hummingbird GET /"] + post_rungs}
            wrk_get(get_url, get_pids, c, 2)
            for name in post_rungs:
                h.wrk(name, "small", c, 2)  # warm-up
            for _ in range(args.rounds):
                results["Hummingbird GET /"].append(wrk_get(get_url, get_pids, c, args.seconds))
                for name in post_rungs:
                    results[name].append(h.wrk(name, "small", c, args.seconds))
            run.print_medians(c, results, width=28)
    finally:
        h.stop()


if __name__ == "__main__":
    main()
