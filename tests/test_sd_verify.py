"""Save-verification in the precision real runs use: a LoRA trained on a half-precision
base (bf16, fp16) verifies, and the check still catches a file that would not give the
trained model back, a wrong alpha or a module left out, at every precision.

Two checks catch them: the output of the file's adapter against the trained one's, within
a few eps of the base's dtype (it sees what changes the probe by more than that), and every
trained layer's weight change against the file's (it sees a single module at any precision)."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from support.sd import module_ctx, recipe, train_set

from clood_candy_plugins.sd import lora


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module", params=list(DTYPES))
def env(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"verify-{request.param}")
    ctx = module_ctx(root, base="tiny", plugins={"sd": {"dtype": request.param}})
    return {"ctx": ctx, "family": ctx.family(), "base": ctx.base(), "data": train_set(root / "prep"),
            "dtype": request.param, "root": root}


def train(env, name: str, tamper=None, monkeypatch=None, **changes):
    """Train the tiny base; ``tamper(tensors)`` edits the kohya file before it is verified."""
    if tamper is not None:
        write = lora.write_lora_files

        def tampered(*args, **kwargs):
            kohya, diffusers_file = write(*args, **kwargs)
            with safe_open(str(kohya), framework="pt") as handle:
                meta = handle.metadata()
            save_file(tamper(load_file(str(kohya))), str(kohya), metadata=meta)
            return kohya, diffusers_file

        monkeypatch.setattr(lora, "write_lora_files", tampered)
    config = recipe(steps=6, checkpoint_every=100, validate_every=100, **changes)
    return env["family"].train(env["base"], env["data"], config, env["root"] / name, env["ctx"])


def test_a_lora_trained_at_the_bases_precision_verifies(env):
    assert env["base"].pipe.unet.dtype == DTYPES[env["dtype"]]
    outcome = train(env, "plain")
    assert outcome.error is None, outcome.error
    v = outcome.verification
    assert v["ok"] and v["reproduces_trained"] and v["diffusers_file_reproduces"] and v["output_changed"], v
    assert v["weights_reproduce_trained"] and v["modules_not_in_file"] == []
    assert v["dtype"] == str(DTYPES[env["dtype"]]).removeprefix("torch.")
    # like with like: the same weights at the same precision give the same output (on the CPU, to the bit)
    assert v["reproduces_trained_max_diff"] <= v["reproduces_trained_tolerance"] / 8
    # and the tolerance is the dtype's: a few eps at the output's scale, far below what the LoRA changed
    assert v["reproduces_trained_tolerance"] < v["output_change"] / 2


def test_a_wrong_alpha_is_caught_by_the_output_check(env, monkeypatch):
    # alpha 2 in the file where 8 was trained: the file gives a quarter of the trained change
    outcome = train(env, "alpha", lambda t: {k: (torch.tensor(2.0) if k.endswith(".alpha") else v)
                                            for k, v in t.items()}, monkeypatch)
    v = outcome.verification
    assert not v["ok"] and v["reproduces_trained"] is False and v["weights_reproduce_trained"] is False, v
    assert not v["alpha_matches_config"] and "alpha [2.0]" in outcome.error


def test_a_missing_module_is_caught_at_any_precision(env, monkeypatch):
    gone = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v"
    outcome = train(env, "missing", lambda t: {k: v for k, v in t.items() if not k.startswith(gone + ".")}, monkeypatch)
    v = outcome.verification
    assert not v["ok"] and v["modules_not_in_file"] == [gone] and not v["weights_reproduce_trained"], v
    assert outcome.error == f"candy-t.safetensors lacks trained modules: {gone}"


def test_modules_left_out_that_change_the_output_are_caught_by_the_output_check(env, monkeypatch):
    # every cross-attention of the first down block gone (a converter that fails on attn2, say)
    outcome = train(env, "no-attn2", lambda t: {k: v for k, v in t.items() if "transformer_blocks_0_attn2" not in k},
                    monkeypatch)
    v = outcome.verification
    assert not v["ok"] and v["reproduces_trained"] is False, v
    assert v["reproduces_trained_max_diff"] > 2 * v["reproduces_trained_tolerance"]
