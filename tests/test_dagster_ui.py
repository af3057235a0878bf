"""`dagster dev` serves the code location: the UI's GraphQL API shows the asset graph
and a run launched through it (what the "Materialize all" button does) writes shards."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from dagster_graphql import DagsterGraphQLClient
from test_assets import EXPECTED_DEPS

from assets.resources import PROJECT_ROOT
from storage.layout import CorpusStore

ASSET_NODES = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "dagster dev exited early"
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer on {url} in {timeout}s")


def test_dagster_dev_shows_graph_and_materialises_from_the_ui(tmp_path: Path):
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CORPUSMILL_STORE": str(tmp_path / "store"),
        "CORPUSMILL_PROCESSES": "1",
    }
    log = open(tmp_path / "dagster-dev.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}/server_info", proc)
        # the graph, as the Assets page gets it
        deadline = time.time() + 120
        while True:
            r = requests.post(
                f"http://127.0.0.1:{port}/graphql", json={"query": ASSET_NODES}, timeout=30
            )
            nodes = r.json().get("data", {}).get("assetNodes") or []
            if nodes or time.time() > deadline:
                break
            time.sleep(1)
        graph = {
            "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
            for n in nodes
        }
        assert graph == EXPECTED_DEPS

        # launch a job through the same API the UI's launchpad uses (the web_text job:
        # the whole graph is materialised through Dagster in test_assets.py)
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution(
            "web_text", repository_location_name="corpusmill", repository_name="__repository__"
        )
        deadline = time.time() + 300
        status = None
        while time.time() < deadline:
            status = client.get_run_status(run_id).value
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert status == "SUCCESS", (tmp_path / "dagster-dev.log").read_text()[-3000:]
        store = CorpusStore(str(tmp_path / "store"))
        for key in (
            "raw/warc_files",
            "raw/crawl",
            "text/web",
            "text/web_filtered",
            "dedup/web_exact",
            "dedup/web_minhash",
        ):
            out = store.output(key)
            out.manifest().verify(out.fs, out.folder)
            assert out.manifest().rows > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
