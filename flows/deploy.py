"""The project's deployments: read from ``prefect.yaml``, served by ``mlb-flows serve``.

``prefect.yaml`` at the repository root is the one place deployments are declared (names,
entrypoints, parameters, schedules). ``prefect deploy --all`` registers them for a work pool;
:func:`serve_deployments` serves the very same list from one process with no work pool, so
the two ways of running cannot drift apart.

Every deployment is named after its flow: ``prefect deployment run relabel/relabel``.

Served and work-pool deployments share those names, so neither may silently take the other
over: ``serve`` refuses a name registered for a work pool, ``prefect deploy`` (through
the build step :func:`refuse_served_takeover` in prefect.yaml) refuses a name that is served,
and a ``prefect deploy`` that bypasses that step (another project file) makes ``serve`` stop
with an error naming the deployment (:func:`_watch_takeover`, checked every poll interval).

Stopping ``serve`` (SIGTERM, or Ctrl-C / SIGINT) cancels its in-flight runs (state
CANCELLED, message naming the signal) and pauses every deployment it served; serving again
resumes them. A schedule paused by the operator (``prefect deployment schedule pause``)
stays paused across restarts: the server replaces a deployment's schedules (new ids) when it
is registered again, so ``serve`` reads the paused ones first and registers them paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import yaml
from prefect import Flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import Deployment
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentTriggerTypes
from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.schedules import Cron, Interval, Schedule
from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY
from prefect.states import Cancelled
from pydantic import TypeAdapter

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
    triggers: tuple[dict[str, Any], ...] = ()
    """prefect.yaml's ``triggers`` of the deployment, as written (automations)."""


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
            triggers=tuple(entry.get("triggers") or ()),
        ))
    if not specs:
        raise ValueError(f"{path} declares no deployments")
    return specs


_TRIGGERS = TypeAdapter(DeploymentTriggerTypes)


def deployment_triggers(spec: DeploymentSpec) -> list[DeploymentTriggerTypes]:
    """The deployment's triggers as ``prefect deploy`` builds them (same default names)."""
    return [_TRIGGERS.validate_python({"name": f"{spec.name}__automation_{i}", **entry})
            for i, entry in enumerate(spec.triggers, start=1)]


def _schedule_key(schedule: Any) -> tuple:
    return (getattr(schedule, "cron", None), getattr(schedule, "timezone", None),
            str(getattr(schedule, "interval", None) or ""))


def runner_deployment(spec: DeploymentSpec, *,
                      paused_schedules: frozenset[tuple] = frozenset()) -> RunnerDeployment:
    """The deployment ``serve`` registers for ``spec`` (entrypoint by module path).

    ``paused_schedules``: keys (:func:`_schedule_key`) of schedules to register paused.
    """
    schedules = [dataclasses.replace(item, active=False)
                 if _schedule_key(item) in paused_schedules else item for item in spec.schedules]
    return spec.flow.to_deployment(
        spec.name, schedules=schedules, parameters=spec.parameters,
        description=spec.description or spec.flow.description, tags=list(spec.tags),
        entrypoint_type=EntrypointType.MODULE_PATH, triggers=deployment_triggers(spec),
        paused=False, _sync=True,  # also when called from serve's event loop
    )


async def _existing(client: PrefectClient, name: str) -> Deployment | None:
    try:
        return await client.read_deployment_by_name(f"{name}/{name}")
    except ObjectNotFound:
        return None


async def _prepare_serving(client: PrefectClient, specs: list[DeploymentSpec]
                           ) -> list[RunnerDeployment]:
    """Refuse pool deployments of the same names; keep the operator's paused schedules."""
    deployments = []
    for spec in specs:
        existing = await _existing(client, spec.name)
        if existing is not None and existing.work_pool_name:
            raise ValueError(
                f"deployment {spec.name}/{spec.name} is registered for work pool "
                f"{existing.work_pool_name!r} (prefect deploy); serving it would take it over. "
                f"Delete it first (`prefect deployment delete {spec.name}/{spec.name}`) or "
                "keep using the work pool")
        paused = frozenset(
            _schedule_key(item.schedule) for item in (existing.schedules if existing else [])
            if not item.active)
        if paused:
            print(f"{spec.name}/{spec.name}: {len(paused)} schedule(s) stay paused as they were",
                  flush=True)
        deployments.append(runner_deployment(spec, paused_schedules=paused))
    return deployments


class _StoppableRunner(Runner):
    """A Runner whose SIGTERM handler asks :func:`_serve` to stop instead of exiting at once.

    Prefect's own handler calls the async ``stop`` from a signal handler without awaiting it
    (``coroutine 'Runner.astop' was never awaited``), so runs were left RUNNING and only
    some deployments were paused.
    """

    stop_requested: asyncio.Event
    loop: asyncio.AbstractEventLoop
    signal_name: str = ""

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        self.request_stop("SIGTERM")

    def request_stop(self, name: str) -> None:
        self.signal_name = self.signal_name or name
        self.loop.call_soon_threadsafe(self.stop_requested.set)


TAKEOVER = "the takeover of"  # how a stop caused by a work pool's takeover is named


