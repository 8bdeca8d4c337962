#!/usr/bin/env python3
"""The benchmark harness: lmsvr side by side with the physical limit of this machine.

Called by bench/run.sh (which installs wrk, nginx and PostgreSQL and builds in release mode).
Starts everything on 127.0.0.1, pins the system under test to CPU 0 and the load generator and
the mock upstream to CPU 1, runs the rungs interleaved in rounds, and writes one JSON file per run.
bench/report.py turns that file into the table in docs/benchmarks.md.

Two mocks, both on CPU 1: for requests and answers (closed and open loop), nginx serving the
fixed Ollama answer (the fastest server on this machine, so the floor is the client and the
kernel, not the mock); for streams, lmsvr-fake-upstream pacing 64 deltas. The gateways and the
proxy are restarted between the two phases to point at the other mock.

Rungs (same mock, same payloads, same concurrency):
  R0 direct    client straight to the mock upstream (the floor)
  R1 nginx     nginx proxy_pass, one worker, keepalive upstream, no buffering
  R2 sqlite    lmsvr on SQLite: auth, price, hold, settle and ledger row on every request
  R3 postgres  lmsvr on PostgreSQL (its server pinned to CPU 0 too), same
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")

PROFILES = {
    # By hand: a few minutes.
    "full": dict(rounds=5, seconds=3, concurrencies=[1, 16, 64], big_rounds=5, open_seconds=5,
                 open_fractions=[0.5, 0.8], stream_counts=[1, 100, 1000], memory_steps=[250, 500, 1000],
                 memory_settle=2.0, store_pairs=4000, warmup=2, peer_concurrencies=[1, 16], commit_count=2000),
    # CI: a few seconds per phase, only to keep the harness working.
    "smoke": dict(rounds=1, seconds=1, concurrencies=[1, 4], big_rounds=1, open_seconds=1,
                  open_fractions=[0.5], stream_counts=[2], memory_steps=[5, 10],
                  memory_settle=0.3, store_pairs=64, warmup=1, peer_concurrencies=[1], commit_count=50),
}

SMALL_BODY = json.dumps({"model": "llama3", "stream": False, "messages": [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Why is the sky blue? Answer in one short paragraph, please."}]})
BIG_BODY = json.dumps({"model": "llama3", "stream": False, "messages": [
    {"role": "system", "content": "You are a concise assistant. Summarise the document the user sends."},
    {"role": "user", "content": ("Rayleigh scattering of sunlight by the molecules of the atmosphere makes "
                                 "the sky look blue in daylight. " * 110).strip()}]})
OPENAI_BODY = json.dumps({"model": "llama3", "messages": json.loads(SMALL_BODY)["messages"]})
STREAM_BODY = json.dumps({"model": "llama3", "stream": True, "messages": [
    {"role": "user", "content": "Why is the sky blue? Answer in one short paragraph, please."}]})
SLOW_BODY = json.dumps({"model": "slowstream", "stream": True, "messages": [
    {"role": "user", "content": "Why is the sky blue? Answer in one short paragraph, please."}]})

# What the mocks answer with, so every request's cost is known in advance.
MOCK = dict(chunks=64, pace_ms=20, slow_pace_ms=1000, prompt_eval_count=26, eval_count=64, fixed_clock=True,
            answers="nginx, fixed /api/chat answer (Ollama format)", streams="lmsvr-fake-upstream --fixed-clock --stamp-chunks")
WORDS = ["The ", "sky ", "is ", "blue ", "because ", "of ", "Rayleigh ", "scattering."]
# Byte for byte what lmsvr-fake-upstream --fixed-clock --chunks 64 answers to a non-streamed chat.
FIXED_ANSWER = ('{"model":"llama3","created_at":"2025-05-04T17:37:44.706015396Z","message":{"role":"assistant","content":'
                + json.dumps("".join(WORDS[i % 8] for i in range(64))) + '},"done_reason":"stop","done":true,'
                '"total_duration":182242375,"load_duration":41295167,"prompt_eval_count":26,"prompt_eval_duration":24573166,'
                '"eval_count":64,"eval_duration":115959084}')


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=30):
    import urllib.request
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def context_switches(pids):
    """Voluntary and involuntary context switches of every thread of `pids` so far: each is a
    thread leaving the CPU (to sleep, or preempted), which on the gateway's one core is the
    price of a hand-over between its threads."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    total += sum(int(line.split()[1]) for line in f
                                 if line.split(":")[0] in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def rss_kib(pid, field="VmRSS"):
    """VmRSS, or RssAnon (private memory: without the mapped binary and shared libraries)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return out


def version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing tool is recorded, not fatal
        return f"unavailable ({e.__class__.__name__})"


def start_own_postgres(cpu=None, extra_options=""):
    """A throwaway PostgreSQL (defaults incl. fsync; run as `postgres` when we are root).
    Returns (url, pids(), stop())."""
    pgbin = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
    pgbin = f"/usr/lib/postgresql/{pgbin}/bin"
    pgdir = tempfile.mkdtemp(prefix="lmsvr-bench-pg.")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if os.getuid() == 0:
        shutil.chown(pgdir, "postgres", "postgres")
    port = free_port()
    subprocess.run(as_pg + [f"{pgbin}/initdb", "-D", f"{pgdir}/data", "-U", "postgres", "-A", "trust", "-E", "UTF8",
                            "--no-sync"], check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {pgdir} -c max_connections=200 -c shared_buffers=256MB {extra_options}"
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    subprocess.run(pin + as_pg + [f"{pgbin}/pg_ctl", "-D", f"{pgdir}/data", "-l", f"{pgdir}/log",
                                  "-w", "-t", "30", "-o", opts, "start"], check=True, capture_output=True)

    def stop():
        subprocess.run(as_pg + [f"{pgbin}/pg_ctl", "-D", f"{pgdir}/data", "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(pgdir, ignore_errors=True)
    with open(f"{pgdir}/data/postmaster.pid") as f:
        postmaster = int(f.readline())
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", lambda: [postmaster] + children_of(postmaster), stop


class Harness:
    def __init__(self, args):
        self.args = args
        self.p = PROFILES[args.profile]
        self.bin = os.path.abspath(args.bin_dir)
        if args.litellm:
            args.litellm = os.path.abspath(args.litellm)
        self.work = tempfile.mkdtemp(prefix="lmsvr-bench.")
        self.procs = []
        self.rungs = {"R0 direct": dict(pids=[])}
        self.gateways = []
        self.cleanups = []
        for name, body in (("small", SMALL_BODY), ("big", BIG_BODY), ("stream", STREAM_BODY), ("slow", SLOW_BODY),
                           ("openai", OPENAI_BODY)):
            with open(os.path.join(self.work, f"{name}.json"), "w") as f:
                f.write(body)

    # --- processes -------------------------------------------------------------------------

    def spawn(self, cmd, cpu, env=None, log_name=None, **kw):
        out = open(os.path.join(self.work, log_name), "w") if log_name else subprocess.DEVNULL
        proc = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for cleanup in reversed(self.cleanups):
            cleanup()
        shutil.rmtree(self.work, ignore_errors=True)

    def start_mocks(self):
        """The paced mock (lmsvr-fake-upstream) and the fast one (nginx with the fixed answer)."""
        self.stream_mock = free_port()
        self.spawn([f"{self.bin}/lmsvr-fake-upstream", "--port", str(self.stream_mock), "--chunks", str(MOCK["chunks"]),
                    "--pace-ms", str(MOCK["pace_ms"]), "--drip-ms", str(MOCK["slow_pace_ms"]), "--fixed-clock",
                    "--stamp-chunks"],
                   cpu=1, log_name="mock.log")
        wait_http(f"http://127.0.0.1:{self.stream_mock}/api/version")
        # --ollama-servers N: the same mock on N ports, listed as N servers (the answers phase).
        self.answer_mocks = [free_port() for _ in range(self.args.ollama_servers)]
        self.answer_mock = self.answer_mocks[0]
        answer = FIXED_ANSWER.replace("\\", "\\\\").replace("'", "\\'")
        listens = "\n".join(f"        listen 127.0.0.1:{port} backlog=4096;" for port in self.answer_mocks)
        tags = '{"models":[{"name":"llama3:latest","model":"llama3:latest"}]}'
        self.nginx("mock", 1, f"""    server {{
{listens}
        default_type application/json;
        location = /api/chat {{ return 200 '{answer}'; }}
        location = /api/version {{ return 200 '{{"version":"0.5.1"}}'; }}
        location = /api/tags {{ return 200 '{tags}'; }}
        location = /api/ps {{ return 200 '{tags}'; }}
        location / {{ return 404 '{{"error":"not found"}}'; }}
    }}""")
        wait_http(f"http://127.0.0.1:{self.answer_mock}/api/version")
        log(f"mocks: answers (nginx) on {self.answer_mock}, streams (lmsvr-fake-upstream) on {self.stream_mock}")

    def nginx(self, name, cpu, servers):
        w = os.path.join(self.work, f"nginx-{name}")
        os.makedirs(w)
        conf = os.path.join(w, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
error_log {w}/error.log warn;
pid {w}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {w}/body; proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fcgi; uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
{servers}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return self.spawn([nginx, "-p", w, "-c", conf, "-g", "daemon off;"], cpu=cpu, log_name=f"nginx-{name}.log")

    def start_proxy(self):
        """R1: nginx proxy_pass, one worker, keepalive to the upstream, no buffering; one port per mock."""
        self.proxy_ports = dict(answers=free_port(), streams=free_port())
        servers = []
        for phase, upstream in (("answers", self.answer_mock), ("streams", self.stream_mock)):
            servers.append(f"""    upstream {phase} {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{self.proxy_ports[phase]} backlog=4096;
        location / {{
            proxy_pass http://{phase};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}""")
        proc = self.nginx("proxy", 0, "\n".join(servers))
        wait_http(f"http://127.0.0.1:{self.proxy_ports['answers']}/api/version")
        self.rungs["R1 nginx"] = dict(pids=[proc.pid] + children_of(proc.pid))
        log(f"nginx proxy on {self.proxy_ports}")

    def set_phase(self, phase):
        """Points every rung at the mock for `phase` (answers or streams); restarts the gateways."""
        mock = self.answer_mock if phase == "answers" else self.stream_mock
        self.rungs["R0 direct"]["url"] = f"http://127.0.0.1:{mock}"
        self.rungs["R1 nginx"]["url"] = f"http://127.0.0.1:{self.proxy_ports[phase]}"
        servers = self.answer_mocks if phase == "answers" else [self.stream_mock]
        for rung in self.gateways:
            self.start_gateway(rung, servers)
        self.phase = phase
        log(f"phase: {phase}")

    def start_postgres(self):
        """The PostgreSQL for R3: the one given (CI smoke), else our own, pinned to CPU 0."""
        if self.args.postgres_url:
            base = self.args.postgres_url
            name = f"lmsvr_bench_{os.getpid()}"
            subprocess.run(["psql", base, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
            self.cleanups.append(lambda: subprocess.run(["psql", base, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                                                        capture_output=True))
            self.pg_url = base.rsplit("/", 1)[0] + "/" + name
            self.pg_pids = lambda: []
            self.pg_settings = "external (given by --postgres-url)"
            return
        self.pg_url, self.pg_pids, stop_pg = start_own_postgres(cpu=0)
        self.cleanups.append(stop_pg)
        self.pg_settings = "PostgreSQL defaults (fsync on, synchronous_commit on), shared_buffers 256MB, pinned to CPU 0"
        log(f"PostgreSQL at {self.pg_url}")

    def lmsvr(self, env, *args):
        r = subprocess.run([f"{self.bin}/lmsvr", *args, "--json"], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"lmsvr {' '.join(args)} failed: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    def create_tenant(self, rung, database_url):
        """A customer with a budget, a price with per-token rates, and a key, as an operator would."""
        env = dict(os.environ, DATABASE_URL=database_url, HOST="127.0.0.1", LOG_LEVEL="INFO", LOG_FORMAT="text",
                   # 1,000 concurrent streams need 1,000 upstream connections (default 512).
                   UPSTREAM_MAX_CONNECTIONS="2048")
        for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            env.pop(k, None)
        if database_url.startswith("postgres"):
            self.lmsvr(env, "migrate")
        customer = self.lmsvr(env, "create-customer", "Bench", f"bench-{rung[:2]}@example.com")
        self.lmsvr(env, "set-budget", str(customer["id"]), "1000000")
        self.lmsvr(env, "set-pricing", "llama3", "0.0001", "0", "--input-per-1m", "0.5", "--output-per-1m", "1.5")
        key = self.lmsvr(env, "generate-key", str(customer["id"]))["key"]
        self.rungs[rung] = dict(env=env, key=key, customer=customer["id"], pids=[])
        self.gateways.append(rung)

    def start_gateway(self, rung, upstream_ports):
        r = self.rungs[rung]
        if r.get("proc"):
            r["proc"].terminate()
            r["proc"].wait(timeout=40)
        port = free_port()
        env = dict(r["env"], PORT=str(port), OLLAMA_BASE_URL=",".join(f"http://127.0.0.1:{p}" for p in upstream_ports))
        proc = self.spawn([f"{self.bin}/lmsvr", "serve"], cpu=0, env=env, log_name=f"lmsvr-{rung[:2]}-{port}.log")
        wait_http(f"http://127.0.0.1:{port}/health")
        time.sleep(0.5)
        r.update(url=f"http://127.0.0.1:{port}", pids=[proc.pid], proc=proc, rss_start_kib=rss_kib(proc.pid),
                 anon_start_kib=rss_kib(proc.pid, "RssAnon"))
        log(f"{rung} on {port}")

    # --- measurements --------------------------------------------------------------------------

    def headers(self, rung):
        # Every rung gets the same header; only lmsvr checks it.
        key = next((r["key"] for r in self.rungs.values() if "key" in r), "none")
        return self.rungs[rung].get("key", key)

    def wrk(self, rung, body, concurrency, seconds, target=None):
        """One wrk run against a rung (or a peer `target`: url, path, key, pids)."""
        script = os.path.join(self.work, f"wrk-{body}.lua")
        if not os.path.exists(script):
            with open(script, "w") as f:
                f.write(f"""wrk.method = "POST"
wrk.body = io.open("{self.work}/{body}.json"):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"non2xx":%d,"socket_errors":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
""")
        r = target or self.rungs[rung]
        pids = r["pids"] + (self.pg_pids() if rung.startswith("R3") else [])
        before, db_before = cpu_ticks(r["pids"]), cpu_ticks(pids) - cpu_ticks(r["pids"])
        switches_before = context_switches(r["pids"])
        env = dict(os.environ, BENCH_KEY=r.get("key") or self.headers(rung))
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
                              "-s", script, f"{r['url']}{r.get('path', '/api/chat')}"], capture_output=True, text=True, env=env,
                             timeout=seconds + 30)
        line = next((l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result for {rung}: {out.stdout} {out.stderr}")
        res = json.loads(line[8:])
        after, db_after = cpu_ticks(r["pids"]), cpu_ticks(pids) - cpu_ticks(r["pids"])
        res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
        if r["pids"]:
            res["cpu_us_per_req"] = (after - before) * 1e6 / TICKS / max(1, res["requests"])
            res["switches_per_req"] = (context_switches(r["pids"]) - switches_before) / max(1, res["requests"])
        if rung.startswith("R3") and self.pg_pids():
            res["db_cpu_us_per_req"] = (db_after - db_before) * 1e6 / TICKS / max(1, res["requests"])
        return res

    def closed_loop(self):
        results = {}
        plan = [("small", c, self.p["rounds"]) for c in self.p["concurrencies"]] + [("big", 1, self.p["big_rounds"])]
        for body, c, rounds in plan:
            label = f"{body}/c{c}"
            for rung in self.rungs:  # warm-up, not recorded
                self.wrk(rung, body, c, self.p["warmup"])
            runs = {rung: [] for rung in self.rungs}
            for i in range(rounds):
                for rung in self.rungs:
                    runs[rung].append(self.wrk(rung, body, c, self.p["seconds"]))
                log(f"closed loop {label} round {i + 1}/{rounds}: " + ", ".join(
                    f"{k.split()[0]} p50 {v[-1]['p50_us']}us rps {v[-1]['rps']:.0f}" for k, v in runs.items()))
            results[label] = {rung: dict(rounds=rs, **median_of(rs)) for rung, rs in runs.items()}
        for rung in self.rungs:
            if self.rungs[rung]["pids"]:
                self.rungs[rung]["rss_warm_kib"] = rss_kib(self.rungs[rung]["pids"][0])
        return results

    def peer(self):
        """The LiteLLM proxy (no database, one master key: no budgets, no ledger) against lmsvr's
        OpenAI-compatible route, both translating to the same Ollama mock; R0 (Ollama format,
        direct) stays the floor."""
        port = free_port()
        config = os.path.join(self.work, "litellm.yaml")
        with open(config, "w") as f:
            f.write(f"""model_list:
  - model_name: llama3
    litellm_params:
      model: ollama_chat/llama3
      api_base: http://127.0.0.1:{self.answer_mock}
general_settings:
  master_key: sk-bench-master
""")
        # The shipped cost map, not a download at start-up: only 127.0.0.1 is used.
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
        proc = self.spawn([self.args.litellm, "--config", config, "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                          cpu=0, env=env, log_name="litellm.log", cwd=self.work)
        try:
            wait_http(f"http://127.0.0.1:{port}/health/liveliness", seconds=180)
        except RuntimeError:
            with open(os.path.join(self.work, "litellm.log")) as f:
                raise RuntimeError("LiteLLM did not start; its log ends: " + f.read()[-2000:])
        python = os.path.join(os.path.dirname(self.args.litellm), "python")
        version_line = "litellm " + version([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
        sqlite = self.rungs["R2 sqlite"]
        targets = {
            "R0 direct": dict(url=self.rungs["R0 direct"]["url"], path="/api/chat", pids=[], body="small"),
            "R2 sqlite, OpenAI route": dict(url=sqlite["url"], path="/v1/chat/completions", key=sqlite["key"],
                                            pids=sqlite["pids"], body="openai"),
            "R4 litellm": dict(url=f"http://127.0.0.1:{port}", path="/chat/completions", key="sk-bench-master",
                               pids=[proc.pid] + children_of(proc.pid), body="openai"),
        }
        results = dict(litellm=version_line, what_it_does_not_do="no budgets, no holds, no ledger, no per-customer keys "
                       "(database-less mode with one master key)", loads={})
        for c in self.p["peer_concurrencies"]:
            runs = {name: [] for name in targets}
            for name, t in targets.items():
                self.wrk(name, t["body"], c, self.p["warmup"], target=t)
            for i in range(self.p["rounds"]):
                for name, t in targets.items():
                    runs[name].append(self.wrk(name, t["body"], c, self.p["seconds"], target=t))
                log(f"peer c{c} round {i + 1}: " + ", ".join(f"{k} p50 {v[-1]['p50_us']}us rps {v[-1]['rps']:.0f}" for k, v in runs.items()))
            results["loads"][f"c{c}"] = {name: dict(rounds=rs, **median_of(rs)) for name, rs in runs.items()}
        results["litellm_rss_kib"] = sum(rss_kib(p) for p in [proc.pid] + children_of(proc.pid))
        results["lmsvr_rss_kib"] = rss_kib(sqlite["pids"][0])
        proc.terminate()
        return results

    def driver(self, mode, rung, body, *extra, timeout=900):
        r = self.rungs[rung]
        cmd = ["taskset", "-c", "1", f"{self.bin}/bench-driver", mode, "--url", f"{r['url']}/api/chat",
               "--body", os.path.join(self.work, f"{body}.json"), "--header", f"Authorization: Bearer {self.headers(rung)}",
               *map(str, extra)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"bench-driver {mode} on {rung} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def open_loop(self, closed):
        top = f"small/c{max(self.p['concurrencies'])}"
        results = {}
        for rung in [r for r in self.rungs if not r.startswith("R0")]:
            ceiling = closed[top][rung]["rps"]
            for fraction in self.p["open_fractions"]:
                rate = max(1.0, round(ceiling * fraction))
                if rate > self.args.open_max_rate:
                    # One core shared with the mock: beyond this the driver, not the server, queues.
                    results[f"{rung} @{int(fraction * 100)}%"] = dict(rung=rung, fraction=fraction, rate=rate, skipped=(
                        f"{rate:,.0f}/s is beyond the driver's own capacity on this machine (--open-max-rate {self.args.open_max_rate})"))
                    log(f"open loop {rung} at {rate}/s: skipped (beyond the driver)")
                    continue
                direct = self.driver("open", "R0 direct", "small", "--rate", rate, "--seconds", self.p["open_seconds"])
                run = self.driver("open", rung, "small", "--rate", rate, "--seconds", self.p["open_seconds"])
                results[f"{rung} @{int(fraction * 100)}%"] = dict(rung=rung, fraction=fraction, rate=rate, direct=direct, gateway=run)
                log(f"open loop {rung} at {rate}/s: p50 {run.get('latency_p50_us')}us p99 {run.get('latency_p99_us')}us "
                    f"(direct p99 {direct.get('latency_p99_us')}us)")
        return results

    def streams(self):
        results = {}
        for count in self.p["stream_counts"]:
            results[str(count)] = {}
            for rung in self.rungs:
                # A lone stream is repeated so its percentiles mean something.
                repeats = 20 if count == 1 and self.args.profile == "full" else 1
                res = self.driver("streams", rung, "stream", "--count", count, "--repeat", repeats, "--pace-ms", MOCK["pace_ms"])
                results[str(count)][rung] = res
                log(f"streams x{count} {rung}: ttft p99 {res.get('ttft_p99_us')}us gap max {res.get('gap_max_us')}us "
                    f"stalls {res['stalls']} transit p99 {res.get('transit_p99_us')}us delayed {res.get('delayed')} "
                    f"failed {res['failed']}")
        return results

    def memory(self, idle):
        results = {}
        for rung in [r for r in self.rungs if r.startswith(("R2", "R3"))]:
            res = self.driver("memory", rung, "slow", "--pid", self.rungs[rung]["pids"][0], "--steps",
                              ",".join(map(str, self.p["memory_steps"])), "--settle-seconds", self.p["memory_settle"])
            res["rss_start_kib"], res["anon_start_kib"] = idle[rung]
            res["rss_warm_kib"] = self.rungs[rung].get("rss_warm_kib")
            results[rung] = res
            log(f"memory {rung}: start {res['rss_start_kib']} KiB, per stream {res['kib_per_stream']} KiB")
        return results

    def store(self):
        results = {}
        sqlite_path = os.path.join(self.work, "store-bench.db")
        for name, url in (("sqlite", f"sqlite:///{sqlite_path}"), ("postgres", self.pg_url)):
            for customers in (1, 1000):
                cmd = ["taskset", "-c", "0", f"{self.bin}/store-bench", url, "--tasks", "16", "--pairs",
                       str(self.p["store_pairs"]), "--customers", str(customers)]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise RuntimeError(f"store-bench failed: {out.stderr.strip()}")
                results[f"{name}/{customers}"] = json.loads(out.stdout.strip().splitlines()[-1])
                log(f"store {name} customers={customers}: {results[f'{name}/{customers}']['pairs_per_second']} pairs/s")
        return results

    def commit_alone(self):
        """One durable commit of one small row at a time, with nothing of lmsvr around it, on the
        gateways' disk and PostgreSQL, pinned where the gateways run: issue 14 asks for c=1's added
        latency beyond this commit (bench/commit_alone.py)."""
        results = {}
        script = os.path.join(ROOT, "bench", "commit_alone.py")
        for name, where in (("sqlite", self.work), ("postgres", self.pg_url)):
            extra = ["--count", str(self.p["commit_count"])] if name == "sqlite" else ["--seconds", str(self.p["seconds"])]
            out = subprocess.run(["taskset", "-c", "0", sys.executable, script, name, where, *extra],
                                 capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"commit_alone {name} failed: {out.stderr.strip()}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"durable commit alone, {name}: p50 {results[name]['p50_us']:.0f} us")
        return results

    def ledger_check(self):
        """Every lmsvr request must have left exactly one ledger row."""
        out = {}
        for rung in [r for r in self.rungs if r.startswith(("R2", "R3"))]:
            r = self.rungs[rung]
            report = self.lmsvr(r["env"], "usage-report", str(r["customer"]))
            out[rung] = dict(rows=report.get("total_requests"), cost_usd=report.get("total_cost_usd", report.get("total_cost")))
        return out

    def meta(self):
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True).stdout.strip())
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        return dict(
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), git_sha=sha, git_dirty=dirty,
            profile=self.args.profile, bin_dir=os.path.relpath(self.bin, ROOT), build="release" if "release" in self.bin else "debug",
            cpu_model=cpu, cpus=os.cpu_count(), kernel=platform.release(),
            pinning="system under test (lmsvr, nginx, PostgreSQL) on CPU 0; wrk, bench-driver and the mock on CPU 1",
            mock=MOCK, postgres=self.pg_settings, lmsvr_settings="defaults (SQLITE_SYNCHRONOUS=FULL, LOG_LEVEL=INFO to a file), UPSTREAM_MAX_CONNECTIONS=2048",
            payload_bytes=dict(small=len(SMALL_BODY), big=len(BIG_BODY)),
            tools=dict(wrk=version(["wrk", "-v"]), nginx=version(["nginx", "-v"]),
                       postgres=version(["psql", "--version"]), swift=version(["swift", "--version"])),
            profile_settings=self.p)

    def run(self):
        self.start_mocks()
        self.start_proxy()
        self.start_postgres()
        self.create_tenant("R2 sqlite", f"sqlite:///{self.work}/lmsvr.db")
        self.create_tenant("R3 postgres", self.pg_url)
        result = dict(meta=self.meta())
        self.set_phase("answers")
        idle = {rung: (self.rungs[rung]["rss_start_kib"], self.rungs[rung]["anon_start_kib"]) for rung in self.gateways}
        result["closed_loop"] = closed = self.closed_loop()
        result["noise"] = noise_check(closed)
        # Right after the closed loop, so c=1 and the commit it is compared with see the same disk.
        result["commit_alone"] = self.commit_alone()
        if self.args.closed_only:
            return result
        result["open_loop"] = self.open_loop(closed)
        if self.args.litellm:
            try:
                result["peer"] = self.peer()
            except Exception as e:  # noqa: BLE001 - a peer that fails to run must not void the run
                log(f"peer rung failed: {e}")
                result["peer_error"] = str(e)
        self.set_phase("streams")
        result["streams"] = self.streams()
        # Fresh gateways: the stream phase's high-water mark would hide the per-stream cost.
        self.set_phase("streams")
        result["memory"] = self.memory(idle)
        result["ledger"] = self.ledger_check()
        result["store"] = self.store()
        return result


def tool_harness(bin_dir, ollama_servers=1):
    """A Harness for the tools that drive their own rungs (ab, ab_servers, floors, profile, soak):
    the full profile's settings, closed loop only."""
    return Harness(argparse.Namespace(profile="full", bin_dir=bin_dir, litellm=None, postgres_url=None,
                                      ollama_servers=ollama_servers, closed_only=True, open_max_rate=4000))


def start_one_rung(harness, database):
    """The mocks, nginx and one gateway answering, on SQLite ("R2 sqlite") or on the harness's own
    PostgreSQL ("R3 postgres"). Returns the rung's name and its database URL."""
    harness.start_mocks()
    harness.start_proxy()
    if database == "postgres":
        harness.start_postgres()
        rung, url = "R3 postgres", harness.pg_url
    else:
        rung, url = "R2 sqlite", f"sqlite:///{harness.work}/lmsvr.db"
    harness.create_tenant(rung, url)
    harness.set_phase("answers")
    return rung, url


def interleaved(harness, rungs, body, concurrency, rounds, seconds):
    """wrk rounds alternating between `rungs` (after a 2 s warm-up of each), so the machine's
    drift hits them alike; returns each rung's rounds. For A/B comparisons."""
    for name in rungs:
        harness.wrk(name, body, concurrency, 2)
    results = {name: [] for name in rungs}
    for _ in range(rounds):
        for name in rungs:
            results[name].append(harness.wrk(name, body, concurrency, seconds))
    return results


def print_medians(concurrency, results, width=14):
    """One line per rung: medians of req/s, p50 and CPU per request, and every round's CPU."""
    for name, rounds in results.items():
        rps = statistics.median(r["rps"] for r in rounds)
        cpu = statistics.median(r.get("cpu_us_per_req", 0) for r in rounds)
        p50 = statistics.median(r["p50_us"] for r in rounds)
        db = (f" + db {statistics.median(r['db_cpu_us_per_req'] for r in rounds):,.0f} us"
              if all("db_cpu_us_per_req" in r for r in rounds) else "")
        switches = (f"  switches/req {statistics.median(r['switches_per_req'] for r in rounds):4.1f}"
                    if all("switches_per_req" in r for r in rounds) else "")
        print(f"c={concurrency:<3} {name:{width}} {rps:9,.0f} req/s  p50 {p50 / 1000:6.2f} ms  CPU/req {cpu:6,.0f} us{db}{switches}  "
              f"(rounds: {', '.join(str(round(r.get('cpu_us_per_req', 0))) for r in rounds)})", flush=True)


def median_of(rounds):
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], (int, float))]
    return {k: statistics.median(r[k] for r in rounds if k in r) for k in keys if all(k in r for r in rounds)}


def noise_check(closed):
    """The direct rung's p99 at concurrency 1 against its own floor (its best round): a median
    more than twice the floor means the machine was busy, and the run is refused."""
    rounds = closed["small/c1"]["R0 direct"]["rounds"]
    floor = min(r["p99_us"] for r in rounds)
    median = statistics.median(r["p99_us"] for r in rounds)
    return dict(direct_p99_floor_us=floor, direct_p99_median_us=median, refused=median > 2 * floor,
                rule="refuse when the median round p99 of R0 at c=1 exceeds twice its best round")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, ".build/release"))
    ap.add_argument("--postgres-url", help="use this server (a fresh database in it) instead of starting one")
    ap.add_argument("--litellm", help="the LiteLLM proxy's `litellm` executable: adds it as a peer rung")
    ap.add_argument("--open-max-rate", type=int, default=4000,
                    help="highest open-loop rate the driver is trusted with (it shares CPU 1 with the mock)")
    ap.add_argument("--ollama-servers", type=int, default=1,
                    help="list the answers mock as this many Ollama servers (one port each): the routing's cost")
    ap.add_argument("--closed-only", action="store_true",
                    help="only the closed-loop table (for a quick A/B); prints it, keeps no result in bench/results")
    ap.add_argument("--out", help="JSON file to write (default bench/results/<date>-<sha>.json)")
    ap.add_argument("--no-report", action="store_true", help="print the table instead of regenerating docs/benchmarks.md")
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (bench/run.sh installs it)")
    # SIGTERM and SIGINT end the run through `finally`, so nothing it started outlives it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: sys.exit(128 + number))
    h = Harness(args)
    try:
        result = h.run()
    finally:
        h.stop()
    if args.closed_only:
        for load, rungs in result["closed_loop"].items():
            for rung, m in rungs.items():
                log(f"{load:10} {rung:12} {m['rps']:9.0f} req/s  p50 {m['p50_us'] / 1000:6.2f} ms  "
                    f"p99 {m['p99_us'] / 1000:6.2f} ms  CPU/req {m.get('cpu_us_per_req', 0):6.0f} us")
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1, sort_keys=True)
        return
    name = f"{result['meta']['date'].replace(':', '')}-{result['meta']['git_sha'][:8]}.json"
    # Smoke runs (CI) check that the harness works; their figures mean nothing and are not kept.
    default_dir = os.path.join(ROOT, "bench", "results") if args.profile == "full" else tempfile.gettempdir()
    out = args.out or os.path.join(default_dir, name if args.profile == "full" else f"lmsvr-bench-smoke-{name}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    log(f"wrote {out}")
    if result["noise"]["refused"] and args.profile == "full":
        log(f"refused: the direct rung was noisy ({result['noise']})")
        sys.exit(3)
    report = [sys.executable, os.path.join(ROOT, "bench", "report.py"), out]
    subprocess.run(report + (["--stdout"] if args.no_report else []), check=True)


if __name__ == "__main__":
    main()
