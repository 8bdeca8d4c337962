"""The official `ollama` Python client against a running lmsvr."""
import ollama
import pytest

ANSWER = "The sky is blue because of Rayleigh scattering."


def client(gateway, key: str) -> ollama.Client:
    return ollama.Client(host=gateway.base, headers={"Authorization": f"Bearer {key}"})


def test_chat_streaming_and_not(gateway):
    customer, key = gateway.customer()
    c = client(gateway, key)
    reply = c.chat(model="llama3", messages=[{"role": "user", "content": "Why is the sky blue?"}])
    assert reply.message.content == ANSWER
    assert reply.prompt_eval_count == 26 and reply.eval_count == 8
    parts = list(c.chat(model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(p.message.content for p in parts) == ANSWER
    assert parts[-1].done and parts[-1].eval_count == 8
    rows = gateway.ledger(customer)
    assert [r["outcome"] for r in rows] == ["ok", "ok"]
    assert all(r["prompt_tokens"] == 26 and r["completion_tokens"] == 8 for r in rows)
    assert all(r["token_source"] == "provider" for r in rows)


def test_generate_streaming_and_not(gateway):
    customer, key = gateway.customer()
    c = client(gateway, key)
    assert c.generate(model="llama3", prompt="Why is the sky blue?").response == ANSWER
    chunks = list(c.generate(model="llama3", prompt="hi", stream=True))
    assert "".join(ch.response for ch in chunks) == ANSWER
    assert len(gateway.ledger(customer)) == 2


def test_list_show_and_embed(gateway):
    customer, key = gateway.customer()
    c = client(gateway, key)
    names = [m.model for m in c.list().models]
    assert names == ["llama3:latest", "mistral:latest", "all-minilm:latest"]
    shown = c.show("llama3")
    assert shown.modelinfo["llama.context_length"] == 8192
    embedded = c.embed(model="all-minilm", input=["a", "b"])
    assert len(embedded.embeddings) == 2
    legacy = c.embeddings(model="all-minilm", prompt="hello")
    assert len(legacy.embedding) == 3
    rows = gateway.ledger(customer)
    assert [r["endpoint"] for r in rows] == ["/api/embed", "/api/embeddings"]
    assert rows[1]["token_source"] == "estimated"


def test_errors_raise_response_error_with_status(gateway):
    _, key = gateway.customer(budget="0.02")
    c = client(gateway, key)
    with pytest.raises(ollama.ResponseError) as unknown:
        c.chat(model="llama9", messages=[])
    assert unknown.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as bad_key:
        client(gateway, "sk_nope").chat(model="llama3", messages=[])
    assert bad_key.value.status_code == 401
    c.chat(model="llama3", messages=[], stream=False)
    c.chat(model="llama3", messages=[], stream=False)
    with pytest.raises(ollama.ResponseError) as broke:
        c.chat(model="llama3", messages=[], stream=False)
    assert broke.value.status_code == 402
    with pytest.raises(ollama.ResponseError) as forbidden:
        c.pull("llama3")
    assert forbidden.value.status_code == 403


def test_midstream_error_raises_in_the_stream(gateway):
    customer, key = gateway.customer()
    c = client(gateway, key)
    with pytest.raises(ollama.ResponseError):
        for _ in c.chat(model="fail-midstream", messages=[], stream=True):
            pass
    rows = gateway.ledger(customer)
    # Two chunks were delivered before the error: they are paid for (flat default price, two
    # estimated tokens); nothing after them is.
    assert rows[-1]["outcome"] == "upstream_error" and rows[-1]["cost_usd"] == "0.01"
    assert rows[-1]["completion_tokens"] == 2 and rows[-1]["token_source"] == "estimated"
