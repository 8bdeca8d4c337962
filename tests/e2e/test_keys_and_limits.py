"""Scoped keys and limits. Across two replicas on PostgreSQL: a burst against a request limit of k
admits exactly k, a concurrency limit of c never has more than c of the key's requests at the
upstream, a token limit admits exactly what its bound fits, and expired or rotated-out keys are
refused by both replicas. On one gateway: scopes in all three dialects, the official SDKs' error
classes for 403 and 429, and self-service usage that shows a key holder only their own account."""
import asyncio
import csv
import io
import re
import subprocess
import time

import anthropic
import httpx
import openai
import pytest

from conftest import LMSVR
from test_replicas import Replicas

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.fixture(scope="module")
def replicas():
    r = Replicas(2)
    yield r
    assert r.stop() == [0, 0]


async def burst(ports, key, n, body, path="/api/chat"):
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one(i):
            r = await client.post(f"http://127.0.0.1:{ports[i % len(ports)]}{path}", json=body,
                                  headers={"Authorization": f"Bearer {key}"})
            await r.aread()
            return r
        return await asyncio.gather(*(one(i) for i in range(n)))


def key_for(r, customer: int, *args: str) -> tuple[int, str]:
    k = r.cli("generate-key", str(customer), *args)
    return k["id"], k["key"]


# MARK: across replicas


def test_a_burst_against_a_request_limit_admits_exactly_k_across_replicas(replicas):
    customer, _ = replicas.customer(budget=None)
    key_id, key = key_for(replicas, customer)
    shown = replicas.cli("set-limits", str(key_id), "--rpm", "10")
    assert shown["limits"]["rpm"] == 10
    responses = asyncio.run(burst(replicas.ports, key, 60, CHAT))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 50
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.headers["x-ratelimit-limit-requests"] == "10" for r in refused)
    assert "10 requests per minute" in refused[0].json()["error"]
    rows = replicas.cli("export-usage", str(customer))
    assert sorted(r["outcome"] for r in rows) == ["ok"] * 10 + ["rate_limited"] * 50
    assert all(r["cost_usd"] == "0.00" or float(r["cost_usd"]) == 0 for r in rows if r["outcome"] == "rate_limited")
    assert all(r["http_status"] == 429 for r in rows if r["outcome"] == "rate_limited")


def test_a_concurrency_limit_bounds_requests_in_flight_at_the_upstream(replicas):
    customer, _ = replicas.customer(budget=None)
    key_id, key = key_for(replicas, customer)
    replicas.cli("set-limits", str(key_id), "--concurrency", "3")
    httpx.get(f"http://127.0.0.1:{replicas.upstream}/_fake/stats?reset=1")
    body = dict(CHAT, model="slow")
    responses = asyncio.run(burst(replicas.ports, key, 16, body))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 3 and statuses.count(429) == 13
    assert httpx.get(f"http://127.0.0.1:{replicas.upstream}/_fake/stats").json()["max_in_flight"] == 3
    # The customer's own limit applies over all its keys together.
    replicas.cli("set-limits", str(key_id), "--concurrency", "none")
    replicas.cli("set-limits", "--customer", str(customer), "--concurrency", "2")
    _, second = key_for(replicas, customer)
    both = asyncio.run(burst(replicas.ports, key, 6, body)) + asyncio.run(burst(replicas.ports, second, 1, body))
    assert sum(r.status_code == 200 for r in both) >= 2
    status = replicas.cli("check-budget", str(customer))
    assert status["limits"]["limits"]["concurrency"] == 2 and status["limits"]["in_flight"] == 0


