"""SIGTERM drains: an in-flight stream finishes and is settled before lmsvr exits 0."""
import json
import signal
import tempfile
import threading
import time
import urllib.request

from conftest import Gateway


def test_sigterm_lets_an_inflight_stream_finish_and_settle():
    with tempfile.TemporaryDirectory(prefix="lmsvr-e2e-") as workdir:
        g = Gateway(workdir)
        customer, key = g.customer()
        lines: list[str] = []
        first_line = threading.Event()

        def stream():
            request = urllib.request.Request(
                g.base + "/api/chat", method="POST",
                data=json.dumps({"model": "drip", "messages": []}).encode(),
                headers={"Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                for line in response:
                    lines.append(line.decode())
                    first_line.set()

        reader = threading.Thread(target=stream)
        reader.start()
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
