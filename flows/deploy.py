"""The project's deployments: read from ``prefect.yaml``, served by ``mlb-flows serve``.

``prefect.yaml`` at the repository root is the one place deployments are declared (names,
entrypoints, parameters, schedules). ``prefect deploy --all`` registers them for a work pool;
:func:`serve_deployments` serves the very same list from one process with no work pool, so
the two ways of running cannot drift apart.

Every deployment is named after its flow: ``prefect deployment run relabel/relabel``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILE = PROJECT_ROOT / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of ``prefect.yaml``'s ``deployments`` list, with its flow imported."""

    name: str
    entrypoint: str
    flow: Flow
    description: str = ""
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: tuple[Schedule, ...] = ()


def load_entrypoint(entrypoint: str) -> Flow:
    """``flows/relabel.py:relabel`` -> the flow object of the imported ``flows.relabel``.

    Imported by module name (not executed from the file) so that a served deployment runs
    the installed package's flow.
    """
    path, _, attribute = entrypoint.partition(":")
    if not path.endswith(".py") or not attribute:
        raise ValueError(f"entrypoint {entrypoint!r}: expected 'package/module.py:flow_function'")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, attribute, None)
    if not isinstance(flow, Flow):
        raise ValueError(f"entrypoint {entrypoint!r}: {module.__name__}.{attribute} is not a "
                         "Prefect flow")
    return flow


def _schedule(entry: dict[str, Any], *, where: str) -> Schedule:
    options = {"timezone": entry.get("timezone"), "active": entry.get("active", True)}
    if "cron" in entry:
        return Cron(entry["cron"], **options)
    if "interval" in entry:
        return Interval(entry["interval"], **options)
    raise ValueError(f"{where}: a schedule needs 'cron' or 'interval', got keys {sorted(entry)}")


def read_deployments(path: str | os.PathLike = PROJECT_FILE) -> list[DeploymentSpec]:
    """The deployments declared in ``path``; ValueError naming the entry that is wrong."""
    document = yaml.safe_load(Path(path).read_text())
    specs = []
    for entry in (document or {}).get("deployments") or []:
        where = f"{path}: deployment {entry.get('name')!r}"
        flow = load_entrypoint(entry["entrypoint"])
        if flow.name != entry["name"]:
            raise ValueError(f"{where}: the deployment must be named after its flow "
                             f"{flow.name!r} (so that `prefect deployment run {flow.name}/"
                             f"{flow.name}` works)")
        specs.append(DeploymentSpec(
            name=entry["name"], entrypoint=entry["entrypoint"], flow=flow,
            description=entry.get("description", ""), tags=tuple(entry.get("tags") or ()),
            parameters=dict(entry.get("parameters") or {}),
            schedules=tuple(_schedule(item, where=where) for item in entry.get("schedules") or ()),
        ))
    if not specs:
        raise ValueError(f"{path} declares no deployments")
    return specs


def runner_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    """The deployment ``serve`` registers for ``spec`` (entrypoint by module path)."""
    return spec.flow.to_deployment(
        spec.name, schedules=list(spec.schedules), parameters=spec.parameters,
        description=spec.description or spec.flow.description, tags=list(spec.tags),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_deployments(path: str | os.PathLike = PROJECT_FILE, *, limit: int | None = None,
                      only: tuple[str, ...] = ()) -> None:
    """Serve every deployment of ``path`` (or those named in ``only``) until interrupted.

    ``limit``: most flow runs at once. Stopping pauses the served deployments (Prefect's
    default) so no run piles up while nothing serves them; serving again resumes them, except
    schedules paused from the CLI (``prefect deployment schedule pause``), which stay paused.
    """
    specs = read_deployments(path)
    unknown = sorted(set(only) - {spec.name for spec in specs})
    if unknown:
        raise ValueError(f"no deployment named {', '.join(unknown)} in {path}; available: "
                         f"{', '.join(spec.name for spec in specs)}")
    serve(*[runner_deployment(spec) for spec in specs if not only or spec.name in only],
          limit=limit)
