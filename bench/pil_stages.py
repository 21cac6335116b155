"""Where the pil backend's CPU time per image goes, stage by stage, on one core.

    python -m bench.pil_stages --data data/demo
    python -m bench.pil_stages --data /tmp/bench_data --res 128,224 --splits train,eval --images 768

For each cell (crop side K x split) the pil loader plans its epoch as it would for training
(train: RandomResizedCrop + flip; eval: centre crop), and the crops of its first `--images`
images go through each stage of loaders.pil on its own, with one torch thread. A stage's
inputs are made before it is timed (the file's bytes for decoding, the decoded pixels for
resizing), and the stages take turns within each of `--repeats` rounds (the order rotating by
one per round), so the drift of a shared machine reaches every stage alike. Reported: CPU
milliseconds per image (median over rounds, and their spread) and the share of `whole`.

  read           the file's bytes (from the page cache)
  decode         libjpeg-turbo (simplejpeg) at the DCT scale the loader picks for the crop
  decode full    the same at full scale: the difference is what reduced decoding saves
  decode 1/8     at 1/8 scale: the entropy (Huffman) decoding and little else. It is sequential
                 through the scan, so no scaled or region-only JPEG decoder goes below this
                 share of it that lies above the crop's last row
  resize torch   the decoded crop resampled to K x K by torch (flipped when planned)
  resize pillow  the same by Pillow
  normalise      to_model_input on batches of 128 crops (float, channels-last), per image
  whole          decode_crop as the loader's workers call it: read, decode, resize

JPEGs that simplejpeg reads only (pil's fast path); other files are left out and counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.common import add_output_arguments, parse_ints, spread, style, write_results
from loaders import cached_index, create_loader
from loaders.base import LoaderConfig, to_model_input
from loaders.pil import dct_scale, decode_crop, pillow_resized, scaled_region, torch_resized, turbo_decoded
from pipeline.console import progress_enabled, run_command, say
from pipeline.sizes import ConstantSize

SPLITS = {"train": "rrc", "eval": "center"}
BATCH = 128  # the normalise stage's batch size


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/demo", help="ImageNet-layout root; its train/ folder is read")
    p.add_argument("--res", type=parse_ints, default=[128], help="crop sides")
    p.add_argument("--splits", default="train", help="train (RandomResizedCrop), eval (centre crop)")
    p.add_argument("--images", type=int, default=512, help="images per stage and round")
    p.add_argument("--repeats", type=int, default=5, help="rounds: timed turns per stage")
    add_output_arguments(p)
    args = p.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    if not set(args.splits) <= set(SPLITS):
        p.error(f"--splits must name train and/or eval, got {args.splits}")
    if args.images < 1 or args.repeats < 1:
        p.error("--images and --repeats must be at least 1")
    return args


@dataclass
class Crop:
    path: str
    data: bytes
    box: np.ndarray  # (x, y, w, h) in source pixels
    flip: bool
    scale: int  # the DCT reduction the loader decodes this crop at
    decoded: tuple[np.ndarray, float]  # the pixels at that scale, and their factor to source pixels


def planned_crops(root: str, res: int, split: str, images: int) -> tuple[list[Crop], int, object]:
    """The first `images` JPEG crops of the loader's epoch plan, the number of other files left
    out, and the loader's batch maker (its reduce, turbo and resampler settings)."""
    cfg = LoaderConfig(
        backend="pil", root=root, policy=ConstantSize(res, 1), augment=SPLITS[split], shuffle=split == "train"
    )
    # Batches no larger than the split (a shuffled plan drops a partial one), and few of them
    # (planning a million batches of one would take minutes); the index is scanned once.
    batch = max(1, min(BATCH, images, len(cached_index(cfg, progress=False))))
    loader = create_loader(dataclasses.replace(cfg, policy=ConstantSize(res, batch), workers=0), progress=False)
    make = loader.batch_maker()
    crops, skipped = [], 0
    for task in loader.sampler.tasks:
        for i, box, flip in zip(task.indices, task.boxes, task.flips):
            path = loader.index.paths[i]
            data = Path(path).read_bytes()
            scale = dct_scale(float(box[2]), float(box[3]), res) if make.reduce else 1
            found = turbo_decoded(data, scale, path)
            if found is None:
                skipped += 1
                continue
            crops.append(Crop(path, data, box, bool(flip), scale, found))
            if len(crops) == images:
                return crops, skipped, make
    if not crops:
        raise ValueError(f"{root}: no JPEG that simplejpeg reads among {skipped} planned images")
    return crops, skipped, make


