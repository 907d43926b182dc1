"""The shapes world: coloured circles, squares, triangles and stars on plain backgrounds.

Every scene is drawn from its own `numpy.random.Generator` seeded by `(seed, index)`, so item i of a
dataset never depends on batch size or order. The renderer deliberately randomises everything a
different renderer could do differently (exact shade, rotation, star geometry, aspect, outline,
anti-aliasing, canvas size, blur, noise, JPEG), so models trained on it do not learn one drawing style.

Split: `HELD_OUT_PAIRS` (colour, shape) and `HELD_OUT_TEMPLATES` never occur in split="train".
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "triangle", "star")
# Not one of the four: what a picture that failed to draw a shape looks like (`_lump`). Training
# shows these captioned "a {colour} blob", so "a star" stops fitting a lump with a point or two.
BLOB = "blob"
BACKGROUNDS = COLOURS + ("grey",)

# Reference shades per colour name (CSS names and common "pure" values). A shade is a random mix of
# two references plus jitter, so "red" covers (255,0,0), crimson, firebrick and what lies between.
SHADES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (220, 20, 60), (200, 30, 30), (178, 34, 34), (235, 50, 40), (190, 0, 0)),
    "green": ((0, 128, 0), (0, 255, 0), (34, 139, 34), (50, 205, 50), (0, 190, 80), (60, 179, 113), (0, 100, 0)),
    "blue": ((0, 0, 255), (30, 60, 220), (65, 105, 225), (0, 0, 160), (30, 144, 255), (0, 90, 200), (0, 0, 128)),
    "yellow": ((255, 255, 0), (255, 215, 0), (240, 230, 40), (250, 240, 100), (230, 210, 0)),
    "orange": ((255, 165, 0), (255, 140, 0), (255, 127, 0), (240, 120, 30), (255, 110, 20), (230, 145, 20)),
    "purple": ((128, 0, 128), (160, 32, 240), (148, 0, 211), (128, 0, 255), (110, 40, 160), (150, 60, 190), (90, 20, 120)),
    "white": ((255, 255, 255), (245, 245, 245), (235, 235, 230), (250, 248, 240)),
    "black": ((0, 0, 0), (20, 20, 20), (35, 35, 40), (10, 10, 15)),
    "grey": ((128, 128, 128), (160, 160, 160), (105, 105, 105), (190, 190, 190), (85, 85, 85), (140, 140, 150)),
}

# Held-out (colour, shape) pairs: one per shape, four different colours, never drawn in training.
HELD_OUT_PAIRS = frozenset({("purple", "triangle"), ("orange", "star"), ("green", "circle"), ("white", "square")})

# Single-shape caption templates. Fields: c colour, s shape, b background, z size word.
TRAIN_TEMPLATES = (
    "a {c} {s}",
    "{c} {s}",
    "a photo of a {c} {s}",
    "a picture of a {c} {s}",
    "an image of a {c} {s}",
    "a drawing of a {c} {s}",
    "a {z} {c} {s}",
    "a photo of a {z} {c} {s}",
    "a {c} {s} on a {b} background",
    "a photo of a {c} {s} on a {b} background",
    "a photo of a {z} {c} {s} on a {b} background",
    "a {z} {c} {s} on a {b} background",
    "a {c} {s} on {b}",
)
# Partial captions teach each attribute on its own (used for single-shape scenes only).
PARTIAL_TEMPLATES = ("a {s}", "a photo of a {s}", "a {c} shape", "something {c}", "a {s} on a {b} background")
HELD_OUT_TEMPLATES = (
    "a rendering of a {c} {s}",
    "there is a {c} {s} in the image",
    "a {c} {s} shape",
    "a simple {c} {s} against a {b} backdrop",
)
# A blob's captions never name one of the four shapes ({s} is "blob" here).
BLOB_TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "a {c} {s} on a {b} background", "a {s}", "a {c} shape", "something {c}")
MULTI_TEMPLATES = ("{list}", "a photo of {list}", "{list} on a {b} background", "a picture of {list}")
MULTI_HELD_OUT_TEMPLATES = ("an image showing {list}",)


def class_captions(template: str = "a {c} {s}") -> list[tuple[str, str, str]]:
    """The 32 (caption, colour, shape) classes, colour-major ("an orange star", as in training)."""
    return [(fix_articles(template.format(c=c, s=s, b="", z="")), c, s) for c in COLOURS for s in SHAPES]


def fix_articles(text: str) -> str:
    return text.replace("a orange", "an orange").replace("A orange", "An orange")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def size_word(frac: float) -> str | None:
    if frac < 0.38:
        return "small"
    if frac > 0.52:
        return "big" if frac < 0.62 else "large"
    return None


@dataclass
class ShapeSpec:
    colour: str
    shape: str
    size: float  # largest extent of the shape / image side, 0.2-0.7
    center: tuple[float, float]  # in units of the image side


@dataclass
class Scene:
    image: Image.Image
    shapes: list[ShapeSpec]
    background: str
    caption: str = ""
    # What the caption asserts (None = not mentioned); lets training find every true caption in a batch.
    facts: dict = field(default_factory=dict)


# --- geometry -------------------------------------------------------------------------------


def _polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-ish outline of `shape` centred at 0, randomly rotated and stretched, as (K, 2)."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
        aspect = rng.uniform(0.92, 1.08)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
        aspect = rng.uniform(0.9, 1.1)
    elif shape == "triangle":
        if rng.random() < 0.75:  # equilateral
            angles = np.array([90, 210, 330], float)
        else:  # isosceles or irregular
            apex = rng.uniform(25, 50)
            angles = np.array([90, 270 - apex - 30, 270 + apex + 30], float) + rng.normal(0, 6, 3)
        t = np.deg2rad(angles)
        pts = np.stack([np.cos(t), -np.sin(t)], 1)
        aspect = rng.uniform(0.85, 1.15)
    elif shape == "star":
        # Five- and six-pointed stars with clear spikes: what "a star" means to a person (and to other
        # renderers). Four points with a fat middle read as a square, eight as a circle at 12 px.
        n = int(rng.choice([5, 5, 5, 6]))
        inner = rng.uniform(0.35, 0.5)
        t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) - np.pi / 2
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        aspect = rng.uniform(0.92, 1.08)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = pts * np.array([aspect, 1.0])
    # Upright triangles and stars and axis-aligned squares are common in other renderers: keep many.
    if shape != "circle" and rng.random() < 0.65:
        theta = rng.normal(0, 0.08)
    else:
        theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T


def _lump(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Outline of something that is not a circle, square, triangle or star, as (K, 2), and whether
    it should hang over the picture's border. The near misses a generator makes:
    - a lump: a disc pushed out of round by two or three low harmonics;
    - a wobbly disc: a circle with a shallow ripple of five to nine bumps (a star needs deep spikes);
    - an oval, clearly longer than wide;
    - a blunt star: five to six bumps with an inner radius of 0.72-0.88, a rounded polygon;
    - a partial shape: a circle, square or star with a straight cut through it (25-50% of it gone),
      or any of the four hanging half out of the picture."""
    kind = rng.choice(["lump", "wobbly", "oval", "blunt", "cut", "border"], p=[0.25, 0.15, 0.1, 0.15, 0.2, 0.15])
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    if kind in ("lump", "wobbly", "blunt"):
        radius = np.ones_like(t)
        if kind == "lump":
            for k in rng.choice([2, 3, 4, 5], size=int(rng.integers(2, 4)), replace=False):
                radius += rng.uniform(0.1, 0.3) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        elif kind == "wobbly":
            radius += rng.uniform(0.05, 0.12) * np.cos(int(rng.integers(5, 10)) * t + rng.uniform(0, 2 * np.pi))
        else:
            inner = rng.uniform(0.72, 0.88)
            radius += (1 - inner) / 2 * (np.cos(int(rng.choice([5, 6])) * t) - 1)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], 1)
    elif kind == "oval":
        pts = np.stack([np.cos(t) * rng.uniform(1.35, 2.2), np.sin(t)], 1)
    else:
        # A straight cut through a triangle can leave a smaller triangle: cut the other three only.
        pts = _polygon(str(rng.choice(["circle", "square", "star"] if kind == "cut" else SHAPES)), rng)
        if kind == "cut":  # keep the points on one side of a line through the shape
            normal = np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
            dense = np.concatenate([np.linspace(p, q, 12, endpoint=False) for p, q in zip(pts, np.roll(pts, -1, 0))])
            d = dense @ normal
            cut = np.quantile(d, rng.uniform(0.25, 0.5))
            pts = np.where((d < cut)[:, None], dense - (d - cut)[:, None] * normal, dense)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T, kind == "border"


