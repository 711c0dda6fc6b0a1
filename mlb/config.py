"""The base of every configuration model in mlb.

Each component declares its own config next to its code (``BlendConfig`` in ``mlb.blend``,
``ModelConfig`` in ``mlb.models`` ...); experiments compose them. All are frozen and reject
unknown keys, so a typo in a flow parameter or a YAML file fails before any work starts.
"""

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

# The largest short side a network is run at. Inference holds a few float copies of the
# resized image per batch slot: a short side of 20000 asked for 28.8 GB and ended in an
# allocation failure (tried as a new user would); 8192 px is well above any matting use.
MAX_SHORT_SIDE = 8192
ShortSide = Annotated[int, Field(gt=0, le=MAX_SHORT_SIDE)]
"""A short side in pixels, 1 .. ``MAX_SHORT_SIDE``."""


class FrozenConfig(BaseModel):
    """Immutable, strictly-keyed configuration: the same object is a Prefect flow parameter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1: `--set batch_size=true` trained at batch 1
        # (tried as a new user would). A boolean is taken only where the field names bool.
        if info.field_name is None:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, dict):
            # a mapping's values, where the field is a mapping (a dict for a nested model is
            # that model's fields: its own validator checks them against its own types)
            items = list(value.values()) if _is_mapping(annotation) else []
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
        else:
            items = [value]
        flags = [item for item in items if _is_bool(item)]
        if flags and not _takes_bool(annotation):
            raise ValueError(f"expected {_type_name(annotation)}, not a boolean "
                             f"({bool(flags[0])})")
        return value


def _is_bool(value: Any) -> bool:
    """A Python or a NumPy boolean (``np.True_`` is no ``bool``), without importing NumPy."""
    return isinstance(value, bool) or type(value).__name__ in ("bool", "bool_")


def _is_mapping(annotation: Any) -> bool:
    """Whether the field is typed as a dict (or a union with one)."""
    if get_origin(annotation) is dict or annotation is dict:
        return True
    return get_origin(annotation) in (Union, UnionType) and any(
        _is_mapping(arg) for arg in get_args(annotation))


def _takes_bool(annotation: Any) -> bool:
    """Whether a field of this type accepts a boolean: it names bool, Any or object."""
    if annotation in (bool, Any, object):
        return True
    return any(_takes_bool(arg) for arg in get_args(annotation))


def _type_name(annotation: Any) -> str:
    """``int``, ``tuple[int, ...] | None``: the type as written, without its constraints."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return " or ".join(map(repr, args))
    if origin is not None and args:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', origin)}[{inner}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


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
