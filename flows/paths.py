"""Where deployments find their data: one data root for ``serve``, work pools and docker.

Relative paths in a flow's request resolve against the data root, in this order:

1. the Prefect Variable ``mlb-data-root`` (``prefect variable set mlb-data-root /data``):
   one value for every process that runs flows against that server;
2. the environment variable ``MLB_DATA_ROOT`` of the process running the flow (docker
   compose sets ``/data``);
3. the checkout's default work folder, ``<project>/.mlb-work/demo`` (where ``mlb-flows demo``
   writes its data, checkpoints and label store).

The deployment defaults in ``prefect.yaml`` are relative paths of one layout under that root
(:data:`LAYOUT`), so ``prefect deployment run relabel/relabel`` with no parameters relabels
the default corpus wherever the flow runs. Absolute paths and URLs (``s3://...``) are kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from prefect.variables import Variable
from pydantic import BaseModel

from mlb.labels.request import RelabelRequest
from mlb.train.config import _path_to_str

DATA_ROOT_VARIABLE = "mlb-data-root"
DATA_ROOT_ENV = "MLB_DATA_ROOT"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = PROJECT_ROOT / ".mlb-work" / "demo"

# The layout under the data root that the deployment defaults name (and `mlb-flows demo`
# writes: flows.pipeline).
LAYOUT = {
    "composite": "data/composite",
    "natural images": "data/natural/images",
    "natural masks": "data/natural/masks",
    "validation images": "data/validation/images",
    "validation alphas": "data/validation/alphas",
    "teacher": "checkpoints/teacher.pt",
    "student": "checkpoints/student.pt",
    "store": "labels",
}

# Request fields that hold paths but are plain ``str`` (not PathText) in their model.
PLAIN_PATH_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    RelabelRequest: ("teacher", "images", "masks", "store"),
}

Model = TypeVar("Model", bound=BaseModel)


def data_root() -> tuple[Path, str]:
    """The data root and where it came from (for the run's log); ValueError if not absolute.

    Needs a Prefect API (always there inside a flow run) to read the Variable.
    """
    value, source = Variable.get(DATA_ROOT_VARIABLE, default=None), (
        f"Prefect Variable {DATA_ROOT_VARIABLE!r}")
    if not value:
        value, source = os.environ.get(DATA_ROOT_ENV), f"environment variable {DATA_ROOT_ENV}"
    if not value:
        return DEFAULT_DATA_ROOT, "the checkout's default"
    root = Path(str(value)).expanduser()
    if not root.is_absolute():
        raise ValueError(f"data root {value!r} (from the {source}) must be an absolute path")
    return root, source


def _is_path_text(annotation: Any) -> bool:
    """True for ``PathText`` and ``PathText | None`` (the annotation carries its validator)."""
    for item in getattr(annotation, "__metadata__", ()):
        if getattr(item, "func", None) is _path_to_str:
            return True
    return any(_is_path_text(arg) for arg in getattr(annotation, "__args__", ()) or ())


def path_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that hold a path (PathText ones and :data:`PLAIN_PATH_FIELDS`)."""
    typed = tuple(name for name, info in model.model_fields.items()
                  if _is_path_text(info.annotation)
                  or any(getattr(m, "func", None) is _path_to_str for m in info.metadata))
    return tuple(dict.fromkeys(typed + PLAIN_PATH_FIELDS.get(model, ())))


def resolve_at(path: str, root: Path) -> str:
    """``path`` against ``root`` unless it is absolute or a URL."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(root / os.path.expanduser(path))


def at_data_root(request: Model, root: Path) -> Model:
    """``request`` with every relative path field made absolute under ``root``."""
    update = {name: resolve_at(value, root) for name in path_fields(type(request))
              if isinstance(value := getattr(request, name), str)}
    return request.model_copy(update=update)
