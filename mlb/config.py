"""The base of every configuration model in mlb.

Each component declares its own config next to its code (``BlendConfig`` in ``mlb.blend``,
``ModelConfig`` in ``mlb.models`` ...); experiments compose them. All are frozen and reject
unknown keys, so a typo in a flow parameter or a YAML file fails before any work starts.
"""

from pydantic import BaseModel, ConfigDict


class FrozenConfig(BaseModel):
    """Immutable, strictly-keyed configuration: the same object is a Prefect flow parameter."""

    model_config = ConfigDict(frozen=True, extra="forbid")
