"""FFCV's RandomResizedCrop decoder, seeded, with the horizontal flip drawn alongside.

FFCV 1.0.2 draws crops (and RandomHorizontalFlip its flips) from numba's per-thread random
generators, which nothing seeds: augmentation would differ between runs and with the thread
count, and `set_epoch` could not replay an epoch. This decoder reseeds the generator for
every image from (epoch seed, sample id, slot in the batch) and then calls FFCV's own crop
sampler (`get_random_crop`, torchvision's semantics) and FFCV's decode and resize. The slot
makes the copies of one image in a batch (Step.copies) crop differently.

The epoch seed reaches the compiled code through a one-element array read once per batch in
object mode: numba freezes the arrays a compiled closure captures, and recompiling every
epoch would cost seconds.
"""
from __future__ import annotations

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, RandomResizedCropRGBImageDecoder, get_random_crop
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler
from numba import objmode

# numba's warning about the object-mode block; it runs once per batch, outside the parallel loop.
OBJECT_MODE_WARNING = "Code running in object mode won't allow parallel"

FLIP_PROBABILITY = 0.5


class SeededRandomResizedCrop(RandomResizedCropRGBImageDecoder):
    def __init__(self, output_size, scale, ratio):
        super().__init__(output_size, tuple(scale), tuple(ratio))
        self.epoch_seed = np.zeros(1, dtype=np.int64)

    def set_seed(self, seed: int) -> None:
        self.epoch_seed[0] = seed

    def generate_code(self):
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        get_crop_c = Compiler.compile(get_random_crop)
        scale, ratio = np.array(self.scale), np.array(self.ratio)
        cell = self.epoch_seed

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            with objmode(epoch_seed="int64"):
                epoch_seed = cell[0]
            for dst_ix in my_range(len(batch_indices)):
                source_ix = np.int64(batch_indices[dst_ix])
                np.random.seed((epoch_seed + source_ix * 2654435761 + dst_ix * 40503) % 4294967296)
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    image = temp_storage[dst_ix].reshape(-1)[:3 * height * width].reshape(height, width, 3)
                    imdecode_c(image_data, image, height, width, height, width, 0, 0, 1, 1, False, False)
                else:
                    image = image_data.reshape(height, width, 3)
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                out = destination[dst_ix]
                resize_crop_c(image, i, i + h, j, j + w, out)
                if np.random.random() < FLIP_PROBABILITY:
                    out[:] = out[:, ::-1].copy()
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode
