"""The official `anthropic` Python SDK against lmsvr: an Ollama model (translated) and a Claude
model (passed through with the operator's key), sync and streaming."""
import anthropic
import pytest

ANSWER = "The sky is blue because of Rayleigh scattering."
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


def client(gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base, api_key=key, max_retries=0)


@pytest.mark.parametrize("model,provider,prompt", [("llama3", "ollama", 26), ("claude-haiku-4-5", "anthropic", 11)])
def test_messages_sync_and_streaming(gateway, model, provider, prompt):
    customer, key = gateway.customer()
    c = client(gateway, key)
    message = c.messages.create(model=model, max_tokens=100, messages=MESSAGES)
    assert message.content[0].text == ANSWER
    assert message.usage.input_tokens == prompt and message.usage.output_tokens == 8
    with c.messages.stream(model=model, max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER
    assert final.usage.output_tokens == 8 and final.usage.input_tokens == prompt
    rows = gateway.ledger(customer)
    assert [(r["dialect"], r["provider"], r["outcome"]) for r in rows] == [("anthropic", provider, "ok")] * 2
    assert all(r["prompt_tokens"] == prompt and r["completion_tokens"] == 8 for r in rows)


def test_auth_token_and_api_key_both_work(gateway):
    _, key = gateway.customer()
    via_bearer = anthropic.Anthropic(base_url=gateway.base, auth_token=key, max_retries=0)
    assert via_bearer.messages.create(model="llama3", max_tokens=10, messages=MESSAGES).content


def test_errors_are_the_sdks_own_exceptions(gateway):
    _, key = gateway.customer(budget="0.01")
    with pytest.raises(anthropic.AuthenticationError):
        client(gateway, "sk_wrong").messages.create(model="llama3", max_tokens=10, messages=MESSAGES)
    with pytest.raises(anthropic.NotFoundError):
        client(gateway, key).messages.create(model="llama9", max_tokens=10, messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError):
        client(gateway, key).messages.create(model="llama3", max_tokens=0, messages=MESSAGES)
    client(gateway, key).messages.create(model="llama3", max_tokens=10, messages=MESSAGES)
    with pytest.raises(anthropic.APIStatusError) as exhausted:
        client(gateway, key).messages.create(model="llama3", max_tokens=10, messages=MESSAGES)
    assert exhausted.value.status_code == 402
    assert exhausted.value.body["error"]["type"] == "billing_error"


def test_models_in_anthropic_shape(gateway):
    _, key = gateway.customer()
    ids = [m.id for m in client(gateway, key).models.list()]
    assert "llama3:latest" in ids and "claude-haiku-4-5" in ids


def test_midstream_failure_raises(gateway):
    _, key = gateway.customer()
    with pytest.raises(anthropic.APIStatusError):
        with client(gateway, key).messages.stream(model="fail-midstream", max_tokens=10, messages=MESSAGES) as stream:
            for _ in stream.text_stream:
                pass
