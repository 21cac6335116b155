"""The demo data set's images: synthetic "photos" on which the FixRes method behaves as on photos.

What matters for FixRes, and how it is reproduced here:

* Objects vary in size. FixRes exists because RandomResizedCrop (train) magnifies objects
  relative to a centre crop (test); that effect only shows if, as in photos, the object
  fills anywhere from a fifth to nearly all of the frame, sits anywhere, and is sometimes cut
  by the border. The object's bounding-box side is drawn from 20-90% of the shorter image side.
* Textures are object-relative. Each class owns a surface pattern (stripes, checks, dots,
  waves, grid) whose frequency is fixed in units of the object, not of pixels, so its pixel
  period shrinks with the object. At low training resolution a small object's pattern is near
  the sampling limit: resolution then changes what a classifier can see, as with real fur or
  feathers, rather than being irrelevant.
* Classes are distinct but not trivial. A class is a shape, a texture (kind, frequency,
  orientation) and a hue; pairs of classes share a hue so colour alone does not decide, and
  within a class rotation, anisotropic stretch, colour, texture phase and lighting vary.
  Clutter (smooth gradients, soft blobs, smaller distractor shapes with other textures,
  sometimes a small copy of another class's object) makes the model find the main object.
* Image sizes are photo-like: sides of about 200-500 px, aspect mostly 3:4 to 4:3, ~10% up
  to 2:1 either way, mostly landscape.

Every image is drawn from its own generator seeded by (seed, split, class, index), so a
process pool can render them in any order and the output is still byte-identical.
A change here changes the output: bump loaders.demo_data.GENERATOR_VERSION.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

SPLITS = ("train", "val")
SUPERSAMPLE = 2  # shape masks are drawn this much larger and reduced: anti-aliased edges
CLASS_SALT = 0x5EED  # class definitions depend on the class index only, never on the seed

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon", "crescent", "arrow", "heart")
TEXTURES = ("stripes", "checks", "dots", "waves", "grid")


# --- shapes: polygons in object units, spanning about [-1, 1] -----------------------------


def regular_polygon(
    n: int, radius: float = 1.0, phase: float = 0.0, center: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)


def star_polygon(points: int, inner: float) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    t = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def heart_polygon(n: int = 64) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y - 2.5], axis=1) / 16.5  # image y points down: lobes on top


def shape_polygons() -> dict[str, list[tuple[np.ndarray, int]]]:
    """Each shape as (polygon, fill) layers painted in order; fill 0 cuts holes. The first
    layer is the outline that sets the bounding box."""
    a, b = 0.32, 1.0  # cross arm half-width and length
    cross = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    arrow = [(-1, -0.22), (0.15, -0.22), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.22), (-1, 0.22)]
    return {
        "circle": [(regular_polygon(64), 255)],
        "square": [(np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float), 255)],
        "triangle": [(regular_polygon(3, phase=-np.pi / 2, center=(0, 0.25)), 255)],
        "star": [(star_polygon(5, 0.45), 255)],
        "ring": [(regular_polygon(64), 255), (regular_polygon(48, 0.55), 0)],
        "cross": [(np.array(cross, float), 255)],
        "hexagon": [(regular_polygon(6), 255)],
        "crescent": [(regular_polygon(64), 255), (regular_polygon(64, 0.8, center=(0.45, -0.15)), 0)],
        "arrow": [(np.array(arrow, float), 255)],
        "heart": [(heart_polygon(), 255)],
    }


SHAPE_POLYGONS = shape_polygons()


# --- classes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSpec:
    name: str
    shape: str
    texture: str
    hue: float  # mean object hue; classes 2k and 2k+1 share it
    accent_shift: float  # hue offset of the texture's second colour
    frequency: float  # texture cycles per object unit (the object spans ~2 units)
    texture_angle: float  # texture orientation relative to the object


@cache
def class_specs(classes: int) -> tuple[ClassSpec, ...]:
    """The class definitions. Shape cycles fastest and the texture shifts by one per round of
    shapes, so the first len(SHAPES) * len(TEXTURES) classes are distinct shape-texture pairs;
    beyond that, classes differ by texture frequency, orientation and hue."""
    width = max(2, len(str(classes - 1)))
    specs = []
    for i in range(classes):
        rng = np.random.default_rng([CLASS_SALT, i])
        shape = SHAPES[i % len(SHAPES)]
        texture = TEXTURES[(i + i // len(SHAPES)) % len(TEXTURES)]
        specs.append(
            ClassSpec(
                name=f"c{i:0{width}d}_{shape}_{texture}",
                shape=shape,
                texture=texture,
                hue=((i // 2) * 0.381966) % 1.0,  # golden-ratio steps keep hue pairs far apart
                accent_shift=float(rng.choice([0.0, 0.08, 0.5])),
                frequency=float(rng.uniform(1.5, 3.5)),
                texture_angle=float(rng.uniform(0, np.pi)),
            )
        )
    return tuple(specs)


# --- drawing ------------------------------------------------------------------------------


@dataclass
class Look:
    """How one thing is painted, independent of where."""

    shape: str
    texture: str  # a TEXTURES name, or "plain"
    frequency: float
    texture_angle: float
    phase: tuple[float, float]
    colour: np.ndarray  # RGB, 0-255
    accent: np.ndarray  # second texture colour
    light: tuple[float, float]  # shading gradient in object units


def rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32) * 255


def soft_step(x: np.ndarray, gain: float = 2.0) -> np.ndarray:
    """0/1 pattern from a signed field with a ramp, not a hard edge: hard edges alias."""
    return np.clip(0.5 + gain * x, 0.0, 1.0)


def texture_pattern(look: Look, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Share of accent colour, 0-1, at object coordinates (u, v)."""
    c, s = math.cos(look.texture_angle), math.sin(look.texture_angle)
    p = (u * c + v * s) * look.frequency + look.phase[0]
    q = (v * c - u * s) * look.frequency + look.phase[1]
    if look.texture == "stripes":
        return soft_step(np.sin(2 * np.pi * p))
    if look.texture == "checks":
        return soft_step(np.sin(2 * np.pi * p) * np.sin(2 * np.pi * q), gain=4.0)
    if look.texture == "dots":
        distance = np.hypot(p % 1.0 - 0.5, q % 1.0 - 0.5)
        return soft_step(0.3 - distance, gain=10.0)
    if look.texture == "waves":
        return soft_step(np.sin(2 * np.pi * (p + 0.3 * np.sin(np.pi * q))))
    if look.texture == "grid":
        to_line = np.minimum(np.abs(p - np.round(p)), np.abs(q - np.round(q)))
        return soft_step(0.12 - to_line, gain=12.0)
    return np.zeros_like(u)


