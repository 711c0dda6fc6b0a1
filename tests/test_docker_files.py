"""docker/: no Docker engine exists here, so the files are read, not run. Every command and
entrypoint they name must exist in the project (console scripts, subcommands, options), every
file they copy must exist, and the services must agree on the API, the scheduler and the
label-store volume.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

from flows import cli
from flows.runners import GPU_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


@cache
def help_text(*command: str) -> str:
    done = subprocess.run([str(BIN / command[0]), *command[1:], "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_command(command: list[str]) -> None:
    """The executable is installed by the project and accepts the subcommand and options."""
    program = command[0]
    if program in console_scripts():
        assert program == "mlb-flows", f"add a check for {program}"
        cli.build_parser().parse_args(command[1:])  # SystemExit on an unknown option
        return
    assert (BIN / program).exists(), f"{program} is not installed by the project's dependencies"
    words = [word for word in command[1:] if not word.startswith(("-", "tcp://"))]
    subcommand = tuple(word for word in words if word.isalpha())[:2 if program == "prefect"
                                                                else 1]
    text = help_text(program, *subcommand)
    for option in (word.split("=")[0] for word in command if word.startswith("--")):
        assert option in text, f"{' '.join(command)}: {option} is not an option of {subcommand}"


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_command_exists(name):
    command = services()[name]["command"]
    assert isinstance(command, list), f"{name}: use the exec (list) form"
    check_command(command)


def test_dockerfile_cmd_exists():
    (cmd,) = [arguments for instruction, arguments in dockerfile_instructions()
              if instruction == "CMD"]
    check_command(yaml.safe_load(cmd))


def test_dockerfile_builds_from_the_constraints_on_a_chosen_base():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert instructions[1] == ("FROM", "${BASE_IMAGE}")
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "pip install -c constraints.txt -e ." in runs
    assert "-r /tmp/requirements.txt" in runs and "python3.11" in runs
    gpu = services()["dask-worker-gpu"]["build"]["args"]["BASE_IMAGE"]
    assert gpu.startswith("nvidia/cuda:") and "ubuntu22.04" in gpu  # apt has python3.11


def test_every_copied_file_exists_and_the_venv_stays_out():
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            *sources, _ = shlex.split(arguments)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the project"
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)


def test_the_build_context_is_the_repository_root():
    for name, service in services().items():
        build = service["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]) == DOCKER / "Dockerfile", name


def test_services_share_one_api_one_scheduler_and_the_label_store():
    all_services = services()
    server = all_services.pop("prefect-server")
    port = server["command"][server["command"].index("--port") + 1]
    assert server["command"][server["command"].index("--host") + 1] == "0.0.0.0"
    scheduler = all_services["dask-scheduler"]["command"]
    address = f"tcp://dask-scheduler:{scheduler[scheduler.index('--port') + 1]}"
    for name, service in all_services.items():
        assert service["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{port}/api"
        assert "mlb-labels:/data/labels" in service["volumes"], name
        assert service["environment"]["MLB_DATA_ROOT"] == "/data", name
        if service["command"][:2] == ["dask", "worker"]:
            assert service["command"][2] == address, name
    declared = set(compose()["volumes"])
    used = {volume.split(":")[0] for service in services().values()
            for volume in service.get("volumes", [])}
    assert used <= declared


def test_gpu_workers_offer_the_resource_the_flows_ask_for():
    gpu = services()["dask-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    command = gpu["command"]
    assert command[command.index("--resources") + 1] == f"{GPU_RESOURCE}=1"
    assert "--resources" not in services()["dask-worker"]["command"]
