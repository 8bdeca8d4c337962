"""SIGTERM drains: an in-flight stream finishes and is settled before lmsvr exits 0."""
import json
import signal
import tempfile
import threading
import time
import urllib.request

import pytest

from conftest import Gateway


def stream_in_background(g: Gateway, key: str) -> tuple[threading.Thread, list[str], threading.Event]:
    """A `drip` stream read on its own thread: the lines it got, and an event set at the first.
    A stream the server cuts just ends."""
    lines: list[str] = []
    first_line = threading.Event()

    def stream():
        request = urllib.request.Request(
            g.base + "/api/chat", method="POST",
            data=json.dumps({"model": "drip", "messages": []}).encode(),
            headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                for line in response:
                    lines.append(line.decode())
                    first_line.set()
        except OSError:
            pass  # cut by the shutdown: the caller checks the lines

    reader = threading.Thread(target=stream)
    reader.start()
    return reader, lines, first_line


def test_sigterm_lets_an_inflight_stream_finish_and_settle():
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir)
        customer, key = g.customer()
        reader, lines, first_line = stream_in_background(g, key)
        assert first_line.wait(10)
        g.server.send_signal(signal.SIGTERM)
        reader.join(30)
        code = g.server.wait(timeout=30)
        # The admin CLI still works on the database after the server is gone.
        rows = g.ledger(customer)
        g.fake.terminate()
        assert code == 0
        assert len(lines) == 9 and json.loads(lines[-1])["done"] is True
        assert [r["outcome"] for r in rows] == ["ok"]


def test_new_connections_are_refused_while_draining():
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir)
        g.server.send_signal(signal.SIGTERM)
        assert g.server.wait(timeout=30) == 0
        g.fake.terminate()
        try:
            urllib.request.urlopen(g.base + "/health", timeout=2)
            raise AssertionError("the server still answered after SIGTERM")
        except OSError:
            pass


@pytest.mark.parametrize("ollama_servers", [1, 2])  # one server and several take different shutdown paths
def test_a_stream_cut_by_the_end_of_the_grace_period_is_still_charged(ollama_servers):
    """A stream longer than SHUTDOWN_GRACE_SECONDS is cut when the grace period ends; its settle
    (what it delivered) must reach the database or the journal before the process exits, and the
    process exits 0: the grace period ending is the shutdown that was asked for."""
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir, extra_env={"SHUTDOWN_GRACE_SECONDS": "0"}, ollama_servers=ollama_servers)
        customer, key = g.customer()
        reader, _, first_line = stream_in_background(g, key)
        assert first_line.wait(10)
        g.server.send_signal(signal.SIGTERM)
        code = g.server.wait(timeout=30)
        reader.join(30)
        # Written at exit, or replayed from the journal by the next start: either way, exactly one
        # row once a server has run again on the same database.
        rows = g.ledger(customer)
        if not rows:
            Gateway(workdir).stop()  # same database and journal directory: the start replays it
            rows = g.ledger(customer)
        g.fake.terminate()
        log = open(g.log_path).read()
        # The grace period ending is the shutdown that was asked for, not a failure.
        assert code == 0, log[-2000:]
        assert "shutdown grace period ran out" in log, log[-2000:]
        assert len(rows) == 1, (rows, log[-2000:])
        assert rows[0]["completion_tokens"] >= 1


def test_serve_runs_swift_concurrency_on_its_event_loops_as_the_generic_executor():
    """The start-up line names where tasks run. "dispatch" would mean the global-executor hook was
    taken by something else first: the gateway still works, but every request hops threads and
    pays ~15 % more CPU (docs/benchmarks.md, seventh pass), which no other test would notice."""
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir, extra_env={"LOG_LEVEL": "INFO", "LOG_FORMAT": "json"})
        customer, key = g.customer()
        request = urllib.request.Request(g.base + "/api/chat", method="POST",
                                         data=json.dumps({"model": "llama3", "messages": [], "stream": False}).encode(),
                                         headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["done"] is True
        assert g.stop() == 0
        starting = [json.loads(line) for line in open(g.log_path) if '"starting"' in line]
        assert len(starting) == 1, open(g.log_path).read()
        executor = starting[0]["executor"]
        assert executor.startswith("event loops (") and executor.endswith("), generic"), executor
        assert int(executor.split("(")[1].split(")")[0]) >= 1
        assert [r["outcome"] for r in g.ledger(customer)] == ["ok"]