def stages(crops: list[Crop], res: int, make) -> dict[str, Callable[[], object]]:
    """Each stage: a call that runs it over every crop."""
    resize_inputs = [(c.decoded[0], scaled_region(c.box, c.decoded[1]), res, c.flip) for c in crops]
    batches = [
        torch.from_numpy(np.stack([torch_resized(*a) for a in resize_inputs[i : i + BATCH]]))
        for i in range(0, len(crops), BATCH)
    ]
    cpu = torch.device("cpu")
    return {
        "read": lambda: [Path(c.path).read_bytes() for c in crops],
        "decode": lambda: [turbo_decoded(c.data, c.scale, c.path) for c in crops],
        "decode full": lambda: [turbo_decoded(c.data, 1, c.path) for c in crops],
        "decode 1/8": lambda: [turbo_decoded(c.data, 8, c.path) for c in crops],
        "resize torch": lambda: [torch_resized(*a) for a in resize_inputs],
        "resize pillow": lambda: [pillow_resized(*a) for a in resize_inputs],
        "normalise": lambda: [to_model_input(b, cpu, torch.float32) for b in batches],
        "whole": lambda: [
            decode_crop(c.path, c.box, res, make.reduce, make.turbo, make.resampler, c.flip) for c in crops
        ],
    }


def cpu_ms_per_image(run: Callable[[], object], images: int) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) * 1e3 / images


def cell_rows(args, res: int, split: str) -> tuple[list[dict], int]:
    crops, skipped, make = planned_crops(str(Path(args.data) / "train"), res, split, args.images)
    todo = stages(crops, res, make)
    names = list(todo)
    times = {name: [] for name in names}
    kept = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(cpu_ms_per_image(todo[name], len(crops)))
    finally:
        torch.set_num_threads(kept)
    whole = statistics.median(times["whole"])
    scales = [c.scale for c in crops]
    return [
        {
            "stage": name,
            "split": split,
            "res": res,
            "images": len(crops),
            "resampler": make.resampler,
            "reduced_share": sum(s > 1 for s in scales) / len(scales),  # crops decoded below full scale
            "ms_per_image": spread(times[name]),
            "share_of_whole": statistics.median(times[name]) / whole,
        }
        for name in names
    ], skipped


def table_row(r: dict) -> list:
    return [
        r["stage"],
        r["split"],
        r["res"],
        f"{r['ms_per_image']['median']:.3f}",
        f"{100 * r['ms_per_image']['rel_spread']:.0f}",
        f"{100 * r['share_of_whole']:.0f}",
    ]


def plot(rows: list[dict]):
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys((r["res"], r["split"]) for r in rows))
    fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4), squeeze=False)
    for ax, (res, split) in zip(axes[0], cells):
        mine = [r for r in rows if (r["res"], r["split"]) == (res, split)]
        ax.barh([r["stage"] for r in mine], [r["ms_per_image"]["median"] for r in mine], label="median of rounds")
        ax.invert_yaxis()
        style(ax, title=f"pil, K={res}, {split}", xlabel="CPU ms per image (one core)")
    return fig


def main(argv=None):
    args = parse_args(argv)
    cells = [(res, split) for res in args.res for split in args.splits]
    rows, skipped = [], {}
    for res, split in tqdm(cells, desc="pil stage cells", disable=not progress_enabled(args.progress)):
        found, skipped[f"{split} {res}"] = cell_rows(args, res, split)
        rows += found
    if any(skipped.values()):
        say(f"left out (not JPEGs that simplejpeg reads), per cell: {skipped}")
    headers = ["stage", "split", "K", "CPU ms/image", "spread %", "% of whole"]
    return write_results(
        "pil_stages", args, rows, headers, [table_row(r) for r in rows], lambda: plot(rows), extra={"left_out": skipped}
    )


if __name__ == "__main__":
    run_command(main)
