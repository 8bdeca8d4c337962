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
"""
import argparse
import os
import subprocess
import sys

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
    args = ap.parse_args()
    h = run.Harness(argparse.Namespace(profile="full", bin_dir=args.after, litellm=None, postgres_url=None,
                                       ollama_servers=1, closed_only=True, open_max_rate=4000))
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
        for c in args.concurrency or [1, 64]:
            run.print_medians(c, run.interleaved(h, list(builds), args.body, c, args.rounds, args.seconds), width=10)
    finally:
        h.stop()


if __name__ == "__main__":
    main()
