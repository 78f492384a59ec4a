"""The whole pipeline on real-size SD1.5 and SDXL architectures (random weights, local
diffusers folders built from the shipped configs): a few steps at a small resolution on
the CPU must end in a LoRA that is verified and patches every module a kohya LoRA of that
family patches. Slow: minutes, and several GB of memory and disk. No checkpoint: the final LoRA is saved
and verified once (each verification of a real-size SDXL takes a minute on 2 cores)."""

import json

import pytest
from click.testing import CliRunner
from safetensors import safe_open
from support.prep import candy_photo
from support.realsize import random_weight_folder

from clood_candy.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("realsize")]  # several GB each: one at a time

CONFIG = """
[caption]
captioners = ["baseline", "vision-stats"]
judges = {rubric = 1.0}

[train.defaults]
steps = 2
rank = 4
alpha = 4.0
batch_size = 1
checkpoint_every = 100
validate_every = 2
train_text_encoder = true

[[train.fight.configs]]
name = "only"
steps = 2
rank = 4
alpha = 4.0
checkpoint_every = 100
validate_every = 2
train_text_encoder = true

[sample]
prompts = ["a photo of jlybn jellybean"]
weights = [1.0]
seeds = [1]
steps = 1
"""


KOHYA_LAYERS = {"sd1": (192, 72), "sdxl": (722, 264)}  # (UNet, text encoders) modules a kohya LoRA patches


def _photos(folder):
    folder.mkdir()
    for i in range(5):
        blobs = ((200 + 90 * i, 220 + 40 * i, 70, 45), (520 - 50 * i, 380, 50, 35))
        candy_photo(blobs=blobs, seed=i, background=(150 + 10 * i, 150, 148)).save(folder / f"beans{i}.jpg")
    return folder


def _lora_modules(path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return {k.split(".")[0] for k in handle.keys() if k.endswith(".lora_down.weight")}


# Both in fp32: on a CPU without bf16 instructions (AMD EPYC here) one bf16 SDXL step takes
# 6 minutes, 20 times fp32's. Verification in bf16 and fp16 is tested on the tiny base
# (test_sd_verify.py), with the tolerance that real-size depth needs (verify.CHANGE_SHARE).
@pytest.mark.parametrize("family, dtype", [("sd1", "fp32"), ("sdxl", "fp32")])
def test_dogfood_on_a_real_size_architecture_trains_and_verifies(tmp_path, family, dtype):
    base = random_weight_folder(family, dtype)
    config = tmp_path / "clood.toml"
    config.write_text(CONFIG + f'\n[plugins.sd]\ndtype = "{dtype}"\n')
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["dogfood", "candy", str(_photos(tmp_path / "photos")), "--base", str(base),
                                      "--resolution", "64", "--config", str(config), "--run-dir", str(run), "-q",
                                      "--stages", "prep,caption,train"])
    assert result.exit_code == 0, result.output
    outcome = json.loads((run / "train" / "outcome.json").read_text())
    assert outcome["error"] is None
    assert outcome["verification"]["ok"] and outcome["verification"]["reproduces_trained"]
    modules = _lora_modules(run / outcome["lora"])
    # kohya's networks/lora.py on this architecture: every Linear (and 1x1 conv) of the UNet's
    # transformer blocks, and each text encoder layer's attention and MLP (see test_sd_targets)
    unet, text = KOHYA_LAYERS[family]
    assert len([m for m in modules if m.startswith("lora_unet_")]) == unet
    assert len([m for m in modules if m.startswith("lora_te")]) == text
