"""Batch-sized buffers straight from the OS, so the loader process tree does not grow.

glibc's malloc serves blocks above a threshold with mmap and unmaps them on free, but raises the
threshold (up to 32 MB) each time such a block is freed; from then on batch-sized buffers (a
256 x 64 x 64 float batch is 12.6 MB) come from the heap, which fragments and holds many times a
batch between batches; with a fixed threshold the main process's memory stays flat.

Only for a loader that feeds a GPU: there the process's large host blocks are batch buffers. When
the model trains on the CPU, its activations are host blocks too, and mapping each one afresh
slowed training markedly, at a higher fixed threshold too. CPU runs keep glibc's dynamic
threshold. The figures: docs/results/measured-notes.md.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h); setting it turns the dynamic threshold off
MMAP_FROM_BYTES = 1 << 20  # a decoded 500 x 375 image is 0.56 MB: batch buffers are far larger


def map_large_buffers() -> None:
    """Fix glibc's mmap threshold for this process and the workers it forks (no-op without glibc)."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES)
    except (OSError, AttributeError):  # another C library: nothing to tune
        pass
