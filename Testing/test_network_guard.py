"""The guard itself: a connection attempt is refused, in this process and in a child."""

import subprocess
import sys
import urllib.request

import pytest
import sitecustomize as network_guard


def test_in_process_connection_is_refused_and_recorded(monkeypatch):
    monkeypatch.delenv("TUCKERSEGMENT_NETWORK_GUARD")  # keep this expected attempt out of the log
    before = len(network_guard.attempts)
    with pytest.raises(OSError):
        urllib.request.urlopen("http://192.0.2.1/", timeout=1)
    assert len(network_guard.attempts) == before + 1
    del network_guard.attempts[before:]  # expected here; do not fail this test


def test_child_process_connection_is_refused(tmp_path, monkeypatch):
    log = tmp_path / "child.log"
    monkeypatch.setenv("TUCKERSEGMENT_NETWORK_GUARD", str(log))
    code = "import socket; s = socket.socket(); s.connect(('192.0.2.1', 80))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "network access blocked" in result.stderr
    assert "192.0.2.1" in log.read_text()
