"""The operator's path against a REAL Prefect server, from docs/operations.md's own commands.

One server per session (``prefect server start`` on a free port, a temporary PREFECT_HOME
with its SQLite database, health polled at /api/health); real ``mlb-flows serve`` and
``prefect worker`` processes polling every second, on a tiny data root (48 px images, a
random-init teacher). Server and serve logs are files whose tails are shown in every failure
message. The scheduler check matters: with sqlalchemy 2.1 the server starts and manual runs
work, but scheduled runs are never created (docs/environment.md).

- ``TestServed`` runs every command of docs/operations.md's bash blocks, in order, as written
  (placeholders replaced by the values earlier commands produced): deployment runs with no
  parameters, with ``-p`` and with whole requests, each to completion; the publish event
  starting the retraining trigger; logs, artifacts, automations, schedules;
- ``TestLifecycle``: SIGTERM and SIGINT of ``serve`` mid-run leave no run RUNNING and every
  deployment paused; a paused schedule stays paused across a restart;
- ``TestWorkPool``: ``prefect deploy --all`` + ``prefect worker start`` from the checkout,
  and the refusals that keep served and pool deployments from taking each other over.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
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
from relabel_corpus import make_teacher

from flows.deploy import PROJECT_FILE, PROJECT_ROOT
from mlb.data.synth import make_composite_corpus, make_natural_corpus
from storage import LabelStore

pytestmark = pytest.mark.prefect_server

BIN = Path(sys.executable).parent
SERVER_START_TIMEOUT_S = 120.0  # about 15-20 s on a fresh database, more on a loaded machine
RUN_TIMEOUT_S = 300.0
DOCS = PROJECT_ROOT / "docs" / "operations.md"
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

    def shell(self, command: str, *, cwd: Path, check: bool = True,
              timeout_s: float = 180.0) -> subprocess.CompletedProcess:
        """A documented command line, run by bash as an operator would type it."""
        done = subprocess.run(["bash", "-c", command], env=self.env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout_s)
        if check:
            assert done.returncode == 0, (f"{command}\nexited {done.returncode}:\n{done.stdout}"
                                          f"\n{done.stderr}\n{self.logs()}")
        return done

    def wait_run(self, flow_run_id: str, *, timeout_s: float = RUN_TIMEOUT_S) -> dict:
        def finished() -> dict | None:
            run = self.get(f"/flow_runs/{flow_run_id}").json()
            return run if run["state_type"] in TERMINAL else None

        return self.wait_for(f"flow run {flow_run_id}", finished, timeout_s=timeout_s)

    def wait_logs(self, flow_run_id: str, *facts: str, timeout_s: float = 60) -> str:
        """The run's log once it holds every fact (logs reach the API in batches)."""
        def holds_all() -> str | None:
            logs = self.run_logs(flow_run_id)
            return logs if all(fact in logs for fact in facts) else None

        return self.wait_for(f"{facts} in the log of {flow_run_id}", holds_all,
                             timeout_s=timeout_s)

    def run_logs(self, flow_run_id: str) -> str:
        logs = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                          "sort": "TIMESTAMP_ASC", "limit": 200})
        return "\n".join(f"{entry['name']}: {entry['message']}" for entry in logs)


