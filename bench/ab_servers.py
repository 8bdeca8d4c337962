#!/usr/bin/env python3
"""What routing across several Ollama servers costs, A/B and interleaved: two SQLite gateways on
CPU 0 side by side, one listing the nginx mock once, one listing it as three servers (three ports
of the same mock), driven in alternating wrk rounds so the machine's drift hits both alike.

    python3 bench/ab_servers.py --bin-dir .build/release [--rounds 8] [--seconds 4] [-c 64]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(run.ROOT, ".build/release"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("-c", "--concurrency", type=int, action="append")
    args = ap.parse_args()
    h = run.tool_harness(args.bin_dir, ollama_servers=3)
    try:
        h.start_mocks()
        rungs = {"one server": h.answer_mocks[:1], "three servers": h.answer_mocks}
        for name in rungs:
            h.create_tenant(name, f"sqlite:///{h.work}/{name.replace(' ', '-')}.db")
            h.start_gateway(name, rungs[name])
        for c in args.concurrency or [1, 64]:
            run.print_medians(c, run.interleaved(h, list(rungs), "small", c, args.rounds, args.seconds))
    finally:
        h.stop()


if __name__ == "__main__":
    main()
