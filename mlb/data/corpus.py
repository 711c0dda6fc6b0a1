"""Folder layouts -> sample lists: segmentation, matte and validation corpora.

A corpus is two folders of files matched by stem (``photo_1.jpg`` pairs with ``photo_1.png``;
extensions are matched case-insensitively, hidden files and non-image extensions are ignored).
The folder names are arguments, so public layouts read as they are (docs/datasets.md).

Pairing is strict: an image without its label, a label without its image, two files with one
stem, an unreadable header or a label whose size cannot belong to its image are *bad*. By
default the scan raises :class:`BadSample` naming the first bad file (and how many more there
are); with ``skip_bad=True`` they go to the scan's ``quarantine`` with the reason, and the rest
of the corpus is used. A sample is never silently paired with the wrong label.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlb.data.imageio import MAX_ASPECT_ERROR, BadSample, image_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadSample",
    "CorpusScan",
    "MatteSample",
    "Quarantined",
    "SegmentationSample",
    "ValidationSample",
    "find_matte_samples",
    "find_segmentation_samples",
    "find_validation_samples",
    "list_images",
    "natural_sort_key",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class SegmentationSample:
    """A natural photo and its coarse person mask."""

    sample_id: str
    image_path: Path
    mask_path: Path


@dataclass(frozen=True)
class MatteSample:
    """A foreground (unpremultiplied colour) and its fine alpha, to be composited."""

    sample_id: str
    foreground_path: Path
    alpha_path: Path


@dataclass(frozen=True)
class ValidationSample:
    """A natural photo and its true alpha (scoring only)."""

    sample_id: str
    image_path: Path
    alpha_path: Path


@dataclass(frozen=True)
class Quarantined:
    """A file left out of a corpus, and why."""

    sample_id: str
    path: Path
    reason: str


@dataclass(frozen=True)
class CorpusScan:
    """The usable samples of a corpus (sorted by natural order of id) and the quarantine.

    ``backgrounds`` is the person-free background pool of a matte corpus (empty otherwise).
    """

    samples: tuple = ()
    quarantine: tuple[Quarantined, ...] = ()
    backgrounds: tuple[Path, ...] = field(default=())

    def summary(self) -> str:
        """One line for logs and the CLI, e.g. ``"288 samples, 2 quarantined"``."""
        text = f"{len(self.samples)} samples, {len(self.quarantine)} quarantined"
        if self.backgrounds:
            text += f", {len(self.backgrounds)} backgrounds"
        return text


def natural_sort_key(text: str) -> tuple:
    """``"img2" < "img10"``; ties broken by the plain string, so the order is total."""
    parts = re.split(r"(\d+)", text)
    return (tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts), text)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension, any case), natural-sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = [
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda path: natural_sort_key(path.name))


def _broken_links(folder: Path, kind: str) -> list[Quarantined]:
    """Image-named symbolic links that lead nowhere (dangling or looping): reported as what
    they are, instead of being skipped and their partner blamed."""
    broken = []
    for path in sorted(folder.iterdir(), key=lambda p: natural_sort_key(p.name)):
        if (path.suffix.lower() in IMAGE_EXTENSIONS and path.is_symlink()
                and not path.is_file()):
            try:
                path.resolve(strict=True)
                why = "does not lead to a file"
            except FileNotFoundError:
                why = f"is dangling (its target {os.readlink(path)} does not exist)"
            except (RuntimeError, OSError):
                why = "loops (it leads back to itself)"
            broken.append(Quarantined(path.stem, path, f"{kind} {path} is a symbolic link "
                                                       f"that {why}"))
    return broken


def _index_by_stem(folder: Path, kind: str, problems: list[Quarantined]) -> dict[str, Path]:
    """stem -> file; stems held by several files are problems (which one is meant?)."""
    by_stem: dict[str, list[Path]] = {}
    for path in list_images(folder):
        by_stem.setdefault(path.stem, []).append(path)
    problems.extend(_broken_links(folder, kind))
    unique = {}
    for stem, paths in by_stem.items():
        if len(paths) == 1:
            unique[stem] = paths[0]
            continue
        names = ", ".join(path.name for path in paths)
        problems.extend(
            Quarantined(stem, path, f"duplicate {kind} stem '{stem}' ({names})") for path in paths
        )
    return unique


def _pair(
    first_dir: str | Path, second_dir: str | Path, first_kind: str, second_kind: str
) -> tuple[list[tuple[str, Path, Path]], list[Quarantined]]:
    """Match two folders by stem: ``(pairs, problems)``, pairs in natural order of stem."""
    first_dir, second_dir = Path(first_dir), Path(second_dir)
    problems: list[Quarantined] = []
    first = _index_by_stem(first_dir, first_kind, problems)
    second = _index_by_stem(second_dir, second_kind, problems)
    duplicated = {problem.sample_id for problem in problems}
    for stem in sorted(first.keys() - second.keys() - duplicated, key=natural_sort_key):
        problems.append(Quarantined(
            stem, first[stem], f"no {second_kind} with stem '{stem}' in {second_dir}"))
    for stem in sorted(second.keys() - first.keys() - duplicated, key=natural_sort_key):
        problems.append(Quarantined(
            stem, second[stem], f"no {first_kind} with stem '{stem}' in {first_dir}"))
    stems = sorted(first.keys() & second.keys(), key=natural_sort_key)
    if not stems and not problems:
        raise ValueError(
            f"no images in {first_dir} (expected files ending in {sorted(IMAGE_EXTENSIONS)})")
    return [(stem, first[stem], second[stem]) for stem in stems], problems


def _check_same_size(stem: str, image: Path, label: Path) -> Quarantined | None:
    """The ground truth must have exactly its image's size (scores are taken at it)."""
    try:
        image_hw, label_hw = image_size(image), image_size(label)
    except BadSample as error:
        return Quarantined(stem, error.path, error.reason)
    if image_hw != label_hw:
        return Quarantined(stem, label, f"size {label_hw} (HxW) differs from its image "
                                        f"{image.name} {image_hw}: must be equal")
    return None


