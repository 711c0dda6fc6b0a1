"""The base of every configuration model in mlb.

Each component declares its own config next to its code (``BlendConfig`` in ``mlb.blend``,
``ModelConfig`` in ``mlb.models`` ...); experiments compose them. All are frozen and reject
unknown keys, so a typo in a flow parameter or a YAML file fails before any work starts.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The largest short side a network is run at. Inference holds a few float copies of the
# resized image per batch slot: a short side of 20000 asked for 28.8 GB and ended in an
# allocation failure (tried as a new user would); 8192 px is well above any matting use.
MAX_SHORT_SIDE = 8192
ShortSide = Annotated[int, Field(gt=0, le=MAX_SHORT_SIDE)]
"""A short side in pixels, 1 .. ``MAX_SHORT_SIDE``."""


class FrozenConfig(BaseModel):
    """Immutable, strictly-keyed configuration: the same object is a Prefect flow parameter."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def validation_text(error: ValidationError) -> str:
    """A settings error as "Config.field: what is wrong, got VALUE", without pydantic's
    input dump and documentation link (the CLI's error line, a damaged checkpoint's reason)."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in (error.title, *item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        scalar = value is None or isinstance(value, (str, int, float, bool))
        got = f", got {value!r}" if scalar and item["type"] != "value_error" else ""
        parts.append(f"{where}: {message[:1].lower()}{message[1:]}{got}")
    return "; ".join(parts)
