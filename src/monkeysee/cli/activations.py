"""`monkeysee activations`: what every block of the network computes for a photo, as pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from monkeysee.cli import command
from monkeysee.cli.outputs import check_folder, declare_outputs

DEFAULT_OUT = "activations"


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="RUN_DIR|PHOTO",
        help="a run folder then photos; with --backbone, photos only",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="use a plain ImageNet backbone instead of a run (e.g. efficientnet_lite0, bundled)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="LAYER",
        help="dotted module names (default: every body stage)",
    )
    p.add_argument(
        "--channels", type=int, default=16, help="most active channels shown per block (default: 16)"
    )
    p.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})"
    )
    declare_outputs(p, out=check_folder)


@command(
    "activations",
    help="Draw the most active channel maps of every block for photos.",
    arguments=_arguments,
    order=41,
)
def run(args: argparse.Namespace) -> int:
    from monkeysee.data.images import load_rgb
    from monkeysee.errors import ConfigError
    from monkeysee.explain import Explainer, photo_names
    from monkeysee.explain.render import activation_overview, channel_grid, most_active_channels, save_figure
    from monkeysee.explain.result import file_safe
    from monkeysee.models import create_model, get_backbone
    from monkeysee.rundir import load_run

    if args.channels < 1:
        raise ConfigError(
            f"--channels must be at least 1, not {args.channels}", fix="pass e.g. --channels 16"
        )
    if args.backbone:
        spec = get_backbone(args.backbone)
        explainer = Explainer(create_model(spec.name, pretrained=True), spec.preprocess)
        source, photos = f"ImageNet {spec.name}", list(args.paths)
    else:
        if len(args.paths) < 2:
            raise ConfigError(
                "give a run folder and at least one photo",
                fix="monkeysee activations RUN_DIR PHOTO, or --backbone NAME PHOTO",
            )
        loaded = load_run(args.paths[0])
        explainer = Explainer.from_run(loaded)
        source, photos = str(args.paths[0]), list(args.paths[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    for path, name in zip(photos, photo_names(photos), strict=True):
        photo = load_rgb(path, preprocess=explainer.preprocess)
        acts = {k: v[0].numpy() for k, v in explainer.activations([photo], args.layers).items()}
        seen = explainer.prepare([photo])[1][0]
        stem = file_safe(name)
        summary: dict[str, Any] = {"photo": str(path), "model": source, "layers": []}
        for layer, act in acts.items():
            fig = channel_grid(act, layer, args.channels)
            file = save_figure(fig, args.out / f"{stem}__{file_safe(layer)}.png")
            top = most_active_channels(act, args.channels)
            summary["layers"].append(
                {
                    "layer": layer,
                    "shape": list(act.shape),
                    "file": file.name,
                    "top_channels": [int(c) for c in top],
                    "top_means": [round(float(act[c].mean()), 6) for c in top],
                }
            )
        save_figure(activation_overview(seen, acts), args.out / f"{stem}__overview.png")
        (args.out / f"{stem}__activations.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{name}: {len(acts)} layers -> {args.out}/{stem}__*.png")
    return 0
