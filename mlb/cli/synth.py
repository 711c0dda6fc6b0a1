"""``mlb synth``: write the built-in two-domain portrait benchmark, and preview it.

    mlb synth composite --out data/matte --count 200 --size 256 --seed 0
    mlb synth composite --out data/matte-scenes --count 200 --backgrounds scenes
    mlb synth natural --out data/natural --count 500 --size 256 --seed 1
    mlb synth preview --composite data/matte --natural data/natural --out preview.png

``composite`` writes a matte corpus (``fg/``, ``alpha/``, ``bg/`` PNG matched by stem; the
background pool is abstract patterns, or with ``--backgrounds scenes`` person-free scenes of
the natural domain);
``natural`` writes photos-like scenes (``images/`` JPEG), hand-annotation-like coarse masks
(``masks/``) and the true alpha for validation (``alphas/``). Deterministic for a seed; sample
``i`` is the same whatever ``--count`` (mlb.data.synth).
"""

from __future__ import annotations

import argparse

# Library imports happen in the run functions: building the ``mlb`` parser imports every
# subcommand module, and cv2 takes a while to import.

BACKGROUND_POOLS_CHOICES = ("patterns", "scenes")  # mlb.data.synth.BACKGROUND_POOLS (tested)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="write the built-in synthetic benchmark (composite / natural / preview)",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, help_text in (("composite", "matte corpus: fg/, alpha/, bg/"),
                            ("natural", "natural set: images/, masks/, alphas/")):
        sub = kinds.add_parser(kind, help=help_text)
        sub.add_argument("--out", required=True, help="output folder")
        sub.add_argument("--count", type=int, default=200, help="number of samples")
        sub.add_argument("--size", type=int, default=256, help="square side in px")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        if kind == "composite":
            sub.add_argument("--with-images", action="store_true",
                             help="also write images/ (each fg on its own bg): with alpha/ "
                                  "a composite-domain validation set for `mlb evaluate`")
            sub.add_argument("--backgrounds", choices=BACKGROUND_POOLS_CHOICES, default="patterns",
                             help="the background pool: patterns (gradients, shapes, "
                                  "textures; default) or scenes (person-free scenes of the "
                                  "natural domain, defocused as its backgrounds)")
        sub.set_defaults(func=run_generate)
    preview = kinds.add_parser("preview", help="a PNG grid of both domains")
    preview.add_argument("--composite", help="folder written by `mlb synth composite`")
    preview.add_argument("--natural", help="folder written by `mlb synth natural`")
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--count", type=int, default=6, help="samples per row")
    preview.add_argument("--height", type=int, default=160, help="tile height in px")
    preview.set_defaults(func=run_preview)


def run_generate(args: argparse.Namespace) -> int:
    from mlb.data.synth import make_composite_corpus, make_natural_corpus

    options = {"count": args.count, "size": args.size, "seed": args.seed,
               "progress": False if args.quiet else None}
    if args.kind == "composite":
        summary = make_composite_corpus(args.out, with_images=args.with_images,
                                        backgrounds=args.backgrounds, **options)
    else:
        summary = make_natural_corpus(args.out, **options)
    print(summary.line())
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from mlb.data.preview import save_corpus_preview

    path = save_corpus_preview(args.out, composite_dir=args.composite,
                               natural_dir=args.natural, count=args.count, height=args.height)
    print(path)
    return 0