async def _watch_takeover(runner: _StoppableRunner, served: dict[UUID, str],
                          taken: set[UUID]) -> None:
    """Stop ``serve`` loudly when one of its deployments is registered for a work pool
    meanwhile (a ``prefect deploy`` that the build-step guard did not cover, e.g. run with
    another project file): the pool's workers and ``serve`` would compete for its runs."""
    every = max(1.0, float(PREFECT_RUNNER_POLL_FREQUENCY.value()))
    async with get_client() as client:
        while not runner.stop_requested.is_set():
            await asyncio.sleep(every)
            for deployment_id, name in served.items():
                try:
                    deployment = await client.read_deployment(deployment_id)
                except (ObjectNotFound, httpx.HTTPError):
                    continue  # deleted, or the API is briefly away: checked again next time
                if deployment.work_pool_name:
                    taken.add(deployment_id)
                    print(f"mlb-flows serve: error: deployment {name} was registered for work "
                          f"pool {deployment.work_pool_name!r} while served; stopping serve so "
                          "that it and the pool's workers do not compete for its runs",
                          file=sys.stderr, flush=True)
                    runner.request_stop(f"{TAKEOVER} {name} by work pool "
                                        f"{deployment.work_pool_name!r}")
                    return


async def _serve(specs: list[DeploymentSpec], *, limit: int | None) -> str:
    """Serve until SIGTERM/SIGINT; then cancel in-flight runs and pause every deployment.

    Returns the name of the signal that stopped it.
    """
    async with get_client() as client:
        deployments = await _prepare_serving(client, specs)
    runner = _StoppableRunner(limit=limit, pause_on_shutdown=False)
    runner.stop_requested, runner.loop = asyncio.Event(), asyncio.get_running_loop()
    runner.loop.add_signal_handler(signal.SIGINT, runner.request_stop, "SIGINT")
    ids: list[UUID] = [await runner.add_deployment(deployment) for deployment in deployments]
    print(f"serving {len(ids)} deployments: "
          f"{', '.join(f'{d.flow_name}/{d.name}' for d in deployments)}", flush=True)
    taken: set[UUID] = set()
    watch = asyncio.create_task(_watch_takeover(
        runner, {i: f"{d.flow_name}/{d.name}" for i, d in zip(ids, deployments, strict=True)},
        taken))
    started = asyncio.create_task(runner.start())
    stop = asyncio.create_task(runner.stop_requested.wait())
    await asyncio.wait({started, stop}, return_when=asyncio.FIRST_COMPLETED)
    reason = runner.signal_name or "the runner ended"
    in_flight = list(runner._process_manager.flow_run_ids())  # before astop clears them
    if not started.done():
        await runner.astop()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(started, timeout=60)
    stop.cancel()
    watch.cancel()
    kept = [deployment_id for deployment_id in ids if deployment_id not in taken]
    async with get_client() as client:
        await _finish_runs(client, in_flight, reason)
        for deployment_id in kept:  # a pool's deployment is the pool's to pause
            await client.pause_deployment(deployment_id)
    print(f"stopped by {reason}: {len(in_flight)} in-flight run(s) cancelled, "
          f"{len(kept)} deployments paused", flush=True)
    return reason


async def _finish_runs(client: PrefectClient, flow_run_ids: list[UUID], reason: str) -> None:
    """Every run this process had in flight ends CANCELLED (if the runner did not already)."""
    for flow_run_id in flow_run_ids:
        run = await client.read_flow_run(flow_run_id)
        if run.state is None or not run.state.is_final():
            await client.set_flow_run_state(flow_run_id, Cancelled(
                message=f"mlb-flows serve stopped ({reason}) while this run was in flight"),
                force=True)


def serve_deployments(path: str | os.PathLike = PROJECT_FILE, *, limit: int | None = None,
                      only: tuple[str, ...] = ()) -> str:
    """Serve every deployment of ``path`` (or those named in ``only``) until stopped.

    ``limit``: most flow runs at once. Returns the signal that stopped it. See the module
    docstring for what stopping does.
    """
    specs = read_deployments(path)
    unknown = sorted(set(only) - {spec.name for spec in specs})
    if unknown:
        raise ValueError(f"no deployment named {', '.join(unknown)} in {path}; available: "
                         f"{', '.join(spec.name for spec in specs)}")
    return asyncio.run(_serve([spec for spec in specs if not only or spec.name in only],
                              limit=limit))


def refuse_served_takeover(path: str = str(PROJECT_FILE)) -> dict[str, str]:
    """``prefect deploy`` build step: fail if a deployment of ``path`` is served (no pool).

    ``prefect deploy`` would otherwise move a served deployment to the work pool, and the
    worker and ``serve`` would compete for its runs.
    """
    names = [entry["name"] for entry in
             (yaml.safe_load(Path(path).read_text()) or {}).get("deployments") or []]
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                existing = client.read_deployment_by_name(f"{name}/{name}")
            except ObjectNotFound:
                continue
            if not existing.work_pool_name:
                message = (f"deployment {name}/{name} is served by `mlb-flows serve` (no work "
                           "pool); deploying it to a pool would take it over. Stop serve and "
                           f"delete it first (`prefect deployment delete {name}/{name}`)")
                # Prefect prints the step's traceback; this line says it first, plainly.
                print(f"prefect deploy: error: {message}", file=sys.stderr, flush=True)
                raise ValueError(message)
    return {"checked": ", ".join(names)}
