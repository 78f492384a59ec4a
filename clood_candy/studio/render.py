"""render_studio: plan a shoot, render each shot, develop it like a camera, save.

Determinism: every shot draws from its own RNG seeded by (seed, shot index),
so a shot's pixels do not depend on the others, and the same seed yields the
same JPEG bytes on the same machine.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from .beans import draw_bean, draw_shadows, srgb_to_linear
from .labels import BEAN_COLOURS, StudioLabels, StudioShot
from .looks import apply_look
from .scene import (
    CLOTH_SRGB,
    Camera,
    cloth,
    draw_bowl,
    illumination,
    layout,
    make_beans,
    make_lighting,
    paper,
    wood,
)

# Brand look: bean width/length ratio, gloss, colours the brand sells.
BRANDS = {
    "jelly-belly": {"ratio": 0.56, "gloss": 1.0, "palette": list(BEAN_COLOURS)},
    "sunkist": {"ratio": 0.64, "gloss": 0.5, "palette": ["red", "orange", "yellow", "green", "purple", "pink"]},
    "speckled-co": {"ratio": 0.6, "gloss": 0.75,
                    "palette": ["white", "yellow", "pink", "orange", "green", "brown", "red"]},
}
BOWL_SRGB = [(236, 232, 224), (226, 214, 190), (150, 176, 200), (170, 186, 160)]
# zoom -> (focal length mm, subject distance m range, bean length as fraction of the long side)
ZOOM = {"macro": (100.0, (0.12, 0.25)), "medium": (50.0, (0.45, 0.8)), "wide": (28.0, (1.0, 1.6))}
EXPOSURE = {"daylight": (IFDRational(1, 250), 5.6, 100), "indoor": (IFDRational(1, 60), 2.8, 1600),
            "night": (IFDRational(1, 60), 4.0, 400)}


@dataclass
class Plan:
    index: int
    brand: str
    lighting: str
    outdoor: bool
    background: str
    background_colour: str
    zoom: str
    arrangement: str
    view: str
    bean_colours: list[str]
    length_frac: float
    orientation: int = 1
    defect: str | None = None
    duplicate_of: int | None = None  # index of the source plan
    when: datetime | None = None
    path: str = ""
    salt: int = 0  # bumped to re-roll a scene that looks too much like another


def _balanced(values, n: int, rng) -> list:
    """Each value about equally often, in random order."""
    reps = [values[i % len(values)] for i in range(n)]
    return [reps[i] for i in rng.permutation(n)]


def _plan(count: int, seed: int) -> list[Plan]:
    rng = np.random.default_rng([seed, 0])
    with_defects = count >= 10
    n = count - 1 if with_defects else count  # scenes; the burst duplicate reuses one
    cols = {k: _balanced(v, n, rng) for k, v in {
        "brand": list(BRANDS), "lighting": ["daylight", "indoor", "night"] * 2 + ["daylight", "indoor"],
        "background": ["white", "wood", "cloth"], "zoom": ["macro", "medium", "wide"],
        "arrangement": ["single", "pile", "scattered", "bowl"], "view": ["top-down", "angled"],
        }.items()}
    cloths = iter(_balanced(list(CLOTH_SRGB), n, rng))
    plans = []
    for i in range(n):
        zoom, arr, brand = cols["zoom"][i], cols["arrangement"][i], cols["brand"][i]
        if zoom == "macro" and arr in ("scattered", "bowl"):
            arr = "pile" if arr == "bowl" else "single"
        if zoom == "macro":
            if arr == "single":
                k, frac = 1, rng.uniform(0.5, 0.62)
            else:
                k, frac = int(rng.integers(5, 7)), rng.uniform(0.19, 0.23)
        elif zoom == "medium":
            k = {"single": 1, "pile": int(rng.integers(5, 13)), "scattered": int(rng.integers(6, 11)),
                 "bowl": int(rng.integers(6, 13))}[arr]
            frac = rng.uniform(0.26, 0.32) if arr == "single" else rng.uniform(0.11, 0.14)
        else:
            k = {"single": 1, "pile": int(rng.integers(8, 13)), "scattered": int(rng.integers(10, 21)),
                 "bowl": int(rng.integers(12, 26))}[arr]
            frac = rng.uniform(0.075, 0.09) if arr == "single" else rng.uniform(0.05, 0.065)
        pal = BRANDS[brand]["palette"]
        n_col = 1 if k == 1 else int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.2, 0.25, 0.2, 0.2]))
        chosen = list(rng.choice(pal, min(n_col, k, len(pal)), replace=False))
        bean_cols = chosen + [str(c) for c in rng.choice(chosen, k - len(chosen))]
        bean_cols = [str(c) for c in rng.permutation(bean_cols)]
        light, bg = cols["lighting"][i], cols["background"][i]
        outdoor = light == "daylight" and bg != "white" and bool(rng.random() < 0.6)
        bgc = {"white": "white", "wood": "brown"}.get(bg) or next(cloths)
        plans.append(Plan(i, brand, light, outdoor, bg, bgc, zoom, arr, cols["view"][i], bean_cols, frac))
    if with_defects:  # one dark shot, one blurred burst copy, two portrait shots
        order = [int(j) for j in rng.permutation(n)]
        daylit = [j for j in order if plans[j].lighting != "night"]
        plans[daylit[0]].defect = "underexposed"
        src = next(j for j in order if j != daylit[0])
        rot = [j for j in order if j not in (daylit[0], src)][:2]
        for j, o in zip(rot, (6, 8)):
            plans[j].orientation = o
        plans.append(replace(plans[src], index=n, defect="blurry", duplicate_of=src))
    _timeline(plans, seed)
    return plans


def _timeline(plans: list[Plan], seed: int) -> None:
    """Dates per brand session, day shots in daytime, night after 21:00, IMG_ numbers."""
    rng = np.random.default_rng([seed, 1])
    day0 = datetime(2024, 3, 2)
    for b, brand in enumerate(BRANDS):
        day = day0 + timedelta(days=int(b * 9 + rng.integers(0, 7)))
        mine = [p for p in plans if p.brand == brand and p.duplicate_of is None]
        groups = [("daylight", True, 10), ("daylight", False, 13), ("indoor", False, 16), ("night", False, 21)]
        for light, outdoor, hour in groups:
            t = day + timedelta(hours=hour, minutes=int(rng.integers(0, 40)))
            for p in (p for p in mine if p.lighting == light and p.outdoor == outdoor):
                p.when = t
                t += timedelta(minutes=int(rng.integers(2, 9)), seconds=int(rng.integers(0, 60)))
    for p in plans:
        if p.duplicate_of is not None:
            p.when = plans[p.duplicate_of].when + timedelta(seconds=1)
    for num, p in enumerate(sorted(plans, key=lambda p: (p.when, p.index)), start=1):
        p.path = (f"{p.brand}/{'night' if p.lighting == 'night' else 'day'}/"
                  f"{'outdoor' if p.outdoor else 'indoor'}/IMG_{num:04d}.jpg")


def soften(img: np.ndarray, passes: int = 1) -> np.ndarray:
    """Separable [1, 2, 1] / 4 filter (sigma ~0.7 per pass): lens/demosaic softness."""
    q = np.float32(0.25)
    for _ in range(passes):  # image is (C, H, W): filter rows, then columns
        out = img * np.float32(0.5)
        out[:, 1:] += img[:, :-1] * q
        out[:, :-1] += img[:, 1:] * q
        out[:, 0] += img[:, 0] * q
        out[:, -1] += img[:, -1] * q
        img = out * np.float32(0.5)
        img[:, :, 1:] += out[:, :, :-1] * q
        img[:, :, :-1] += out[:, :, 1:] * q
        img[:, :, 0] += out[:, :, 0] * q
        img[:, :, -1] += out[:, :, -1] * q
    return img


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Cheap wide blur: box-downsample, bicubic upsample, then smooth the seams."""
    k = max(1, round(sigma))
    if k == 1:
        return soften(img, 2)
    h, w = img.shape[1:]
    small = (max(1, w // k), max(1, h // k))
    chans = []
    for c in img:
        im = Image.fromarray(np.ascontiguousarray(c))
        chans.append(np.asarray(im.resize(small, Image.BOX).resize((w, h), Image.BICUBIC), np.float32))
    return soften(np.stack(chans), 2)


def _scene(p: Plan, size: tuple[int, int], seed: int):
    """Linear-light (3, H, W) image and bean box of one plan (upright coordinates)."""
    rng = np.random.default_rng([seed, 2, p.index, p.salt])
    w, h = size
    cam = Camera.make(size, p.view == "angled")
    lt = make_lighting(p.lighting, p.outdoor, cam.angled, rng)
    length = p.length_frac * max(w, h)
    unit = length
    if cam.angled:  # texture is built in table pixels, larger than image pixels mid-frame
        x0, _ = cam._map(w / 2, h / 2)
        x1, _ = cam._map(w / 2 + 1, h / 2)
        unit = length * (x1 - x0)
    tw, th = cam.table_size
    L = lt.light.dir
    if p.background == "white":
        tex = paper(th, tw, unit, rng)
    elif p.background == "wood":
        tex = wood(th, tw, unit, rng)
    else:
        tex = cloth(th, tw, unit, p.background_colour, rng, (L[0], L[1]))
    tex = tex.astype(np.float32)
    img = np.ascontiguousarray(cam.warp(soften(tex) if cam.angled else tex))  # prefilter: less moire
    if p.background == "white":  # seamless sweep: brighter centre, soft fall-off
        yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        img *= (1.0 - 0.1 * (xx ** 2 + yy ** 2) - 0.06 * yy)[None]

    spots, bowl = layout(p.arrangement, len(p.bean_colours), length, cam, rng, margin=0.05 * min(w, h) + 4)
    if lt.flash:  # the photographer points the camera (and flash) roughly at the beans
        cx, cy = np.mean([s[:2] for s in spots], axis=0)
        lt.aim = (lt.aim[0] + 0.5 * (cx - w / 2) / max(w, h), lt.aim[1] + 0.5 * (cy - h / 2) / max(w, h))
    if bowl is not None:
        bowl.colour = tuple(srgb_to_linear(BOWL_SRGB[int(rng.integers(len(BOWL_SRGB)))]))
        draw_bowl(img, bowl, lt.light)
    style = BRANDS[p.brand]
    order = "pile" if p.arrangement == "pile" else "depth"
    beans = make_beans(spots, length, style["ratio"], p.bean_colours, p.brand == "speckled-co",
                       style["gloss"], cam, rng, order)
    box = None
    for b in beans:
        draw_shadows(img, b, lt.light)
        bb = draw_bean(img, b, lt.light)
        if bb is not None:
            box = bb if box is None else (min(box[0], bb[0]), min(box[1], bb[1]),
                                          max(box[2], bb[2]), max(box[3], bb[3]))
    img *= illumination(lt, h, w, p.zoom, cam, rng)[None] * np.asarray(lt.cast, np.float32)[:, None, None]
    if cam.angled:  # shallow depth of field: the far table goes soft
        sigma = {"macro": 5.0, "medium": 2.5, "wide": 1.2}[p.zoom]
        wgt = np.clip((0.42 - np.arange(h, dtype=np.float32) / h) / 0.32, 0, 1)[None, :, None]
        img = img * (1 - wgt) + blur(img, sigma) * wgt
    return img, list(box), lt


def _shake(img: np.ndarray, box: list[int], rng) -> tuple[np.ndarray, list[int]]:
    """Burst frame: slightly re-framed, with camera-shake motion blur."""
    h, w = img.shape[1:]
    s = 1.012  # tiny re-framing between burst frames
    ox, oy = rng.uniform(0, w * (1 - 1 / s)), rng.uniform(0, h * (1 - 1 / s))
    ang = rng.uniform(0, math.pi)
    dx, dy = 7 * math.cos(ang), 7 * math.sin(ang)
    chans = [Image.fromarray(np.ascontiguousarray(c)) for c in img]
    acc = np.zeros_like(img)
    steps = np.linspace(-0.5, 0.5, 9)
    for t in steps:
        data = (1 / s, 0, ox + t * dx, 0, 1 / s, oy + t * dy)
        for c in range(3):
            acc[c] += np.asarray(chans[c].transform((w, h), Image.AFFINE, data, Image.BILINEAR))
    out = blur(acc / len(steps), 1.5)
    xs = [(box[0] - ox - abs(dx) / 2) * s, (box[2] - ox + abs(dx) / 2) * s]
    ys = [(box[1] - oy - abs(dy) / 2) * s, (box[3] - oy + abs(dy) / 2) * s]
    nb = [max(0, int(xs[0])), max(0, int(ys[0])), min(w, math.ceil(xs[1])), min(h, math.ceil(ys[1]))]
    return out, nb


def _tone_lut(n: int = 4096) -> np.ndarray:
    """sqrt(linear) -> 8-bit sRGB-ish, with a soft highlight shoulder."""
    x = (np.arange(2 * n, dtype=np.float64) / n) ** 2
    x = 1.25 * x / (1.0 + 0.25 * x)
    return (np.clip(x, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


TONE_LUT = _tone_lut()


def _develop(lin: np.ndarray, noise: float, exposure: float, rng) -> np.ndarray:
    """Lens softness and vignette, sensor noise, tone curve + gamma -> uint8."""
    h, w = lin.shape[1:]
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None] * (h / max(w, h))
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :] * (w / max(w, h))
    lin = soften(lin) * (exposure * (1.0 - 0.3 * (xx ** 2 + yy ** 2)))[None]
    np.maximum(lin, 0, out=lin)
    # Photon noise grows with sqrt(signal); part of it is shared by the channels.
    # (uniform draws: 3x cheaper than normal ones, and invisible at this amplitude)
    grain = rng.random((3, h, w), dtype=np.float32) - np.float32(0.5)
    grain = grain * np.float32(1.7) + grain.mean(axis=0, keepdims=True) * np.float32(4.2)
    lin += np.float32(noise) * np.sqrt(lin + np.float32(0.002)) * grain
    idx = np.sqrt(np.clip(lin, 0, 3.99)) * np.float32(len(TONE_LUT) / 2)
    return np.ascontiguousarray(TONE_LUT[idx.astype(np.int32)].transpose(1, 2, 0))


def _exif(p: Plan, lt, size: tuple[int, int], rng) -> Image.Exif:
    ex = Image.Exif()
    stamp = p.when.strftime("%Y:%m:%d %H:%M:%S")
    ex[0x010F] = "clood studio"  # Make
    ex[0x0110] = "virtual camera"  # Model
    ex[0x0112] = p.orientation
    ex[0x0131] = "clood candy studio"
    ex[0x0132] = stamp
    focal, (d0, d1) = ZOOM[p.zoom]
    t, fnum, iso = EXPOSURE[p.lighting]
    e = ex.get_ifd(0x8769)
    e[0x9003] = stamp  # DateTimeOriginal
    e[0x9004] = stamp
    e[0x9209] = 0x19 if lt.flash else 0x10  # Flash fired (auto) / did not fire
    e[0x920A] = IFDRational(int(focal), 1)
    e[0x9206] = IFDRational(round(rng.uniform(d0, d1) * 100), 100)  # SubjectDistance, m
    e[0x829A] = t
    e[0x829D] = IFDRational(int(fnum * 10), 10)
    e[0x8827] = iso
    e[0xA002], e[0xA003] = size
    return ex


def render_studio(out_dir: Path, count: int = 32, seed: int = 0,
                  size: tuple[int, int] = (768, 576), look: str | None = None) -> list[StudioShot]:
    """Render `count` labelled jellybean photos under out_dir; also writes labels.json.
    ``look`` (looks.LOOKS) gives every shot a look pretraining never saw."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = _plan(count, seed)
    if look:
        apply_look(plans, look)
    # Shots are independent (own RNGs), so threads keep the output deterministic;
    # numpy and Pillow release the GIL for the heavy array work.
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        def run(ps: list[Plan]) -> dict[int, tuple]:
            return dict(zip([p.index for p in ps], pool.map(lambda p: _shoot(p, plans, seed, size), ps)))

        done = run(plans)
        hashes = {i: _hashes(d[0]) for i, d in done.items()}
        for _ in range(12):  # only the burst pair may look alike to a perceptual hash
            redo = _lookalikes(plans, hashes)
            if not redo:
                break
            for i in redo:
                plans[i].salt += 1
            done.update(run([plans[i] for i in redo]))
            hashes.update({i: _hashes(done[i][0]) for i in redo})
    shots = []
    for p in plans:
        im, labels, lt = done[p.index]
        if p.orientation == 6:  # camera held rotated: the sensor stores it sideways
            im = im.transpose(Image.Transpose.ROTATE_90)
        elif p.orientation == 8:
            im = im.transpose(Image.Transpose.ROTATE_270)
        dest = out_dir / p.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        exif = _exif(p, lt, im.size, np.random.default_rng([seed, 4, p.index]))
        im.save(dest, "JPEG", quality=90, exif=exif)
        shots.append(StudioShot(path=p.path, labels=labels))
    shots.sort(key=lambda s: s.path.rsplit("/", 1)[-1])
    index = {s.path: s.labels.model_dump(mode="json") for s in shots}
    (out_dir / "labels.json").write_text(json.dumps(index, indent=2) + "\n")
    return shots


def _hashes(im: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """8x8 difference hash and average hash, the usual near-duplicate detectors."""
    g = np.asarray(im.convert("L").resize((9, 8), Image.LANCZOS), np.float32)
    a = np.asarray(im.convert("L").resize((8, 8), Image.LANCZOS), np.float32)
    return (g[:, 1:] > g[:, :-1]).ravel(), (a > a.mean()).ravel()


def _lookalikes(plans: list[Plan], hs: dict[int, tuple], min_bits: int = 6) -> list[int]:
    """Shots to re-roll because they hash too close to another (non-burst) shot."""
    family = {i for p in plans if p.duplicate_of is not None for i in (p.index, p.duplicate_of)}
    keys = sorted(hs)
    clashes = []
    for n, i in enumerate(keys):
        for j in keys[n + 1:]:
            dd = int((hs[i][0] != hs[j][0]).sum())
            da = int((hs[i][1] != hs[j][1]).sum())
            if min(dd, da) < min_bits and not {i, j} <= family:
                clashes.append((i, j))
    hits = {i: sum(i in c for c in clashes) for i in keys}
    redo: set[int] = set()
    for i, j in clashes:
        if i in redo or j in redo:
            continue
        pick = [k for k in (j, i) if k not in family]
        redo.add(max(pick, key=lambda k: hits[k]))
    return sorted(redo)


def _shoot(p: Plan, plans: list[Plan], seed: int, size: tuple[int, int]):
    """Render and develop one plan (upright); the burst copy re-renders its source scene."""
    upright = size if p.orientation == 1 else (size[1], size[0])
    src = plans[p.duplicate_of] if p.duplicate_of is not None else p
    lin, box, lt = _scene(src, upright, seed)
    if src.salt % 2:  # re-rolled shots also swap sides, which moves the light too
        lin = np.ascontiguousarray(lin[:, :, ::-1])
        box = [lin.shape[2] - box[2], box[1], lin.shape[2] - box[0], box[3]]
    rng = np.random.default_rng([seed, 3, p.index, p.salt])
    if p.defect == "blurry":
        lin, box = _shake(lin, box, rng)
    exposure = lt.exposure * (0.035 if p.defect == "underexposed" else 1.0)
    im = Image.fromarray(_develop(lin, lt.noise, exposure, rng))
    labels = StudioLabels(
        brand=p.brand, speckled=p.brand == "speckled-co", colours=sorted(set(p.bean_colours)),
        count=len(p.bean_colours), arrangement=p.arrangement, background=p.background,
        background_colour=p.background_colour, lighting=p.lighting, flash=lt.flash, zoom=p.zoom,
        view=p.view, bean_box=[int(v) for v in box], orientation=p.orientation,
        duplicate_of=src.path if p.duplicate_of is not None else None, defect=p.defect,
    )
    return im, labels, lt
