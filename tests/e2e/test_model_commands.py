"""`lmsvr sync-models` and `lmsvr list-models` against the fake Ollama, then `GET /api/models`."""
import json
import urllib.request


def test_sync_and_list_models(gateway):
    _, key = gateway.customer()
    gateway.cli("set-pricing", "llama3", "0.001", "0.002", "--output-per-1m", "0.6")
    gateway.cli("set-pricing", "retired-model", "0.5", "0")
    synced = gateway.cli("sync-models")
    by_name = {m["name"]: m for m in synced}
    assert by_name["llama3:latest"]["context_length"] == 8192
    assert by_name["llama3:latest"]["quantization"] == "Q4_0"
    assert by_name["all-minilm:latest"]["family"] == "bert"
    listed = {m["name"]: m for m in gateway.cli("list-models")}
    assert listed["llama3:latest"]["pricing_source"] == "configured"
    assert listed["llama3:latest"]["output_per_1m_usd"] == "0.60"
    assert listed["mistral:latest"]["pricing_source"] == "default"
    assert listed["retired-model"]["served_by_ollama"] is False
    request = urllib.request.Request(gateway.base + "/api/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request) as response:
        models = {m["name"]: m for m in json.load(response)["models"]}
    assert models["llama3:latest"]["metadata"]["context_length"] == 8192
    assert models["llama3:latest"]["pricing"]["per_model_usd"] == "0.002"
