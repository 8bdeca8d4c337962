"""Fixtures that run the real `lmsvr serve` (a child process) in front of the fake Ollama.

The binaries come from `swift build`: LMSVR_BIN (set by scripts/test.sh: lmsvr linked as the
Docker image links it) or .build/debug; the fake upstream always from .build/debug.
Each test module gets its own SQLite database, gateway and fake upstream on free ports.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LMSVR = os.environ.get("LMSVR_BIN", str(ROOT / ".build" / "debug" / "lmsvr"))
FAKE = str(ROOT / ".build" / "debug" / "lmsvr-fake-upstream")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A running `lmsvr serve` with its database and fake upstream."""

    def __init__(self, workdir: str, extra_env: dict | None = None, ollama_servers: int = 1):
        """`ollama_servers=2` lists the one fake upstream twice (by address and by name)."""
        self.workdir = workdir
        self.db_url = f"sqlite:///{workdir}/lmsvr.db"
        self.fake = subprocess.Popen([FAKE, "--port", "0"], stdout=subprocess.PIPE, text=True)
        line = self.fake.stdout.readline()
        assert line.startswith("listening on "), line
        self.upstream_port = int(line.split()[-1])
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, DATABASE_URL=self.db_url, HOST="127.0.0.1", PORT=str(self.port),
                        OLLAMA_BASE_URL=",".join(f"http://{host}:{self.upstream_port}"
                                                 for host in ["127.0.0.1", "localhost"][:ollama_servers]), LOG_LEVEL="WARNING",
                        OPENAI_API_KEY="sk-operator-openai", OPENAI_BASE_URL=f"http://127.0.0.1:{self.upstream_port}/v1",
                        ANTHROPIC_API_KEY="sk-ant-operator", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{self.upstream_port}")
        self.env.update(extra_env or {})
        # Logs go to a file: a pipe nobody reads would fill and block the server.
        self.log_path = os.path.join(workdir, "serve.log")
        self.server = subprocess.Popen([LMSVR, "serve"], env=self.env, cwd=workdir,
                                       stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"), text=True)
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if self.server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("lmsvr serve did not start: " + open(self.log_path).read())
                time.sleep(0.1)

    def cli(self, *args: str) -> dict:
        """Runs an admin command with --json and returns its document."""
        out = subprocess.run([LMSVR, *args, "--json"], env=self.env, cwd=self.workdir,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    def customer(self, budget: str | None = None) -> tuple[int, str]:
        args = ["create-customer", "E2E", f"e2e-{time.time_ns()}@example.com"]
        if budget is not None:
            args += ["--budget", budget]
        customer = self.cli(*args)
        key = self.cli("generate-key", str(customer["id"]))
        return customer["id"], key["key"]

    def ledger(self, customer_id: int) -> list[dict]:
        return self.cli("export-usage", str(customer_id))

    def stop(self) -> int:
        self.server.send_signal(signal.SIGTERM)
        try:
            code = self.server.wait(timeout=30)
        finally:
            self.fake.terminate()
            self.fake.wait(timeout=10)
        return code


@pytest.fixture(scope="module")
def gateway():
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir)
        yield g
        assert g.stop() == 0, "lmsvr serve did not exit cleanly on SIGTERM"
