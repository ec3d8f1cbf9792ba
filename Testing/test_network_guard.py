"""The guard itself: a connection that would leave the machine is refused, in this process and
in a child; loopback is not network access."""

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


def test_loopback_stays_allowed_and_a_private_address_does_not(monkeypatch):
    """127.0.0.1 (a Dask LocalCluster) does not leave the machine; 10.0.0.1 would."""
    import socket

    monkeypatch.delenv("TUCKERSEGMENT_NETWORK_GUARD")  # keep the expected attempt out of the log
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    before = len(network_guard.attempts)
    with socket.socket() as client:
        client.connect(server.getsockname())
    server.close()
    assert len(network_guard.attempts) == before
    with pytest.raises(network_guard.NetworkAccessBlocked), socket.socket() as other:
        other.connect(("10.0.0.1", 8786))
    del network_guard.attempts[before:]  # expected here; do not fail this test
