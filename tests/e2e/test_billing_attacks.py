"""Issue 11's attacks by a customer holding a valid key, against a real `lmsvr serve` process,
with the official SDKs where a client's reading of the answer matters: a stream the gateway cuts
at the held bound must end as each SDK expects a length stop to end."""
import json
import urllib.error
import urllib.request

import anthropic
import ollama
import openai
import pytest

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def post(gateway, path: str, key: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(gateway.base + path, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_body_of_millions_of_tiny_objects_costs_a_few_times_its_size(gateway):
    """It took 35 s and grew the gateway from 41 MiB to 3.8 GiB (JSONSerialization builds one
    dictionary per object), with a key that has no budget at all."""
    customer, key = gateway.customer(budget="0")
    junk = b",".join([b'{"a":1}'] * 1_900_000)
    body = b'{"model":"llama3","messages":[],"junk":[' + junk + b"]}"
    assert 13_000_000 < len(body) < 16_000_000
    before = peak_rss_kib(gateway.server.pid)
    status, answer = post(gateway, "/api/chat", key, body)
    assert status == 402, answer
    growth = peak_rss_kib(gateway.server.pid) - before
    # The body, a copy of it, and the index of 8 bytes per value (4 per object): about 6x.
    assert growth * 1024 < 10 * len(body), f"peak grew {growth} KiB for a {len(body)}-byte body"
    assert [row["outcome"] for row in gateway.ledger(customer)] == ["budget_exceeded"]


def test_a_body_nested_a_million_deep_is_refused(gateway):
    _, key = gateway.customer()
    status, answer = post(gateway, "/api/chat", key, b'{"model":"llama3","x":' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}")
    assert status == 400 and b"nested deeper than 128" in answer


@pytest.mark.parametrize("model", ["runaway", "gpt-4o-runaway"])
def test_openai_sdk_reads_a_cut_stream_as_a_length_stop(gateway, model):
    customer, key = gateway.customer()
    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert finish == "length"
    assert usage.completion_tokens == 5
    assert text == "The sky is blue because "
    [row] = gateway.ledger(customer)
    assert row["outcome"] == "output_limit" and row["completion_tokens"] == 5


@pytest.mark.parametrize("model", ["runaway", "claude-runaway"])
def test_anthropic_sdk_reads_a_cut_stream_as_a_max_tokens_stop(gateway, model):
    customer, key = gateway.customer()
    client = anthropic.Anthropic(base_url=gateway.base, api_key=key, max_retries=0)
    with client.messages.stream(model=model, max_tokens=5, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5
    assert text == "The sky is blue because "
    [row] = gateway.ledger(customer)
    assert row["outcome"] == "output_limit" and row["completion_tokens"] == 5


def test_ollama_sdk_reads_a_cut_stream_as_a_length_stop(gateway):
    customer, key = gateway.customer()
    client = ollama.Client(host=gateway.base, headers={"Authorization": f"Bearer {key}"})
    chunks = list(client.chat(model="runaway", messages=MESSAGES, options={"num_predict": 5}, stream=True))
    assert chunks[-1].done and chunks[-1].done_reason == "length" and chunks[-1].eval_count == 5
    assert "".join(c.message.content for c in chunks) == "The sky is blue because "
    [row] = gateway.ledger(customer)
    assert row["outcome"] == "output_limit"


def test_unlimited_output_is_held_and_capped_by_the_budget(gateway):
    """With num_predict -1 nothing told Ollama the bound; a $0.05 budget was spent to $0.147."""
    gateway.cli("set-pricing", "runaway", "0", "0", "--output-per-1m", "1000")  # $0.001 per output token
    customer, key = gateway.customer(budget="0.05")
    client = ollama.Client(host=gateway.base, headers={"Authorization": f"Bearer {key}"})
    chunks = list(client.generate(model="runaway", prompt="x", options={"num_predict": -1}, stream=True))
    assert chunks[-1].done_reason == "length" and chunks[-1].eval_count == 50
    budget = gateway.cli("check-budget", str(customer))
    assert budget["spent_usd"] == "0.05" and budget["held_usd"] == "0.00"
    with pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="runaway", prompt="x")
    assert refused.value.status_code == 402


def test_spellings_and_case_collisions(gateway):
    gateway.cli("set-pricing", "mistral", "0.5", "0")
    customer, key = gateway.customer()
    for spelling in ["registry.ollama.ai/library/mistral:latest", "library/Mistral", "mistral:local"]:
        status, _ = post(gateway, "/api/generate", key, json.dumps({"model": spelling, "prompt": "x", "stream": False}).encode())
        assert status == 200
    status, answer = post(gateway, "/api/generate", key, b'{"model":"mistral","prompt":"x","MODEL":"llama3"}')
    assert status == 400 and b"duplicate key" in answer
    rows = gateway.ledger(customer)
    assert [(r["model"], r["cost_usd"]) for r in rows] == [("mistral", "0.50")] * 3
