"""FFCV's crop-and-resize decoders, seeded, at a side chosen per batch.

FFCV 1.0.2 draws crops (and RandomHorizontalFlip its flips) from numba's per-thread random
generators, which nothing seeds: augmentation would differ between runs and with the thread
count, and `set_epoch` could not replay an epoch. `PlannedCrop` reseeds the generator for
every image from (epoch seed, batch number, sample id, slot in the batch) and then calls
FFCV's own crop samplers (`get_random_crop`, torchvision's semantics; `get_center_crop`), or
test DA2's shifted centre crop (`get_shifted_center_crop`), and FFCV's decode and resize. Slot
and batch number make the copies of one image (Step.copies in a batch, repeated augmentation
across batches) crop differently.

Each batch has its own side (MixSize plans): FFCV allocates one output buffer per batch slot
for the epoch's largest batch at its largest side, and the decoder fills the compact front of
it, (B, S, S, 3) contiguous, and returns that. FFCV's buffer shapes are fixed per epoch and its
code compiled once, so the side cannot be a shape: the epoch seed and the side of the batch
being decoded reach the compiled code through a small array read once per batch in object
mode (numba freezes the arrays a compiled closure captures, and recompiling costs seconds).
"""

from __future__ import annotations

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder, get_center_crop, get_random_crop
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler
from ffcv.transforms import ToDevice
from numba import objmode

# numba's warning about the object-mode block; it runs once per batch, outside the parallel loop.
OBJECT_MODE_WARNING = "Code running in object mode won't allow parallel"

FLIP_PROBABILITY = 0.5
SEED, SIDE, BATCH = 0, 1, 2  # slots of PlannedCrop.cell
# Per-image seed = (epoch seed + batch * BATCH_MIX + sample * SAMPLE_MIX + slot * SLOT_MIX) mod
# SEED_RANGE: odd multipliers far apart (Knuth's multiplicative-hash constant 2^32/phi, a 16-bit
# prime and xxHash's 32-bit prime) so that neighbouring batches, samples and slots land on
# unrelated seeds; numpy's legacy seed takes 32 bits.
SAMPLE_MIX, SLOT_MIX, BATCH_MIX, SEED_RANGE = 2654435761, 40503, 2246822519, 2**32


def get_shifted_center_crop(height, width, _, ratio):
    """Test DA2 on FFCV's centre square (crop_ratio x the shorter side): moved horizontally by
    a uniform integer shift of up to its offset, in a random direction, kept in the image (as
    pipeline.transforms.shifted_center_crop_boxes does on the resized image)."""
    c = int(ratio * min(height, width))
    delta_h, delta_w = (height - c) // 2, (width - c) // 2
    shift = np.random.randint(0, delta_w + 1) * (1 if np.random.random() < 0.5 else -1)
    return delta_h, min(max(delta_w + shift, 0), width - c), c, c


CROPS = {"rrc": get_random_crop, "center": get_center_crop, "center_shift": get_shifted_center_crop}


class PlannedCrop(ResizedCropRGBImageDecoder):
    """The crop of an augmentation of loaders.base.AUGMENTATIONS (flipped at random but for the
    plain centre crop), resized to the side in `cell[SIDE]`; `output_size` is the largest side
    of the epoch (what FFCV allocates)."""

    def __init__(self, augment: str, scale, ratio, max_side: int):
        super().__init__((max_side, max_side))
        self.augment = augment
        self.scale, self.ratio = (np.array(scale), np.array(ratio)) if augment == "rrc" else (None, ratio)
        self.cell = np.array([0, max_side, 0], dtype=np.int64)

    @classmethod
    def for_config(cls, cfg, max_side: int) -> PlannedCrop:
        """The decoder of a LoaderConfig's augmentation."""
        if cfg.augment == "rrc":
            return cls("rrc", tuple(cfg.rrc.scale), tuple(cfg.rrc.ratio), max_side)
        return cls(cfg.augment, None, cfg.center.crop_ratio, max_side)

    @property
    def get_crop_generator(self):
        return CROPS[self.augment]

    def generate_code(self):
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        get_crop_c = Compiler.compile(self.get_crop_generator)
        scale, ratio, flip, cell = self.scale, self.ratio, self.augment != "center", self.cell

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            with objmode(epoch_seed="int64", side="int64", batch_number="int64"):
                epoch_seed, side, batch_number = cell[SEED], cell[SIDE], cell[BATCH]
            batch_seed = epoch_seed + batch_number * BATCH_MIX
            count = len(batch_indices)
            batch = destination.reshape(-1)[: count * side * side * 3].reshape(count, side, side, 3)
            for dst_ix in my_range(count):
                source_ix = np.int64(batch_indices[dst_ix])
                np.random.seed((batch_seed + source_ix * SAMPLE_MIX + dst_ix * SLOT_MIX) % SEED_RANGE)
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    image = temp_storage[dst_ix].reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                    imdecode_c(image_data, image, height, width, height, width, 0, 0, 1, 1, False, False)
                else:
                    image = image_data.reshape(height, width, 3)
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                out = batch[dst_ix]
                resize_crop_c(image, i, i + h, j, j + w, out)
                if flip and np.random.random() < FLIP_PROBABILITY:
                    out[:] = out[:, ::-1].copy()
            return batch

        decode.is_parallel = True
        return decode


class CompactToDevice(ToDevice):
    """FFCV's ToDevice for batches smaller than its buffer in every dimension: copies the
    (B, S, S, 3) batch into the front of the device buffer allocated at the epoch's largest
    batch and side (FFCV's own slices the batch dimension only)."""

    def generate_code(self):
        non_blocking = self.non_blocking

        def to_device(inp, dst):
            front = dst.view(-1)[: inp.numel()].view(inp.shape)
            front.copy_(inp, non_blocking=non_blocking)
            return front

        return to_device
