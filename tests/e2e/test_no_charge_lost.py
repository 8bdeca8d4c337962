"""No charge is lost (issue 12): replicas on one PostgreSQL that is restarted under load, and a
replica killed while settles wait in its journal. Every answer that completed with 200 must have
exactly one charged ledger row, the rows must sum to spent, and nothing may stay held."""
import os
import signal
import threading
import time

import httpx

from test_replica_failures import pg_ctl
from test_replicas import Replicas


def pg_start():
    pg_ctl("start", "-w", "-t", "30", "-o", os.environ["LMSVR_TEST_PG_OPTS"],
           "-l", os.environ["LMSVR_TEST_PG_DATA"] + "/../outage.log")


def wait_until_drained(ports, timeout=60):
    deadline = time.time() + timeout
    started = time.time()
    for port in ports:
        health = None
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                if health["status"] == "ok" and health["journal"]["depth"] == 0:
                    break
            except (httpx.HTTPError, ValueError, KeyError) as error:
                health = repr(error)
            assert time.time() < deadline, f"a replica's journal did not drain: {health}"
            time.sleep(0.1)
    return time.time() - started


def check_ledger(r, customer, served_ids):
    rows = r.cli("export-usage", str(customer))
    by_id = {}
    for row in rows:
        by_id.setdefault(row["request_id"], []).append(row)
    for request_id in served_ids:
        assert request_id in by_id, f"{request_id} was served with 200 and has no ledger row"
        charged = [row for row in by_id[request_id] if row["cost_usd"] != "0.00"]
        assert len(by_id[request_id]) == 1 and len(charged) == 1, by_id[request_id]
    status = r.cli("check-budget", str(customer))
    total = sum(round(float(row["cost_usd"]) * 1_000_000_000) for row in rows)
    assert total == status["spent_nanos"]
    assert status["held_nanos"] == 0
    return rows


def test_a_postgres_restart_under_steady_load_loses_no_charge():
    for name in ("LMSVR_TEST_PG_BIN", "LMSVR_TEST_PG_DATA", "LMSVR_TEST_PG_OPTS"):
        assert os.environ.get(name), f"{name} is not set: run scripts/test.sh"
    r = Replicas(2, extra_env={"DB_POOL_WAIT_MS": "1000"})
    customer, key = r.customer(budget=None)
    headers = {"Authorization": f"Bearer {key}"}
    served, refused, lock, stop = [], [], threading.Lock(), threading.Event()

    def client(i):
        # Half stream (long enough to be in flight when the database goes), half answer at once.
        body = {"model": "drip" if i % 2 else "llama3", "messages": [], "stream": bool(i % 2)}
        port = r.ports[i % 2]
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    response = c.post(f"http://127.0.0.1:{port}/api/chat", headers=headers, json=body)
                except httpx.HTTPError:
                    continue
                complete = response.status_code == 200 and '"done":true' in response.text
                with lock:
                    (served if complete else refused).append(response.headers["x-request-id"])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(3)
    pg_ctl("stop", "-m", "fast", "-w")
    time.sleep(2)
    pg_start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    drain = wait_until_drained(r.ports)
    journaled = sum(int(line.split()[-1]) for port in r.ports
                    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines()
                    if line.startswith("lmsvr_journal_writes_total"))
    rows = check_ledger(r, customer, served)
    print(f"\nrestart under load: {len(served)} served with 200, {len(refused)} refused, {len(rows)} ledger rows, "
          f"{journaled} settles journaled, drained {drain:.2f} s after the load stopped")
    assert len(served) > 50 and journaled > 0, "the outage should have caught settles in flight"
    assert r.stop() == [0, 0]


def test_a_replica_killed_during_an_outage_replays_its_journal_when_it_starts_again():
    r = Replicas(1, extra_env={"DB_POOL_WAIT_MS": "500"})
    customer, key = r.customer(budget=None)
    headers = {"Authorization": f"Bearer {key}"}
    first_chunk = threading.Barrier(6)
    served = []

    def stream():
        with httpx.stream("POST", f"http://127.0.0.1:{r.ports[0]}/api/chat", headers=headers, timeout=30,
                          json={"model": "drip", "messages": []}) as response:
            body = ""
            for line in response.iter_lines():
                if not body:
                    first_chunk.wait(timeout=10)
                body += line + "\n"
            if '"done":true' in body:
                served.append(response.headers["x-request-id"])

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(5)]
    for t in threads:
        t.start()
    first_chunk.wait(timeout=10)  # all five admitted, holds in the database
    pg_ctl("stop", "-m", "fast", "-w")
    try:
        for t in threads:
            t.join(timeout=30)
        assert len(served) == 5, "the admitted streams finish while the database is down"
        health = httpx.get(f"http://127.0.0.1:{r.ports[0]}/health").json()
        assert health["status"] == "degraded" and health["journal"]["depth"] == 5
        r.servers[0].send_signal(signal.SIGKILL)
        r.servers[0].wait(timeout=10)
    finally:
        pg_start()
    # The same replica starts again (same working directory, so the same journal directory).
    r.servers[0] = r.start(0)
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{r.ports[0]}/health", timeout=1).json()["status"] == "ok":
                break
        except (httpx.HTTPError, ValueError):
            pass
        assert time.time() < deadline, "the replica did not start again"
        time.sleep(0.1)
    rows = check_ledger(r, customer, served)
    assert sorted(row["outcome"] for row in rows) == ["ok"] * 5
    assert r.stop() == [0]
