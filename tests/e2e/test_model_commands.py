"""`lmsvr sync-models` and `lmsvr list-models` against the fake Ollama, then `GET /api/models`."""
import json
import socket
import subprocess
import urllib.request

from conftest import LMSVR


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


def test_list_models_with_ollama_down_lists_priced_models_and_warns_once(gateway):
    gateway.cli("set-pricing", "llama3", "0.001", "0.002")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = dead.getsockname()[1]
    env = dict(gateway.env, OLLAMA_BASE_URL=f"http://127.0.0.1:{port}")
    out = subprocess.run([LMSVR, "list-models", "--json"], env=env, cwd=gateway.workdir, capture_output=True, text=True)
    dead.close()
    assert out.returncode == 0, out.stderr
    listed = {m["name"]: m for m in json.loads(out.stdout)}
    assert listed["llama3"]["served_by_ollama"] is False and listed["llama3"]["pricing_source"] == "configured"
    warning = out.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: could not reach Ollama at ") and str(port) in warning[0]