def paste(
    img: np.ndarray, look: Look, center: tuple[float, float], size: float, rotation: float, stretch: float
) -> None:
    """Paint `look` into `img` in place: rotated, stretched by `stretch` along one axis, with
    its bounding-box longer side `size` px, centred at `center` (may run off the border)."""
    c, s = math.cos(rotation), math.sin(rotation)
    to_image = np.array([[c, -s], [s, c]]) @ np.diag([stretch, 1.0 / stretch])
    layers = SHAPE_POLYGONS[look.shape]
    outline = layers[0][0] @ to_image.T
    to_image *= size / (outline.max(axis=0) - outline.min(axis=0)).max()
    outline = layers[0][0] @ to_image.T + center

    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(outline.max(axis=0)).astype(int), (w, h))
    if x1 <= x0 or y1 <= y0:
        return

    mask = Image.new("L", ((x1 - x0) * SUPERSAMPLE, (y1 - y0) * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    origin = np.array([x0, y0])
    for polygon, fill in layers:
        points = (polygon @ to_image.T + center - origin) * SUPERSAMPLE
        draw.polygon([tuple(p) for p in points], fill=fill)
    alpha = np.asarray(mask.reduce(SUPERSAMPLE), np.float32)[..., None] / 255

    # object coordinates of the patch's pixel centres, for texture and shading
    to_object = np.linalg.inv(to_image)
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - center[0])[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - center[1])[:, None]
    u = to_object[0, 0] * dx + to_object[0, 1] * dy
    v = to_object[1, 0] * dx + to_object[1, 1] * dy

    share = texture_pattern(look, u, v)[..., None]
    shade = (1.0 + look.light[0] * u + look.light[1] * v)[..., None]
    paint = (look.colour + share * (look.accent - look.colour)) * shade
    region = img[y0:y1, x0:x1]
    region += alpha * (paint - region)


def paste_blob(img: np.ndarray, center: tuple[float, float], sigma: float, colour: np.ndarray, opacity: float) -> None:
    """A soft Gaussian blob of colour: out-of-focus background stuff."""
    h, w = img.shape[:2]
    x0, x1 = max(int(center[0] - 3 * sigma), 0), min(int(center[0] + 3 * sigma) + 1, w)
    y0, y1 = max(int(center[1] - 3 * sigma), 0), min(int(center[1] + 3 * sigma) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) - center[0])[None, :] / sigma
    dy = (np.arange(y0, y1, dtype=np.float32) - center[1])[:, None] / sigma
    alpha = (opacity * np.exp(-0.5 * (dx * dx + dy * dy)))[..., None]
    region = img[y0:y1, x0:x1]
    region += alpha * (colour - region)


# --- one image ----------------------------------------------------------------------------