def _clean_environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env = {key: value for key, value in env.items() if key != "MLB_DATA_ROOT"}
    # Documented commands name `prefect`, `mlb`, `mlb-flows`: this venv's, importing this
    # checkout's packages (the editable install may point at another one).
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", COLUMNS="200", PREFECT_RUNNER_POLL_FREQUENCY="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[Server]:
    """A real Prefect server on 127.0.0.1 with its own home and SQLite database."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = _clean_environment(home)
    log = home / "server.log"
    with open(log, "w") as out:
        argv = shlex.split(_documented("prefect server start").replace("4200", str(port)))
        process = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
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




# --------------------------------------------------------------------------- the docs' commands


def documented_commands(path: Path = DOCS, *, text: str | None = None
                        ) -> list[tuple[str, str]]:
    """(section title, command) for every command of ``path``'s bash blocks, in order.

    Continuation lines (a trailing backslash, or an open quote) are joined; comments after
    `` # `` and comment lines are dropped.
    """
    commands, section, block, pending = [], "", False, ""
    for line in (path.read_text() if text is None else text).splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block or line.lstrip().startswith("#"):
            continue
        text = re.sub(r"\s+#\s.*$", "", line).rstrip()
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        pending += text.strip()
        try:
            shlex.split(pending)
        except ValueError:  # an open quote: the command goes on
            pending += "\n"
            continue
        if pending.strip():
            commands.append((section, pending.strip()))
        pending = ""
    return commands


# Commands these tests start themselves (long-running processes), with the argv they use.
STARTED_BY_FIXTURES = ("prefect server start", "export PREFECT_API_URL=", "mlb-flows serve",
                       "prefect worker start")
# Documented here, run elsewhere: the demo (tests/test_flows.py runs its flow), Dask and
# docker compose (tests/test_dask_workers.py; tests/test_docker_files.py, no docker engine).
RUN_ELSEWHERE = ("mlb-flows demo", "dask ", "export DASK_", "docker compose")
WAITED_FOR = ("prefect deployment run", "mlb-flows run")


def _section(name: str) -> list[str]:
    return [command for section, command in documented_commands() if section.startswith(name)]


def _documented(prefix: str) -> str:
    return next(command for _, command in documented_commands() if command.startswith(prefix))


def test_every_documented_command_has_a_test():
    handled = STARTED_BY_FIXTURES + RUN_ELSEWHERE
    sections = {section for section, _ in documented_commands()}
    run_here = [command for section, command in documented_commands()
                if not command.startswith(handled)]
    # TestServed runs sections 2-8 in order, TestWorkPool section 9.
    assert all(section.split(".")[0] in {"2", "3", "4", "5", "6", "7", "8", "9"}
               for section, command in documented_commands() if command in run_here), run_here
    assert {"1. Start a server", "9. A process work pool instead of serve"} <= sections
    # README's operator section shows a few of them: the same text, so run here too.
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    section = text[text.index("## Operating it with Prefect"):text.index("## Results")]
    shown = [command for _, command in documented_commands(text=section)]
    documented = {command for _, command in documented_commands()}
    assert shown and set(shown) <= documented, set(shown) - documented


# --------------------------------------------------------------------------- the data root


def write_data_root(root: Path) -> Path:
    """The layout of prefect.yaml's defaults, tiny: 48 px images (the documented train-teacher
    run writes checkpoints/teacher.pt)."""
    make_composite_corpus(root / "data/composite", count=4, size=48, seed=1, progress=False)
    make_natural_corpus(root / "data/natural", count=6, size=48, seed=2, progress=False)
    make_natural_corpus(root / "data/validation", count=2, size=48, seed=3, progress=False)
    return root


TINY_TRIGGER_TRAINING = {"model": "unet_r18_w05", "train": {"steps": 2, "batch_size": 2}}


def project_file_with_tiny_training(path: Path) -> Path:
    """prefect.yaml with ONLY the retraining trigger's network and steps made tiny."""
    document = yaml.safe_load(PROJECT_FILE.read_text())
    student = next(d for d in document["deployments"] if d["name"] == "train-student")
    student["triggers"][0]["parameters"]["request"].update(copy.deepcopy(TINY_TRIGGER_TRAINING))
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def start_serve(server: Server, *, cwd: Path, log: Path, args: tuple[str, ...] = (),
                project: Path | None = None) -> subprocess.Popen:
    argv = shlex.split(_documented("mlb-flows serve")) + list(args)
    if project is not None:
        argv += ["--file", str(project)]
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=server.env, cwd=cwd,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server.serve_log = log

    def serving() -> bool:
        if process.poll() is not None:
            pytest.fail(f"mlb-flows serve exited with {process.returncode}\n{server.logs()}")
        return "serving " in log.read_text()

    server.wait_for("mlb-flows serve to register its deployments", serving, timeout_s=120)
    return process


def _deployment(server: Server, name: str) -> dict:
    response = server.get(f"/deployments/name/{name}/{name}")
    assert response.status_code == 200, f"{name}: {response.text}\n{server.logs()}"
    return response.json()


def _flow_runs(server: Server, deployment_id: str, state: str | None = None) -> list[dict]:
    body: dict = {"deployments": {"id": {"any_": [deployment_id]}}}
    if state:
        body["flow_runs"] = {"state": {"type": {"any_": [state]}}}
    return server.post("/flow_runs/filter", body)


