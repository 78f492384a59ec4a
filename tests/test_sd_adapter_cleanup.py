"""A config that fails must leave the shared base exactly as it found it: the next config
in the fight trains as if the failed one had never run."""

import pytest
import torch
from support.sd import module_ctx, recipe, train_set


@torch.no_grad()
def prediction(pipe) -> torch.Tensor:
    """The UNet's answer to one fixed question: the same before and after means the same model."""
    gen = torch.Generator().manual_seed(0)
    unet = pipe.unet
    latents = torch.randn((1, unet.config.in_channels, 8, 8), generator=gen)
    text = torch.randn((1, 77, unet.config.cross_attention_dim), generator=gen)
    return unet(latents, torch.tensor([500]), encoder_hidden_states=text).sample


def adapters(pipe) -> dict[str, list[str]]:
    return {name: sorted(getattr(getattr(pipe, name), "peft_config", None) or {})
            for name in ("unet", "text_encoder")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cleanup")
    ctx = module_ctx(root, base="tiny")
    return ctx, ctx.family(), ctx.base(), train_set(root / "prep"), root


def test_a_config_that_fails_while_attaching_leaves_no_adapter_and_the_next_one_trains(tiny, monkeypatch):
    ctx, family, base, data, root = tiny
    before = adapters(base.pipe)
    answer = prediction(base.pipe)

    def broken(*args, **kwargs):
        raise RuntimeError("text encoder adapter exploded")

    # The UNet's adapter goes on first; the text encoder's then fails.
    monkeypatch.setattr(type(base.pipe.text_encoder), "add_adapter", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        family.train(base, data, recipe(name="te", steps=2, train_text_encoder=True), root / "te", ctx)
    monkeypatch.undo()
    assert adapters(base.pipe) == before
    assert torch.equal(prediction(base.pipe), answer)

    good = family.train(base, data, recipe(name="good", steps=2), root / "good", ctx)
    assert good.error is None and good.lora
    assert adapters(base.pipe) == before


def test_a_config_that_fails_while_training_leaves_no_adapter(tiny, monkeypatch):
    ctx, family, base, data, root = tiny
    before = adapters(base.pipe)
    from clood_candy_plugins.sd import recipe as sd_recipe

    def broken(*args, **kwargs):
        raise RuntimeError("optimizer exploded")

    monkeypatch.setattr(sd_recipe, "make_optimizer", broken)
    with pytest.raises(RuntimeError, match="optimizer exploded"):
        family.train(base, data, recipe(name="opt", steps=2, train_text_encoder=True), root / "opt", ctx)
    assert adapters(base.pipe) == before


@pytest.mark.parametrize("variant", ["loha", "lokr"])
def test_a_lora_trains_after_a_lycoris_file_was_verified_and_sampled_on_the_same_base(tiny, variant):
    # SD1's proj_in is a 1x1 conv, in the default targets of every variant: peft cannot put a
    # LoRA around a conv a LoHa/LoKr layer wraps, and deleting an adapter leaves its wrapper.
    ctx, family, base, data, root = tiny
    short = dict(steps=2, checkpoint_every=100, validate_every=100)
    lycoris = family.train(base, data, recipe(name=variant, variant=variant, **short), root / variant, ctx)
    assert lycoris.error is None, lycoris.error
    sampled = family.generate(base, "jlybn", seed=1, steps=1, lora=lycoris.lora)  # stays loaded for more samples
    base.adapters.activate(None, 0.0)
    answer = prediction(base.pipe)
    after = family.train(base, data, recipe(name=f"lora-after-{variant}", **short), root / f"after-{variant}", ctx)
    assert after.error is None and after.verification["ok"], after.error
    base.adapters.activate(None, 0.0)
    assert torch.equal(prediction(base.pipe), answer)  # the base alone still answers as it did
    again = family.generate(base, "jlybn", seed=1, steps=1, lora=lycoris.lora)  # and the LyCORIS file still samples
    assert again.tobytes() == sampled.tobytes()