def shade(name: str, rng: np.random.Generator) -> tuple[int, int, int]:
    refs = np.array(SHADES[name], float)
    a, b = refs[rng.integers(len(refs))], refs[rng.integers(len(refs))]
    rgb = a + rng.uniform(0, 1) * (b - a) + rng.normal(0, 7, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


# --- scenes ---------------------------------------------------------------------------------


def sample_specs(
    rng: np.random.Generator, split: str = "train", n_shapes: int | None = None, blob_frac: float = 0.0
) -> tuple[list[ShapeSpec], str]:
    """Pick shapes, colours, sizes, positions and a background colour different from every shape colour.
    With `blob_frac`, each object is a blob (`_lump`) with that probability."""
    if n_shapes is None:
        n_shapes = int(rng.choice([1, 2, 3], p=[0.7, 0.22, 0.08]))
    specs: list[ShapeSpec] = []
    boxes: list[tuple[float, float, float]] = []
    for _ in range(n_shapes):
        while True:
            colour, shape = COLOURS[rng.integers(8)], SHAPES[rng.integers(4)]
            pair_held = (colour, shape) in HELD_OUT_PAIRS
            if split == "train" and pair_held:
                continue
            if split == "heldout" and not pair_held:
                continue
            break
        if blob_frac and rng.random() < blob_frac:
            shape = BLOB
        for _attempt in range(30):
            hi = 0.7 if n_shapes == 1 else (0.45 if n_shapes == 2 else 0.36)
            size = float(rng.uniform(0.2, hi))
            half = size / 2
            cx, cy = rng.uniform(half, 1 - half, 2)
            # Multi-shape scenes: keep shapes from covering each other.
            if all(abs(cx - x) > (half + h) * 0.9 or abs(cy - y) > (half + h) * 0.9 for x, y, h in boxes):
                break
        boxes.append((cx, cy, half))
        specs.append(ShapeSpec(colour, shape, size, (float(cx), float(cy))))
    used = {s.colour for s in specs}
    backgrounds = [b for b in BACKGROUNDS if b not in used]
    return specs, backgrounds[rng.integers(len(backgrounds))]


def render(specs: list[ShapeSpec], background: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Draw a scene with randomised style, returned as a size x size RGB image."""
    canvas = int(rng.choice([48, 64, 64, 96, 128, 160, 224]))
    ss = int(rng.choice([1, 2, 3, 4, 4, 4])) if canvas <= 128 else int(rng.choice([1, 2, 2]))
    big = canvas * ss
    img = Image.new("RGB", (big, big), shade(background, rng))
    draw = ImageDraw.Draw(img)
    for spec in specs:
        pts, overhang = _lump(rng) if spec.shape == BLOB else (_polygon(spec.shape, rng), False)
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - (lo + hi) / 2) / (hi - lo).max() * spec.size  # largest extent == size
        centre = np.array(spec.center)
        if overhang:  # slide it towards a random border until 35-60% of its extent is outside
            axis, side = rng.integers(2), rng.integers(2)
            inset = spec.size * (0.5 - rng.uniform(0.35, 0.6))
            centre[axis] = 1 - inset if side else inset
        pts = (pts + centre) * big
        fill = shade(spec.colour, rng)
        poly = [tuple(p) for p in pts]
        draw.polygon(poly, fill=fill)
        if rng.random() < 0.25:  # an outline: a darker/lighter shade of the same colour
            k = rng.uniform(0.55, 0.85) if spec.colour != "black" else rng.uniform(1.5, 3.0)
            line = tuple(int(min(255, v * k + (40 if spec.colour == "black" else 0))) for v in fill)
            draw.line(poly + [poly[0]], fill=line, width=max(1, int(rng.uniform(0.01, 0.03) * big)), joint="curve")
    if ss > 1:
        img = img.resize((canvas, canvas), [Image.BOX, Image.LANCZOS, Image.BILINEAR][rng.integers(3)])
    if rng.random() < 0.25:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0) * canvas / 64))
    if canvas != size:
        img = img.resize((size, size), [Image.BICUBIC, Image.BILINEAR, Image.LANCZOS, Image.NEAREST][rng.choice(4, p=[0.5, 0.25, 0.2, 0.05])])
    if rng.random() < 0.25:
        arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(1, 8), (size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(35, 95)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def caption_for(
    specs: list[ShapeSpec], background: str, rng: np.random.Generator, split: str = "train", partial: bool = True
) -> tuple[str, dict]:
    """A caption and the facts it states: {"shapes": tuple|None, "colour", "shape", "bg", "size"}."""
    facts = {"shapes": None, "colour": None, "shape": None, "bg": None, "size": None}
    b = background
    if len(specs) == 1:
        s = specs[0]
        z = size_word(s.size)
        if s.shape == BLOB:
            pool = list(BLOB_TEMPLATES)
        elif split == "train":
            pool = list(TRAIN_TEMPLATES) if (rng.random() > 0.2 or not partial) else list(PARTIAL_TEMPLATES)
        else:
            pool = list(HELD_OUT_TEMPLATES)
        if z is None:
            pool = [t for t in pool if "{z}" not in t]
        tpl = pool[rng.integers(len(pool))]
        text = tpl.format(c=s.colour, s=s.shape, b=b, z=z)
        facts["colour"] = s.colour if "{c}" in tpl else None
        facts["shape"] = s.shape if "{s}" in tpl else None
        if "{c}" in tpl and "{s}" in tpl:
            facts["shapes"] = ((s.colour, s.shape),)
        facts["bg"] = b if "{b}" in tpl else None
        facts["size"] = z if "{z}" in tpl else None
    else:
        order = rng.permutation(len(specs))
        parts = [f"{article(specs[i].colour)} {specs[i].colour} {specs[i].shape}" for i in order]
        listing = " and ".join(parts) if len(parts) == 2 else ", ".join(parts[:-1]) + " and " + parts[-1]
        pool = MULTI_TEMPLATES if split == "train" else MULTI_HELD_OUT_TEMPLATES
        tpl = pool[rng.integers(len(pool))]
        text = tpl.format(list=listing, b=b)
        facts["shapes"] = tuple(sorted((s.colour, s.shape) for s in specs))
        facts["bg"] = b if "{b}" in tpl else None
    # "a a ..." never happens, but "a orange" does: fix the article of the first colour word.
    text = fix_articles(text)
    return text, facts


def scene(seed: int, index: int, split: str = "train", size: int = 64, n_shapes: int | None = None,
          blob_frac: float = 0.0) -> Scene:
    """Scene `index` of the dataset `seed` (independent of every other index)."""
    rng = np.random.default_rng([seed, index, {"train": 0, "test": 1, "heldout": 2}[split]])
    specs, bg = sample_specs(rng, split, n_shapes, blob_frac)
    image = render(specs, bg, rng, size)
    text, facts = caption_for(specs, bg, rng, "train" if split == "test" else split)
    return Scene(image, specs, bg, text, facts)


def scenes(seed: int, n: int, split: str = "train", size: int = 64, n_shapes: int | None = None, start: int = 0,
           blob_frac: float = 0.0) -> list[Scene]:
    return [scene(seed, start + i, split, size, n_shapes, blob_frac) for i in range(n)]


def caption_corpus(seed: int = 0, n: int = 20000, blobs: bool = False) -> list[str]:
    """Training captions for the tokenizer: every train template filled (and the blob ones, when
    training shows blobs), plus sampled multi-shape ones."""
    texts = []
    for c in COLOURS:
        for s in SHAPES:
            if (c, s) in HELD_OUT_PAIRS:
                continue
            for b in BACKGROUNDS:
                for z in ("small", "big", "large"):
                    for tpl in TRAIN_TEMPLATES + PARTIAL_TEMPLATES:
                        texts.append(fix_articles(tpl.format(c=c, s=s, b=b, z=z)))
    for c in COLOURS if blobs else ():
        for b in BACKGROUNDS:
            texts += [fix_articles(tpl.format(c=c, s=BLOB, b=b)) for tpl in BLOB_TEMPLATES]
    rng = np.random.default_rng(seed)
    for _ in range(n // 10):
        specs, bg = sample_specs(rng, "train", int(rng.integers(2, 4)))
        texts.append(caption_for(specs, bg, rng)[0])
    return texts
