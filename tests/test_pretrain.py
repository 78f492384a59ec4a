"""clood pretrain: the recipe runs end to end (a few steps each), writes folders diffusers
and transformers load, and a stopped stage resumes to exactly the weights it would have had."""

import json

import pytest
import torch
from click.testing import CliRunner

from clood_candy.cli import cli
from clood_candy.progress import Progress
from clood_candy_plugins.pretrain.data import caption_facts, draw_caption
from clood_candy_plugins.pretrain.loop import run_stage
from clood_candy_plugins.pretrain.recipe import StageSteps


@pytest.fixture(scope="module", autouse=True)
def commands():
    from clood_candy.plugins import load_plugins, pm

    load_plugins()
    if "pretrain" not in cli.commands:
        pm.hook.register_commands(cli=cli)


def _stage(folder, stop_at=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)

    def step(i):
        if stop_at is not None and i == stop_at:
            raise KeyboardInterrupt  # the user's Ctrl-C, mid-stage
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(8, 4, generator=gen)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return {"loss": loss.item()}

    cfg = StageSteps(steps=12, batch=8, lr=0.1, warmup=2, checkpoint_every=4)
    return model, run_stage("toy", folder, cfg, {"m": model}, opt, step, Progress(quiet=True))


def test_a_stopped_stage_resumes_to_the_same_weights(tmp_path):
    straight, record = _stage(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _stage(tmp_path / "stopped", stop_at=9)
    saved = torch.load(tmp_path / "stopped" / "state.pt", weights_only=False)
    assert saved["record"]["step"] == 8  # the last checkpoint before the stop
    resumed, again = _stage(tmp_path / "stopped")
    assert again["step"] == 12 and record["log"][-1]["loss"] < record["log"][0]["loss"]
    assert torch.equal(straight.weight, resumed.weight)
    assert again["log"][-1]["step"] == 12


def test_captions_say_only_what_the_labels_say():
    import random

    from clood_candy.studio.labels import StudioLabels

    labels = StudioLabels(brand="sunkist", speckled=False, colours=["green", "red"], count=6, arrangement="pile",
                          background="cloth", background_colour="blue", lighting="night", flash=False,
                          zoom="macro", view="top-down", bean_box=[0, 0, 9, 9])
    facts = set(caption_facts(labels))
    assert {"red", "green", "pile", "blue cloth", "dim light", "macro close-up", "night"} <= facts
    for seed in range(20):
        text = draw_caption(labels, random.Random(seed))
        if text.startswith("jellybean, "):  # tags: only the labels' facts
            assert set(text.split(", ")[1:]) <= facts
        assert not any(word in text for word in ("wooden", "white", "daylight", "yellow", "scattered"))


@pytest.mark.slow
def test_smoke_recipe_writes_loadable_folders(tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "candy"
    result = CliRunner().invoke(cli, ["pretrain", "candy-mini", "--out", str(out), "--smoke", "-q"])
    assert result.exit_code == 0, result.output
    pipe = StableDiffusionPipeline.from_pretrained(out / "base", local_files_only=True)
    assert pipe.vae_scale_factor == 4
    from safetensors import safe_open

    with safe_open(str(out / "base" / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # shipped in fp16
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    CLIPModel.from_pretrained(out / "clip")
    CLIPProcessor.from_pretrained(out / "clip")
    record = json.loads((out / "pretraining" / "record.json").read_text())
    assert set(record["stages"]) == {"clip", "vae", "vae_decoder", "unet"} and record["command"].startswith("clood pretrain")
    assert record["figures"]["megabytes"] <= 30
    # The decoder's colour stage left the encoder, so the latents the UNet learned in, alone.
    from diffusers import AutoencoderKL

    trained = torch.load(out / "work" / "vae" / "state.pt", weights_only=False)["modules"]["vae"]
    shipped = AutoencoderKL.from_pretrained(out / "base", subfolder="vae").state_dict()
    for key in ("encoder.conv_in.weight", "quant_conv.weight", "decoder.conv_out.weight"):
        same = torch.equal(shipped[key], trained[key].half())
        assert same == (not key.startswith("decoder")), key
    assert sorted(p.name for p in (out / "pretraining" / "snapshots").glob("*.png"))  # a model learning to draw
    # A second run finds every stage done: nothing is trained again.
    stamp = (out / "work" / "unet" / "state.pt").stat().st_mtime_ns
    assert CliRunner().invoke(cli, ["pretrain", "candy-mini", "--out", str(out), "--smoke", "-q"]).exit_code == 0
    assert (out / "work" / "unet" / "state.pt").stat().st_mtime_ns == stamp


def test_turning_hues_keeps_greys_and_moves_red_to_green():
    from clood_candy_plugins.pretrain.stages import rotate_hue

    pixels = torch.tensor([[1.0, -1.0, -1.0], [0.2, 0.2, 0.2]]).T.reshape(1, 3, 1, 2)  # red, grey
    turned = rotate_hue(pixels, torch.tensor([2 * torch.pi / 3]))
    assert torch.allclose(turned[0, :, 0, 0], torch.tensor([-1.0, 1.0, -1.0]), atol=1e-5)
    assert torch.allclose(turned[0, :, 0, 1], pixels[0, :, 0, 1], atol=1e-5)
    assert torch.equal(rotate_hue(pixels, torch.zeros(1)), pixels)
