"""Shared pytest setup: makes tests/ importable, also in spawned worker processes.

The runner starts its workers with the ``spawn`` method; they unpickle stage objects
by module name, so the helper stages in ``tests/stages_for_tests.py`` must be
importable by name there too. Spawned children inherit the parent's ``sys.path``;
subprocesses started by the tests get ``stages_for_tests.subprocess_env()``.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture
def s3_endpoint(monkeypatch):
    """URL of a moto S3 server on 127.0.0.1, with this machine's AWS config kept away."""
    from moto.server import ThreadedMotoServer

    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto keeps its buckets per process, not per server: start every test empty
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    try:
        yield url
    finally:
        server.stop()
