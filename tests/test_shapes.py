"""The shapes world: determinism, geometry and colour properties, and a held-out split that is really held out."""
from __future__ import annotations

import numpy as np
import pytest

from worker.training import shapes as S
from worker.training.data import caption_fits, scene_truth

N = 300


@pytest.fixture(scope="module")
def train_scenes():
    return S.scenes(7, N, "train")


def test_same_seed_same_scene_and_independent_of_batching():
    a = S.scenes(3, 20, "train")
    b = [S.scene(3, i, "train") for i in range(20)]
    assert [np.asarray(x.image).tobytes() for x in a] == [np.asarray(x.image).tobytes() for x in b]
    assert [x.caption for x in a] == [x.caption for x in b]
    tail = S.scenes(3, 5, "train", start=15)
    assert [x.caption for x in tail] == [x.caption for x in a[15:]]


def test_different_seeds_differ():
    a = [np.asarray(s.image) for s in S.scenes(1, 10)]
    b = [np.asarray(s.image) for s in S.scenes(2, 10)]
    assert sum((x != y).any() for x, y in zip(a, b)) >= 9


def test_sizes_backgrounds_and_vocabulary(train_scenes):
    counts = {1: 0, 2: 0, 3: 0}
    for s in train_scenes:
        counts[len(s.shapes)] += 1
        assert s.image.size == (64, 64) and s.image.mode == "RGB"
        assert s.background in S.BACKGROUNDS
        assert s.background not in {sp.colour for sp in s.shapes}
        for sp in s.shapes:
            assert 0.2 <= sp.size <= 0.7
            assert sp.colour in S.COLOURS and sp.shape in S.SHAPES
            half = sp.size / 2
            assert half - 1e-9 <= sp.center[0] <= 1 - half + 1e-9 and half - 1e-9 <= sp.center[1] <= 1 - half + 1e-9
    assert counts[1] > N / 2 and counts[2] > 0 and counts[3] > 0  # single shapes dominate, multi-shape present
    assert len({s.background for s in train_scenes}) == 9  # grey included
    assert len({(sp.colour, sp.shape) for s in train_scenes for sp in s.shapes}) == 32 - len(S.HELD_OUT_PAIRS)


def _nearest_name(rgb: np.ndarray) -> str:
    best, name = 1e9, ""
    for n, refs in S.SHADES.items():
        d = np.min(np.linalg.norm(np.array(refs, float) - rgb, axis=1))
        if d < best:
            best, name = d, n
    return name


def test_pixels_show_the_named_colours_and_sizes(train_scenes):
    """Measured on the rendered pixels: background colour at a corner far from shapes, shape colour at
    its centre, and the shape's extent within the 20-70% range (with slack for blur and outlines)."""
    singles = [s for s in train_scenes if len(s.shapes) == 1][:150]
    bg_ok = fg_ok = size_ok = 0
    for s in singles:
        img = np.asarray(s.image).astype(float)
        sp = s.shapes[0]
        cx, cy = int(sp.center[0] * 64), int(sp.center[1] * 64)
        fg_ok += _nearest_name(img[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)) == sp.colour
        corner = max([(0, 0), (0, 60), (60, 0), (60, 60)], key=lambda c: (c[1] - cx) ** 2 + (c[0] - cy) ** 2)
        bg = img[corner[0] : corner[0] + 4, corner[1] : corner[1] + 4].reshape(-1, 3).mean(0)
        bg_ok += _nearest_name(bg) == s.background
        differs = np.linalg.norm(img - bg, axis=2) > 60
        ys, xs = np.nonzero(differs)
        extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / 64 if len(xs) else 0
        size_ok += 0.14 <= extent <= 0.76
    n = len(singles)
    assert bg_ok / n >= 0.95 and fg_ok / n >= 0.9 and size_ok / n >= 0.95, (bg_ok, fg_ok, size_ok, n)


