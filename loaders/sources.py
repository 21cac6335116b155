"""Where a split's data is and what its classes are called, as every job asks the loaders.

`--data ROOT` stands for ROOT/train and ROOT/val; `--train-data PATH` / `--val-data PATH` name
a split directly (a split folder, or for the ffcv backend an FFCV file of any name). The ffcv
backend also finds ROOT/<split>.beton, .ffcv or the one ROOT/<split>*.beton|.ffcv
(loaders/ffcv/beton.py). `--classes SOURCE` names the label ids: a text file with one name per
line, or an ImageFolder split whose sorted folder names are the classes (the numbering of
torchvision's ImageFolder, which FFCV's ImageNet example writes its labels with).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from loaders.imagefolder import BadDataError, class_folders


def split_root(data: str, split: str, given: str = "") -> str:
    """The path the loader of `split` reads: `given` when there is one, else <data>/<split>."""
    return given or str(Path(data) / split)


def class_names(source: str) -> list[str]:
    """The class names of `source` (see the module's docstring): label id i is names[i]."""
    path = Path(source)
    if path.is_dir():
        return class_folders(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"class list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadDataError(f"class list {path} is unreadable ({e})") from e
    names = [line.strip() for line in text.strip("\n").splitlines()]
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if not names or empty:
        raise BadDataError(
            f"class list {path} must hold one name per line; "
            + (f"line(s) {empty[:5]} are empty" if empty else "it is empty")
        )
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise BadDataError(f"class list {path} names a class twice: {repeated[:5]}")
    return names
