"""The data of a reproduction: the built-in benchmark, or the user's own folders.

Three corpora, as method.md section 1 names them, and one more for the domain gap:

    matte corpus          foregrounds, their fine alpha and person-free backgrounds
                          (``fg/ alpha/ bg/`` as ``mlb synth composite`` writes them, or three
                          folders anywhere)
    natural corpus        photos and their coarse masks; optionally their true alpha (only
                          for the label-quality table and the oracle row)
    validation set        photos and their true alpha; optionally coarse masks (the
                          "coarse masks" row: the masks themselves scored as a prediction)
    composite validation  composites and their alpha (``mlb reproduce domain-gap`` only)

Every corpus not given is generated as the built-in benchmark (``mlb.data.synth``). Before any
training every given folder is scanned as the trainers will read it: a missing or empty
folder, an image without its label (or the reverse), two files with one stem, a label of
another size than its image (an alpha) or of another aspect ratio (a mask, which may be stored
at another resolution and is resized) end the run with one message naming the option and the
first bad file. The report records every folder with a content hash (:class:`DataRecord`), and
a work folder refuses to resume on other data than it was started with (its checkpoints would
be reused silently otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from mlb.config import FrozenConfig
from mlb.data.corpus import (
    CorpusScan,
    find_matte_samples,
    find_segmentation_samples,
    find_validation_samples,
    list_images,
)
from mlb.data.imageio import BadSample, read_alpha, read_image, read_mask
from mlb.data.synth import make_composite_corpus, make_natural_corpus, read_manifest
from mlb.fileio import write_text_atomically
from mlb.train.config import PathText

__all__ = [
    "Corpora",
    "CorpusRecord",
    "DataRecord",
    "ReproduceData",
    "check_same_data",
    "folder_digest",
    "prepare_corpora",
    "write_json",
]

CORPORA = ("matte", "natural", "validation", "composite_validation")
Corpus = Literal["matte", "natural", "validation", "composite_validation"]


class ReproduceData(FrozenConfig):
    """The user's folders (``None``: that folder comes from the built-in benchmark).

    A matte corpus is given whole (``matte``: a folder holding ``fg/``, ``alpha/``, ``bg/``)
    or folder by folder; a folder given on its own replaces that sub-folder of ``matte``.
    """

    matte: PathText | None = None
    matte_fg: PathText | None = None
    matte_alpha: PathText | None = None
    matte_bg: PathText | None = None
    natural_images: PathText | None = None
    natural_masks: PathText | None = None
    natural_alphas: PathText | None = None
    validation_images: PathText | None = None
    validation_alphas: PathText | None = None
    validation_masks: PathText | None = None
    composite_images: PathText | None = None
    composite_alphas: PathText | None = None

    def given(self, corpus: Corpus) -> bool:
        """Whether any folder of ``corpus`` was given."""
        fields = {"matte": ("matte", "matte_fg", "matte_alpha", "matte_bg"),
                  "natural": ("natural_images", "natural_masks", "natural_alphas"),
                  "validation": ("validation_images", "validation_alphas",
                                 "validation_masks"),
                  "composite_validation": ("composite_images", "composite_alphas")}[corpus]
        return any(getattr(self, field) is not None for field in fields)


class Corpora(FrozenConfig):
    """Every folder a reproduction reads, resolved (built-in or the user's)."""

    matte: PathText
    """A folder with ``fg/``, ``alpha/`` and ``bg/``: what ``TeacherRequest.matte`` reads."""
    matte_fg: PathText
    matte_alpha: PathText
    matte_bg: PathText
    natural_images: PathText
    natural_masks: PathText
    natural_alphas: PathText | None
    validation_images: PathText
    validation_alphas: PathText
    validation_masks: PathText | None
    composite_images: PathText | None
    composite_alphas: PathText | None
    sources: dict[str, Literal["built-in", "user"]]
    """Corpus name -> where it came from."""


class CorpusRecord(FrozenConfig):
    """One corpus as the report records it."""

    source: Literal["built-in", "user"]
    folders: dict[str, str]
    """Role (``images``, ``masks``, ``alphas``, ``fg``, ``bg`` ...) -> absolute path."""
    files: dict[str, int]
    """Role -> image files read from that folder."""
    sha256: dict[str, str]
    """Role -> :func:`folder_digest` of that folder."""


class DataRecord(FrozenConfig):
    """Which data a reproduction ran on: corpus name -> its record."""

    corpora: dict[str, CorpusRecord]
    built_in: dict[str, int | str]
    """How the built-in corpora were generated (``data_seed``, ``size``, counts, and the
    composite background pool when it is not the default "patterns")."""

    def lines(self) -> list[str]:
        """Markdown lines for the foot of a table: one per corpus, short hashes."""
        lines = []
        for name, record in self.corpora.items():
            parts = ", ".join(f"{role} `{path}` ({record.files[role]} files, sha256 "
                              f"{record.sha256[role][:12]})"
                              for role, path in record.folders.items())
            lines.append(f"- {name.replace('_', ' ')} ({record.source}): {parts}")
        return lines


def folder_digest(folder: str | os.PathLike[str]) -> tuple[int, str]:
    """``(files, sha256)`` over the image files of ``folder`` that the corpora read.

    The hash covers each file's name and bytes in natural order of name, so it changes when
    a file is added, removed, renamed or edited, and not when the folder is moved.
    """
    digest = hashlib.sha256()
    files = list_images(folder)
    for path in files:
        content = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        digest.update(f"{path.name}\0{content.hexdigest()}\n".encode())
    return len(files), digest.hexdigest()


def _check(option: str, scan: Callable[[], CorpusScan], *folders: str | Path) -> CorpusScan:
    """Run a strict scan; any problem becomes one ValueError naming ``option``. An empty
    folder of ``folders`` is named as such (not as every partner lacking its file)."""
    try:
        for folder in folders:
            if not list_images(folder):
                raise ValueError(f"no images in {folder}")
        result = scan()
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"{option}: {error}") from None
    if result.quarantine:
        first = result.quarantine[0]
        more = (f" (and {len(result.quarantine) - 1} more bad files)"
                if len(result.quarantine) > 1 else "")
        raise ValueError(f"{option}: {first.path}: {first.reason}{more}; fix or remove them")
    if not result.samples:
        raise ValueError(f"{option}: no usable samples")
    return result


