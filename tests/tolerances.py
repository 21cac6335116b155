"""Every tolerance the tests allow, in one place, each with the effect it bounds.

Pixel differences are in grey levels (0-255 after undoing the normalisation): a mean absolute
difference over a crop ("mean"), the largest one of any value ("worst"), or the mean signed
difference ("bias": a brightening, darkening or colour cast that resampling does not explain).
Statistical bounds come from the sample sizes (ks_critical), not from a run's outcome."""

from __future__ import annotations

import math

# --- one decode, two resamplers ---------------------------------------------------------------
# Two resamplers of the same pixels that round to uint8 at different points differ by at most one
# level per value; a quarter of the values one level off bounds the mean.
ONE_ROUNDING_WORST = 1
ONE_ROUNDING_MEAN = 0.25
# pil against torchvision's Resize + CenterCrop on the same decode: the same filter and rounding,
# but Resize rounds the longer side to whole pixels, which moves a value by a hundredth of a level.
PIL_TORCHVISION_MEAN = 0.01
# pil against torchvision on the real-world JPEG variants: Pillow resamples rows and columns in two
# passes rounded to uint8 between them, so a crop turned by a transposing tag (5-8) has its passes in
# the other order (at most a fifth of its values one level off, plus the hundredth above).
PILLOW_PASSES = 0.25
# DALI's train crops read the pixels just outside the crop as filter support (pil resizes the crop
# alone, as torchvision does): only the outermost ring differs by more than one level, and that
# ring is 4(K-1)/K^2 of the values (10% at K = 40); a fifth of it may differ.
DALI_RING_SHARE = 0.02
# DALI's and Pillow's decoders on the oddities (CMYK, grayscale, PNG): the colour conversion of the
# two libjpeg-turbo builds rounds once more or less, two levels at the most.
DALI_ODDITY_WORST = 2

# --- another resampling filter ----------------------------------------------------------------
# nvjpeg's roi_align averages whole samples per output pixel instead of Pillow's triangle filter:
# on textured images that shifts an edge by up to half a source pixel. Mean over an image, worst
# image, and bias over the whole epoch (averaging may not brighten or darken).
NVJPEG_MEAN = 2.0
NVJPEG_WORST_IMAGE = 6.0
NVJPEG_BIAS = 0.5
# nvjpeg's decoders (torchvision.io, TorchCodec) against Pillow on PNG, CMYK and grayscale: their
# colour conversions round differently, under one level on average.
CODEC_ODDITY_MEAN = 1.0

# --- a reduced (DCT-scaled) decode against a full one -----------------------------------------
# libjpeg's 1/2..1/8 IDCT scaling low-passes the image before the crop is resized, so sharp edges
# come out softer than the full decode's antialiased resize makes them. Per resampler, (mean over
# images, worst image) of the per-image mean difference, at the small sides of the tiny data set,
# where an edge covers a larger share of the crop than at 224 (where no reduction applies at all).
# pillow resamples the exact fractional box: only the softening differs, about a level on average,
# and a few on the image with the most edges. torch rounds the box to whole decoded pixels, so an
# edge also moves by up to half a decoded pixel (scale / 2 source pixels): about twice pillow's.
REDUCED_DECODE = {"pillow": (1.5, 5.0), "torch": (3.5, 12.0)}
# Scaling averages 2x2..8x8 blocks, which neither brightens nor tints: bias over all values, and
# over each channel.
REDUCED_DECODE_BIAS = 0.25

# --- a box filter against a triangle filter ----------------------------------------------------
# FFCV resamples with OpenCV's INTER_AREA (a box), Pillow with an antialiased triangle: on the demo
# generator's high-contrast textures each output value weights the same source pixels differently,
# which moves it by a share of the local contrast (tens of levels at most); the epoch's mean stays a
# few levels, while a wrong box, flip or channel order moves it by tens.
AREA_FILTER_MEAN = 10.0
AREA_FILTER_WORST_IMAGE = 25.0

# --- the batch dtype on the device ------------------------------------------------------------
# Grey levels that normalising in the batch dtype may move a pixel. The subtraction and the scaling
# each round: float16 (11 significant bits) by hundredths of a level; bfloat16 (8 bits) by up to half
# a level at 255 before scaling, about 0.45 after it, plus the mean's own rounding (123.675 -> 123.5).
DTYPE_WORST = {"float16": 0.25, "bfloat16": 2.0}
# nvJPEG on the GPU against libjpeg-turbo on the CPU: another IDCT and chroma upsampling move edges
# by a level or two (mean per image), and neither brightens nor darkens (bias over the epoch).
GPU_DECODE_MEAN = 2.0
GPU_DECODE_BIAS = 0.5

# --- every backend against pil on the real-world JPEG variants --------------------------------
# backend -> (eval crops, train crops or None where not comparable, why it is not zero): the largest
# mean absolute difference from pil's crop of any one image.
ROUNDED_BOX = "pil's train crops (resampler torch) round the box to whole pixels, which shifts a textured crop"
BACKEND_AGREEMENT = {
    "dali": (2.5, 7.5, f"DALI resamples in float from its own libjpeg-turbo decode; {ROUNDED_BOX}"),
    "nvjpeg": (
        2.5,
        7.5,
        "eval: TorchCodec's decode resized whole by torch's float kernel, as DALI's; train: roi_align "
        f"averages whole samples per output pixel, not Pillow's triangle filter; {ROUNDED_BOX}",
    ),
    "ffcv": (
        8.0,
        None,
        "the .beton holds each image re-encoded as JPEG q90 (FFCV's default); train crops are drawn by "
        "FFCV's own decoder, not from pil's plan",
    ),
}


# A test that draws its samples with a fixed seed still fails at random once in 1/alpha seeds;
# 0.1% keeps that rare while a wrong sampler (another scale or ratio range) exceeds it many times.
KS_ALPHA = 1e-3

# Any backend's eval crop against pil's, whatever the cause (the largest of the bounds above).
WORST_BACKEND_EVAL_MEAN = max(eval_bound for eval_bound, _, _ in BACKEND_AGREEMENT.values())


def ks_critical(n: int, m: int | None = None, alpha: float = KS_ALPHA) -> float:
    """The Kolmogorov-Smirnov distance that a sample of size n from a law (against the law itself,
    m None, or against a sample of size m from the same law) exceeds with probability alpha: the
    asymptotic bound c(alpha) sqrt(1 / n + 1 / m)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(1 / n + (1 / m if m else 0))