def _run_id(output: str) -> str:
    match = re.search(r"UUID: ([0-9a-f-]{36})|\(([0-9a-f-]{36})\)", output)
    assert match, output
    return match.group(1) or match.group(2)


# --------------------------------------------------------------------------- served

VALUES: dict = {}  # what earlier documented commands produced (ids, paths), for later ones


@pytest.fixture(scope="class")
def served(prefect_server, tmp_path_factory) -> Iterator[Server]:
    root = write_data_root(tmp_path_factory.mktemp("data-root"))
    # Served from another directory: relative parameters must not resolve there.
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    project = project_file_with_tiny_training(elsewhere / "prefect.yaml")
    VALUES.update(root=root, elsewhere=elsewhere)
    process = start_serve(prefect_server, cwd=elsewhere, log=elsewhere / "serve.log",
                          project=project)
    try:
        yield prefect_server
    finally:
        _stop(process, sig=signal.SIGINT, timeout_s=60)


class TestServed:
    """docs/operations.md sections 2-8, in order, against one ``mlb-flows serve``."""

    def documented(self, served: Server, section: str) -> list[str]:
        """Run section ``section``'s commands (placeholders replaced); their outputs."""
        outputs = []
        for command in _section(section):
            if command.startswith(STARTED_BY_FIXTURES + RUN_ELSEWHERE):
                continue
            outputs.append(self.run(served, command))
        return outputs

    def run(self, served: Server, command: str) -> str:
        values = VALUES
        text = (command.replace("/srv/mlb", str(values["root"]))
                .replace("DATA_ROOT", str(values["root"])))
        for placeholder in ("VERSION", "FLOW_RUN_ID", "SCHEDULE_ID", "AUTOMATION_ID"):
            if placeholder in text:
                text = text.replace(placeholder, values[placeholder])
        done = served.shell(text, cwd=values["elsewhere"])
        if command.startswith(WAITED_FOR):
            run_id = _run_id(done.stdout)
            run = served.wait_run(run_id)
            assert run["state_type"] == "COMPLETED", (
                f"{text}\n{run['state']}\n{served.run_logs(run_id)}\n{served.logs()}")
            values.setdefault("runs", []).append((command, run))
        return done.stdout

    def test_served_deployments_are_the_ones_in_prefect_yaml(self, served):
        declared = yaml.safe_load(PROJECT_FILE.read_text())["deployments"]
        for entry in declared:
            deployment = _deployment(served, entry["name"])
            assert deployment["parameters"] == entry.get("parameters", {})
            assert deployment["work_pool_name"] is None and not deployment["paused"]
            schedules = [{"cron": s["schedule"]["cron"], "timezone": s["schedule"]["timezone"],
                          "active": s["active"]} for s in deployment["schedules"]]
            assert schedules == [{"cron": s["cron"], "timezone": s["timezone"],
                                  "active": s["active"]} for s in entry.get("schedules", [])]
        # The served trigger is prefect.yaml's, apart from the tiny training of this test.
        automations = served.post("/automations/filter", {})
        names = {a["name"] for a in automations}
        assert "train-student__automation_1" in names, names

    def test_2_the_data_root_is_a_prefect_variable(self, served):
        self.documented(served, "2.")
        assert json.loads(served.cli("variable", "get", "mlb-data-root")) == str(VALUES["root"])

    def test_3_serve_lists_the_deployments(self, served):
        output = self.documented(served, "3.")[0]
        assert "relabel/relabel" in output and "0 3 * * *" in output

    def test_4_documented_runs_complete_on_the_default_corpus(self, served):
        commands = _section("4.")
        assert "prefect deployment run relabel/relabel" in commands  # no parameters at all
        store = LabelStore(VALUES["root"] / "labels")
        for command in commands:
            self.run(served, command)
            if command == "prefect deployment run relabel/relabel":
                version = VALUES["VERSION"] = store.latest()
                assert store.verify(version).ok and len(store.open_version(version)) == 6
                VALUES["FLOW_RUN_ID"] = VALUES["runs"][-1][1]["id"]
        root = VALUES["root"]
        assert (root / "checkpoints" / f"student-{version}.pt").is_file()
        assert (root / "checkpoints" / "teacher.pt").is_file()
        # -p replaced one top-level parameter and kept the default request.
        dask_run = next(run for command, run in VALUES["runs"] if "-p dask" in command)
        assert dask_run["parameters"]["dask"] == {"workers": 0}
        assert dask_run["parameters"]["request"]["store"] == "labels"
        # --param request.config.inference.short_side made another version, same root.
        assert len(store.versions()) == 2, store.versions()
        assert not (VALUES["elsewhere"] / "labels").exists()

    def test_4_bad_parameters_are_refused_in_one_line(self, served):
        done = served.shell("mlb-flows run relabel --param request.config.inference.batch_size=0",
                            cwd=VALUES["elsewhere"], check=False)
        assert done.returncode == 2 and "batch_size" in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        done = served.shell("mlb-flows run relabel --param bogus=1",
                            cwd=VALUES["elsewhere"], check=False)
        assert done.returncode == 2 and "no parameter 'bogus'" in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        done = served.shell("mlb-flows run relabl", cwd=VALUES["elsewhere"], check=False)
        assert done.returncode == 2 and "relabl/relabl" in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr

    def test_5_publishing_a_version_trains_a_student_on_it(self, served):
        version = VALUES["VERSION"]
        events = served.post("/events/filter", {"filter": {
            "event": {"name": ["mlb.label-version.published"]}}})["events"]
        mine = [e for e in events if e["resource"]["prefect.resource.name"] == version]
        assert len(mine) == 1, events  # the -p rerun found it published: no second event
        payload = mine[0]["payload"]
        root = VALUES["root"]
        assert payload["store"] == str(root / "labels")
        assert payload["store_uri"] == (root / "labels").as_uri()
        assert payload["counts"]["labelled"] == 6 and payload["corpus"] == "images"
        student = _deployment(served, "train-student")

        def trained() -> dict | None:
            runs = [run for run in _flow_runs(served, student["id"])
                    if run["parameters"]["request"]["labels"] == version
                    and run["parameters"]["request"]["out"].startswith("checkpoints/students/")]
            return runs[0] if runs and runs[0]["state_type"] in TERMINAL else None

        run = served.wait_for("the triggered train-student run", trained,
                              timeout_s=RUN_TIMEOUT_S)
        assert run["state_type"] == "COMPLETED", (run["state"], served.run_logs(run["id"]))
        assert run["parameters"]["request"]["store"] == str(root / "labels")
        assert (root / "checkpoints" / "students" / f"{version}.pt").is_file()
        served.wait_logs(run["id"], f"training student on label version '{version}'",
                         f"label version {version}")
        automation = next(a for a in served.post("/automations/filter", {})
                          if a["name"] == "train-student__automation_1")
        VALUES["AUTOMATION_ID"] = automation["id"]
        self.documented(served, "5.")
        assert served.get(f"/automations/{automation['id']}").json()["enabled"] is True

    def test_6_watch_logs_and_artifacts(self, served):
        outputs = self.documented(served, "6.")
        version, run_id = VALUES["VERSION"], VALUES["FLOW_RUN_ID"]
        root = VALUES["root"]
        served.wait_logs(run_id, f"data root {root} (from Prefect Variable 'mlb-data-root')",
                         version, (root / "labels").as_uri(), "labelled 6", "shard task 1/",
                         "event mlb.label-version.published emitted")
        assert f"relabel-summary-{version}" in outputs[-2]  # artifact ls
        assert (root / "labels").as_uri() in outputs[-1]  # artifact inspect
        artifacts = served.post("/artifacts/filter", {})
        keys = {a["key"] for a in artifacts}
        assert {f"relabel-summary-{version}", f"relabel-preview-{version}"} <= keys, keys
        assert len([k for k in keys if k.startswith("relabel-summary-")]) == 2, keys
        assert all(len(json.dumps(a["data"])) < 20_000 for a in artifacts), "base64 again?"
        assert (root / "previews" / f"{version}.png").stat().st_size > 1000

    def test_7_label_commands_on_the_data_root(self, served):
        outputs = self.documented(served, "7.")
        assert VALUES["VERSION"] in outputs[0]

    def test_8_the_scheduler_creates_runs_and_the_cli_pauses_them(self, served):
        deployment = _deployment(served, "ema-relabel")
        runs = served.wait_for("scheduled ema-relabel runs",
                               lambda: _flow_runs(served, deployment["id"], "SCHEDULED"),
                               timeout_s=90)
        assert all(run["expected_start_time"].endswith("T03:00:00Z") for run in runs), runs
        VALUES["SCHEDULE_ID"] = deployment["schedules"][0]["id"]
        commands = _section("8.")
        self.run(served, commands[0])
        self.run(served, commands[1])  # pause
        assert [s["active"] for s in _deployment(served, "ema-relabel")["schedules"]] == [False]
        served.wait_for("the paused schedule's runs to be removed",
                        lambda: not _flow_runs(served, deployment["id"], "SCHEDULED"),
                        timeout_s=30)
        self.run(served, commands[2])  # resume
        assert [s["active"] for s in _deployment(served, "ema-relabel")["schedules"]] == [True]


