"""Several `lmsvr serve` replicas on one PostgreSQL: budgets stay exact across processes and a
revoked key is refused by every replica, connected directly and through PgBouncer in transaction
mode. Needs LMSVR_TEST_POSTGRES_URL (scripts/test.sh)."""
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid

import httpx
import pytest

from conftest import FAKE, LMSVR, free_port
from pgbouncer import PgBouncer


def fresh_database() -> str:
    admin = os.environ.get("LMSVR_TEST_POSTGRES_URL")
    assert admin, "LMSVR_TEST_POSTGRES_URL is not set: run scripts/test.sh, which starts PostgreSQL"
    name = "lmsvr_e2e_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return admin.rsplit("/", 1)[0] + "/" + name


class Replicas:
    """`count` replicas on a fresh database; with a `pooler`, their pools (and every CLI command)
    go through it in transaction mode, and only LISTEN and migrations go to the server directly."""

    def __init__(self, count: int, extra_env: dict[str, str] | None = None, pooler: PgBouncer | None = None):
        self.workdir = tempfile.mkdtemp(prefix="lmsvr-replicas-")
        self.direct = fresh_database()
        self.db = pooler.url_for(self.direct) if pooler else self.direct
        self.fake = subprocess.Popen([FAKE, "--port", "0"], stdout=subprocess.PIPE, text=True)
        self.upstream = int(self.fake.stdout.readline().split()[-1])
        self.env = dict(os.environ, DATABASE_URL=self.db, OLLAMA_BASE_URL=f"http://127.0.0.1:{self.upstream}",
                        HOST="127.0.0.1", LOG_LEVEL="WARNING", DB_POOL_SIZE="16", DB_POOL_WAIT_MS="10000")
        if pooler:
            self.env.update(DATABASE_POOL_MODE="transaction", DATABASE_DIRECT_URL=self.direct)
        self.env.update(extra_env or {})
        subprocess.run([LMSVR, "migrate"], env=self.env, check=True, capture_output=True)
        self.ports = [free_port() for _ in range(count)]
        self.servers = [self.start(i) for i in range(count)]
        for port in self.ports:
            deadline = time.time() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline, "a replica did not start"
                time.sleep(0.1)

    def start(self, i: int) -> subprocess.Popen:
        """Starts replica i (again), logging to a file: a pipe nobody reads would fill and
        block the server."""
        log = open(os.path.join(self.workdir, f"replica-{i}.log"), "a")
        return subprocess.Popen([LMSVR, "serve", "--port", str(self.ports[i])], env=self.env, cwd=self.workdir,
                                stderr=log, text=True)

    def log(self, i: int) -> str:
        with open(os.path.join(self.workdir, f"replica-{i}.log")) as f:
            return f.read()

    def cli(self, *args: str):
        out = subprocess.run([LMSVR, *args, "--json"], env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def customer(self, budget: str | None):
        args = ["create-customer", "Replica", f"r-{uuid.uuid4().hex[:8]}@example.com"]
        if budget:
            args += ["--budget", budget]
        c = self.cli(*args)
        return c["id"], self.cli("generate-key", str(c["id"]))["key"]

    def stop(self):
        codes = []
        for server in self.servers:
            server.terminate()
            codes.append(server.wait(timeout=30))
        self.fake.terminate()
        return codes


@pytest.fixture(scope="module")
def pgbouncer():
    pooler = PgBouncer(os.environ["LMSVR_TEST_POSTGRES_URL"])
    yield pooler
    pooler.stop()


@pytest.fixture(params=["direct", "pgbouncer"])
def replicas(request):
    r = Replicas(2, pooler=request.getfixturevalue("pgbouncer") if request.param == "pgbouncer" else None)
    yield r
    assert r.stop() == [0, 0]


async def burst(ports, key, n, body):
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one(i):
            r = await client.post(f"http://127.0.0.1:{ports[i % len(ports)]}/api/chat", json=body,
                                  headers={"Authorization": f"Bearer {key}"})
            await r.aread()
            return r.status_code
        return await asyncio.gather(*(one(i) for i in range(n)))


def ledger_total(r, customer) -> tuple[int, int]:
    rows = r.cli("export-usage", str(customer))
    total = sum(round(float(row["cost_usd"]) * 1_000_000_000) for row in rows)
    return len(rows), total


@pytest.mark.parametrize("stream", [False, True])
def test_a_burst_across_replicas_admits_exactly_what_the_budget_fits(replicas, stream):
    customer, key = replicas.customer(budget="1.00")  # 100 requests at the $0.01 default
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    statuses = asyncio.run(burst(replicas.ports, key, 600, body))
    assert statuses.count(200) == 100
    assert statuses.count(402) == 500
    assert not [s for s in statuses if s >= 500]
    status = replicas.cli("check-budget", str(customer))
    assert status["spent_nanos"] == 1_000_000_000 and status["held_nanos"] == 0
    rows, total = ledger_total(replicas, customer)
    assert rows == 600 and total == status["spent_nanos"]


def test_token_priced_requests_with_max_tokens_never_overspend(replicas):
    replicas.cli("set-pricing", "llama3", "0", "0", "--input-per-1m", "1000", "--output-per-1m", "2000")
    # Each hold covers the prompt's bound (its bytes plus PROMPT_OVERHEAD_TOKENS and
    # MESSAGE_OVERHEAD_TOKENS, about 0.64 USD here) and 4 output tokens; each request costs 0.034 USD.
    customer, key = replicas.customer(budget="5.00")
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "options": {"num_predict": 4}}
    statuses = asyncio.run(burst(replicas.ports, key, 300, body))
    assert not [s for s in statuses if s >= 500]
    status = replicas.cli("check-budget", str(customer))
    assert 0 < status["spent_nanos"] <= status["budget_nanos"]
    assert status["held_nanos"] == 0
    _, total = ledger_total(replicas, customer)
    assert total == status["spent_nanos"]


def test_a_revoked_key_is_refused_by_every_replica(replicas):
    customer, _ = replicas.customer(budget=None)
    delays = []
    with httpx.Client(timeout=10) as client:
        for _ in range(50):
            key = replicas.cli("generate-key", str(customer))
            headers = {"Authorization": f"Bearer {key['key']}"}
            for port in replicas.ports:
                assert client.get(f"http://127.0.0.1:{port}/api/version", headers=headers).status_code == 200
            replicas.cli("revoke-key", str(key["id"]))
            revoked_at = time.perf_counter()
            pending = set(replicas.ports)
            while pending:
                for port in list(pending):
                    if client.get(f"http://127.0.0.1:{port}/api/version", headers=headers).status_code == 401:
                        pending.discard(port)
                assert time.perf_counter() - revoked_at < 5, "a replica kept accepting a revoked key"
            delays.append((time.perf_counter() - revoked_at) * 1000)
    delays.sort()
    p99 = delays[int(len(delays) * 0.99) - 1] if len(delays) >= 100 else delays[-1]
    print(f"\nrevocation until both replicas refuse: p50 {statistics.median(delays):.2f} ms, "
          f"p99 (max of 50) {p99:.2f} ms")


def test_serve_refuses_a_schema_that_is_behind():
    db = fresh_database()
    env = dict(os.environ, DATABASE_URL=db, PORT=str(free_port()), HOST="127.0.0.1")
    result = subprocess.run([LMSVR, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "run `lmsvr migrate`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
