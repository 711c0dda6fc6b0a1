"""``mlb-flows run NAME``: start a deployment's run by its short name, with single overrides.

``prefect deployment run`` needs ``FLOW/DEPLOYMENT`` and its ``-p`` replaces whole top-level
parameters; here ``relabel`` means ``relabel/relabel`` and ``--param request.teacher=X``
replaces one field of the deployment's default request. The server validates the result
against the flow's parameter schema before the run is created.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

POLL_S = 1.0


@dataclass(frozen=True)
class SubmittedRun:
    id: str
    name: str
    deployment: str
    state: str
    url: str
    message: str = ""
    """The final state's message (why a run failed or was cancelled), when waited for."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["request.teacher=x.pt", "dask={\\"workers\\": 0}"]`` -> ``{dotted key: value}``."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"--param {item!r}: expected KEY=VALUE, KEY a parameter name or "
                             "a dotted path such as request.teacher")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def with_overrides(parameters: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``parameters`` with each dotted key set (missing levels become objects)."""
    result = copy.deepcopy(parameters)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = result
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--param {key}: {part!r} holds {child!r}, not an object")
            node = child
        node[last] = value
    return result


def deployment_name(name: str) -> str:
    """``relabel`` -> ``relabel/relabel`` (every deployment is named after its flow)."""
    return name if "/" in name else f"{name}/{name}"


def run_url(flow_run_id: str) -> str:
    ui = PREFECT_UI_URL.value()
    if ui:
        return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}"
    return f"{str(PREFECT_API_URL.value() or '').rstrip('/')}/flow_runs/{flow_run_id}"


def _server_detail(error: PrefectHTTPStatusError) -> str:
    try:
        detail = error.response.json().get("detail", error.response.text)
    except ValueError:
        detail = error.response.text
    return " ".join(str(detail).split())


def submit(name: str, overrides: dict[str, Any], *, wait: bool = False,
           timeout: float | None = None) -> SubmittedRun:
    """Create a run of deployment ``name`` (short or FLOW/DEPLOYMENT); optionally wait for it."""
    full = deployment_name(name)
    if not PREFECT_API_URL.value():
        raise ValueError("PREFECT_API_URL is not set: point it at the server "
                         "(export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(full)
        except ObjectNotFound:
            known = sorted(f"{d.name}" for d in client.read_deployments())
            raise ValueError(f"no deployment {full} on {PREFECT_API_URL.value()}; known: "
                             f"{', '.join(known) or 'none (is mlb-flows serve running?)'}"
                             ) from None
        known = set((deployment.parameter_openapi_schema or {}).get("properties", {}))
        given = {key.split(".", 1)[0] for key in overrides}  # "request.config.x" -> request
        unknown = sorted(given - known) if known else []
        if unknown:  # the server stores any top-level key; the run would crash on it
            raise ValueError(f"{full} has no parameter {unknown[0]!r}; its parameters: "
                             f"{', '.join(sorted(known))}")
        parameters = with_overrides(deployment.parameters or {}, overrides)
        try:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        except PrefectHTTPStatusError as error:
            raise ValueError(f"the server refused the parameters of {full}: "
                             f"{_server_detail(error)}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while wait and not (run.state and run.state.is_final()):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run.id} of {full} still "
                                   f"{run.state.type.value if run.state else 'unknown'} after "
                                   f"{timeout:.0f} s: {run_url(str(run.id))}")
            time.sleep(POLL_S)
            run = client.read_flow_run(run.id)
    state = run.state.type.value if run.state else "UNKNOWN"
    message = (run.state.message or "") if run.state and run.state.is_final() else ""
    return SubmittedRun(id=str(run.id), name=run.name, deployment=full, state=state,
                        url=run_url(str(run.id)), message=message)
