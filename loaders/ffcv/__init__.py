"""FFCV backend: ImageFolder splits written to `.beton` files, read by FFCV's JIT-compiled
decoders behind the one loader interface.

    python -m loaders.ffcv write --data ROOT --out DIR --for-res 128   # DIR/train.beton, DIR/val.beton

write.py turns an ImageFolder split into a .beton (FFCV's DatasetWriter) with its class list
beside it; beton.py checks a .beton and finds the one a split folder stands for (written and
cached on first use); decoders.py holds the seeded crop decoder (any side per batch); loader.py is
the backend itself.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

INSTALL_HINT = (
    "the ffcv backend needs FFCV 1.0.2: install the system libraries "
    "(apt-get install libturbojpeg0-dev libopencv-dev pkg-config, or conda-forge "
    "libjpeg-turbo opencv pkg-config), then pip install -e '.[ffcv]' (make test does both)"
)


def require_ffcv() -> None:
    """Import FFCV or fail with how to install it."""
    try:
        with torch_threads_kept():
            import ffcv  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e


@contextmanager
def torch_threads_kept():
    """FFCV sets torch's thread count to its decoding thread count on import (1) and when a
    loader is made or an epoch starts (Compiler.set_num_threads); the trainer's compute
    threads must not change with it."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
