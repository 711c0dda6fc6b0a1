"""Prefect 3 flows over the ``mlb`` library: thin steps that pass ids, paths and configs."""
