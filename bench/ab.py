#!/usr/bin/env python3
"""Two builds of the gateway A/B, interleaved: each on its own SQLite database, both pinned to
CPU 0 against the same nginx mock, driven in alternating wrk rounds so the machine's drift hits
both alike. For one change at a time on the request path.

    cp .build/release/lmsvr /tmp/before/          # then change, rebuild
    python3 bench/ab.py --before /tmp/before --after .build/release [-c 1 -c 64] [--rounds 8]

Prints requests/s, p50 and the gateway's CPU per request (medians), and each round's CPU.
With `--database postgres` both builds run on one PostgreSQL of the harness's own (pinned to
CPU 0, like the gateways), each on a database of its own (a build refuses a schema migrated
ahead of it), and the lines add PostgreSQL's CPU per request.

`--spaced SECONDS --count N` measures sporadic traffic instead: N single requests per build, each
on a new connection after SECONDS of silence (more than `CACHE_TTL_SECONDS`, 5 s, to see what a
key and a price used less often than that cost), the builds alternating, timed from this process
pinned to CPU 1; the mock straight (R0) and nginx proxying to it (R1, on CPU 0 like the gateways, so it pays the
same wake-ups of an idle core) are timed the same way for reference.
"""
import argparse
import http.client
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="directory holding the `lmsvr` binary before the change")
    ap.add_argument("--after", default=os.path.join(run.ROOT, ".build/release"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--body", choices=["small", "big", "openai"], default="small")
    ap.add_argument("-c", "--concurrency", type=int, action="append")
    ap.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--spaced", type=float, help="seconds of silence before each single request (sporadic traffic)")
    ap.add_argument("--count", type=int, default=12, help="with --spaced: requests per build")
    args = ap.parse_args()
    h = run.tool_harness(args.after)
    # The harness counts PostgreSQL's CPU for rungs named R3.
    prefix = "R3 " if args.database == "postgres" else ""
    builds = {prefix + "before": os.path.abspath(args.before), prefix + "after": os.path.abspath(args.after)}
    try:
        h.start_mocks()
        if args.database == "postgres":
            h.start_postgres()
        for name, directory in builds.items():
            h.bin = directory  # the CLI and the server of that build
            if args.database == "postgres":
                database = name.split()[-1]
                subprocess.run(["psql", h.pg_url, "-q", "-c", f"CREATE DATABASE ab_{database}"], check=True, capture_output=True)
                h.create_tenant(name, h.pg_url.rsplit("/", 1)[0] + f"/ab_{database}")
            else:
                h.create_tenant(name, f"sqlite:///{h.work}/{name}.db")
            h.start_gateway(name, [h.answer_mock])
            if args.body == "openai":
                h.rungs[name]["path"] = "/v1/chat/completions"
        if args.spaced:
            h.start_proxy()
            spaced(h, list(builds), args.body, args.spaced, args.count)
            return
        for c in args.concurrency or [1, 64]:
            run.print_medians(c, run.interleaved(h, list(builds), args.body, c, args.rounds, args.seconds), width=10)
    finally:
        h.stop()


def one_request(url, path, key, body):
    """Microseconds from connecting to the last byte of the answer, on a new connection."""
    host, port = url.split("//", 1)[1].split(":")
    start = time.perf_counter_ns()
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    response.read()
    elapsed = (time.perf_counter_ns() - start) / 1000
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{url}{path} answered {response.status}")
    return elapsed


def spaced(h, names, body_name, pause, count):
    os.sched_setaffinity(0, {1})  # the client on CPU 1, as wrk is; the gateways run on CPU 0
    with open(os.path.join(h.work, f"{body_name}.json")) as f:
        body = f.read().encode()  # one write: headers and body in one segment
    # nginx proxies on CPU 0 like the gateways, so it pays the same wake-ups of an idle core.
    targets = [("R0 direct", f"http://127.0.0.1:{h.answer_mock}", "none"),
               ("R1 nginx", f"http://127.0.0.1:{h.proxy_ports['answers']}", "none")] + \
              [(name, h.rungs[name]["url"], h.rungs[name].get("key") or h.headers(name)) for name in names]
    for name, url, key in targets:  # each once, so the first figure is not a cold process
        one_request(url, h.rungs.get(name, {}).get("path", "/api/chat"), key, body)
    times = {name: [] for name, _, _ in targets}
    for i in range(count):
        order = targets if i % 2 == 0 else [targets[0]] + targets[:0:-1]
        for name, url, key in order:
            time.sleep(pause)
            times[name].append(one_request(url, h.rungs.get(name, {}).get("path", "/api/chat"), key, body))
    direct = statistics.median(times["R0 direct"])
    run.log(f"{count} requests per build, each after {pause:g} s of silence, new connection each (µs):")
    for name, values in times.items():
        values.sort()
        run.log(f"  {name:12} p50 {statistics.median(values):8.0f}  p90 {values[int(len(values) * 0.9) - 1]:8.0f}  "
                f"max {values[-1]:8.0f}  added p50 {statistics.median(values) - direct:8.0f}")


if __name__ == "__main__":
    main()
