"""lmsvr behind PgBouncer in transaction mode (Debian's pgbouncer): migrations and the change
listener need the server itself (DATABASE_DIRECT_URL), everything else goes through the pooler
with unnamed statements (DATABASE_POOL_MODE=transaction). The replicas suite runs its burst and
revocation tests through the pooler too (test_replicas.py)."""
import json
import os
import subprocess
import tempfile
import time

import urllib.error
import urllib.request

import pytest

from conftest import LMSVR, Gateway, free_port
from pgbouncer import PgBouncer
from test_replicas import fresh_database


@pytest.fixture(scope="module")
def pooler():
    p = PgBouncer(os.environ["LMSVR_TEST_POSTGRES_URL"], pool_size=4)
    yield p
    p.stop()


def run(env, *args, timeout=60):
    return subprocess.run([LMSVR, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_without_a_direct_url_migrate_and_serve_refuse_with_the_reason(pooler):
    direct = fresh_database()
    env = dict(os.environ, DATABASE_URL=pooler.url_for(direct), DATABASE_POOL_MODE="transaction", HOST="127.0.0.1",
               PORT=str(free_port()))
    env.pop("DATABASE_DIRECT_URL", None)
    for args in (["migrate"], ["serve"]):
        r = run(env, *args)
        assert r.returncode == 2, r.stderr
        assert "DATABASE_DIRECT_URL" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = dict(env, DATABASE_DIRECT_URL="sqlite:///x.db")
    r = run(bad, "list-customers")
    assert r.returncode == 2 and "DATABASE_DIRECT_URL" in r.stderr


def test_the_cli_works_through_the_pooler_and_named_statements_fail_with_a_hint(pooler):
    direct = fresh_database()
    pooled = pooler.url_for(direct)
    env = dict(os.environ, DATABASE_URL=pooled, DATABASE_POOL_MODE="transaction", DATABASE_DIRECT_URL=direct)
    r = run(env, "migrate", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["applied"]
    # Every command, several times over: each transaction lands on whichever of the pooler's
    # four server connections is free, where earlier clients' statements may linger.
    for i in range(3):
        customer = json.loads(run(env, "create-customer", f"C{i}", f"c{i}@example.com", "--budget", "10", "--json").stdout)
        key = json.loads(run(env, "generate-key", str(customer["id"]), "--json").stdout)
        assert key["key"].startswith("sk_")
        for args in (["set-pricing", "llama3", "0.001", "0", "--json"], ["list-keys", str(customer["id"]), "--json"],
                     ["check-budget", str(customer["id"]), "--json"], ["usage-report", str(customer["id"]), "--json"],
                     ["export-usage", str(customer["id"]), "--json"], ["list-customers", "--json"],
                     ["list-pricing", "--json"], ["revoke-key", str(key["id"]), "--json"], ["migrate", "--status", "--json"]):
            r = run(env, *args)
            assert r.returncode == 0, f"{args}: {r.stderr}"
            json.loads(r.stdout)
    # The same pooler with named statements (the default, for a direct connection or session
    # mode) trips over the statements earlier clients left on the server connections.
    session = dict(env, DATABASE_POOL_MODE="session")
    failures = [run(session, "list-customers") for _ in range(4)]
    failed = [f for f in failures if f.returncode != 0]
    assert failed, "named statements through a transaction-mode pooler went unnoticed"
    assert all("DATABASE_POOL_MODE=transaction" in f.stderr for f in failed), failed[0].stderr


def test_a_listener_behind_the_pooler_is_reported_and_cached_keys_still_expire(pooler):
    """DATABASE_DIRECT_URL pointed at the pooler by mistake: the listener's session is not the
    server's own (its backend pid differs from the one in the connection's key data), and a
    transaction-mode pooler may hand its notices to other clients. serve says so, and sends no
    markers, so a key revoked behind its back is refused within CACHE_TTL_SECONDS."""
    direct = fresh_database()
    pooled = pooler.url_for(direct)
    migrated = run(dict(os.environ, DATABASE_URL=pooled, DATABASE_POOL_MODE="transaction", DATABASE_DIRECT_URL=direct),
                   "migrate")
    assert migrated.returncode == 0, migrated.stderr
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir, extra_env=dict(DATABASE_URL=pooled, DATABASE_POOL_MODE="transaction",
                                            DATABASE_DIRECT_URL=pooled, CACHE_TTL_SECONDS="2"))
        try:
            deadline = time.time() + 10
            while "session is not the server's own" not in open(g.log_path).read():
                assert time.time() < deadline, open(g.log_path).read()
                time.sleep(0.1)
            customer_id, key = g.customer()
            assert status(g.base + "/api/version", key) == 200
            # Revoked in replica mode, which fires no trigger: only the TTL can end the cached entry.
            subprocess.run(["psql", direct, "-qc", "SET session_replication_role = replica; "
                            f"UPDATE api_keys SET revoked_us = 1 WHERE customer_id = {customer_id}"], check=True)
            revoked_at = time.time()
            while status(g.base + "/api/version", key) == 200:
                assert time.time() - revoked_at < 6, "a revoked key outlived the TTL behind a pooler"
                time.sleep(0.1)
        finally:
            assert g.stop() == 0


def status(url, key):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
