"""Loading bases: family detection, refusal of pickle checkpoints, one-line errors, and
configs-only folders that describe the real SD1.5 / SDXL architectures."""

import pytest
import torch
from clood_candy_plugins.sd.loading import detect_family, load_pipeline
from safetensors.torch import save_file

from clood_candy.errors import UserError


def test_family_detection(tmp_path):
    from clood_candy_plugins.sd.tiny import tiny_folder

    assert detect_family("tiny") == "sd1"
    assert detect_family("tiny-sdxl") == "sdxl"
    assert detect_family("runwayml/stable-diffusion-v1-5") == "sd1"
    assert detect_family("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"
    assert detect_family(str(tiny_folder("tiny"))) == "sd1"
    assert detect_family(str(tiny_folder("tiny-sdxl"))) == "sdxl"
    assert detect_family(str(tmp_path / "missing.ckpt")) == "sd1"  # so loading says "not found"
    assert detect_family("just some words") is None
    sdxl_file = tmp_path / "model.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2)}, str(sdxl_file))
    assert detect_family(str(sdxl_file)) == "sdxl"
    lora_file = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora_file))
    assert detect_family(str(lora_file)) is None


def test_families_are_registered_and_chosen_by_base(make_ctx):
    assert make_ctx(base="tiny").family().name == "sd1"
    assert make_ctx(base="tiny-sdxl").family().name == "sdxl"
    with pytest.raises(UserError, match="no model family"):
        make_ctx(base="just some words").family()


def test_pickle_checkpoint_refused_unless_allowed(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really a pickle")
    with pytest.raises(UserError, match="refusing to load model.ckpt: pickle") as refused:
        load_pipeline(str(ckpt), "sd1")
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError) as tried:  # allowed: it is read (and fails as the junk it is)
        load_pipeline(str(ckpt), "sd1", allow_pickle=True)
    assert not str(tried.value).startswith("refusing") and "model.ckpt" in str(tried.value)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "absent.safetensors", "not found"),
    (lambda d: d, "no model_index.json"),
    (lambda d: d / "words.txt", "is not"),
])
def test_bad_bases_give_one_line_errors(tmp_path, make, message):
    base = make(tmp_path)
    with pytest.raises(UserError, match=message) as err:
        load_pipeline(str(base), "sd1")
    assert "\n" not in str(err.value)


def test_a_lora_named_as_base_is_refused(tmp_path):
    path = tmp_path / "my_lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(UserError, match="not a Stable Diffusion checkpoint"):
        load_pipeline(str(path), "sd1")


def test_local_diffusers_folder_loads(make_ctx):
    from clood_candy_plugins.sd.tiny import tiny_folder

    ctx = make_ctx(base=str(tiny_folder("tiny")))
    base = ctx.base()
    assert base.family == "sd1" and base.kind == "folder" and not base.is_toy
    assert base.resolution == 512  # a real base trains at its native size


@pytest.mark.parametrize("family, unet, text, text_2", [
    ("sd1", 859_520_964, 123_060_480, None),
    ("sdxl", 2_567_463_684, 123_060_480, 694_659_840),
])
def test_shipped_configs_describe_the_real_architectures(family, unet, text, text_2):
    from accelerate import init_empty_weights
    from clood_candy_plugins.sd.loading import configs_folder
    from clood_candy_plugins.sd.tokenizer import clip_bpe_path
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if clip_bpe_path() is None:
        pytest.skip("configs folders need the real CLIP tokenizer files")
    folder = configs_folder(family)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with init_empty_weights():  # shapes only, no memory
        assert count(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))) == unet
        assert count(AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))) == 83_653_863
        assert count(CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))) == text
        if text_2:
            assert count(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))) == text_2
    assert (folder / "tokenizer" / "vocab.json").is_file()


def test_families_of_the_hub_ids_users_name_today():
    # the maintained SD1.5 copy, and SDXL derivatives whose names carry no "xl" hint
    assert detect_family("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd1"
    assert detect_family("Lykon/dreamshaper-8") == "sd1"
    assert detect_family("stabilityai/sdxl-turbo") == "sdxl"
    assert detect_family("playgroundai/playground-v2.5-1024px-aesthetic") == "sdxl"
    # transformer (flow-matching) bases are not SD UNets: no family claims them, so the error says so
    # instead of loading Flux as SD1.5
    for base in ("black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3.5-medium", "Qwen/Qwen-Image"):
        assert detect_family(base) is None, base


def test_the_default_base_is_one_that_exists():
    from clood_candy.config import CloodConfig

    assert CloodConfig().base == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_the_removed_runwayml_id_loads_its_maintained_copy(monkeypatch):
    from diffusers import StableDiffusionPipeline

    asked = []

    def from_pretrained(base, **kwargs):
        asked.append(base)
        raise OSError("offline")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", from_pretrained)
    with pytest.raises(UserError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        load_pipeline("runwayml/stable-diffusion-v1-5", "sd1")
    assert asked == ["stable-diffusion-v1-5/stable-diffusion-v1-5"]
