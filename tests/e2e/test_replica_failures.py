"""Replicas on one PostgreSQL when things break: a replica killed with requests in flight, and
the database going away under load."""
import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from test_replicas import Replicas


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def fake_calls(r) -> int:
    return httpx.get(f"http://127.0.0.1:{r.upstream}/_fake/stats").json()["calls"]


def test_a_replica_killed_mid_stream_leaves_holds_the_survivor_releases():
    r = Replicas(2, extra_env={"HOLD_EXPIRY_SECONDS": "10", "UPSTREAM_READ_TIMEOUT_SECONDS": "5"})
    customer, key = r.customer(budget="10.00")
    headers = {"Authorization": f"Bearer {key}"}
    started = threading.Barrier(6)

    def stream():
        try:
            with httpx.stream("POST", f"http://127.0.0.1:{r.ports[0]}/api/chat", headers=headers, timeout=30,
                              json={"model": "drip", "messages": []}) as response:
                for _ in response.iter_lines():
                    started.wait(timeout=10)
                    time.sleep(10)
        except (httpx.HTTPError, threading.BrokenBarrierError):
            pass

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    started.wait(timeout=10)
    r.servers[0].send_signal(signal.SIGKILL)
    r.servers[0].wait(timeout=10)
    held = r.cli("check-budget", str(customer))["held_nanos"]
    assert held == 5 * 10_000_000, "the dead replica's five holds are still held"
    # The survivor keeps serving.
    for _ in range(3):
        assert httpx.post(f"http://127.0.0.1:{r.ports[1]}/api/chat", headers=headers, timeout=10,
                          json={"model": "llama3", "messages": [], "stream": False}).status_code == 200
    deadline = time.time() + 40
    while r.cli("check-budget", str(customer))["held_nanos"] != 0:
        assert time.time() < deadline, "the survivor never released the dead replica's holds"
        time.sleep(0.5)
    status = r.cli("check-budget", str(customer))
    rows = r.cli("export-usage", str(customer))
    assert sorted(row["outcome"] for row in rows) == ["hold_expired"] * 5 + ["ok"] * 3
    assert len({row["request_id"] for row in rows}) == 8
    assert sum(round(float(row["cost_usd"]) * 1e9) for row in rows) == status["spent_nanos"] == 30_000_000
    r.servers[1].terminate()
    assert r.servers[1].wait(timeout=30) == 0
    r.fake.terminate()


def pg_ctl(*args: str):
    binary = os.path.join(os.environ["LMSVR_TEST_PG_BIN"], "pg_ctl")
    command = [binary, "-D", os.environ["LMSVR_TEST_PG_DATA"], *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def replicas():
    r = Replicas(2)
    yield r
    assert r.stop() == [0, 0]


def test_a_database_outage_is_503_without_upstream_calls_and_recovers_by_itself(replicas):
    for name in ("LMSVR_TEST_PG_BIN", "LMSVR_TEST_PG_DATA", "LMSVR_TEST_PG_OPTS"):
        assert os.environ.get(name), f"{name} is not set: run scripts/test.sh"
    _, key = replicas.customer(budget=None)
    headers = {"Authorization": f"Bearer {key}"}
    chat = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    with httpx.Client(timeout=30) as client:
        for port in replicas.ports:
            assert client.post(f"http://127.0.0.1:{port}/api/chat", headers=headers, json=chat).status_code == 200
        before = [rss_kib(s.pid) for s in replicas.servers]
        calls = fake_calls(replicas)
        pg_ctl("stop", "-m", "fast", "-w")
        try:
            for i in range(200):
                port = replicas.ports[i % 2]
                if i % 2:
                    r = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers=headers, json=chat)
                    assert r.status_code == 503
                    assert r.json()["error"]["type"] == "service_unavailable_error"
                else:
                    r = client.post(f"http://127.0.0.1:{port}/api/chat", headers=headers, json=chat)
                    assert r.status_code == 503
                    assert "unavailable" in r.json()["error"]
            for port in replicas.ports:
                assert client.get(f"http://127.0.0.1:{port}/health").status_code == 503
            assert fake_calls(replicas) == calls, "a request reached the upstream without a hold"
        finally:
            pg_ctl("start", "-w", "-t", "30", "-o", os.environ["LMSVR_TEST_PG_OPTS"],
                   "-l", os.environ["LMSVR_TEST_PG_DATA"] + "/../outage.log")
        deadline = time.time() + 30
        for port in replicas.ports:
            while client.post(f"http://127.0.0.1:{port}/api/chat", headers=headers, json=chat).status_code != 200:
                assert time.time() < deadline, "a replica did not recover after the database came back"
                time.sleep(0.2)
        after = [rss_kib(s.pid) for s in replicas.servers]
    for b, a in zip(before, after):
        assert a - b < 30_000, f"RSS grew from {b} KiB to {a} KiB across the outage"
