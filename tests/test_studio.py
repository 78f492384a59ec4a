"""The synthetic jellybean studio: deterministic, labelled, photo-like files."""

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clood_candy.studio import StudioLabels, StudioShot, render_studio
from clood_candy.studio.labels import BEAN_COLOURS

SIZE = (768, 576)
PATH_RE = re.compile(r"^(jelly-belly|sunkist|speckled-co)/(day|night)/(indoor|outdoor)/IMG_\d{4}\.jpg$")
EXIF_IFD = 0x8769


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> tuple[Path, list[StudioShot]]:
    out = tmp_path_factory.mktemp("studio")
    return out, render_studio(out, count=32, seed=0, size=SIZE)


@pytest.fixture(scope="module")
def pixels(studio) -> dict[str, np.ndarray]:
    """Upright (EXIF-rotated) pixels of every shot, decoded once."""
    out, shots = studio
    return {s.path: _upright(out, s) for s in shots}


def _upright(out: Path, shot: StudioShot) -> np.ndarray:
    with Image.open(out / shot.path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.float32)


def _sharpness(a: np.ndarray) -> float:
    g = np.asarray(Image.fromarray(a.astype(np.uint8)).convert("L").resize((384, 288)), np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    # 10 is the smallest set that still has the defects and the rotated shots;
    # a small frame keeps this quick.
    small = (384, 288)
    a = render_studio(tmp_path / "a", count=10, seed=7, size=small)
    b = render_studio(tmp_path / "b", count=10, seed=7, size=small)
    assert [s.model_dump() for s in a] == [s.model_dump() for s in b]
    assert {s.labels.defect for s in a} == {None, "blurry", "underexposed"}
    assert {s.labels.orientation for s in a} == {1, 6, 8}
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 11  # 10 photos + labels.json
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    c = render_studio(tmp_path / "c", count=3, seed=8, size=small)
    assert len(c) == 3 and all(s.labels.defect is None for s in c)
    assert (tmp_path / "a" / a[0].path).read_bytes() != (tmp_path / "c" / c[0].path).read_bytes()


def test_folder_layout_and_labels_json(studio):
    out, shots = studio
    assert len(shots) == 32
    assert len({s.path for s in shots}) == 32
    stored = json.loads((out / "labels.json").read_text())
    assert stored == {s.path: s.labels.model_dump(mode="json") for s in shots}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == sorted(stored)
    for s in shots:
        m = PATH_RE.match(s.path)
        assert m, s.path
        brand, daynight, place = m.groups()
        assert brand == s.labels.brand
        assert daynight == ("night" if s.labels.lighting == "night" else "day")
        if s.labels.lighting != "daylight":
            assert place == "indoor"
    assert any("/outdoor/" in s.path for s in shots)


def test_exif(studio):
    out, shots = studio
    dist = {"macro": [], "wide": []}
    for s in shots:
        with Image.open(out / s.path) as im:
            assert im.format == "JPEG" and im.size == SIZE  # sensor is landscape
            ex = im.getexif()
            sub = ex.get_ifd(EXIF_IFD)
        assert ex[0x010F] == "clood studio" and ex[0x0110] == "virtual camera"
        assert ex[0x0112] == s.labels.orientation
        when = datetime.strptime(sub[0x9003], "%Y:%m:%d %H:%M:%S")
        if s.labels.lighting == "night":
            assert when.hour >= 21
        else:
            assert 8 <= when.hour < 20
        assert sub[0x9209] == (0x19 if s.labels.flash else 0x10)
        assert s.labels.flash == (s.labels.lighting == "night")
        assert float(sub[0x920A]) > 0
        if s.labels.zoom in dist:
            dist[s.labels.zoom].append(float(sub[0x9206]))
    assert max(dist["macro"]) < min(dist["wide"])
    orients = [s.labels.orientation for s in shots]
    assert 6 in orients and 8 in orients and orients.count(1) >= 28


def test_labels_consistent(studio):
    _, shots = studio
    for s in shots:
        lab = s.labels
        assert isinstance(lab, StudioLabels)
        assert lab.colours and lab.colours == sorted(set(lab.colours))
        assert set(lab.colours) <= set(BEAN_COLOURS)
        assert len(lab.colours) <= lab.count
        assert (lab.count == 1) == (lab.arrangement == "single")
        assert lab.speckled == (lab.brand == "speckled-co")
        expected_bg = {"white": "white", "wood": "brown"}.get(lab.background)
        assert lab.background_colour == expected_bg if expected_bg else lab.background_colour not in ("white", "brown")


def test_every_kind_of_shot_is_represented(studio):
    _, shots = studio

    def seen(field: str) -> set:
        return {getattr(s.labels, field) for s in shots}

    assert seen("background") == {"white", "wood", "cloth"}
    assert seen("lighting") == {"daylight", "indoor", "night"}
    assert seen("zoom") == {"macro", "medium", "wide"}
    assert seen("arrangement") == {"single", "pile", "scattered", "bowl"}
    assert seen("view") == {"top-down", "angled"}
    assert seen("brand") == {"jelly-belly", "sunkist", "speckled-co"}


def test_bean_box_is_inside_and_on_the_beans(studio, pixels):
    _, shots = studio
    for s in shots:
        a = pixels[s.path]
        h, w = a.shape[:2]
        if s.labels.orientation in (6, 8):
            assert (w, h) == (SIZE[1], SIZE[0])  # upright portrait
        x0, y0, x1, y1 = s.labels.bean_box
        assert 2 <= x0 < x1 <= w - 2 and 2 <= y0 < y1 <= h - 2, (s.path, s.labels.bean_box)  # never cut
        # Colour statistics of the box versus the frame outside a small border round it.
        grown = a[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8]
        n_out = h * w - grown.shape[0] * grown.shape[1]
        s1 = (a.sum((0, 1)) - grown.sum((0, 1))) / n_out
        s2 = ((a ** 2).sum((0, 1)) - (grown ** 2).sum((0, 1))) / n_out
        inside = a[y0:y1, x0:x1]
        d_mean = np.abs(inside.mean((0, 1)) - s1).max()
        d_std = inside.std((0, 1)).mean() - np.sqrt(np.maximum(s2 - s1 ** 2, 0)).mean()
        assert d_mean + max(d_std, 0.0) > 8, s.path


def test_night_is_darker_than_daylight(studio, pixels):
    _, shots = studio

    def mean(light: str) -> float:
        chosen = [s for s in shots if s.labels.lighting == light and not s.labels.defect]
        return float(np.mean([pixels[s.path].mean() for s in chosen]))

    assert mean("night") < mean("daylight") - 20


def test_defects(studio, pixels):
    _, shots = studio
    by_path = {s.path: s for s in shots}
    clean = [s for s in shots if s.labels.defect is None]
    assert len(clean) >= 0.8 * len(shots)
    blurry = [s for s in shots if s.labels.defect == "blurry"]
    dark = [s for s in shots if s.labels.defect == "underexposed"]
    assert len(blurry) == 1 and len(dark) == 1
    dup = blurry[0]
    src = by_path[dup.labels.duplicate_of]
    assert src.labels.defect is None
    keep = {"bean_box", "defect", "duplicate_of"}
    assert dup.labels.model_dump(exclude=keep) == src.labels.model_dump(exclude=keep)
    assert dup.path.rsplit("/", 1)[0] == src.path.rsplit("/", 1)[0]  # same burst folder
    assert _sharpness(pixels[dup.path]) < 0.6 * _sharpness(pixels[src.path])
    means = {path: a.mean() for path, a in pixels.items()}
    assert means[dark[0].path] < 50
    assert means[dark[0].path] < min(v for k, v in means.items() if k != dark[0].path)


def _dhash(a: np.ndarray) -> np.ndarray:
    g = np.asarray(Image.fromarray(a.astype(np.uint8)).convert("L").resize((9, 8), Image.LANCZOS), np.float32)
    return (g[:, 1:] > g[:, :-1]).ravel()


def test_only_the_burst_pair_looks_like_a_duplicate(studio, pixels):
    _, shots = studio
    hashes = {path: _dhash(a) for path, a in pixels.items()}
    pair = next({s.path, s.labels.duplicate_of} for s in shots if s.labels.duplicate_of)
    dist = {}
    paths = sorted(hashes)
    for i, p in enumerate(paths):
        for q in paths[i + 1:]:
            dist[frozenset((p, q))] = int((hashes[p] != hashes[q]).sum())
    burst = dist.pop(frozenset(pair))
    assert burst <= 6
    assert min(dist.values()) > burst


def test_imagehash_phash_separates_the_burst_pair(studio, pixels):
    imagehash = pytest.importorskip("imagehash")
    _, shots = studio
    hashes = {p: imagehash.phash(Image.fromarray(a.astype(np.uint8))) for p, a in pixels.items()}
    pair = next(frozenset((s.path, s.labels.duplicate_of)) for s in shots if s.labels.duplicate_of)
    paths = sorted(hashes)
    dist = {frozenset((p, q)): hashes[p] - hashes[q] for i, p in enumerate(paths) for q in paths[i + 1:]}
    assert dist.pop(pair) <= 6
    assert min(dist.values()) >= 10
