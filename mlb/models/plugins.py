"""Networks from outside ``mlb``: an entry point of the ``mlb.models`` group or a
``module:factory`` spec.

A factory is called as ``factory()`` (or ``factory(pretrained_encoder=VALUE)`` when the user
passes ``--pretrained-encoder``) and returns an ``nn.Module``; :class:`PluginAdapter` makes it
meet the interface (padding, crop back, a boundary head when it returns only alpha).

Entry point, in the plugin's ``pyproject.toml``::

    [project.entry-points."mlb.models"]
    my_net = "my_package.models:build_my_net"

A ``module:factory`` spec must name a factory marked ``mlb_model_factory = True`` (a plain
function attribute; no import of ``mlb`` needed). Checkpoints store the name and are rebuilt
from it, so without the mark a tampered checkpoint could name any zero-argument callable of
an installed module (``os:abort``); entry points are exempt, being installed on purpose.
Loading a plugin's checkpoint imports that module again, so the plugin must be installed (or
on ``PYTHONPATH``) wherever the checkpoint is loaded; a checkpoint itself cannot carry code.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib.metadata import entry_points

from torch import nn

from mlb.models.interface import PluginAdapter

GROUP = "mlb.models"
MARK = "mlb_model_factory"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def plugin_names() -> list[str]:
    """Names of the installed ``mlb.models`` entry points, sorted."""
    return sorted({entry.name for entry in entry_points(group=GROUP)})


def check_plugin_name(name: str, *, available: list[str]) -> str:
    """``name`` if it is an installed entry point or a ``module:factory`` spec (not imported
    here), else a ``ValueError`` listing what is available."""
    if name in plugin_names() or _SPEC.match(name):
        return name
    options = ", ".join([*available, *plugin_names()])
    raise ValueError(
        f"unknown model {name!r}; available options are {options}, an entry point of the "
        f"{GROUP!r} group, or a 'module:factory' spec"
    )


def _factory(name: str) -> Callable[..., object]:
    matches = [entry for entry in entry_points(group=GROUP) if entry.name == name]
    try:
        if matches:
            return matches[0].load()
        module_name, _, attribute = name.partition(":")
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load model plugin {name!r}: {error}") from error
    if not callable(target):
        raise ValueError(f"model plugin {name!r} is not callable ({type(target).__name__})")
    if getattr(target, MARK, False) is not True:
        raise ValueError(
            f"model plugin {name!r} is not marked as an mlb model factory; set "
            f"`{attribute.split('.')[-1]}.{MARK} = True` in its module (or register it as an "
            f"entry point of the {GROUP!r} group)"
        )
    return target


def build_plugin(name: str, *, pretrained_encoder: str | None) -> PluginAdapter:
    factory = _factory(name)
    options = {} if pretrained_encoder is None else {"pretrained_encoder": pretrained_encoder}
    try:
        network = factory(**options)
    except TypeError as error:  # a factory without the pretrained_encoder keyword, say
        raise ValueError(f"model plugin {name!r} cannot be built with {options}: {error}") \
            from error
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"model plugin {name!r} returned {type(network).__name__}, expected a torch.nn.Module"
        )
    return PluginAdapter(network, description=f"model plugin {name!r}")
