"""The deployments against a REAL Prefect server: served by ``mlb-flows serve``, triggered by
``prefect deployment run``, scheduled by the server's scheduler, paused by the CLI.

One server per session (``prefect server start`` on a free port, a temporary PREFECT_HOME
with its SQLite database, health polled at /api/health); one ``mlb-flows serve`` process per
module, polling every second. Server and serve logs are files whose tails are shown in every
failure message. The scheduler check matters: with sqlalchemy 2.1 the server starts and manual
runs work, but scheduled runs are never created (docs/environment.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from relabel_corpus import make_corpus, make_teacher

from flows.deploy import PROJECT_FILE
from storage import LabelStore

pytestmark = pytest.mark.prefect_server

BIN = Path(sys.executable).parent
SERVER_START_TIMEOUT_S = 120.0  # about 15-20 s on a fresh database, more on a loaded machine
RUN_TIMEOUT_S = 240.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen, *, sig: int, timeout_s: float) -> None:
    """Signal the process group this test started; kill it if it does not exit in time."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Server:
    url: str
    env: dict[str, str]
    log: Path
    serve_log: Path | None = None

    def logs(self) -> str:
        parts = [_tail(self.log)] + ([_tail(self.serve_log)] if self.serve_log else [])
        return "\n".join(parts)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def post(self, path: str, body: dict) -> list | dict:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=30)
        assert response.status_code < 300, f"{path}: {response.text}\n{self.logs()}"
        return response.json()

    def wait_for(self, what: str, check, *, timeout_s: float, every_s: float = 0.5):
        """Poll ``check()`` until it returns something truthy; fail with the logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := check():
                return value
            time.sleep(every_s)
        pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}")

    def cli(self, *args: str, timeout_s: float = 120.0) -> str:
        """Run the real ``prefect`` CLI against this server; its output."""
        done = subprocess.run([str(BIN / "prefect"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout_s)
        assert done.returncode == 0, (f"prefect {' '.join(args)} exited {done.returncode}:\n"
                                      f"{done.stdout}\n{done.stderr}\n{self.logs()}")
        return done.stdout


def _clean_environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", COLUMNS="200")
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[Server]:
    """A real Prefect server on 127.0.0.1 with its own home and SQLite database."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = _clean_environment(home)
    log = home / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}/api", env={**env}, log=log)
    server.env["PREFECT_API_URL"] = server.url

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prefect server exited with {process.returncode}\n{server.logs()}")
        try:
            return server.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        server.wait_for("the server's /api/health", healthy, timeout_s=SERVER_START_TIMEOUT_S)
        yield server
    finally:
        _stop(process, sig=signal.SIGTERM, timeout_s=20)


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory) -> Iterator[Server]:
    """``mlb-flows serve`` (every deployment of prefect.yaml) polling the server each second."""
    workdir = tmp_path_factory.mktemp("serve")
    log = workdir / "serve.log"
    env = {**prefect_server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "mlb-flows"), "serve", "--limit", "2"], env=env,
                                   cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    prefect_server.serve_log = log
    names = [entry["name"] for entry in yaml.safe_load(PROJECT_FILE.read_text())["deployments"]]

    def registered() -> bool:
        if process.poll() is not None:
            pytest.fail(f"mlb-flows serve exited with {process.returncode}\n"
                        f"{prefect_server.logs()}")
        return all(prefect_server.get(f"/deployments/name/{name}/{name}").status_code == 200
                   for name in names)

    try:
        prefect_server.wait_for("served deployments", registered, timeout_s=120)
        yield prefect_server
    finally:
        # SIGINT: serve pauses its schedules and exits while the server is still up.
        _stop(process, sig=signal.SIGINT, timeout_s=30)


def _deployment(server: Server, name: str) -> dict:
    response = server.get(f"/deployments/name/{name}/{name}")
    assert response.status_code == 200, f"{name}: {response.text}\n{server.logs()}"
    return response.json()


def _flow_runs(server: Server, deployment_id: str, state: str) -> list[dict]:
    return server.post("/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": [state]}}}})


def test_served_deployments_are_the_ones_in_prefect_yaml(served):
    declared = yaml.safe_load(PROJECT_FILE.read_text())["deployments"]
    for entry in declared:
        deployment = _deployment(served, entry["name"])
        assert deployment["parameters"] == entry.get("parameters", {})
        schedules = [{"cron": s["schedule"]["cron"], "timezone": s["schedule"]["timezone"],
                      "active": s["active"]} for s in deployment["schedules"]]
        assert schedules == [{"cron": s["cron"], "timezone": s["timezone"], "active": s["active"]}
                             for s in entry.get("schedules", [])]


def test_scheduler_creates_the_ema_relabel_runs_and_the_cli_pauses_them(served):
    deployment = _deployment(served, "ema-relabel")
    runs = served.wait_for("scheduled ema-relabel runs",
                           lambda: _flow_runs(served, deployment["id"], "SCHEDULED"),
                           timeout_s=90)
    assert all(run["expected_start_time"].endswith("T03:00:00Z") for run in runs), runs
    # The documented way to pause one deployment's schedule (docs/operations.md).
    schedule_id = deployment["schedules"][0]["id"]
    served.cli("deployment", "schedule", "pause", "ema-relabel/ema-relabel", schedule_id)
    assert [s["active"] for s in _deployment(served, "ema-relabel")["schedules"]] == [False]
    served.wait_for("the paused schedule's runs to be removed",
                    lambda: not _flow_runs(served, deployment["id"], "SCHEDULED"), timeout_s=30)


def test_deployment_run_relabels_into_a_verified_version(served, tmp_path):
    images, masks = make_corpus(tmp_path / "corpus", 6)
    teacher = make_teacher(tmp_path / "teacher.pt")
    store = tmp_path / "labels"
    request = {"teacher": str(teacher), "images": str(images), "masks": str(masks),
               "store": str(store),
               "config": {"short_side": 32, "batch_size": 2, "shard_size": 2, "device": "cpu"}}
    output = served.cli("deployment", "run", "relabel/relabel",
                        "--params", json.dumps({"request": request}))
    flow_run_id = next(line.split("UUID:")[1].strip() for line in output.splitlines()
                       if "UUID:" in line)

    def finished() -> dict | None:
        run = served.get(f"/flow_runs/{flow_run_id}").json()
        return run if run["state_type"] in TERMINAL else None

    run = served.wait_for(f"flow run {flow_run_id}", finished, timeout_s=RUN_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{served.logs()}"
    labels = LabelStore(store)
    version_id = labels.latest()
    report = labels.verify(version_id)
    assert report.ok and report.published, report
    assert len(labels.open_version(version_id)) == 6
    # Shard tasks ran on the Dask workers and reported to this server, under this flow run.
    tasks = served.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    shard_tasks = [task for task in tasks if task["name"].startswith("relabel-shards")]
    assert len(shard_tasks) == 3 and all(t["state_type"] == "COMPLETED" for t in shard_tasks)
    artifacts = served.post("/artifacts/filter", {"artifacts": {"key": {"any_": [
        "relabel-summary"]}}})
    assert any(version_id in artifact["data"] for artifact in artifacts)


def test_a_bad_parameter_is_refused_by_the_server_naming_it(served):
    done = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "relabel/relabel", "--params",
         json.dumps({"request": {"teacher": "t.pt", "images": "i", "masks": "m", "store": "s",
                                 "config": {"batch_size": 0}}})],
        env=served.env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "batch_size" in done.stdout + done.stderr, done
