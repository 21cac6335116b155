"""One training start, measured from outside: a fresh process builds a pil loader over a split
folder, takes its first batch, then reads on and samples the memory (PSS) of its process tree
(itself and its loader workers) after two batch counts. Prints one JSON line.

Run by bench/scale.py as a script with PYTHONPATH set to the checkout under test, so the same
measurement runs against the code before a change (it imports only loaders.create_loader,
LoaderConfig and ConstantSize, which every version has):

    PYTHONPATH=<checkout> python bench/first_batch.py '{"root": ..., "res": 64, ...}'
"""

import json
import sys
import time


def tree_pss_mb() -> float:
    """PSS of this process and its children: a page shared by n processes counts 1/n in each."""
    import psutil

    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            continue
    return total / 2**20


def main(spec: dict) -> dict:
    started = time.time()
    from loaders import create_loader
    from loaders.base import LoaderConfig
    from pipeline.sizes import ConstantSize

    imported = time.time()
    cfg = LoaderConfig(
        backend="pil",
        root=spec["root"],
        policy=ConstantSize(spec["res"], spec["batch_size"]),
        augment="rrc",
        shuffle=True,
        workers=spec["workers"],
    )
    loader = create_loader(cfg, progress=False)
    indexed = time.time()
    out = {
        "images": len(loader.index),
        "started": started,
        "import_s": imported - started,
        "index_s": indexed - imported,
        "pss_mb": {},
    }
    for step, _ in enumerate(loader, 1):
        if step == 1:
            out["first_batch"] = time.time()
        if step in spec["pss_at"]:
            out["pss_mb"][step] = tree_pss_mb()
        if step >= spec["batches"]:
            break
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