def test_captions_state_only_true_facts(train_scenes):
    for s in train_scenes:
        assert caption_fits(s.facts, scene_truth(s.shapes, s.background)), s.caption
        assert s.caption.startswith(("a ", "an ")) or s.caption.split()[0] in S.COLOURS + ("something",)
        assert " a orange" not in f" {s.caption}"


def test_held_out_split_is_held_out(train_scenes):
    pairs = {(sp.colour, sp.shape) for s in train_scenes for sp in s.shapes}
    assert not pairs & S.HELD_OUT_PAIRS
    held_prefixes = [t.split("{")[0] for t in S.HELD_OUT_TEMPLATES + S.MULTI_HELD_OUT_TEMPLATES]
    for s in train_scenes:
        assert not any(s.caption.startswith(p) for p in held_prefixes if len(p) > 3), s.caption
    corpus = S.caption_corpus(0, 2000)
    assert not any(f" {c} {sh}" in f" {t}" for t in corpus for c, sh in S.HELD_OUT_PAIRS)
    held = S.scenes(7, 60, "heldout", n_shapes=1)
    assert {(s.shapes[0].colour, s.shapes[0].shape) for s in held} == set(S.HELD_OUT_PAIRS)
    for s in held:
        sp = s.shapes[0]
        filled = {t.format(c=sp.colour, s=sp.shape, b=s.background).replace("a orange", "an orange") for t in S.HELD_OUT_TEMPLATES}
        assert s.caption in filled, s.caption


def test_class_captions_cover_32_pairs():
    caps = S.class_captions()
    assert len(caps) == 32 and len({c for c, _, _ in caps}) == 32
    assert caps[0][0] == "a red circle"


def test_blobs_are_never_captioned_with_a_shape_name():
    blobs = S.scenes(5, 120, "train", n_shapes=1, blob_frac=1.0)
    for s in blobs:
        assert s.shapes[0].shape == S.BLOB
        assert not any(word in s.caption.split() for word in S.SHAPES), s.caption
        truth = scene_truth(s.shapes, s.background)
        colour = s.shapes[0].colour
        for shape in S.SHAPES:  # "a red star" does not describe a red blob; "a red shape" does
            assert not caption_fits({"shapes": ((colour, shape),), "colour": colour, "shape": shape, "bg": None, "size": None}, truth)
        assert caption_fits({"shapes": None, "colour": colour, "shape": None, "bg": None, "size": None}, truth)
        assert caption_fits({"shapes": ((colour, S.BLOB),), "colour": colour, "shape": S.BLOB, "bg": None, "size": None}, truth)
    assert {s.caption.split()[-1] for s in blobs} & {"blob", "background"}


def test_blob_share_follows_blob_frac_and_test_scenes_have_none():
    objects = [sp.shape for s in S.scenes(6, 400, "train", blob_frac=0.15) for sp in s.shapes]
    assert 0.09 < objects.count(S.BLOB) / len(objects) < 0.21
    assert {sp.shape for s in S.scenes(6, 200, "test") for sp in s.shapes} <= set(S.SHAPES)
    pairs = [s.caption for s in S.scenes(6, 300, "train", n_shapes=2, blob_frac=0.5)]
    assert any("blob and" in c for c in pairs) and any("blob" not in c for c in pairs)


def test_blobs_hang_over_the_border_far_more_often_than_shapes():
    """The "border" kind hangs 35-60% out of the picture: measured on pixels, blob scenes touch the
    border more than twice as often as scenes of the four shapes (which only graze it when placed
    against an edge)."""

    def touching(scenes) -> int:
        count = 0
        for s in scenes:
            arr = np.asarray(s.image).astype(float)
            bg = np.median(np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]), 0)
            far = np.abs(arr - bg).sum(-1) > 90
            count += bool(far[0].any() or far[-1].any() or far[:, 0].any() or far[:, -1].any())
        return count

    blobs, shapes = touching(S.scenes(8, 200, "train", n_shapes=1, blob_frac=1.0)), touching(S.scenes(8, 200, "train", n_shapes=1))
    assert 15 <= blobs <= 90 and blobs > 2 * shapes, (blobs, shapes)