def image_size(rng: np.random.Generator, min_side: int, max_side: int) -> tuple[int, int]:
    """(width, height): long side uniform in [min_side, max_side], aspect 1-4:3 for ~90% of
    images and 4:3-2:1 for the rest, landscape 70% of the time."""
    wide = rng.random() < 0.1
    aspect = math.exp(rng.uniform(math.log(4 / 3), math.log(2)) if wide else rng.uniform(0, math.log(4 / 3)))
    long_side = int(rng.integers(min_side, max_side + 1))
    short_side = round(long_side / aspect)
    if short_side < min_side:
        short_side, long_side = min_side, min(max_side, round(min_side * aspect))
    return (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth clutter: a coarse grid of related colours upsampled bicubically, a lighting
    gradient, and a few soft blobs."""
    base_hue = rng.random()
    gh, gw = rng.integers(2, 6, size=2)
    cells = [
        rgb(base_hue + rng.normal(0, 0.08), rng.uniform(0.05, 0.5), rng.uniform(0.25, 0.9)) for _ in range(gh * gw)
    ]
    grid = np.clip(np.array(cells).reshape(gh, gw, 3), 0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32).copy()

    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.5)
    ramp = (
        np.arange(w, dtype=np.float32)[None, :] * math.cos(angle)
        + np.arange(h, dtype=np.float32)[:, None] * math.sin(angle)
    ) / max(w, h)
    img *= (1.0 + strength * (ramp - ramp.mean()))[..., None]

    short = min(w, h)
    for _ in range(rng.integers(1, 4)):
        paste_blob(
            img,
            (rng.uniform(0, w), rng.uniform(0, h)),
            rng.uniform(0.05, 0.25) * short,
            rgb(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 1.0)),
            rng.uniform(0.3, 0.7),
        )
    return img


def class_look(rng: np.random.Generator, spec: ClassSpec) -> Look:
    """One instance's appearance: the class's shape and texture with jittered colour,
    frequency, orientation, phase and lighting."""
    hue = spec.hue + rng.normal(0, 0.03)
    saturation, value = rng.uniform(0.45, 0.95), rng.uniform(0.5, 0.95)
    return Look(
        shape=spec.shape,
        texture=spec.texture,
        frequency=spec.frequency * rng.uniform(0.9, 1.1),
        texture_angle=spec.texture_angle + rng.normal(0, 0.15),
        phase=(rng.random(), rng.random()),
        colour=rgb(hue, saturation, value),
        accent=rgb(hue + spec.accent_shift, saturation * rng.uniform(0.6, 1.0), value * rng.uniform(0.25, 0.55)),
        light=tuple(rng.normal(0, 0.15, size=2)),
    )


def distractor_look(rng: np.random.Generator) -> Look:
    """Any shape, plain half the time, in any colour."""
    hue = rng.random()
    return Look(
        shape=str(rng.choice(SHAPES)),
        texture=str(rng.choice(TEXTURES)) if rng.random() < 0.5 else "plain",
        frequency=rng.uniform(1.5, 3.5),
        texture_angle=rng.uniform(0, np.pi),
        phase=(rng.random(), rng.random()),
        colour=rgb(hue, rng.uniform(0.1, 0.8), rng.uniform(0.3, 0.95)),
        accent=rgb(hue + rng.uniform(-0.5, 0.5), rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.6)),
        light=(0.0, 0.0),
    )


def random_pose(rng: np.random.Generator) -> tuple[float, float]:
    """(rotation, stretch): any orientation, up to 4:3 anisotropy."""
    return rng.uniform(0, 2 * np.pi), math.exp(rng.uniform(-0.15, 0.15))


def render_image(
    seed: int, split: str, class_id: int, index: int, classes: int, min_side: int, max_side: int
) -> Image.Image:
    """The one image for (seed, split, class, index); independent of every other image."""
    rng = np.random.default_rng([seed, SPLITS.index(split), class_id, index])
    specs = class_specs(classes)
    w, h = image_size(rng, min_side, max_side)
    short = min(w, h)
    img = background(rng, w, h)

    size = rng.uniform(0.2, 0.9) * short
    overhang = rng.uniform(0, 0.3) if rng.random() < 0.2 else 0.0  # share of the box cut off
    margin = size / 2 * (1 - overhang)
    center = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))

    distractors = [(distractor_look(rng), rng.uniform(0.06, 0.3) * short) for _ in range(rng.integers(2, 8))]
    if rng.random() < 0.35:  # a confuser: a smaller instance of another class
        other = specs[(class_id + rng.integers(1, classes)) % classes]
        distractors.append((class_look(rng, other), rng.uniform(0.3, 0.5) * size))
    occluder = int(rng.integers(len(distractors))) if rng.random() < 0.2 else None

    for k, (look, extent) in enumerate(distractors):
        if k != occluder:
            paste(img, look, (rng.uniform(0, w), rng.uniform(0, h)), min(extent, 0.5 * size), *random_pose(rng))
    paste(img, class_look(rng, specs[class_id]), center, size, *random_pose(rng))
    if occluder is not None:  # in front of the object, small enough to leave it recognisable
        look, extent = distractors[occluder]
        paste(img, look, (rng.uniform(0, w), rng.uniform(0, h)), min(extent, 0.35 * size), *random_pose(rng))

    img *= rng.uniform(0.85, 1.15) * rng.uniform(0.92, 1.08, size=3).astype(np.float32)  # exposure, white balance
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1.5, 5.0)  # sensor noise
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
