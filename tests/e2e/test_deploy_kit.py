"""The deployment kit parses and references only images, ports, variables and commands that
exist. No Docker engine or cluster runs here: these checks are what can be verified offline."""
import os
import pathlib
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from conftest import LMSVR, ROOT

K8S_VERSION = "1.30.0"


def lmsvr_settings() -> set[str]:
    """Every variable lmsvr reads, from .env.example (a unit test keeps it complete)."""
    text = (ROOT / ".env.example").read_text().split("docker-compose.yml only")[0]
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))


def lmsvr_commands() -> set[str]:
    help_text = subprocess.run([LMSVR, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^\s{2}([a-z][a-z-]+)\s", help_text, re.M))


def test_compose_services_commands_ports_and_variables():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "ollama", "migrate", "lmsvr", "gateway", "cloudflared"} <= set(services)
    commands = lmsvr_commands()
    settings = lmsvr_settings()
    for name in ("migrate", "lmsvr"):
        service = services[name]
        assert service["image"] == "lmsvr:latest"
        assert service["command"][0] in commands, service["command"]
        unknown = set(service["environment"]) - settings
        assert not unknown, f"{name} sets variables lmsvr does not read: {unknown}"
    assert services["migrate"]["build"] == "."
    assert services["lmsvr"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["lmsvr"]["deploy"]["replicas"] >= 2
    # The settle journal lives on a named volume the replicas share, not in a container's layer.
    journal = services["lmsvr"]["environment"]["JOURNAL_DIR"]
    volume = next(m.split(":")[0] for m in services["lmsvr"]["volumes"] if m.split(":")[1] == journal)
    assert volume in compose["volumes"]
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert services["cloudflared"]["profiles"] == ["tunnel"]
    assert "healthcheck" in services["postgres"]
    for name, service in services.items():
        assert ":" in service["image"], f"{name} image has no tag"
    haproxy = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "lmsvr:8000" in haproxy and "GET /health" in haproxy
    for mount in services["gateway"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).exists()


def test_dockerfile_builds_the_binary_and_runs_it_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--product lmsvr" in dockerfile
    assert re.search(r"^USER lmsvr$", dockerfile, re.M)
    assert 'ENTRYPOINT ["lmsvr"]' in dockerfile and 'CMD ["serve"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    for copied in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied
    assert ".build" in (ROOT / ".dockerignore").read_text().split()


def k8s_documents():
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


@pytest.mark.parametrize("name,doc", list(k8s_documents()), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_kubernetes_manifests_validate_against_the_schemas(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_manifests_are_consistent():
    docs = dict((doc["kind"] + "/" + doc["metadata"]["name"], doc) for _, doc in k8s_documents())
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (ROOT / "k8s" / resource).exists(), resource
    deployment = docs["Deployment/lmsvr"]
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["args"][0] in lmsvr_commands()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # The root filesystem is read-only: the settle journal must be on a mounted volume.
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert mounts[env["JOURNAL_DIR"]] in {v["name"] for v in spec["volumes"]}
    config = docs["ConfigMap/lmsvr-config"]["data"]
    grace = int(config["SHUTDOWN_GRACE_SECONDS"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= grace + pause
    assert set(config) <= lmsvr_settings()
    secret = yaml.safe_load((ROOT / "k8s" / "secret.example.yaml").read_text())
    assert set(secret["stringData"]) - {"CLOUDFLARE_TUNNEL_TOKEN"} <= lmsvr_settings()
    assert docs["Job/lmsvr-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert docs["Service/lmsvr"]["spec"]["ports"][0]["port"] == 8000
    assert docs["HorizontalPodAutoscaler/lmsvr"]["spec"]["scaleTargetRef"]["name"] == "lmsvr"
    assert docs["PodDisruptionBudget/lmsvr"]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


SCRIPTS = [ROOT / "cloudflare" / "setup_tunnel.sh", *sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run",
           ROOT / "bench" / "run.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_pass_bash_n_and_shellcheck(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert shutil.which("shellcheck"), "shellcheck is installed by scripts/test.sh"
    result = subprocess.run(["shellcheck", "-x", "-S", "warning", str(script)], capture_output=True, text=True,
                            cwd=script.parent)
    assert result.returncode == 0, result.stdout


def test_tunnel_script_dry_runs(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    named = subprocess.run([str(SCRIPTS[0]), "--hostname", "api.example.com", "--dry-run"], capture_output=True,
                           text=True, env=env, check=True).stdout
    assert "would run: cloudflared tunnel create lmsvr" in named
    assert "would run: cloudflared tunnel route dns lmsvr api.example.com" in named
    assert "service: http://localhost:8000" in named
    token = subprocess.run([str(SCRIPTS[0]), "--token", "secret-token", "--env-file", str(tmp_path / ".env")],
                           capture_output=True, text=True, check=True).stdout
    assert "secret-token" not in token
    assert (tmp_path / ".env").read_text() == "CLOUDFLARE_TUNNEL_TOKEN=secret-token\n"
    bad = subprocess.run([str(SCRIPTS[0])], capture_output=True, text=True)
    assert bad.returncode == 2