# --------------------------------------------------------------------------- lifecycle


def long_training(root: Path) -> dict:
    """train-teacher for far longer than a test: it is always mid-run when serve stops."""
    return {"request": {"matte": str(root / "data/composite"), "model": "unet_r18_w05",
                        "out": str(root / "checkpoints/long.pt"),
                        "train": {"steps": 100000, "batch_size": 2}}}


@pytest.fixture(scope="class")
def root(prefect_server, tmp_path_factory) -> Path:
    return VALUES.get("root") or write_data_root(tmp_path_factory.mktemp("data-root"))


class TestLifecycle:
    """Stopping serve mid-run: no run left RUNNING, every deployment paused; restarts."""

    def _stop_mid_run(self, server: Server, root: Path, tmp: Path,
                      sig: int) -> tuple[dict, str]:
        log = tmp / f"serve-{sig}.log"
        process = start_serve(server, cwd=tmp, log=log)
        run_id = _run_id(server.cli("deployment", "run", "train-teacher/train-teacher",
                                    "--params", json.dumps(long_training(root))))

        def training() -> bool:
            run = server.get(f"/flow_runs/{run_id}").json()
            return run["state_type"] == "RUNNING" and "training teacher" in server.run_logs(
                run_id)

        server.wait_for("the training run to be RUNNING", training, timeout_s=RUN_TIMEOUT_S)
        os.kill(process.pid, sig)  # serve only: its children are its business
        process.wait(timeout=90)
        output = log.read_text()
        assert process.returncode == 0, output
        run = server.get(f"/flow_runs/{run_id}").json()
        return run, output

    def test_sigterm_cancels_the_run_and_pauses_every_deployment(self, root, prefect_server,
                                                                 tmp_path):
        run, output = self._stop_mid_run(prefect_server, root, tmp_path, signal.SIGTERM)
        assert run["state_type"] == "CANCELLED", (run["state"], output)
        assert "never awaited" not in output, output
        assert "stopped by SIGTERM: 1 in-flight run(s) cancelled, 7 deployments paused" in output
        names = [entry["name"] for entry in yaml.safe_load(PROJECT_FILE.read_text())["deployments"]]
        assert all(_deployment(prefect_server, name)["paused"] for name in names)
        running = prefect_server.post("/flow_runs/filter", {"flow_runs": {"state": {"type": {
            "any_": ["RUNNING", "PENDING", "CANCELLING"]}}}})
        assert running == [], running

    def test_a_paused_schedule_stays_paused_across_restarts_and_sigint_stops(
            self, root, prefect_server, tmp_path):
        schedule = _deployment(prefect_server, "ema-relabel")["schedules"][0]
        prefect_server.cli("deployment", "schedule", "pause", "ema-relabel/ema-relabel",
                           schedule["id"])
        run, output = self._stop_mid_run(prefect_server, root, tmp_path, signal.SIGINT)
        assert run["state_type"] == "CANCELLED", (run["state"], output)
        assert "ema-relabel/ema-relabel: 1 schedule(s) stay paused" in output, output
        assert "stopped by SIGINT" in output, output
        after = _deployment(prefect_server, "ema-relabel")
        assert [s["active"] for s in after["schedules"]] == [False]
        assert after["schedules"][0]["id"] != schedule["id"]  # as docs/operations.md says


