"""A label version's id, recomputed from what the version stores (for ``verify``).

``mlb.labels.relabel`` makes a version's id from the corpus manifest, the teacher's sha256,
the blend settings and the settings in ``id_settings``; all of them are kept in the version
(manifest, ``metadata.teacher``, ``metadata.blend``, ``metadata.inference``, ``shard_size``,
``kinds``), so the id can be recomputed from the stored documents: an edited setting no
longer matches.
"""

from __future__ import annotations

from typing import Any

from storage import Manifest, content_id


def id_settings(*, short_side: int, weights: str, store_teacher_alpha: bool, batch_size: int,
                shard_size: int, amp: bool) -> dict[str, Any]:
    """The ``extra`` of a relabelled version's content id: settings that change its bytes."""
    return {"short_side": short_side, "weights": weights,
            "store_teacher_alpha": store_teacher_alpha, "batch_size": batch_size,
            "shard_size": shard_size, "amp": amp}


def version_id_of(document: dict[str, Any], manifest: Manifest) -> str | None:
    """The id the stored manifest and settings give; None for versions made by other
    producers (their id inputs are not known here)."""
    metadata = document["metadata"]
    if metadata.get("producer") != "mlb.relabel":
        return None
    inference = metadata["inference"]
    extra = id_settings(short_side=inference["short_side"],
                        weights=metadata["teacher"]["weights"],
                        store_teacher_alpha="teacher_alpha" in document["kinds"],
                        batch_size=inference["batch_size"], shard_size=document["shard_size"],
                        amp=inference["amp"])
    return content_id(manifest=manifest, teacher_sha256=metadata["teacher"]["sha256"],
                      blend=metadata["blend"], extra=extra)
