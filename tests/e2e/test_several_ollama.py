"""Three fake Ollama servers with different model sets behind one gateway (SQLite): requests reach
only servers that have their model, load follows outstanding requests, a server killed mid-burst
loses no request that had not started answering and each is billed once, a server that comes
back rejoins, and /health/ollama, /metrics, the listings and the official `ollama` client see it."""
import asyncio
import collections
import os
import signal
import subprocess
import tempfile
import time

import httpx
import ollama
import pytest

from conftest import FAKE, LMSVR, free_port


class Fake:
    def __init__(self, models: str, slow_ms: int = 300, port: int = 0, loaded: str = ""):
        args = [FAKE, "--port", str(port), "--models", models, "--slow-ms", str(slow_ms)]
        if loaded:
            args += ["--loaded", loaded]
        self.args = args
        self.start()

    def start(self):
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline().split()[-1])
        self.args[2] = str(self.port)  # the same port when restarted
        self.url = f"http://127.0.0.1:{self.port}"

    def metered(self) -> int:
        return httpx.get(self.url + "/_fake/stats").json()["metered"]

    def max_in_flight(self) -> int:
        return httpx.get(self.url + "/_fake/stats").json()["max_in_flight"]

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


class Gateway:
    def __init__(self, fakes: list[Fake], weights: dict[int, int] | None = None):
        self.workdir = tempfile.mkdtemp(prefix="lmsvr-several-")
        servers = ",".join(f.url + (f";weight={weights[i]}" if weights and i in weights else "") for i, f in enumerate(fakes))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, DATABASE_URL=f"sqlite:///{self.workdir}/lmsvr.db", HOST="127.0.0.1",
                        PORT=str(self.port), OLLAMA_BASE_URL=servers, OLLAMA_CHECK_INTERVAL_SECONDS="1",
                        LOG_LEVEL="WARNING")
        self.server = subprocess.Popen([LMSVR, "serve"], env=self.env, cwd=self.workdir,
                                       stderr=open(os.path.join(self.workdir, "serve.log"), "w"))
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and self.server.poll() is None, "lmsvr serve did not start"
            time.sleep(0.1)
        customer = self.cli("create-customer", "Several", "several@example.com")
        self.customer = customer["id"]
        self.key = self.cli("generate-key", str(self.customer))["key"]
        self.auth = {"Authorization": f"Bearer {self.key}"}
        self.wait_until(lambda: self.health()["healthy"] == len(fakes))

    def cli(self, *args):
        import json
        out = subprocess.run([LMSVR, *args, "--json"], env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def rows_per_server(self) -> dict:
        return collections.Counter(r.get("server") for r in self.cli("export-usage", str(self.customer)))

    def health(self) -> dict:
        return httpx.get(self.base + "/health/ollama", timeout=10).json()

    @staticmethod
    def wait_until(condition, seconds: float = 10):
        deadline = time.time() + seconds
        while not condition():
            assert time.time() < deadline, "condition not reached in time"
            time.sleep(0.2)

    def stop(self):
        self.server.terminate()
        assert self.server.wait(timeout=30) == 0


async def burst(base, headers, bodies, concurrency):
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(body):
            async with semaphore:
                path = "/api/embed" if body["model"] == "all-minilm" else "/api/chat"
                r = await client.post(base + path, json=body, headers=headers)
                await r.aread()
                return r

        return await asyncio.gather(*(one(b) for b in bodies))


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.fixture
def three():
    fakes = [Fake("llama3,mistral,slow", slow_ms=1000), Fake("llama3,slow", slow_ms=100), Fake("mistral,all-minilm")]
    gateway = Gateway(fakes)
    yield gateway, fakes
    gateway.stop()
    for f in fakes:
        if f.process.poll() is None:
            f.kill()


def test_requests_reach_only_servers_that_have_their_model(three):
    gateway, (a, b, c) = three
    responses = asyncio.run(burst(gateway.base, gateway.auth, [chat("mistral")] * 20 + [{"model": "all-minilm", "input": "x"}] * 5, 8))
    assert [r.status_code for r in responses] == [200] * 25
    assert b.metered() == 0  # B has no mistral and no all-minilm
    assert a.metered() + c.metered() == 25 and a.metered() > 0 and c.metered() >= 5
    # Each ledger row names the server that answered it.
    assert gateway.rows_per_server() == {a.url: a.metered(), c.url: c.metered()}
    # A model nobody serves: Ollama's own 404 through one of them.
    r = httpx.post(gateway.base + "/api/chat", json=chat("phi3"), headers=gateway.auth)
    assert r.status_code == 404 and "not found" in r.json()["error"]
    # The listings are the union, each model once; list-models says who serves what, customers
    # are not told (/api/models), nor shown the servers in their own export.
    names = sorted(m["name"] for m in httpx.get(gateway.base + "/api/tags", headers=gateway.auth).json()["models"])
    assert names == ["all-minilm:latest", "llama3:latest", "mistral:latest", "slow:latest"]
    priced = httpx.get(gateway.base + "/api/models", headers=gateway.auth).json()["models"]
    assert sorted(m["name"] for m in priced if m.get("served_by_ollama")) == names
    assert not any("servers" in m for m in priced)
    export = httpx.get(gateway.base + "/v1/usage/export?format=json", headers=gateway.auth).json()
    assert len(export) == 26 and not any("server" in row for row in export)
    listed = gateway.cli("list-models")
    assert sorted(next(m for m in listed if m["name"] == "mistral:latest")["servers"]) == sorted([a.url, c.url])
    assert sorted(next(m for m in listed if m["name"] == "llama3:latest")["servers"]) == sorted([a.url, b.url])
    # The official client, unchanged.
    client = ollama.Client(host=gateway.base, headers=gateway.auth)
    assert client.chat(model="mistral", messages=[{"role": "user", "content": "hi"}]).message.content
    assert {m.model for m in client.list().models} == set(names)


def test_load_follows_outstanding_requests(three):
    gateway, (a, b, _) = three
    # A answers `slow` in 1 s, B in 0.1 s: with 4 at a time, the fast one takes most of them.
    responses = asyncio.run(burst(gateway.base, gateway.auth, [chat("slow")] * 40, 4))
    assert [r.status_code for r in responses] == [200] * 40
    assert a.metered() + b.metered() == 40
    assert b.metered() > 3 * a.metered(), (a.metered(), b.metered())


def test_a_server_killed_mid_burst_loses_nothing_and_bills_once_then_rejoins(three):
    gateway, (a, b, _) = three

    async def run():
        task = asyncio.create_task(burst(gateway.base, gateway.auth, [chat("slow")] * 30, 10))
        await asyncio.sleep(0.5)  # some are waiting on A (1 s) when it dies, before any byte came back
        a.kill()
        return await task

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 30
    rows = gateway.cli("export-usage", str(gateway.customer))
    assert len(rows) == 30 and len({r["request_id"] for r in rows}) == 30
    assert all(r["outcome"] == "ok" for r in rows)
    # A died before answering any (it takes 1 s): every row names B, retried calls included.
    assert {r["server"] for r in rows} == {b.url}
    status = gateway.cli("check-budget", str(gateway.customer))
    assert status["spent_nanos"] == 30 * 10_000_000 and status["held_nanos"] == 0
    health = gateway.health()
    assert health["status"] == "degraded" and health["healthy"] == 2
    assert next(s for s in health["servers"] if s["url"] == a.url)["healthy"] is False
    metrics = httpx.get(gateway.base + "/metrics").text
    assert f'lmsvr_ollama_healthy{{server="{a.url}"}} 0' in metrics
    # Some were on A when it died, and were answered by B instead.
    failed = [line for line in metrics.splitlines()
              if line.startswith("lmsvr_ollama_requests_total") and a.url in line and 'status="failed"' in line]
    assert failed and float(failed[0].split()[-1]) >= 1, failed
    # Back on the same port: it rejoins and takes requests again.
    a.start()
    gateway.wait_until(lambda: gateway.health()["healthy"] == 3)
    before = a.metered()
    asyncio.run(burst(gateway.base, gateway.auth, [chat("mistral")] * 10, 4))
    assert a.metered() > before


def test_weights_skew_the_load():
    fakes = [Fake("slow", slow_ms=200), Fake("slow", slow_ms=200)]
    gateway = Gateway(fakes, weights={0: 3})
    try:
        responses = asyncio.run(burst(gateway.base, gateway.auth, [chat("slow")] * 48, 8))
        assert [r.status_code for r in responses] == [200] * 48
        heavy, light = fakes[0].metered(), fakes[1].metered()
        # Outstanding requests per unit of weight: 6 and 2 of the 8 at a time.
        assert heavy + light == 48 and light > 0 and heavy > 2 * light, (heavy, light)
        # Never more than that (the fake counts a call until it answers; the gateway until it settles).
        assert fakes[0].max_in_flight() <= 6 and fakes[1].max_in_flight() <= 2
        assert gateway.rows_per_server() == {fakes[0].url: heavy, fakes[1].url: light}
    finally:
        gateway.stop()
        for f in fakes:
            f.kill()


def test_a_server_with_the_model_loaded_is_preferred_while_it_has_a_free_slot():
    cold, warm = Fake("llama3,slow", slow_ms=300), Fake("llama3,slow", slow_ms=300, loaded="llama3,slow")
    gateway = Gateway([cold, warm])
    try:
        gateway.wait_until(lambda: sorted(gateway.health()["servers"][1]["loaded"]) == ["llama3", "slow"])
        # One at a time: every call goes where the model is loaded, none forces a load elsewhere.
        responses = asyncio.run(burst(gateway.base, gateway.auth, [chat("llama3")] * 10, 1))
        assert [r.status_code for r in responses] == [200] * 10
        assert (cold.metered(), warm.metered()) == (0, 10)
        # Eight at a time: the loaded server takes its four slots, the other the rest.
        responses = asyncio.run(burst(gateway.base, gateway.auth, [chat("slow")] * 32, 8))
        assert [r.status_code for r in responses] == [200] * 32
        assert warm.max_in_flight() <= 4 and cold.max_in_flight() <= 4
        assert cold.metered() >= 8 and warm.metered() - 10 >= 8 and cold.metered() + warm.metered() == 42
    finally:
        gateway.stop()
        for f in (cold, warm):
            f.kill()


def test_a_busy_server_is_retried_once_on_another_that_has_the_model_and_a_500_is_not():
    a, b, c = Fake("busy503,error500,llama3"), Fake("busy503,error500"), Fake("llama3")
    gateway = Gateway([a, b, c])
    try:
        def calls():
            return a.metered(), b.metered(), c.metered()

        # 503 (Ollama's queue is full): tried on the other server that has the model, once.
        r = httpx.post(gateway.base + "/api/chat", json=chat("busy503"), headers=gateway.auth)
        assert r.status_code == 503 and "server busy" in r.json()["error"]
        assert calls() == (1, 1, 0)
        # 500 is about the request: not retried.
        r = httpx.post(gateway.base + "/api/chat", json=chat("error500"), headers=gateway.auth)
        assert r.status_code == 500 and sum(calls()) == 3
        # With B gone, nobody else has busy503: the first answer stands, C is never asked.
        b.kill()
        gateway.wait_until(lambda: gateway.health()["healthy"] == 2)
        before = a.metered()
        r = httpx.post(gateway.base + "/api/chat", json=chat("busy503"), headers=gateway.auth)
        assert r.status_code == 503 and (a.metered(), c.metered()) == (before + 1, 0)
        rows = gateway.cli("export-usage", str(gateway.customer))
        assert [r["outcome"] for r in rows] == ["upstream_error"] * 3 and all(float(r["cost_usd"]) == 0 for r in rows)
        assert {r["server"] for r in rows} <= {a.url, b.url}
        assert gateway.cli("check-budget", str(gateway.customer))["held_nanos"] == 0
    finally:
        gateway.stop()
        for f in (a, b, c):
            if f.process.poll() is None:
                f.kill()


def test_all_servers_down_is_503_on_health_and_502_on_requests(three):
    gateway, fakes = three
    for f in fakes:
        f.kill()
    gateway.wait_until(lambda: gateway.health()["healthy"] == 0)
    assert httpx.get(gateway.base + "/health/ollama").status_code == 503
    r = httpx.post(gateway.base + "/api/chat", json=chat("llama3"), headers=gateway.auth)
    assert r.status_code == 502
    listed = subprocess.run([LMSVR, "list-models"], env=gateway.env, capture_output=True, text=True)
    assert listed.returncode == 0
    warning = [line for line in listed.stderr.splitlines() if line]
    assert len(warning) == 1 and all(f.url in warning[0] for f in fakes)
