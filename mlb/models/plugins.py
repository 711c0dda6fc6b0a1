"""Networks from outside ``mlb``: an entry point of the ``mlb.models`` group or a
``module:factory`` spec.

A factory is called as ``factory()`` (or ``factory(pretrained_encoder=VALUE)`` when the user
passes ``--pretrained-encoder``) and returns an ``nn.Module``; :class:`PluginAdapter` makes it
meet the interface (padding, crop back, a boundary head when it returns only alpha).

Entry point, in the plugin's ``pyproject.toml``::

    [project.entry-points."mlb.models"]
    my_net = "my_package.models:build_my_net"

A ``module:factory`` spec must name a factory marked ``mlb_model_factory = True`` (a plain
function attribute; no import of ``mlb`` needed) in the module that defines it. Checkpoints
store the name and are rebuilt from it, so without the mark a tampered checkpoint could name
any zero-argument callable of an installed module (``os:abort``); and since importing runs a
module, the module's source must contain the mark before it is imported at all (no package
``__init__`` runs for that check). Entry points are exempt, being installed on purpose.
Loading a plugin's checkpoint imports that module again, so the plugin must be installed (or
on ``PYTHONPATH``) wherever the checkpoint is loaded; a checkpoint itself cannot carry code.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib.machinery import PathFinder
from importlib.metadata import entry_points
from pathlib import Path

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


def _module_file(module_name: str) -> Path | None:
    """The source file of ``module_name``, found without running it or its packages."""
    locations: list[str] | None = None
    spec = None
    for part in module_name.split("."):
        if spec is not None:
            locations = list(spec.submodule_search_locations or [])
            if not locations:
                return None  # a plain module has no submodules
        spec = PathFinder.find_spec(part, locations)
        if spec is None:
            return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def _check_before_import(name: str, module_name: str) -> None:
    """Refuse a spec whose module cannot hold a marked factory, before importing it: importing
    runs the module, and a tampered checkpoint could otherwise run any installed module's
    top level (``venv.__main__``, a module that exits or prints)."""
    if module_name.split(".")[-1] == "__main__":
        raise ValueError(f"cannot load model plugin {name!r}: {module_name!r} is a program's "
                         f"entry module, not a plugin")
    source = _module_file(module_name)
    if source is None:
        raise ValueError(f"cannot load model plugin {name!r}: no Python source file for module "
                         f"{module_name!r} on the module path (PYTHONPATH or installed)")
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ValueError(f"cannot load model plugin {name!r}: {error}") from error
    if MARK not in text:
        raise ValueError(f"model plugin {name!r} is not marked as an mlb model factory: "
                         f"{source} never sets `{MARK}`; mark the factory in the module that "
                         f"defines it (or register it as an entry point of the {GROUP!r} "
                         f"group)")


def _factory(name: str) -> Callable[..., object]:
    matches = [entry for entry in entry_points(group=GROUP) if entry.name == name]
    module_name, _, attribute = name.partition(":")
    if not matches:
        _check_before_import(name, module_name)
    try:
        if matches:
            return matches[0].load()
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (Exception, SystemExit) as error:  # the plugin's own code failed while importing
        raise ValueError(f"cannot load model plugin {name!r}: {type(error).__name__}: "
                         f"{error}") from error
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
    except (Exception, SystemExit) as error:  # the plugin's own code failed
        raise ValueError(f"model plugin {name!r} failed while building its network: "
                         f"{type(error).__name__}: {error}") from error
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"model plugin {name!r} returned {type(network).__name__}, expected a torch.nn.Module"
        )
    return PluginAdapter(network, description=f"model plugin {name!r}")
