"""Aspect-bucketed training on the tiny bases (prep.buckets): a mixed 3:2 / square / 2:3
set trains at its buckets (no square crop), every batch is one bucket, validation loss
falls and the LoRA is saved and verified; a continued run equals an uninterrupted one;
SDXL's time ids carry each photo's true size and crop; prior preservation and the
denoising-error judge work with bucketed images; with buckets off nothing changes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from support.sd import module_ctx, recipe

from clood_candy.records import TrainItem, TrainSet
from clood_candy_plugins.sd import bucketed, denoise, objective, step

# name: (image size, photo size, crop box in the photo, bucket at 64 px, SDXL time ids)
ITEMS = {
    "wide-a": ((96, 64), (1200, 800), [100, 50, 1060, 690], (80, 48), [800, 1200, 6, 8, 48, 80]),
    "wide-b": ((96, 64), None, None, (80, 48), [64, 96, 2, 0, 48, 80]),
    "square": ((64, 64), None, None, (64, 64), [64, 64, 0, 0, 64, 64]),
    "tall": ((64, 96), (800, 1200), [0, 0, 800, 1200], (48, 80), [1200, 800, 0, 2, 80, 48]),
    "val-43": ((96, 72), None, None, (80, 48), [72, 96, 6, 0, 48, 80]),
    "val-square": ((64, 64), None, None, (64, 64), [64, 64, 0, 0, 64, 64]),
}


def mixed_set(folder: Path, buckets: bool = True) -> TrainSet:
    """Bean-like ellipses on a light background at 3:2, 1:1, 2:3 and 4:3."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for name, ((w, h), original, box, _, _) in ITEMS.items():
        img = np.full((h, w, 3), 235, np.uint8)
        y, x = np.mgrid[:h, :w]
        cy, cx = h // 2 + rng.integers(-h // 8, h // 8), w // 2 + rng.integers(-w // 8, w // 8)
        img[((y - cy) / 1.3) ** 2 + ((x - cx) / 1.8) ** 2 < (min(w, h) // 5) ** 2] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"{name}.png")
        items.append(TrainItem(image=str(folder / f"{name}.png"), caption=f"jlybn, jellybean, {name}",
                               original_size=original, crop_box=box))
    return TrainSet(train=items[:4], validation=items[4:], trigger="jlybn", class_word="jellybean", resolution=64,
                    buckets=buckets)


def bucket_of(data: TrainSet, index: int) -> tuple[int, int]:
    return ITEMS[Path(data.train[index].image).stem][3]


class Spy:
    """Records the training steps' batches and the UNet calls' latent shapes and time ids."""

    def __init__(self, monkeypatch):
        self.batches, self.calls = [], []
        draw, guess = step.bucket_batch_indices, objective.predict

        def batches(*args, **kwargs):
            self.batches.append(draw(*args, **kwargs))
            return self.batches[-1]

        def predict(unet, noisy, timesteps, cond):
            ids = None if cond.time_ids is None else cond.time_ids.float().cpu().tolist()
            self.calls.append((tuple(noisy.shape), ids))
            return guess(unet, noisy, timesteps, cond)

        monkeypatch.setattr(step, "bucket_batch_indices", batches)
        monkeypatch.setattr(objective, "predict", predict)  # what a training step asks the UNet through


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdbuckets")
    ctx = module_ctx(root, base="tiny")
    family, base = ctx.family(), ctx.base()
    data = mixed_set(root / "photos")
    out = root / "train"
    staged = [family.train(base, data, recipe(), out / "staged", ctx, max_steps=n) for n in (10, 20)]
    with pytest.MonkeyPatch.context() as patch:
        spy = Spy(patch)
        direct = family.train(base, data, recipe(), out / "direct", ctx)
    return {"ctx": ctx, "family": family, "base": base, "data": data, "staged": staged[-1], "direct": direct,
            "spy": spy, "root": root}


def test_each_batch_is_one_bucket_at_its_own_size_and_every_photo_is_seen(trained):
    data, spy = trained["data"], trained["spy"]
    assert len(spy.batches) == 20 and len(spy.calls) == 20
    for batch, (shape, _) in zip(spy.batches, spy.calls):
        buckets = {bucket_of(data, i) for i in batch}
        assert len(buckets) == 1 and len(batch) == 2
        (w, h), = buckets
        assert shape == (2, 4, h // 8, w // 8)  # trained at the bucket: no square crop
    assert {shape for shape, _ in spy.calls} == {(2, 4, 6, 10), (2, 4, 8, 8), (2, 4, 10, 6)}
    first_epoch = spy.batches[:3]  # 2 wide, 1 square, 1 tall at batch 2: three batches an epoch
    assert {i for b in first_epoch for i in b} == {0, 1, 2, 3}


def test_bucketed_training_learns_and_saves_a_verified_lora(trained):
    outcome = trained["direct"]
    assert outcome.error is None, outcome.error
    assert [s for s, _ in outcome.val_loss] == [0, 10, 20]
    assert outcome.final_val_loss < 0.9 * outcome.val_loss[0][1]
    assert outcome.verification["ok"] and outcome.verification["reproduces_trained"]
    assert any(k.startswith("lora_unet_") for k in load_file(outcome.lora))


def test_continuing_a_bucketed_run_equals_training_in_one_go(trained):
    staged, direct = trained["staged"], trained["direct"]
    assert staged.error is None, staged.error
    assert staged.train_loss == direct.train_loss and staged.val_loss == direct.val_loss
    a, b = load_file(staged.lora), load_file(direct.lora)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_buckets_are_part_of_the_runs_identity(trained, tmp_path):
    """A bucketed run's checkpoints are not continued as a square run."""
    import shutil

    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]
    folder = shutil.copytree(trained["root"] / "train" / "staged", tmp_path / "staged")
    square = family.train(base, data.model_copy(update={"buckets": False}), recipe(), folder, ctx, max_steps=10)
    assert square.error is None and [s for s, _ in square.train_loss] == list(range(1, 11))  # started afresh


def test_with_buckets_off_the_same_photos_train_as_centre_squares(trained, tmp_path, monkeypatch):
    family, base, ctx = trained["family"], trained["base"], trained["ctx"]
    data = trained["data"].model_copy(update={"buckets": False})
    spy = Spy(monkeypatch)
    outcome = family.train(base, data, recipe(steps=2, checkpoint_every=100, validate_every=100), tmp_path / "sq", ctx)
    assert outcome.error is None and spy.batches == []
    assert {shape for shape, _ in spy.calls} == {(2, 4, 8, 8)}
    with safe_open(str(outcome.lora), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_enable_bucket"] == "False" and meta["ss_bucket_info"] == "null"


def test_the_lora_says_which_buckets_it_trained_at_as_kohya_does(trained):
    with safe_open(str(trained["direct"].lora), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_enable_bucket"] == "True"
    info = json.loads(meta["ss_bucket_info"])
    counts = {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()}
    assert counts == {(80, 48): 2, (64, 64): 1, (48, 80): 1}  # two 3:2, one square, one 2:3 training photo
    assert 0 <= info["mean_img_ar_error"] < 0.2
    assert meta["ss_min_bucket_reso"] == "48" and meta["ss_max_bucket_reso"] == "80"


def test_prior_preservation_beside_bucketed_photos(trained):
    family, base, ctx, data = trained["family"], trained["base"], trained["ctx"], trained["data"]

    def train(name, **changes):
        # Three steps: one epoch, so the wide, square and tall batches each meet the square class images.
        config = recipe(name=name, steps=3, checkpoint_every=100, validate_every=100, caption_dropout=0.0, **changes)
        return family.train(base, data, config, ctx.run.path("train", "prior", name), ctx)

    prior = {"prior_preservation": True, "num_class_images": 2}
    weighted, unweighted, plain = train("prior", **prior), train("w0", prior_loss_weight=0.0, **prior), train("plain")
    assert weighted.error is None and unweighted.error is None, (weighted.error, unweighted.error)
    assert [v for _, v in unweighted.train_loss] == pytest.approx([v for _, v in plain.train_loss], rel=1e-5)
    assert all(p > q * 1.05 for (_, p), (_, q) in zip(weighted.train_loss, plain.train_loss))


def test_the_judge_measures_each_photo_at_its_bucket(tmp_path):
    ctx = module_ctx(tmp_path, base="tiny", prep={"buckets": True})
    base = ctx.base()
    data = mixed_set(tmp_path / "photos")
    paths = [Path(i.image) for i in data.train]
    shapes = [tuple(f.latent.shape) for f in base.bucket_latents(paths)]
    assert shapes == [(4, 6, 10), (4, 6, 10), (4, 8, 8), (4, 10, 6)]
    captions = ["jlybn, a red jellybean", "a city at night", "jlybn, jellybean", "jlybn, a tall jellybean"]
    together = base.denoising_error(paths, captions, seed=1)
    alone = [base.denoising_error([p], [c], seed=1)[0] for p, c in zip(paths, captions)]
    assert together == pytest.approx(alone, rel=1e-4)
    assert base.denoising_error(paths, captions, seed=1) == together


@pytest.mark.slow
def test_sdxl_time_ids_carry_each_photos_size_and_crop(tmp_path, monkeypatch):
    ctx = module_ctx(tmp_path, base="tiny-sdxl")
    data = mixed_set(tmp_path / "photos")
    spy = Spy(monkeypatch)
    validated = []
    measure = denoise.predict

    def predict(unet, noisy, timesteps, cond):
        validated.extend(tuple(row) for row in cond.time_ids.float().cpu().tolist())
        return measure(unet, noisy, timesteps, cond)

    monkeypatch.setattr(denoise, "predict", predict)
    outcome = ctx.family().train(ctx.base(), data, recipe(steps=3, checkpoint_every=100, validate_every=100),
                                 tmp_path / "xl", ctx)
    assert outcome.error is None and outcome.verification["ok"], outcome.error
    expected = {i: ITEMS[Path(item.image).stem][4] for i, item in enumerate(data.train)}
    for batch, (_, ids) in zip(spy.batches, spy.calls):
        assert ids == [expected[i] for i in batch]
    assert {tuple(ITEMS[n][4]) for n in ("val-43", "val-square")} <= set(validated)  # validation too
    assert (64, 64, 0, 0, 64, 64) in {tuple(ids[0]) for _, ids in spy.calls}


def test_bucketed_latents_are_cached_by_size(trained):
    base, data = trained["base"], trained["data"]
    path = Path(data.train[0].image)
    first = base.bucket_latents([path], 64)[0]
    assert base.bucket_latents([path], 64)[0] is first  # cached
    larger = base.bucket_latents([path], 128)[0]  # another bucket: its own entry
    assert larger.fit.bucket == (160, 96) and tuple(larger.latent.shape) == (4, 12, 20)
    assert bucketed.bucket_of(path, 64) == (80, 48)