def _matte_folders(data: ReproduceData, root: Path) -> tuple[Path, dict[str, Path]]:
    """The user's matte folders: (the folder the teacher reads, role -> folder)."""
    base = Path(data.matte) if data.matte is not None else None
    chosen = {role: getattr(data, f"matte_{role}") for role in ("fg", "alpha", "bg")}
    missing = [role for role, folder in chosen.items() if folder is None and base is None]
    if missing:
        raise ValueError(f"the matte corpus needs --matte DIR or all of --matte-fg, "
                         f"--matte-alpha, --matte-bg; missing: "
                         f"{', '.join('--matte-' + role for role in missing)}")
    folders = {role: Path(folder) if folder is not None else base / role  # type: ignore[operator]
               for role, folder in chosen.items()}
    if base is not None and all(folders[role] == base / role for role in folders):
        return base, folders
    # The teacher reads one folder with fg/, alpha/ and bg/: a view of links to the given
    # folders, inside the work folder (the user's folders are never touched).
    view = root / "matte-view"
    view.mkdir(parents=True, exist_ok=True)
    for role, folder in folders.items():
        link = view / role
        target = folder.resolve()
        if link.is_symlink() and Path(os.readlink(link)) != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return view, folders


def _generate(config: Mapping[str, int | str], root: Path, corpus: Corpus) -> Path:
    """Generate one built-in corpus under ``root`` once (its ``synth.json`` marks it done);
    validation sets use other seeds, so their people never appear in a training corpus.
    Composite corpora use the pool ``config["composite_backgrounds"]`` ("patterns" when
    absent, as in every release before pools existed)."""
    size, seed = int(config["size"]), int(config["data_seed"])
    pool = {"backgrounds": str(config.get("composite_backgrounds", "patterns"))}
    out, make, count, seed, options = {
        "matte": (root / "composite", make_composite_corpus, config["composite_count"],
                  seed, pool),
        "natural": (root / "natural", make_natural_corpus, config["natural_count"], seed, {}),
        "validation": (root / "validation", make_natural_corpus, config["validation_count"],
                       seed + 1000, {}),
        "composite_validation": (root / "composite-validation", make_composite_corpus,
                                 config["validation_count"], seed + 1000,
                                 {"with_images": True, **pool}),
    }[corpus]
    manifest = out / "synth.json"
    if not manifest.is_file():
        make(out, count=count, size=size, seed=seed, progress=False, **options)
        return out
    # A work folder reused with another preset would otherwise train on the old corpus.
    wanted = {"count": count, "size": size, "seed": seed}
    if "backgrounds" in options:
        wanted["backgrounds"] = options["backgrounds"]
    try:
        record = read_manifest(out)
    except ValueError as error:
        raise ValueError(f"{error}; give another --work") from None
    found = {key: record.get(key) for key in wanted}
    if found != wanted:
        raise ValueError(f"{out} was generated with {found}, this preset needs {wanted}; "
                         "give another --work")
    return out


