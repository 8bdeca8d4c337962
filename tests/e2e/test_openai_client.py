"""The official `openai` Python SDK against lmsvr: an Ollama model (translated) and an OpenAI
model (passed through with the operator's key), sync and streaming."""
import openai
import pytest

ANSWER = "The sky is blue because of Rayleigh scattering."
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def client(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("model,provider,prompt", [("llama3", "ollama", 26), ("gpt-4o-mini", "openai", 14)])
def test_chat_sync_and_streaming(gateway, model, provider, prompt):
    customer, key = gateway.customer()
    c = client(gateway, key)
    reply = c.chat.completions.create(model=model, messages=MESSAGES)
    assert reply.choices[0].message.content == ANSWER
    assert reply.usage.prompt_tokens == prompt and reply.usage.completion_tokens == 8
    stream = c.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                       stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == ANSWER
    assert usage.prompt_tokens == prompt and usage.completion_tokens == 8
    rows = gateway.ledger(customer)
    assert [(r["dialect"], r["provider"], r["outcome"]) for r in rows] == [("openai", provider, "ok")] * 2
    assert all(r["prompt_tokens"] == prompt and r["completion_tokens"] == 8 for r in rows)
    if provider == "openai":
        assert all(r["price_source"] == "catalog" for r in rows)


def test_streaming_without_include_usage_reports_none(gateway):
    _, key = gateway.customer()
    chunks = list(client(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in chunks)


def test_embeddings(gateway):
    customer, key = gateway.customer()
    result = client(gateway, key).embeddings.create(model="all-minilm", input=["a", "b"])
    assert len(result.data) == 2 and result.usage.prompt_tokens == 16
    assert gateway.ledger(customer)[0]["endpoint"] == "/v1/embeddings"


def test_models(gateway):
    _, key = gateway.customer()
    ids = [m.id for m in client(gateway, key).models.list()]
    assert "llama3:latest" in ids and "gpt-4o" in ids


def test_errors_are_the_sdks_own_exceptions(gateway):
    _, key = gateway.customer(budget="0.01")
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "sk_wrong").chat.completions.create(model="llama3", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client(gateway, key).chat.completions.create(model="llama9", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        client(gateway, key).chat.completions.create(model="llama3", messages=[])
    client(gateway, key).chat.completions.create(model="llama3", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as exhausted:
        client(gateway, key).chat.completions.create(model="llama3", messages=MESSAGES)
    assert exhausted.value.status_code == 402
    assert exhausted.value.body["type"] == "insufficient_quota"


def test_midstream_failure_raises(gateway):
    _, key = gateway.customer()
    with pytest.raises(openai.APIError):
        for _ in client(gateway, key).chat.completions.create(model="fail-midstream", messages=MESSAGES, stream=True):
            pass
