"""Checks of a relabel's inputs against the store, made before a draft is opened.

- ``--parent-version`` is lineage: it must name a published version of the same store, or the
  recorded lineage would point nowhere (or outside the store, ``../../etc``).
- A corpus name is a store-wide identity (``corpora/<name>/latest.json``). When the name was
  not given (it defaults to the images folder's name, often just ``images``) and the store's
  latest version of that name was made from another folder that shares no image with this
  corpus, the two are different corpora: refused, with a hint to name this one. A moved or
  grown corpus shares images with its earlier version and keeps its name.
"""

from __future__ import annotations

import os

from storage import LabelStore, Manifest, VersionNotFound


def check_parent_version(store: LabelStore, parent_version: str | None) -> None:
    if parent_version is None:
        return
    try:
        store.open_version(parent_version)
    except (VersionNotFound, ValueError) as error:
        raise ValueError(f"--parent-version {parent_version!r} is not a published version of "
                         f"the store {store.url} ({error}); name the version the teacher was "
                         "trained on (`mlb labels list --store ...` lists them)") from None


def check_corpus_identity(store: LabelStore, manifest: Manifest, *, images: str,
                          named: bool) -> None:
    """ValueError when ``manifest``'s default corpus name already names another corpus."""
    if named:  # the user chose the name: same name, same corpus (e.g. after a move)
        return
    try:
        latest = store.latest(corpus=manifest.corpus)
        if latest is None:
            return
        other = store.open_version(latest)
        folder = other.metadata.get("corpus", {}).get("images")
        if folder is None or os.path.abspath(folder) == os.path.abspath(images):
            return
        shared = ({e.image_sha256 for e in other.manifest.entries}
                  & {e.image_sha256 for e in manifest.entries})
    except (VersionNotFound, ValueError):
        return  # a damaged or missing earlier version is verify's business, not a collision
    if not shared:
        raise ValueError(
            f"corpus name {manifest.corpus!r} (the images folder's name) already names another "
            f"corpus in {store.url}: version {latest} was made from {folder}, which shares no "
            f"image with {os.path.abspath(images)}; give this corpus its own name with "
            "--corpus NAME")