def prepare_corpora(data: ReproduceData, built_in: Mapping[str, int | str], root: Path, *,
                    composite_validation: bool) -> Corpora:
    """Check the user's folders, generate the built-in ones, and resolve every path.

    ``built_in``: ``data_seed``, ``size`` and the ``*_count`` of the built-in corpora.
    ``composite_validation``: whether the composite validation set is needed (domain gap).
    """
    folders: dict[str, str | None] = {}
    sources: dict[str, Literal["built-in", "user"]] = {}
    resolvers: dict[str, Callable[[], dict[str, str | None]]] = {
        "matte": lambda: _matte(data, built_in, root, sources),
        "natural": lambda: _natural(data, built_in, root, sources),
        "validation": lambda: _validation(data, built_in, root, sources),
        "composite_validation": lambda: _composite_validation(
            data, built_in, root, sources, needed=composite_validation),
    }
    # The user's folders are checked first: a bad one fails before anything is generated.
    for name in sorted(CORPORA, key=lambda name: not data.given(name)):
        folders.update(resolvers[name]())
    return Corpora(**folders, sources=sources)


def _decode_all(option: str, scan: CorpusScan | None, masks: CorpusScan | None) -> None:
    """Decode every file of a natural corpus or validation set now. Headers alone pass a
    truncated JPEG; its pixels would stop a relabel or an evaluation after hours of training
    (the segmentation corpus of the paper's recipe, 10K photos, decodes in a few minutes)."""
    try:
        for sample in scan.samples if scan is not None else ():
            size = read_image(sample.image_path).shape[:2]
            read_alpha(sample.alpha_path, size=size)
        for sample in masks.samples if masks is not None else ():
            read_mask(sample.mask_path, size=read_image(sample.image_path).shape[:2])
    except BadSample as error:
        raise ValueError(f"{option}: {error}") from None


def _matte(data: ReproduceData, built_in: Mapping[str, int | str], root: Path,
           sources: dict) -> dict[str, str | None]:
    if not data.given("matte"):
        out = _generate(built_in, root, "matte")
        sources["matte"] = "built-in"
        return {"matte": str(out), "matte_fg": str(out / "fg"),
                "matte_alpha": str(out / "alpha"), "matte_bg": str(out / "bg")}
    matte, roles = _matte_folders(data, root)
    _check("--matte", lambda: find_matte_samples(roles["fg"], roles["alpha"], roles["bg"],
                                                 skip_bad=True), roles["fg"], roles["alpha"])
    if not list_images(roles["bg"]):
        raise ValueError(f"--matte: no backgrounds in {roles['bg']}: compositing needs a "
                         "pool of person-free backgrounds")
    sources["matte"] = "user"
    return {"matte": str(matte), **{f"matte_{role}": str(path) for role, path in roles.items()}}


def _natural(data: ReproduceData, built_in: Mapping[str, int | str], root: Path,
             sources: dict) -> dict[str, str | None]:
    if not data.given("natural"):
        out = _generate(built_in, root, "natural")
        sources["natural"] = "built-in"
        return {"natural_images": str(out / "images"), "natural_masks": str(out / "masks"),
                "natural_alphas": str(out / "alphas")}
    images, masks, alphas = data.natural_images, data.natural_masks, data.natural_alphas
    if images is None or masks is None:
        raise ValueError("--natural needs IMAGES MASKS [ALPHAS]")
    masks_scan = _check("--natural (images, masks)",
                        lambda: find_segmentation_samples(images, masks, skip_bad=True),
                        images, masks)
    if alphas is not None:  # the same photos, each with an alpha of its own size
        scan = _check("--natural (images, alphas)",
                      lambda: find_validation_samples(images, alphas, skip_bad=True), alphas)
        _decode_all("--natural", scan, masks_scan)
    else:
        _decode_all("--natural", None, masks_scan)
    sources["natural"] = "user"
    return {"natural_images": images, "natural_masks": masks, "natural_alphas": alphas}


