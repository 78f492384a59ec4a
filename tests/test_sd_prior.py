"""Prior preservation on the tiny base: the class images are drawn by the base once and
kept in the run, every config reuses them, they enter the loss with prior_loss_weight,
and the LoRA's metadata says how many there were."""

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from support.sd import module_ctx, recipe, train_set


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdprior")
    ctx = module_ctx(root, base="tiny")
    return {"ctx": ctx, "family": ctx.family(), "base": ctx.base(), "data": train_set(ctx.run.path("prep"))}


def train(env, name, **changes):
    config = recipe(name=name, steps=2, checkpoint_every=100, validate_every=100, caption_dropout=0.0, **changes)
    return env["family"].train(env["base"], env["data"], config, env["ctx"].run.path("train", "fight", name), env["ctx"])


def test_class_images_are_generated_once_kept_in_the_run_and_weighted_in_the_loss(env):
    prior = {"prior_preservation": True, "num_class_images": 3, "class_prompt": "a photo of jellybean"}
    first = train(env, "prior", **prior)
    assert first.error is None, first.error
    folders = list(env["ctx"].run.path("train", "class_images").iterdir())
    assert len(folders) == 1
    images = sorted(folders[0].iterdir())
    assert [p.name for p in images] == ["class-0000.png", "class-0001.png", "class-0002.png"]
    pixels = [np.asarray(Image.open(p)) for p in images]
    assert all(p.shape == (64, 64, 3) for p in pixels) and not np.array_equal(pixels[0], pixels[1])
    with safe_open(str(env["ctx"].run.path(first.lora)), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_num_reg_images"] == "3" and meta["ss_class_prompt"] == "a photo of jellybean"

    stamps = [p.stat().st_mtime_ns for p in images]
    unweighted = train(env, "prior-w0", prior_loss_weight=0.0, **prior)  # another config: same class images
    assert [p.stat().st_mtime_ns for p in sorted(folders[0].iterdir())] == stamps
    plain = train(env, "plain")
    # Weight 0: the class half of the batch adds nothing, so the loss is the photos' alone;
    # weight 1 adds the class images' error on top.
    assert [v for _, v in unweighted.train_loss] == pytest.approx([v for _, v in plain.train_loss], rel=1e-5)
    assert all(p > q * 1.05 for (_, p), (_, q) in zip(first.train_loss, plain.train_loss))


def test_default_class_prompt_and_count(env):
    from clood_candy_plugins.sd.prior import class_count, class_prompt

    config = recipe(prior_preservation=True)
    assert class_prompt(config, env["data"]) == "a photo of jellybean"
    assert class_count(config, env["data"]) == len(env["data"].train)
