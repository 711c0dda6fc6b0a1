"""CLI options whose default and help come from a config model's field, not typed twice.

    option(parser, "--batch-size", "mlb.labels.request:RelabelConfig", "batch_size", type=int)

The option parses to ``None`` when left out, so the request takes the model's own default;
``--help`` shows that default, read from ``Model.model_fields[name]`` when the help is
formatted. Only then is the model imported: building the parser stays free of torch.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def field_of(model: str, name: str) -> Any:
    """``model`` as ``"package.module:Class"``; the pydantic FieldInfo of its field ``name``."""
    module, _, cls = model.partition(":")
    fields = getattr(importlib.import_module(module), cls).model_fields
    if name not in fields:
        raise KeyError(f"{model} has no field {name!r}; expected one of {sorted(fields)}")
    return fields[name]


def field_help(model: str, name: str, text: str | None = None) -> str:
    """``text`` (else the field's description) and the field's default."""
    info = field_of(model, name)
    text = text or info.description or name.replace("_", " ")
    return f"{text} (default: {info.default})"


def option(parser: argparse.ArgumentParser, flag: str, model: str, name: str, *,
           help: str | None = None, **kwargs: Any) -> argparse.Action:
    """An option for ``model``'s field ``name``; left out, it is ``None`` (the model decides)."""
    action = parser.add_argument(flag, dest=name, default=None, help=help or name, **kwargs)
    action.config_field = (model, name, help)  # type: ignore[attr-defined]
    return action


class FieldHelpFormatter(argparse.HelpFormatter):
    """Formats an :func:`option`'s help with its field's default, importing the model late."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        source = getattr(action, "config_field", None)
        if source is None:
            return action.help
        return field_help(*source).replace("%", "%%")


INFERENCE_OPTIONS = ("short_side", "batch_size", "device", "amp")


def inference_options(parser: argparse.ArgumentParser, model: str = "mlb.inference:InferenceConfig",
                      *, batch_help: str = "images per forward") -> None:
    """``--short-side``, ``--batch-size``, ``--device``, ``--no-amp``: the fields of ``model``
    (an ``InferenceConfig``), for every command that runs a network."""
    option(parser, "--short-side", model, "short_side", type=int,
           help="the network's input short side")
    option(parser, "--batch-size", model, "batch_size", type=int, help=batch_help)
    option(parser, "--device", model, "device", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                        help="run float32 on CUDA too (no autocast)")


def inference_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The inference options the user gave (left-out ones take the config's defaults)."""
    return {name: getattr(args, name) for name in INFERENCE_OPTIONS
            if getattr(args, name, None) is not None}