def _check_resizable(stem: str, image: Path, mask: Path) -> Quarantined | None:
    """A mask may be stored at another resolution, but with its image's aspect ratio."""
    try:
        image_hw, mask_hw = image_size(image), image_size(mask)
    except BadSample as error:
        return Quarantined(stem, error.path, error.reason)
    error = abs((mask_hw[1] / mask_hw[0]) / (image_hw[1] / image_hw[0]) - 1.0)
    if error > MAX_ASPECT_ERROR:
        return Quarantined(stem, mask, f"size {mask_hw} (HxW) has another aspect ratio than "
                                       f"its image {image.name} {image_hw}")
    return None


def _settle(
    samples: Iterable, problems: list[Quarantined], *, skip_bad: bool,
    backgrounds: tuple[Path, ...] = (),
) -> CorpusScan:
    """Raise on the first problem (naming its file) unless asked to quarantine them."""
    if problems and not skip_bad:
        first = problems[0]
        more = f" (and {len(problems) - 1} more bad files)" if len(problems) > 1 else ""
        raise BadSample(first.path, f"{first.reason}{more}; pass skip_bad to quarantine them")
    return CorpusScan(tuple(samples), tuple(problems), backgrounds)


def _scan(
    first_dir: str | Path, second_dir: str | Path, kinds: tuple[str, str],
    check: Callable[[str, Path, Path], Quarantined | None] | None,
) -> tuple[list[tuple[str, Path, Path]], list[Quarantined]]:
    pairs, problems = _pair(first_dir, second_dir, *kinds)
    if check is None:
        return pairs, problems
    kept = []
    for stem, first, second in pairs:
        problem = check(stem, first, second)
        if problem is None:
            kept.append((stem, first, second))
        else:
            problems.append(problem)
    return kept, problems


def find_segmentation_samples(
    images_dir: str | Path, masks_dir: str | Path, *, skip_bad: bool = False,
    check_headers: bool = True,
) -> CorpusScan:
    """Pair photos with coarse masks by stem: a scan of :class:`SegmentationSample`.

    With ``check_headers`` (default) each file's header is read (cheap, no decoding) so that
    non-image and empty files and masks of another aspect ratio are found now rather than in
    the middle of training. Truncated pixel data is found at read time (datasets' skip_bad).
    """
    pairs, problems = _scan(images_dir, masks_dir, ("image", "mask"),
                            _check_resizable if check_headers else None)
    samples = (SegmentationSample(stem, image, mask) for stem, image, mask in pairs)
    return _settle(samples, problems, skip_bad=skip_bad)


def find_validation_samples(
    images_dir: str | Path, alphas_dir: str | Path, *, skip_bad: bool = False,
    check_headers: bool = True,
) -> CorpusScan:
    """Pair photos with true alphas by stem (P3M-500 / PPM-100 style): :class:`ValidationSample`.

    An alpha must have exactly its image's size.
    """
    pairs, problems = _scan(images_dir, alphas_dir, ("image", "alpha"),
                            _check_same_size if check_headers else None)
    samples = (ValidationSample(stem, image, alpha) for stem, image, alpha in pairs)
    return _settle(samples, problems, skip_bad=skip_bad)


def find_matte_samples(
    foreground_dir: str | Path, alpha_dir: str | Path, background_dir: str | Path | None = None,
    *, skip_bad: bool = False, check_headers: bool = True,
) -> CorpusScan:
    """Pair foregrounds with alphas by stem, plus the background pool: :class:`MatteSample`.

    ``background_dir`` holds person-free backgrounds of any size (they are resized and cropped
    to each foreground when composited); its files need no partner. For the layout written by
    ``mlb synth composite DIR`` pass ``DIR/fg``, ``DIR/alpha``, ``DIR/bg``.
    """
    pairs, problems = _scan(foreground_dir, alpha_dir, ("foreground", "alpha"),
                            _check_same_size if check_headers else None)
    backgrounds: list[Path] = []
    for path in list_images(background_dir) if background_dir is not None else []:
        try:
            if check_headers:
                image_size(path)
            backgrounds.append(path)
        except BadSample as error:
            problems.append(Quarantined(path.stem, path, f"background: {error.reason}"))
    samples = (MatteSample(stem, foreground, alpha) for stem, foreground, alpha in pairs)
    return _settle(samples, problems, skip_bad=skip_bad, backgrounds=tuple(backgrounds))
