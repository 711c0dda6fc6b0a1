"""Prefect events the flows emit, and what automations match on.

``mlb.label-version.published``: a relabel run published a new label version. prefect.yaml's
trigger on ``train-student`` matches it and trains a student on that version (its
parameters are templated from the event: ``{{ event.payload.version_id }}``,
``{{ event.payload.store }}``). A rerun that finds the version already published does not emit
it again, so a trigger never retrains twice on one version.

    resource  prefect.resource.id   mlb.label-version.<version id>
              prefect.resource.name <version id>
              mlb.corpus, mlb.store (the store's absolute URI), mlb.ema-round
    payload   version_id, corpus, store (absolute path, usable as a parameter),
              store_uri, counts, flow_run_id
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from mlb.labels.request import RelabelSummary

LABEL_VERSION_PUBLISHED = "mlb.label-version.published"
LABEL_VERSION_RESOURCE = "mlb.label-version"


def version_resource(version_id: str, *, corpus: str, store_uri: str,
                     ema_round: int = 0) -> dict[str, str]:
    # mlb.ema-round: the retraining trigger matches "0" only; an EMA round trains its own
    # student on the version it publishes.
    return {"prefect.resource.id": f"{LABEL_VERSION_RESOURCE}.{version_id}",
            "prefect.resource.name": version_id, "mlb.corpus": corpus, "mlb.store": store_uri,
            "mlb.ema-round": str(ema_round)}


def published_payload(summary: RelabelSummary, *, store: str, store_uri: str,
                      flow_run_id: str | None) -> dict[str, Any]:
    return {"version_id": summary.version_id, "corpus": summary.corpus, "store": store,
            "store_uri": store_uri, "counts": dict(summary.counts), "flow_run_id": flow_run_id}


def emit_published(summary: RelabelSummary, *, store: str, store_uri: str,
                   flow_run_id: str | None, ema_round: int = 0) -> str | None:
    """Emit ``mlb.label-version.published`` for ``summary``; the event's id (None if the
    client could not queue it)."""
    event = emit_event(
        event=LABEL_VERSION_PUBLISHED,
        resource=version_resource(summary.version_id, corpus=summary.corpus,
                                  store_uri=store_uri, ema_round=ema_round),
        payload=published_payload(summary, store=store, store_uri=store_uri,
                                  flow_run_id=flow_run_id))
    return str(event.id) if event is not None else None
