"""Versioned, chunked zarr label stores (numpy + zarr only: no torch, no prefect)."""
