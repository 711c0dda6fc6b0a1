"""``mlb labels``: look at and check the label versions in a store.

    mlb labels list --store labels/
    mlb labels show latest --store labels/      # ... and the checkpoints trained on it
    mlb labels verify v-0123456789abcdef --store labels/
    mlb labels preview latest --store labels/ --out preview.png --count 8
    mlb labels score latest --store labels/ --alphas corpus/alphas [--json score.json]

``verify`` recomputes every shard's checksum from the stored bytes, checks every document
and array descriptor and recomputes the version id (``storage.integrity``,
``mlb.labels.identity``),
and exits 1 naming each damaged file. ``list``, ``show`` and ``verify`` never create a store:
a mistyped path is an error. ``score`` compares the cached labels (and the coarse masks they
replace) with true alpha where the user has some (``mlb.labels.score``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlb.labels.store import LabelStore, VersionInfo

# Library imports happen where they are used: building the ``mlb`` parser imports every
# subcommand module, and storage imports zarr (slow to import).


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("labels", help="list, show, verify and preview label versions",
                                   description="Look at and check the label versions in a store.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every version and draft in the store")
    listing.add_argument("--store", required=True, help="label store: folder or fsspec URL")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=run_list)

    show = actions.add_parser(
        "show", help="metadata, counts, lineage and the checkpoints trained on one version")
    _version_arguments(show)
    show.set_defaults(func=run_show)

    verify = actions.add_parser(
        "verify", help="check every byte, document and descriptor of a version, and its id")
    _version_arguments(verify)
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(func=run_verify)

    preview = actions.add_parser(
        "preview", help="PNG grid: image | teacher (or boundary) | blended | mask")
    _version_arguments(preview)
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--count", type=int, default=8, help="rows (samples) in the grid")
    preview.add_argument("--height", type=int, default=160, help="tile height in pixels")
    preview.set_defaults(func=run_preview)

    score = actions.add_parser(
        "score", help="score the labels (and the masks) against true alphas, where some exist")
    _version_arguments(score)
    score.add_argument("--alphas", required=True,
                       help="folder of true alphas, matched to the corpus images by file stem")
    score.add_argument("--json", dest="json_path", help="write the full score (JSON) here")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=run_score)


def _version_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", metavar="VERSION", help="version id, or 'latest'")
    parser.add_argument("--store", required=True, help="label store: folder or fsspec URL")


def _row(info: VersionInfo, latest: str | None) -> list[str]:
    from mlb.labels.metadata import LabelVersionMetadata

    counts = info.counts or {}
    metadata = LabelVersionMetadata.parse(info.metadata)
    state = "published" if info.published else "draft"
    return [info.version_id + (" *" if info.version_id == latest else ""), info.corpus, state,
            info.created_at or "-", str(counts.get("labelled", "-")),
            str(counts.get("quarantined", "-")), (metadata.teacher.sha256 or "-")[:12],
            metadata.teacher.weights or "-", metadata.lineage.parent_version or "-"]


def _existing_store(path: str) -> LabelStore:
    from mlb.labels.store import existing_store

    return existing_store(path)


def run_list(args: argparse.Namespace) -> int:

    store = _existing_store(args.store)
    infos, latest = store.versions(), store.latest()
    if args.json:
        print(json.dumps([{"version_id": i.version_id, "corpus": i.corpus,
                           "published": i.published, "created_at": i.created_at,
                           "counts": i.counts, "latest": i.version_id == latest,
                           "metadata": i.metadata} for i in infos], indent=1, sort_keys=True))
        return 0
    header = ["VERSION", "CORPUS", "STATE", "CREATED", "LABELLED", "QUARANTINED", "TEACHER",
              "WEIGHTS", "PARENT"]
    rows = [header] + [_row(info, latest) for info in infos]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    if not infos:
        print(f"(no versions in {args.store})")
    return 0


def describe(store: LabelStore, version: str) -> dict:
    """What ``show`` prints: a published version's document, or a draft's progress."""
    from mlb.labels.store import IncompleteVersion, LabelStoreError

    try:
        opened = store.open_version(version)
    except IncompleteVersion:
        draft = store.draft(version)
        return {"version_id": version, "published": False, "corpus": draft.manifest.corpus,
                "shard_count": draft.shard_count, "pending_shards": draft.pending_shards(),
                "samples": len(draft.manifest), "metadata": draft.metadata}
    document = dict(opened.document)
    document.pop("shard_checksums", None)  # one line per shard: verify is the tool for those
    records, problems = store.training_records(opened.version_id)
    # Lineage the other way: the checkpoints trained on this version, recorded when each
    # training started (mlb.train.lineage); "exists" says whether the file is still there.
    trained = [{**record, "exists": isinstance(record.get("checkpoint"), str)
                and os.path.isfile(record["checkpoint"])} for record in records]
    extra = {"training_record_problems": problems} if problems else {}
    # The corpus's promoted pointer: the labels its current student learned from (EMA rounds).
    try:
        promoted: bool | str = store.promoted(opened.corpus) == opened.version_id
    except LabelStoreError as error:  # a damaged pointer is named, the version still shown
        promoted = f"unknown: {error}"
    return {"version_id": opened.version_id, "published": True, **document,
            "promoted": promoted, "trained_checkpoints": trained, **extra}


def run_show(args: argparse.Namespace) -> int:

    print(json.dumps(describe(_existing_store(args.store), args.version), indent=1,
                     sort_keys=True))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from tqdm import tqdm


    def progress(shards: object) -> object:
        return tqdm(shards, unit="shard", desc="verify", disable=True if args.quiet else None)

    from mlb.labels.identity import version_id_of
    from mlb.labels.store import VERSION_PROBLEMS

    report = _existing_store(args.store).verify(args.version, progress=progress,
                                              version_id_of=version_id_of)
    for shard in report.damaged_shards:
        what = "damaged version" if shard == VERSION_PROBLEMS else f"damaged shard {shard}"
        print(f"{what}: {report.problems[shard]}", file=sys.stderr)
    state = "published" if report.published else f"draft, {len(report.pending_shards)} pending"
    notes = "".join(f"; note: {note}" for note in report.notes)
    if report.ok:
        checked = ("; every document, descriptor and the version id checked"
                   if report.published else "")
        print(f"{report.version_id}: ok, {report.checked_shards} shards verified "
              f"({state}){checked}{notes}")
        return 0
    shards = [shard for shard in report.damaged_shards if shard != VERSION_PROBLEMS]
    documents = "its documents damaged; " if VERSION_PROBLEMS in report.problems else ""
    print(f"{report.version_id}: {documents}{len(shards)} of {report.checked_shards} "
          f"shards damaged: {', '.join(map(str, shards)) or '-'}{notes}", file=sys.stderr)
    return 1


def run_preview(args: argparse.Namespace) -> int:
    from mlb.labels.preview import preview_version  # torch + torchvision: only when needed

    path = preview_version(args.store, args.version, args.out, count=args.count,
                           height=args.height)
    print(path)
    return 0


def run_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlb.labels.score import score_label_version

    score = score_label_version(args.store, args.version, args.alphas,
                                progress=not args.quiet)
    print(f"{score.version_id}: {score.scored} samples scored, {score.unscored} without a "
          "true alpha\n")
    print(score.table)
    if args.json_path:
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(score.model_dump_json(indent=2) + "\n")
    return 0