def test_a_token_limit_admits_exactly_what_the_bounds_fit(replicas):
    # Token-priced, so the budget holds the same bound the token limit takes.
    replicas.cli("set-pricing", "slow", "0", "0", "--input-per-1m", "1", "--output-per-1m", "2")
    customer, _ = replicas.customer(budget="100.00")
    key_id, key = key_for(replicas, customer)
    body = dict(CHAT, model="slow", options={"num_predict": 50})
    # A limit of 1 token refuses the request for good and names its bound.
    replicas.cli("set-limits", str(key_id), "--tpm", "1")
    r = httpx.post(f"http://127.0.0.1:{replicas.ports[0]}/api/chat", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 429 and "retry-after" not in r.headers
    bound = int(re.search(r"up to (\d+) tokens", r.json()["error"]).group(1))
    # Room for two bounds and a half, not three: exactly two of a burst are admitted (the slow
    # model keeps them in flight, so none gives tokens back meanwhile). The half bound is margin:
    # the bucket drains at the limit's rate, so with a room one token short (3 × bound − 1) a
    # burst spread over more than ~0.1 s on a loaded machine let a third in; half a bound takes
    # ~12 s to drain, four times the slow model's answer.
    tpm = 2 * bound + bound // 2
    replicas.cli("set-limits", str(key_id), "--tpm", str(tpm))
    statuses = [r.status_code for r in asyncio.run(burst(replicas.ports, key, 12, body))]
    assert statuses.count(200) == 2 and statuses.count(429) == 10
    # Each used far less than its bound and got the rest back: there is room again.
    usage = httpx.get(f"http://127.0.0.1:{replicas.ports[1]}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert usage["key"]["limits"]["tokens_per_minute"] == tpm
    assert usage["key"]["limits"]["tokens_in_last_minute"] < bound
    rows = replicas.cli("export-usage", str(customer))
    charged = [r for r in rows if r["outcome"] == "ok"]
    assert len(charged) == 2 and all(float(r["cost_usd"]) > 0 for r in charged)
    assert replicas.cli("check-budget", str(customer))["held_nanos"] == 0


def test_expired_and_rotated_out_keys_are_refused_by_both_replicas(replicas):
    customer, _ = replicas.customer(budget=None)
    _, short = key_for(replicas, customer, "--expires-in", "3s")
    headers = {"Authorization": f"Bearer {short}"}
    for port in replicas.ports:
        assert httpx.get(f"http://127.0.0.1:{port}/api/version", headers=headers).status_code == 200
    time.sleep(3.2)
    for port in replicas.ports:
        r = httpx.get(f"http://127.0.0.1:{port}/api/version", headers=headers)
        assert r.status_code == 401 and "expired" in r.json()["error"]

    key_id, old = key_for(replicas, customer)
    for port in replicas.ports:
        assert httpx.get(f"http://127.0.0.1:{port}/api/version", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    rotated = replicas.cli("rotate-key", str(key_id), "--grace", "0")
    assert rotated["id"] == key_id and rotated["key"] != old
    deadline = time.time() + 5
    pending = set(replicas.ports)
    while pending:
        for port in list(pending):
            if httpx.get(f"http://127.0.0.1:{port}/api/version", headers={"Authorization": f"Bearer {old}"}).status_code == 401:
                pending.discard(port)
        assert time.time() < deadline, "a replica kept accepting a rotated-out secret"
    for port in replicas.ports:
        assert httpx.get(f"http://127.0.0.1:{port}/api/version",
                         headers={"Authorization": f"Bearer {rotated['key']}"}).status_code == 200


def test_a_narrowed_scope_reaches_both_replicas_as_fast_as_a_revocation(replicas):
    customer, _ = replicas.customer(budget=None)
    key_id, key = key_for(replicas, customer)
    headers = {"Authorization": f"Bearer {key}"}

    def until_both(client, status: int) -> float:
        started = time.perf_counter()
        pending = set(replicas.ports)
        while pending:
            for port in list(pending):
                if client.get(f"http://127.0.0.1:{port}/api/version", headers=headers).status_code == status:
                    pending.discard(port)
            assert time.perf_counter() - started < 5, "a replica kept an old scope"
        return (time.perf_counter() - started) * 1000

    delays = []
    with httpx.Client(timeout=10) as client:
        for _ in range(30):
            until_both(client, 200)  # both have the key cached with every API allowed
            replicas.cli("set-scopes", str(key_id), "--apis", "openai")
            delays.append(until_both(client, 403))
            replicas.cli("set-scopes", str(key_id), "--apis", "none")
    delays.sort()
    print(f"\nscope narrowed until both replicas refuse: p50 {delays[len(delays) // 2]:.2f} ms, max of 30 {delays[-1]:.2f} ms")


# MARK: one gateway


def scoped_key(gateway, *args: str) -> tuple[int, str]:
    customer, _ = gateway.customer()
    k = gateway.cli("generate-key", str(customer), *args)
    return customer, k["key"]


def test_scopes_in_all_three_dialects(gateway):
    _, key = scoped_key(gateway, "--apis", "openai,anthropic", "--models", "llama3*")
    auth = {"Authorization": f"Bearer {key}"}
    # Ollama's API is outside the scope: 403 in Ollama's shape, nothing held or written.
    r = httpx.post(gateway.base + "/api/chat", json=CHAT, headers=auth)
    assert r.status_code == 403 and "ollama API" in r.json()["error"]
    oai = openai.OpenAI(base_url=gateway.base + "/v1", api_key=key, max_retries=0)
    assert oai.chat.completions.create(model="llama3", messages=CHAT["messages"]).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as denied:
        oai.chat.completions.create(model="mistral", messages=CHAT["messages"])
    assert "mistral" in str(denied.value)
    assert [m.id for m in oai.models.list()] == ["llama3:latest"]
    ant = anthropic.Anthropic(base_url=gateway.base, api_key=key, max_retries=0)
    assert ant.messages.create(model="llama3", max_tokens=20, messages=CHAT["messages"]).content[0].text
    with pytest.raises(anthropic.PermissionDeniedError):
        ant.messages.create(model="mistral", max_tokens=20, messages=CHAT["messages"])

    customer, key = scoped_key(gateway, "--apis", "ollama", "--models", "mistral")
    auth = {"Authorization": f"Bearer {key}"}
    tags = httpx.get(gateway.base + "/api/tags", headers=auth).json()["models"]
    assert [m["name"] for m in tags] == ["mistral:latest"]
    assert [m["name"] for m in httpx.get(gateway.base + "/api/models", headers=auth).json()["models"]] == ["mistral:latest"]
    assert httpx.post(gateway.base + "/api/show", json={"model": "llama3"}, headers=auth).status_code == 403
    assert httpx.post(gateway.base + "/api/chat", json=dict(CHAT, model="mistral"), headers=auth).status_code == 200
    r = httpx.post(gateway.base + "/api/chat", json=CHAT, headers=auth)
    assert r.status_code == 403 and "llama3" in r.json()["error"]
    assert httpx.get(gateway.base + "/v1/models", headers=auth).status_code == 403
    # A path that routes elsewhere than it reads (empty or dot segments) is no way around the scope.
    for path in ("//v1/chat/completions", "/v1//chat/completions", "/./v1/chat/completions", "/api/../v1/chat/completions"):
        r = httpx.post(gateway.base + path, json=dict(CHAT, model="mistral"), headers=auth)
        assert r.status_code in (403, 404), path
    # /api/show reads the model as Ollama does; two keys equal but for case are refused.
    r = httpx.post(gateway.base + "/api/show", content=b'{"model":"mistral","Model":"llama3"}', headers=auth)
    assert r.status_code == 400
    assert httpx.post(gateway.base + "/api/show", json={"MODEL": "llama3"}, headers=auth).status_code == 403
    # Refusals by scope come before any hold: only the one admitted request is in the ledger.
    assert [row["outcome"] for row in gateway.ledger(customer)] == ["ok"]


def test_the_sdks_see_429_as_their_rate_limit_error(gateway):
    customer, _ = gateway.customer()
    k = gateway.cli("generate-key", str(customer))
    gateway.cli("set-limits", str(k["id"]), "--rpm", "1")
    oai = openai.OpenAI(base_url=gateway.base + "/v1", api_key=k["key"], max_retries=0)
    oai.chat.completions.create(model="llama3", messages=CHAT["messages"])
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model="llama3", messages=CHAT["messages"])
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.value.body["code"] == "rate_limit_exceeded"
    ant = anthropic.Anthropic(base_url=gateway.base, api_key=k["key"], max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant.messages.create(model="llama3", max_tokens=20, messages=CHAT["messages"])
    assert limited.value.response.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_a_key_sees_its_own_usage_and_never_another_customers(gateway):
    alice, alice_key = gateway.customer(budget="10.00")
    bob, bob_key = gateway.customer(budget="5.00")
    for _ in range(3):
        assert httpx.post(gateway.base + "/api/chat", json=CHAT, headers={"Authorization": f"Bearer {alice_key}"}).status_code == 200
    assert httpx.post(gateway.base + "/api/chat", json=CHAT, headers={"Authorization": f"Bearer {bob_key}"}).status_code == 200
    mine = httpx.get(gateway.base + "/v1/usage", headers={"Authorization": f"Bearer {alice_key}"}).json()
    assert mine["customer_id"] == alice
    assert mine["budget_usd"] == "10.00" and mine["spent_usd"] == "0.03" and mine["remaining_usd"] == "9.97"
    assert mine["by_model"] == [{"model": "llama3", "requests": 3, "prompt_tokens": 78, "completion_tokens": 24,
                                 "cost_usd": "0.03"}]
    assert sum(d["requests"] for d in mine["by_day"]) == 3
    theirs = httpx.get(gateway.base + "/v1/usage", headers={"x-api-key": bob_key}).json()
    assert theirs["customer_id"] == bob and theirs["spent_usd"] == "0.01"
    export = httpx.get(gateway.base + "/v1/usage/export?format=csv", headers={"Authorization": f"Bearer {bob_key}"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 1 and rows[0]["customer_id"] == str(bob)
    as_json = httpx.get(gateway.base + "/v1/usage/export?format=json", headers={"Authorization": f"Bearer {alice_key}"}).json()
    assert len(as_json) == 3 and {r["customer_id"] for r in as_json} == {alice}
    # Any scope reads its own usage; bad parameters are the OpenAI shape's 400; no key is 401.
    _, scoped = scoped_key(gateway, "--apis", "anthropic")
    assert httpx.get(gateway.base + "/v1/usage", headers={"Authorization": f"Bearer {scoped}"}).status_code == 200
    bad = httpx.get(gateway.base + "/v1/usage/export?format=xml", headers={"Authorization": f"Bearer {bob_key}"})
    assert bad.status_code == 400 and "format" in bad.json()["error"]["message"]
    assert httpx.get(gateway.base + "/v1/usage/export?start=2026-13-01", headers={"Authorization": f"Bearer {bob_key}"}).status_code == 400
    assert httpx.get(gateway.base + "/v1/usage").status_code == 401


def test_key_commands_validate_their_arguments(gateway):
    customer, _ = gateway.customer()
    k = gateway.cli("generate-key", str(customer), "--name", "ci", "--expires-in", "30d", "--models", "llama3*,gpt-4o-mini")
    assert k["expires_at"] and k["models"] == ["llama3*", "gpt-4o-mini"] and k["apis"] is None
    listed = gateway.cli("list-keys", str(customer))
    assert [x["limits"] for x in listed][-1] == {"rpm": None, "tpm": None, "concurrency": None, "monthly_budget_usd": None}
    updated = gateway.cli("set-limits", str(k["id"]), "--rpm", "60", "--tpm", "10000", "--budget", "2.50")
    assert updated["limits"] == {"rpm": 60, "tpm": 10000, "concurrency": None, "monthly_budget_usd": "2.50"}
    cleared = gateway.cli("set-limits", str(k["id"]), "--rpm", "none")
    assert cleared["limits"]["rpm"] is None and cleared["limits"]["tpm"] == 10000
    scoped = gateway.cli("set-scopes", str(k["id"]), "--apis", "openai", "--models", "none")
    assert scoped["apis"] == ["openai"] and scoped["models"] is None

    def fails(*args: str) -> int:
        return subprocess.run([LMSVR, *args], env=gateway.env, capture_output=True, text=True).returncode

    assert fails("generate-key", str(customer), "--expires-in", "soon") == 2
    assert fails("generate-key", str(customer), "--expires-at", "2001-01-01") == 2
    assert fails("generate-key", str(customer), "--apis", "grpc") == 2
    assert fails("set-limits", str(k["id"]), "--rpm", "0") == 2
    assert fails("set-limits", "--customer", str(customer), "--budget", "5") == 2
    assert fails("set-limits", str(k["id"])) == 2
    assert fails("set-limits", "999999", "--rpm", "5") == 1
    assert fails("rotate-key", "999999") == 1
    gateway.cli("revoke-key", str(k["id"]))
    assert fails("rotate-key", str(k["id"])) == 1
