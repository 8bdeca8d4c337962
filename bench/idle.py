#!/usr/bin/env python3
"""What an idle gateway costs: CPU time and context switches per second of `lmsvr serve` on
SQLite with no traffic, for one build or for two A/B (interleaved rounds, the machine's drift
hitting both alike). An idle gateway still polls: the SQLite change watcher every 50 ms, the
settle journal every 100 ms, the hold keep-alive, the key-use flusher, Hummingbird's date cache.

    python3 bench/idle.py --bin-dir .build/release
    python3 bench/idle.py --bin-dir /tmp/before --after .build/release --rounds 4

Each gateway starts on its own database, settles for 3 s, then is watched for --seconds.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def start(bin_dir, work):
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{work}/lmsvr.db", HOST="127.0.0.1", PORT=str(run.free_port()),
               OLLAMA_BASE_URL="http://127.0.0.1:9", LOG_LEVEL="INFO", JOURNAL_DIR=f"{work}/journal")
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(k, None)
    lmsvr = os.path.join(os.path.abspath(bin_dir), "lmsvr")
    subprocess.run([lmsvr, "create-customer", "Idle", "idle@example.com"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([lmsvr, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.wait_http(f"http://127.0.0.1:{env['PORT']}/health")
    time.sleep(3)
    return proc


def watch(pid, seconds):
    ticks, switches = run.cpu_ticks([pid]), run.context_switches([pid])
    time.sleep(seconds)
    hz = os.sysconf("SC_CLK_TCK")
    return dict(cpu_ms_per_s=(run.cpu_ticks([pid]) - ticks) * 1000 / hz / seconds,
                switches_per_s=(run.context_switches([pid]) - switches) / seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="directory holding `lmsvr` (the `before` build with --after)")
    ap.add_argument("--after", help="a second build to compare, round by round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    builds = {"before" if args.after else "build": args.bin_dir}
    if args.after:
        builds["after"] = args.after
    results = {name: [] for name in builds}
    for rnd in range(args.rounds):
        for name, bin_dir in (builds.items() if rnd % 2 == 0 else reversed(builds.items())):
            work = tempfile.mkdtemp(prefix="lmsvr-idle.")
            proc = start(bin_dir, work)
            try:
                results[name].append(watch(proc.pid, args.seconds))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                shutil.rmtree(work, ignore_errors=True)
            r = results[name][-1]
            print(f"round {rnd + 1} {name}: {r['cpu_ms_per_s']:.1f} ms CPU/s, {r['switches_per_s']:.0f} switches/s", flush=True)
    for name, rounds in results.items():
        print(f"{name} ({builds[name]}): median {statistics.median(r['cpu_ms_per_s'] for r in rounds):.1f} ms CPU/s, "
              f"{statistics.median(r['switches_per_s'] for r in rounds):.0f} context switches/s over {len(rounds)} rounds")


if __name__ == "__main__":
    main()