def _validation(data: ReproduceData, built_in: Mapping[str, int | str], root: Path,
                sources: dict) -> dict[str, str | None]:
    if not data.given("validation"):
        out = _generate(built_in, root, "validation")
        sources["validation"] = "built-in"
        return {"validation_images": str(out / "images"),
                "validation_alphas": str(out / "alphas"),
                "validation_masks": str(out / "masks")}
    images, alphas, masks = (data.validation_images, data.validation_alphas,
                             data.validation_masks)
    if images is None or alphas is None:
        raise ValueError("--validation needs IMAGES ALPHAS [MASKS]")
    scan = _check("--validation (images, alphas)",
                  lambda: find_validation_samples(images, alphas, skip_bad=True), images, alphas)
    masks_scan = None
    if masks is not None:
        masks_scan = _check("--validation (images, masks)",
                            lambda: find_segmentation_samples(images, masks, skip_bad=True),
                            masks)
    _decode_all("--validation", scan, masks_scan)
    sources["validation"] = "user"
    return {"validation_images": images, "validation_alphas": alphas,
            "validation_masks": masks}


def _composite_validation(data: ReproduceData, built_in: Mapping[str, int | str], root: Path,
                          sources: dict, *, needed: bool) -> dict[str, str | None]:
    if data.given("composite_validation"):
        images, alphas = data.composite_images, data.composite_alphas
        if images is None or alphas is None:
            raise ValueError("--composite-validation needs IMAGES ALPHAS")
        _check("--composite-validation",
               lambda: find_validation_samples(images, alphas, skip_bad=True), images, alphas)
        sources["composite_validation"] = "user"
        return {"composite_images": images, "composite_alphas": alphas}
    if not needed:
        return {"composite_images": None, "composite_alphas": None}
    if data.given("matte"):
        # Built-in composites would measure the gap of another matte corpus than the one
        # trained on; held-out composites of the user's own foregrounds must be given.
        raise ValueError("domain-gap on your own --matte needs --composite-validation IMAGES "
                         "ALPHAS: composites of foregrounds the matte corpus does not hold, "
                         "with their alpha")
    out = _generate(built_in, root, "composite_validation")
    sources["composite_validation"] = "built-in"
    return {"composite_images": str(out / "images"), "composite_alphas": str(out / "alpha")}


_ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    "matte": (("fg", "matte_fg"), ("alpha", "matte_alpha"), ("bg", "matte_bg")),
    "natural": (("images", "natural_images"), ("masks", "natural_masks"),
                ("alphas", "natural_alphas")),
    "validation": (("images", "validation_images"), ("alphas", "validation_alphas"),
                   ("masks", "validation_masks")),
    "composite_validation": (("images", "composite_images"), ("alphas", "composite_alphas")),
}


def data_record(corpora: Corpora, built_in: Mapping[str, int | str],
                corpus_names: tuple[str, ...]) -> DataRecord:
    """Paths, file counts and content hashes of every folder of ``corpus_names``."""
    records = {}
    for name in corpus_names:
        roles = {role: getattr(corpora, field) for role, field in _ROLES[name]}
        roles = {role: folder for role, folder in roles.items() if folder is not None}
        if not roles:
            continue
        digests = {role: folder_digest(folder) for role, folder in roles.items()}
        records[name] = CorpusRecord(
            source=corpora.sources[name],
            folders={role: str(Path(folder).resolve()) for role, folder in roles.items()},
            files={role: count for role, (count, _) in digests.items()},
            sha256={role: digest for role, (_, digest) in digests.items()})
    return DataRecord(corpora=records, built_in=dict(built_in))


def check_same_data(record: DataRecord, path: Path) -> None:
    """Refuse a work folder started on other data; record this run's data in it.

    ``path`` (``<work>/data.json``) keeps the hash of every folder any run in this work folder
    read. A folder whose content changed would have its old checkpoints and label versions
    reused silently, so the run stops and names the folder.
    """
    known: dict[str, dict[str, str]] = {}
    if path.exists():
        try:
            known = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{path}: not a data record ({error}); remove it if the work "
                             "folder's data are what this run reads") from None
        shape_ok = isinstance(known, dict) and all(
            isinstance(roles, dict) and all(isinstance(digest, str) for digest in roles.values())
            for roles in known.values())
        if not shape_ok:
            raise ValueError(f"{path}: not a data record (not a mapping of corpus -> role -> "
                             "sha256); remove it if the work folder's data are what this "
                             "run reads")
    for name, corpus in record.corpora.items():
        for role, digest in corpus.sha256.items():
            before = known.get(name, {}).get(role)
            if before is not None and before != digest:
                raise ValueError(
                    f"{path.parent} was started on other data: the {name.replace('_', ' ')} "
                    f"{role} ({corpus.folders[role]}) has sha256 {digest[:12]} now, "
                    f"{before[:12]} then; give another --work")
            known.setdefault(name, {})[role] = digest
    write_json(path, known)


def write_json(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON at ``path`` atomically (parents created): a reader,
    another seed's run in the same work folder say, sees the old file or the new one. A value
    that is not JSON raises before anything is written (``mlb.fileio``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")
