#!/usr/bin/env python3
"""The ledger at scale: usage-report, check-budget, the operator dashboard's pages and export-usage
over one customer's month of N requests (10 million by default), timed through the real `lmsvr`
commands and a running `lmsvr serve`.

    bench/ledger_scale.py --bin-dir .build/release                      # PostgreSQL (our own) and SQLite
    bench/ledger_scale.py --backend postgres --rows 1000000 --bin-dir .build/release
    bench/ledger_scale.py --postgres-url postgresql://postgres@127.0.0.1:5432/postgres ...

The rows are written by the database itself (INSERT ... SELECT generate_series, in batches of one
million, through the same triggers that keep the per-day rollups as settles do), spread over one
past month, three models. Each command runs `--repeat` times; the table shows the best and the
median wall time, and the export's rows/s and peak RSS (the child's maximum resident size, from
wait4). Exports are written to a file on the same disk and removed.
"""
import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import start_own_postgres  # noqa: E402

MONTH = "2026-10"
MONTH_START_US = 1790812800 * 1_000_000  # 2026-10-01T00:00:00Z
MONTH_US = 31 * 86400 * 1_000_000
BATCH = 1_000_000
COLUMNS = ("request_id, customer_id, key_id, period, endpoint, dialect, provider, model, http_status, outcome, "
           "prompt_tokens, completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, "
           "price_per_request_nanos, price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, "
           "price_cached_input_per_1m_nanos, price_source, latency_us, ttfb_us, created_us")


def row_select(total):
    """The SELECT list of generated row g (of `total`), valid on both databases."""
    return (f"'bench-' || g, 1, 1, '{MONTH}', '/api/chat', 'ollama', 'ollama', "
            f"CASE g % 3 WHEN 0 THEN 'llama3' WHEN 1 THEN 'mistral' ELSE 'qwen2' END, 200, 'ok', "
            f"26, 64, 0, 'provider', 96000, 200000, 0, 0, 1000000, 1000000, NULL, 'configured', 5000, 1000, "
            f"{MONTH_START_US} + (CAST(g AS BIGINT) - 1) * {MONTH_US // total}")


