"""Prefect 3 flows over the ``mlb`` library: thin steps that pass ids, paths and configs."""

from flows import forking as _forking  # noqa: F401  (fork-safety hook, see the module)