# --------------------------------------------------------------------------- work pool


class TestWorkPool:
    """``prefect deploy --all`` and ``prefect worker start`` from the checkout."""

    def test_deploy_refuses_to_take_over_served_deployments(self, prefect_server, tmp_path):
        process = start_serve(prefect_server, cwd=tmp_path, log=tmp_path / "serve.log")
        try:
            prefect_server.shell(_section("9.")[0] + " || true", cwd=PROJECT_ROOT)
            done = prefect_server.shell(_documented("prefect deploy --all"), cwd=PROJECT_ROOT,
                                        check=False)
        finally:
            _stop(process, sig=signal.SIGTERM, timeout_s=60)
        assert done.returncode != 0
        assert ("prefect deploy: error: deployment relabel/relabel is served by `mlb-flows "
                "serve`") in done.stderr + done.stdout, done
        assert _deployment(prefect_server, "relabel")["work_pool_name"] is None

    def test_a_deploy_that_bypasses_the_guard_stops_serve_loudly(self, prefect_server,
                                                                 tmp_path):
        """Outside the checkout (no project file, no build step) `prefect deploy` moves a
        served deployment to the pool; serve must notice and stop, not compete."""
        process = start_serve(prefect_server, cwd=tmp_path, log=tmp_path / "serve.log")
        other = tmp_path / "other"
        shutil.copytree(PROJECT_ROOT / "flows", other / "flows")
        try:
            prefect_server.shell("prefect --no-prompt deploy flows/evaluate.py:evaluate "
                                 "--name evaluate --pool mlb", cwd=other, timeout_s=300)
            prefect_server.wait_for("serve to stop on the takeover",
                                    lambda: process.poll() is not None, timeout_s=120)
        finally:
            _stop(process, sig=signal.SIGTERM, timeout_s=60)
        log = (tmp_path / "serve.log").read_text()
        assert process.returncode == 2, log
        assert ("mlb-flows serve: error: deployment evaluate/evaluate was registered for work "
                "pool 'mlb' while served") in log, log
        assert _deployment(prefect_server, "evaluate")["work_pool_name"] == "mlb"
        assert _deployment(prefect_server, "evaluate")["paused"] is False  # the pool's now
        assert _deployment(prefect_server, "relabel")["paused"] is True

    def test_a_worker_runs_the_pool_deployments_from_the_checkout(self, prefect_server,
                                                                  tmp_path):
        names = [entry["name"] for entry in yaml.safe_load(PROJECT_FILE.read_text())["deployments"]]
        for name in names:  # switching from serve, as docs/operations.md says
            prefect_server.cli("deployment", "delete", f"{name}/{name}")
        prefect_server.shell(_documented("prefect deploy --all"), cwd=PROJECT_ROOT, timeout_s=300)
        relabel = _deployment(prefect_server, "relabel")
        assert relabel["work_pool_name"] == "mlb"
        assert relabel["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(PROJECT_ROOT)}}]
        # prefect deploy registers the retraining trigger too, for the pool's deployment.
        student = _deployment(prefect_server, "train-student")
        assert any(action.get("deployment_id") == student["id"]
                   for automation in prefect_server.post("/automations/filter", {})
                   for action in automation["actions"]), "no trigger for the pool deployment"
        # serve now refuses the pool's deployments, in one line.
        done = prefect_server.shell("mlb-flows serve", cwd=tmp_path, check=False, timeout_s=120)
        assert done.returncode == 2, done
        assert done.stderr.strip().startswith(
            "mlb-flows serve: error: deployment relabel/relabel is registered for work pool "
            "'mlb'"), done.stderr
        root = VALUES.get("root") or write_data_root(tmp_path / "root")
        if not (root / "checkpoints/teacher.pt").exists():
            make_teacher(root / "checkpoints/teacher.pt")
        prefect_server.cli("variable", "set", "mlb-data-root", str(root), "--overwrite")
        log = tmp_path / "worker.log"
        argv = shlex.split(_documented("prefect worker start"))
        with open(log, "w") as out:
            worker = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=prefect_server.env,
                                      cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        prefect_server.serve_log = log
        try:
            output = prefect_server.shell(
                f"mlb-flows run evaluate --param request.model={root}/checkpoints/teacher.pt",
                cwd=tmp_path).stdout
            run = prefect_server.wait_run(_run_id(output))
            assert run["state_type"] == "COMPLETED", (run["state"],
                                                      prefect_server.run_logs(run["id"]))
            # Before the worker stops: its flow process may still be sending its last logs.
            prefect_server.wait_logs(run["id"], f"data root {root} (from Prefect Variable",
                                     "teacher.pt on 2 images")
        finally:
            _stop(worker, sig=signal.SIGTERM, timeout_s=60)