def lmsvr(bin_dir, url, *args, check=True):
    """Runs one lmsvr command; returns (seconds, peak RSS in MiB, stdout)."""
    env = dict(os.environ, DATABASE_URL=url)
    start = time.monotonic()
    proc = subprocess.Popen([f"{bin_dir}/lmsvr", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        raise RuntimeError(f"lmsvr {' '.join(args)}: {err.strip()}")
    return seconds, usage.ru_maxrss / 1024, out


def fill(backend, url, rows):
    """Creates the customer and key through lmsvr, then N ledger rows through the database."""
    start = time.monotonic()
    if backend == "postgres":
        def psql(sql):
            r = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"psql: {r.stderr.strip()}")
        psql(f"SELECT lmsvr_usage_partition('{MONTH}')")
        for first in range(1, rows + 1, BATCH):
            last = min(first + BATCH - 1, rows)
            psql(f"INSERT INTO usage ({COLUMNS}) SELECT {row_select(rows)} "
                 f"FROM generate_series({first}, {last}) g")
        psql("VACUUM ANALYZE usage")
    else:
        path = url.removeprefix("sqlite:///")
        db = sqlite3.connect(path)
        for first in range(1, rows + 1, BATCH):
            last = min(first + BATCH - 1, rows)
            db.execute(f"WITH RECURSIVE s(g) AS (SELECT {first} UNION ALL SELECT g + 1 FROM s WHERE g < {last}) "
                       f"INSERT INTO usage ({COLUMNS}) SELECT {row_select(rows)} FROM s")
            db.commit()
        db.execute("ANALYZE")
        db.close()
    return time.monotonic() - start


def measure(backend, url, args):
    out = dict(backend=backend, rows=args.rows)
    lmsvr(args.bin_dir, url, "migrate")
    lmsvr(args.bin_dir, url, "create-customer", "Hot", "hot@example.com", "--budget", "1000000")
    lmsvr(args.bin_dir, url, "generate-key", "1")
    out["fill_s"] = round(fill(backend, url, args.rows), 1)
    print(f"[{backend}] {args.rows:,} rows written in {out['fill_s']} s", flush=True)

    dates = ["--start-date", f"{MONTH}-01", "--end-date", f"{MONTH}-31"]
    for name, command in (("usage_report", ["usage-report", "1", *dates, "--json"]),
                          ("check_budget", ["check-budget", "1", "--json"])):
        times = [lmsvr(args.bin_dir, url, *command)[0] for _ in range(args.repeat)]
        out[name] = dict(best_s=round(min(times), 3), median_s=round(statistics.median(times), 3))
        print(f"[{backend}] {name}: best {min(times):.3f} s, median {statistics.median(times):.3f} s", flush=True)
    report = json.loads(lmsvr(args.bin_dir, url, "usage-report", "1", *dates, "--json")[2])
    assert report["total_requests"] == args.rows, report["total_requests"]

    out["dashboard"] = dashboard(backend, url, args)

    for fmt in ([] if args.skip_exports else ["csv", "json"]):
        target = os.path.join(args.work, f"export.{fmt}")
        runs = []
        for _ in range(args.repeat):
            seconds, rss, _ = lmsvr(args.bin_dir, url, "export-usage", "1", *dates, "--format", fmt, "--output", target)
            runs.append((seconds, rss))
            size = os.path.getsize(target)
            os.remove(target)
        best = min(s for s, _ in runs)
        out[f"export_{fmt}"] = dict(best_s=round(best, 2), median_s=round(statistics.median(s for s, _ in runs), 2),
                                    rows_per_s=int(args.rows / best), peak_rss_mib=round(max(r for _, r in runs), 1),
                                    file_mib=round(size / 2**20))
        print(f"[{backend}] export {fmt}: best {best:.2f} s = {args.rows / best:,.0f} rows/s, "
              f"peak RSS {max(r for _, r in runs):.1f} MiB, {size / 2**20:.0f} MiB file", flush=True)
    return out


def dashboard(backend, url, args):
    """The operator dashboard's pages over that month, each fetched `--repeat` times from a
    running `lmsvr serve` (wall time of the whole response)."""
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench-admin-token-0123456789"
    env = dict(os.environ, DATABASE_URL=url, HOST="127.0.0.1", PORT=str(port), ADMIN_TOKEN=token, LOG_LEVEL="WARNING",
               OLLAMA_BASE_URL="http://127.0.0.1:9")
    server = subprocess.Popen([f"{args.bin_dir}/lmsvr", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "lmsvr serve did not start"
                time.sleep(0.1)
        for name, path in (("overview", f"/admin?month={MONTH}"), ("customers", "/admin/customers"),
                           ("customer", f"/admin/customers/1?month={MONTH}"), ("models", "/admin/models")):
            times = []
            for _ in range(args.repeat):
                request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=600) as response:
                    body = response.read()
                    assert response.status == 200, response.status
                times.append(time.perf_counter() - started)
            out[name] = dict(best_ms=round(min(times) * 1000, 1), median_ms=round(statistics.median(times) * 1000, 1))
            print(f"[{backend}] dashboard {name}: best {min(times) * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f} ms "
                  f"({len(body):,} bytes)", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=".build/release")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--postgres-url", help="an existing server (a scratch database is created and dropped)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--skip-exports", action="store_true", help="only the reports, check-budget and the dashboard")
    args = parser.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.work = tempfile.mkdtemp(prefix="lmsvr-ledger.")
    results = []
    try:
        if args.backend in ("postgres", "both"):
            if args.postgres_url:
                base, stop = args.postgres_url, None
            else:
                base, _, stop = start_own_postgres()
            name = f"lmsvr_ledger_{os.getpid()}"
            subprocess.run(["psql", base, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
            try:
                results.append(measure("postgres", base.rsplit("/", 1)[0] + "/" + name, args))
            finally:
                subprocess.run(["psql", base, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)
                if stop:
                    stop()
        if args.backend in ("sqlite", "both"):
            results.append(measure("sqlite", f"sqlite:///{args.work}/ledger.db", args))
    finally:
        subprocess.run(["rm", "-rf", args.work])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
