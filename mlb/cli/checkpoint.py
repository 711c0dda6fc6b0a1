"""``mlb checkpoint show``: what a checkpoint is and where it came from.

    mlb checkpoint show runs/student.pt
    mlb checkpoint show runs/student.pt --json

Prints the network, the label version and its store (an absolute path or URL), the sha256 of the
checkpoint it started from (``init``) and of the teacher that made its labels, its steps and
metrics (``mlb.train.lineage.describe_checkpoint``). The file is read safely: a damaged or
unsafe one is one error line, never loaded as code.
"""

from __future__ import annotations

import argparse
import json

# Library imports happen in ``run``: building the ``mlb`` parser imports every subcommand
# module, and torch takes seconds to import.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "checkpoint", help="show a checkpoint's network, lineage, steps and metrics",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="network, label version and store, init and "
                                           "teacher hashes, steps, metrics")
    show.add_argument("checkpoint", metavar="CKPT", help="checkpoint file (.pt)")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    from mlb.losses import LossConfig
    from mlb.models import ModelOptions
    from mlb.train.lineage import describe_checkpoint

    info = describe_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info.model_dump(mode="json"), indent=1, sort_keys=True))
        return 0
    unknown = "not recorded (written before lineage was kept)"

    def source(ref: object) -> str:
        if ref is None:
            return "none" if info.lineage_recorded else unknown
        return f"{ref.path}  sha256 {ref.sha256}"  # type: ignore[attr-defined]

    # Only the options set away from their defaults: a U-Net's ASPP rates mean nothing for
    # MODNet or a plug-in (``--json`` keeps them all).
    defaults = ModelOptions().model_dump(mode="json")
    options = {name: value for name, value in (info.network.get("options") or {}).items()
               if defaults.get(name, object()) != value}
    network = info.network["name"] + (f" {json.dumps(options, sort_keys=True)}"
                                      if options else "")
    loss_defaults = LossConfig().model_dump(mode="json")
    loss = ", ".join(f"{name} {value}" for name, value in sorted(info.loss.items())
                     if loss_defaults.get(name, object()) != value) or "defaults"
    planned = f" of {info.planned_steps}" if info.planned_steps else ""
    store = info.store or "-"
    if info.store and not info.store_is_absolute:
        store += "  (as given to the training, relative to where it ran)"
    metrics = ", ".join(f"{name} {'-' if value is None else f'{value:.6g}'}"
                        for name, value in sorted(info.metrics.items())) or "-"
    rows = [("checkpoint", f"{info.path}  sha256 {info.sha256}"), ("kind", info.kind),
            ("network", network), ("steps", f"{info.steps}{planned}"), ("loss", loss),
            ("label version", info.label_version or "-"), ("store", store),
            ("init", source(info.init)), ("teacher", source(info.teacher)),
            ("EMA weights", "yes" if info.ema_weights else "no"), ("metrics", metrics),
            ("trained by", f"mlb {info.mlb_version or '?'}, "
                           f"{info.world_size or 1} process(es)")]
    for name, value in rows:
        print(f"{name + ':':<15}{value}")
    return 0
