#!/usr/bin/env python3
"""Turns one bench/run.py result (JSON) into the generated part of docs/benchmarks.md.

    bench/report.py bench/results/<run>.json [--doc docs/benchmarks.md] [--stdout]

Only the text between the two GENERATED markers is replaced; the rest of the document (method
notes, the history of improvements) is written by hand.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = "<!-- GENERATED: bench/report.py writes from here -->"
END = "<!-- GENERATED: to here -->"
LMSVR = ("R2 sqlite", "R3 postgres")


def us(v):
    return "–" if v is None else f"{v:,.0f}"


def ms(v):
    return "–" if v is None else f"{v / 1000:,.2f}"


def added(a, b):
    return None if a is None or b is None else a - b


def render(r):
    m = r["meta"]
    closed = r["closed_loop"]
    rungs = list(next(iter(closed.values())).keys())
    out = [f"Run {m['date']} at `{m['git_sha'][:10]}`{' (uncommitted changes)' if m['git_dirty'] else ''}, "
           f"profile `{m['profile']}`, {m['build']} build. {m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}. "
           f"Pinning: {m['pinning']}. Mock: {m['mock']['chunks']} chunks, streams paced {m['mock']['pace_ms']} ms, "
           f"fixed usage ({m['mock']['prompt_eval_count']} prompt / {m['mock']['eval_count']} completion tokens). "
           f"Payloads: {m['payload_bytes']['small']} B and {m['payload_bytes']['big']:,} B Ollama `/api/chat` bodies. "
           f"PostgreSQL: {m['postgres']}. lmsvr: {m['lmsvr_settings']}. Figures are medians of "
           f"{m['profile_settings']['rounds']} interleaved rounds of {m['profile_settings']['seconds']} s. "
           f"Noise check: R0 p99 median {us(r['noise']['direct_p99_median_us'])} µs against a floor of "
           f"{us(r['noise']['direct_p99_floor_us'])} µs ({'REFUSED' if r['noise']['refused'] else 'accepted'}).", ""]

    out += ["### Closed loop (wrk): latency added over R0, requests/s, gateway CPU per request", "",
            "| load | rung | p50 µs | p99 µs | p99.9 µs | added p50 | added p99 | added p99.9 | req/s | CPU µs/req |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(closed, key=lambda k: (k.split("/")[0] != "small", int(k.split("/c")[1])))
    for label in order:
        by_rung = closed[label]
        d = by_rung["R0 direct"]
        for rung in rungs:
            x = by_rung[rung]
            cpu = x.get("cpu_us_per_req")
            cpu_text = us(cpu) + (f" (+{us(x['db_cpu_us_per_req'])} db)" if "db_cpu_us_per_req" in x else "")
            out.append(f"| {label} | {rung} | {us(x['p50_us'])} | {us(x['p99_us'])} | {us(x['p999_us'])} | "
                       + (" | | " if rung == "R0 direct" else
                          f"{us(added(x['p50_us'], d['p50_us']))} | {us(added(x['p99_us'], d['p99_us']))} | ")
                       + ("" if rung == "R0 direct" else f"{us(added(x['p999_us'], d['p999_us']))}")
                       + f" | {x['rps']:,.0f} | {cpu_text if cpu is not None else '–'} |")
    top = max((k for k in closed if k.startswith("small/")), key=lambda k: int(k.split("/c")[1]))
    nginx = closed[top].get("R1 nginx", {}).get("rps")
    out += ["", f"Ceiling (closed loop, {top}): " + ", ".join(
        f"{rung} {closed[top][rung]['rps']:,.0f} req/s" + (f" ({closed[top][rung]['rps'] / nginx:.0%} of nginx)" if nginx and rung in LMSVR else "")
        for rung in rungs), ""]

    out += ["### Open loop (bench-driver, constant rate): latency added over R0 at the same rate", "",
            "| rung | rate | achieved | p50 µs | p99 µs | p99.9 µs | added p50 | added p99 | added p99.9 | failed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, x in r["open_loop"].items():
        if "skipped" in x:
            out.append(f"| {x['rung']} @{int(x['fraction'] * 100)}% | {x['rate']:,.0f}/s | skipped: {x['skipped']} | | | | | | | |")
            continue
        g, d = x["gateway"], x["direct"]
        out.append(f"| {x['rung']} @{int(x['fraction'] * 100)}% | {x['rate']:,.0f}/s | {g['achieved_rate']:,.0f}/s | "
                   f"{us(g.get('latency_p50_us'))} | {us(g.get('latency_p99_us'))} | {us(g.get('latency_p999_us'))} | "
                   f"{us(added(g.get('latency_p50_us'), d.get('latency_p50_us')))} | {us(added(g.get('latency_p99_us'), d.get('latency_p99_us')))} | "
                   f"{us(added(g.get('latency_p999_us'), d.get('latency_p999_us')))} | {g['failed']} |")

    if r.get("peer_error"):
        out += ["", f"Peer rung (LiteLLM) failed: {r['peer_error'][:300]}"]
    if r.get("peer"):
        p = r["peer"]
        out += ["", f"### Peer: {p['litellm']} proxy ({p['what_it_does_not_do']}), OpenAI API translated to the same Ollama mock", "",
                "| load | rung | p50 µs | p99 µs | added p50 | added p99 | req/s | CPU µs/req |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for load, by in p["loads"].items():
            d = by["R0 direct"]
            for name, x in by.items():
                direct = name == "R0 direct"
                out.append(f"| {load} | {name} | {us(x['p50_us'])} | {us(x['p99_us'])} | "
                           f"{'' if direct else us(added(x['p50_us'], d['p50_us']))} | {'' if direct else us(added(x['p99_us'], d['p99_us']))} | "
                           f"{x['rps']:,.0f} | {us(x.get('cpu_us_per_req'))} |")
        out += ["", f"Resident memory after the peer runs: LiteLLM {p['litellm_rss_kib'] / 1024:.0f} MiB, lmsvr {p['lmsvr_rss_kib'] / 1024:.0f} MiB."]

    out += ["", f"### Streams ({r['meta']['mock']['chunks']} deltas paced {r['meta']['mock']['pace_ms']} ms; a stall is a gap over twice the pace)", "",
            "Transit: from the mock's write of a chunk to the driver's read of it (the mock stamps each chunk with the",
            "machine's monotonic clock), so the mock's own pacing slips do not count; a chunk is delayed when its transit",
            "exceeds twice the pace. What a gateway adds is its transit beyond R0's, where the harness alone is measured.", "",
            "| streams | rung | TTFB p50 / p99 ms | TTFT p50 / p99 ms | added TTFT p99 ms | gap p99 / max ms | stalls | transit p50 / p99 / max ms | added transit p99 ms | delayed | failed |",
            "|---:|---|---|---|---:|---|---:|---|---:|---:|---:|"]
    for count, by_rung in r["streams"].items():
        d = by_rung["R0 direct"]
        for rung, x in by_rung.items():
            out.append(f"| {count} | {rung} | {ms(x.get('ttfb_p50_us'))} / {ms(x.get('ttfb_p99_us'))} | "
                       f"{ms(x.get('ttft_p50_us'))} / {ms(x.get('ttft_p99_us'))} | "
                       f"{'' if rung == 'R0 direct' else ms(added(x.get('ttft_p99_us'), d.get('ttft_p99_us')))} | "
                       f"{ms(x.get('gap_p99_us'))} / {ms(x.get('gap_max_us'))} | {x['stalls']} | "
                       f"{ms(x.get('transit_p50_us'))} / {ms(x.get('transit_p99_us'))} / {ms(x.get('transit_max_us'))} | "
                       f"{'' if rung == 'R0 direct' else ms(added(x.get('transit_p99_us'), d.get('transit_p99_us')))} | "
                       f"{x.get('delayed', '–')} | {x['failed']} |")

    out += ["", "### Memory (resident set of the gateway process; in brackets the private part, RssAnon, without the mapped binary and shared libraries)", "",
            "| rung | after start | after warm-up | " + " | ".join(f"{s['streams']} streams" for s in next(iter(r["memory"].values()))["samples"])
            + " | after close | per open stream |",
            "|---|---:|---:|" + "---:|" * len(next(iter(r["memory"].values()))["samples"]) + "---:|---:|"]
    for rung, x in r["memory"].items():
        def anon(v):
            return f" ({v / 1024:.1f})" if v else ""
        out.append(f"| {rung} | {x['rss_start_kib'] / 1024:.1f} MiB{anon(x.get('anon_start_kib'))} | {(x['rss_warm_kib'] or 0) / 1024:.1f} MiB | "
                   + " | ".join(f"{s['rss_kib'] / 1024:.1f} MiB{anon(s.get('anon_kib'))}" for s in x["samples"])
                   + f" | {x['rss_after_close_kib'] / 1024:.1f} MiB | {x['kib_per_stream']} KiB |")

    out += ["", "### Budget path (store-bench: hold + settle pairs, 16 tasks, the store alone)", "",
            "| database | customers | pairs/s | pair p50 µs | pair p99 µs |", "|---|---:|---:|---:|---:|"]
    for label, x in r["store"].items():
        db, customers = label.split("/")
        out.append(f"| {db} | {customers} | {x['pairs_per_second']:,.0f} | {us(x.get('pair_p50_us'))} | {us(x.get('pair_p99_us'))} |")

    commit = r.get("commit_alone", {})
    if commit:
        out += ["", "### The durable commit alone (bench/commit_alone.py: one 100-byte row per fsync'd commit, one after another, pinned to CPU 0; no lmsvr)", "",
                "| database | how | commits | p50 µs | p99 µs |", "|---|---|---:|---:|---:|"]
        how = dict(sqlite="Python sqlite3 on the gateways' disk, WAL, synchronous FULL",
                   postgres="pgbench, one client, INSERT per transaction over TCP")
        for db, x in commit.items():
            out.append(f"| {db} | {how.get(db, '')} | {x['count']:,} | {us(x['p50_us'])} | {us(x['p99_us'])} |")

    out += ["", "### Against the goals", "", "| goal | R2 sqlite | R3 postgres |", "|---|---|---|"]
    c1 = closed.get("small/c1", {})

    def goal_row(text, fn):
        cells = []
        for rung in LMSVR:
            try:
                value, ok = fn(rung)
                cells.append(f"{value} {'✅' if ok else '❌'}")
            except (KeyError, TypeError, ZeroDivisionError, StopIteration):
                cells.append("–")
        out.append(f"| {text} | " + " | ".join(cells) + " |")

    d1 = c1.get("R0 direct", {})
    database = {"R2 sqlite": "sqlite", "R3 postgres": "postgres"}

    def beyond_commit(g):
        added_p50, commit_p50 = c1[g]['p50_us'] - d1['p50_us'], commit[database[g]]['p50_us']
        return (f"{ms(added_p50 - commit_p50)} ms ({ms(added_p50)} added, the commit alone {ms(commit_p50)})",
                added_p50 - commit_p50 <= 300)
    goal_row("CPU per request at c=64 ≤ 100 µs", lambda g: (
        f"{us(closed[top][g]['cpu_us_per_req'] + closed[top][g].get('db_cpu_us_per_req', 0))} µs", 
        closed[top][g]['cpu_us_per_req'] + closed[top][g].get('db_cpu_us_per_req', 0) <= 100))
    goal_row("throughput at c=64 ≥ 0.3× nginx's (stretch 0.5×)", lambda g: (
        f"{closed[top][g]['rps'] / nginx:.2f}×", closed[top][g]['rps'] >= 0.3 * nginx))
    goal_row("added p50 at c=1 beyond the settle's durable commit ≤ 0.3 ms", beyond_commit)
    goal_row("added p99 at c=1 < 1 ms", lambda g: (f"{ms(c1[g]['p99_us'] - d1['p99_us'])} ms", c1[g]['p99_us'] - d1['p99_us'] < 1000))
    lone = min(r["streams"], key=int)
    ld = r["streams"][lone]["R0 direct"]
    goal_row(f"added TTFT p50 ≤ 0.3 ms, {lone} stream(s)", lambda g: (
        f"{ms(added(r['streams'][lone][g]['ttft_p50_us'], ld['ttft_p50_us']))} ms",
        added(r['streams'][lone][g]['ttft_p50_us'], ld['ttft_p50_us']) <= 300))
    biggest = max(r["streams"], key=int)
    for count in sorted(r["streams"], key=int):
        sd = r["streams"][count]["R0 direct"]
        goal_row(f"added TTFT p99 < 1 ms, {count} stream(s)", lambda g, c=count, d=sd: (
            f"{ms(added(r['streams'][c][g]['ttft_p99_us'], d['ttft_p99_us']))} ms", added(r['streams'][c][g]['ttft_p99_us'], d['ttft_p99_us']) < 1000))
    bd = r["streams"][biggest]["R0 direct"]
    goal_row(f"zero stalls at {biggest} streams", lambda g: (
        f"{r['streams'][biggest][g]['stalls']} stalls (R0 direct: {bd['stalls']})", r['streams'][biggest][g]['stalls'] == 0))
    goal_row(f"no chunk delayed by the gateway at {biggest} streams", lambda g: (
        f"{r['streams'][biggest][g]['delayed']} delayed (R0 direct: {bd['delayed']}), transit p99 "
        f"+{ms(added(r['streams'][biggest][g]['transit_p99_us'], bd['transit_p99_us']))} ms",
        r['streams'][biggest][g]['delayed'] <= bd['delayed']))
    goal_row("idle RSS < 30 MB", lambda g: (f"{r['memory'][g]['rss_start_kib'] / 1024:.1f} MiB (private {r['memory'][g].get('anon_start_kib', 0) / 1024:.1f} MiB)",
                                            r['memory'][g]['rss_start_kib'] < 30 * 1000 * 1000 / 1024))
    goal_row("≤ 32 KiB per open stream", lambda g: (f"{r['memory'][g]['kib_per_stream']} KiB", r['memory'][g]['kib_per_stream'] <= 32))
    if "ledger" in r:
        out += ["", "Ledger after the run: " + ", ".join(f"{k}: {v['rows']:,} rows, ${v['cost_usd']}" for k, v in r["ledger"].items()
                                                       if v.get("rows") is not None) + "."]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--stdout", action="store_true", help="print the generated part instead of writing the document")
    args = ap.parse_args()
    with open(args.result) as f:
        table = render(json.load(f))
    if args.stdout:
        print(table)
        return
    with open(args.doc) as f:
        doc = f.read()
    if START not in doc or END not in doc:
        sys.exit(f"{args.doc} has no GENERATED markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    source = os.path.relpath(args.result, os.path.dirname(args.doc))
    with open(args.doc, "w") as f:
        f.write(f"{head}{START}\n\nFrom [`{os.path.basename(args.result)}`]({source}).\n\n{table}\n\n{END}{tail}")
    print(f"updated {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
