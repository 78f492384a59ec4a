"""The family's sizes are counted, not looked up: on the meta device the counts must equal
what a real training step on the tiny base keeps, and the adapter what training attaches."""

import pytest
import torch

from clood_candy.records import TrainConfig


def real_step(base, recipe):
    """Trainable parameters and the bytes autograd keeps (weights excepted) on a real step."""
    from clood_candy_plugins.sd import lora

    pipe = base.pipe
    params = lora.attach(pipe, recipe)
    try:
        own = {p.untyped_storage().data_ptr() for p in pipe.unet.parameters()}
        saved: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in own:
                saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
            return t

        config = pipe.unet.config
        side = 64 // 8
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = pipe.unet(torch.randn(1, config.in_channels, side, side), torch.tensor([500]),
                            torch.randn(1, 77, config.cross_attention_dim)).sample
        out.float().pow(2).mean().backward()
        return sum(p.numel() for p in params), sum(saved.values())
    finally:
        lora.detach(pipe, recipe)


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_counts_on_the_meta_device_match_a_real_step(make_ctx, variant):
    ctx = make_ctx(base="tiny")
    recipe = TrainConfig(rank=4, alpha=4.0, variant=variant)
    size = ctx.family().model_size(ctx.config, recipe, 64)
    trainable, kept = real_step(ctx.base(), recipe)
    assert size.trainable_params == trainable
    if variant == "lora":  # DoRA's weight-norm path is not traced on meta tensors
        assert size.activation_elements * 4 == kept
    assert size.checkpointed_elements < size.activation_elements
    assert size.denoiser_params == sum(p.numel() for p in ctx.base().pipe.unet.parameters())
