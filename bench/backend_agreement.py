"""How far each backend's crops are from pil's, and the eval crops from torchvision's Resize +
CenterCrop, on a folder of real photos (root/<class>/<image>), per EXIF orientation setting.

    python -m bench.backend_agreement --data DIR --res 128 --out bench/results/amd-epyc-2c/backend_agreement

writes <out>.json and <out>.md: mean absolute difference per image in grey levels (0-255), its
mean and worst over the images, and the largest pixel difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from loaders import create_loader
from loaders.base import IMAGENET_MEAN, IMAGENET_STD, LoaderConfig
from loaders.orientation import ORIENTATIONS
from pipeline.sizes import ConstantSize

BACKENDS = ("pil", "dali", "nvjpeg", "ffcv")


def crops(root, backend: str, augment: str, orientation: str, res: int, **kw) -> dict[str, torch.Tensor]:
    """Path -> (3, res, res) float crop in grey levels, every image of the split in one batch."""
    cfg = LoaderConfig(
        backend=backend,
        root=str(root),
        policy=ConstantSize(res, sum(1 for p in Path(root).glob("*/*") if p.is_file())),
        augment=augment,
        shuffle=False,
        workers=0,
        orientation=orientation,
        **kw,
    )
    loader = create_loader(cfg, progress=False)
    (x, _), *_ = list(loader)
    grey = x * torch.tensor(IMAGENET_STD)[:, None, None] * 255 + torch.tensor(IMAGENET_MEAN)[:, None, None] * 255
    names = sorted(str(p.relative_to(root)) for p in Path(root).glob("*/*") if p.is_file())
    return dict(zip(names, grey))


def torchvision_eval(root, names, orientation: str, res: int) -> dict[str, torch.Tensor]:
    """torchvision's Resize(res / 0.875) + CenterCrop(res) of what Pillow opens (turned by
    ImageOps.exif_transpose under "apply")."""
    resize = v2.Compose([v2.Resize(round(res / 0.875)), v2.CenterCrop(res), v2.PILToTensor()])
    out = {}
    for name in names:
        with Image.open(Path(root) / name) as img:
            out[name] = resize(ImageOps.exif_transpose(img) if orientation == "apply" else img.convert("RGB")).float()
    return out


def summary(ours: dict, reference: dict) -> dict:
    per_image = [float((ours[n] - reference[n]).abs().mean()) for n in reference]
    largest = max(float((ours[n] - reference[n]).abs().max()) for n in reference)
    return {"mean": sum(per_image) / len(per_image), "worst": max(per_image), "largest": largest}


def measure(root: str, res: int, backends=BACKENDS) -> list[dict]:
    rows = []
    for orientation in ORIENTATIONS:
        for augment in ("center", "rrc"):
            pil = crops(root, "pil", augment, orientation, res)
            if augment == "center":
                tv = torchvision_eval(root, list(pil), orientation, res)
                full = crops(root, "pil", augment, orientation, res, reduced_decode=False)
                rows.append(
                    {
                        "backend": "pil (full decode)",
                        "augment": augment,
                        "orientation": orientation,
                        "vs": "torchvision",
                        **summary(full, tv),
                    }
                )
            for backend in backends:
                ours = pil if backend == "pil" else crops(root, backend, augment, orientation, res)
                if augment == "center":
                    rows.append(
                        {
                            "backend": backend,
                            "augment": augment,
                            "orientation": orientation,
                            "vs": "torchvision",
                            **summary(ours, tv),
                        }
                    )
                if backend != "pil" and not (backend == "ffcv" and augment == "rrc"):  # ffcv draws its own train crops
                    rows.append(
                        {
                            "backend": backend,
                            "augment": augment,
                            "orientation": orientation,
                            "vs": "pil",
                            **summary(ours, pil),
                        }
                    )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| backend | crops | orientation | against | mean | worst image | largest pixel |", "|---" * 7 + "|"]
    lines += [
        f"| {r['backend']} | {r['augment']} | {r['orientation']} | {r['vs']} | {r['mean']:.2f} | {r['worst']:.2f} "
        f"| {r['largest']:.0f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.backend_agreement", description=__doc__)
    parser.add_argument("--data", required=True, help="a split folder: <data>/<class>/<image>")
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", default="bench/results/amd-epyc-2c/backend_agreement")
    args = parser.parse_args(argv)
    rows = measure(args.data, args.res, tuple(args.backends.split(",")))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"data": args.data, "res": args.res, "rows": rows}, indent=1))
    Path(args.out + ".md").write_text(markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
