"""A LoRA's metadata names the base it was trained on: real families by kohya's and
modelspec's names (A1111 filters its LoRA list by them), toys by their own."""

import pytest
from clood_candy_plugins.sd.metadata import lora_metadata

from clood_candy.records import TrainConfig, TrainItem, TrainSet


def metadata(family: str, base: str, toy: bool) -> dict[str, str]:
    data = TrainSet(train=[TrainItem(image="x.png", caption="jlybn, jellybean")], validation=[], trigger="jlybn",
                    class_word="jellybean", resolution=512)
    return lora_metadata(family=family, base_name=base, config=TrainConfig(), data=data, steps=10, target=10,
                         resolution=512, prediction_type="epsilon", output_name="jlybn", data_facts={}, toy=toy)


@pytest.mark.parametrize("family, base, version, architecture", [
    ("sd1", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd_v1", "stable-diffusion-v1/lora"),
    ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
])
def test_a_real_base_is_named_by_its_family(family, base, version, architecture):
    meta = metadata(family, base, toy=False)
    assert meta["ss_base_model_version"] == version and meta["modelspec.architecture"] == architecture
    assert meta["ss_sd_model_name"] == base and "clood_toy_base" not in meta


@pytest.mark.parametrize("family, base", [("sd1", "tiny"), ("sdxl", "tiny-sdxl")])
def test_a_toy_base_is_never_named_as_a_real_family(family, base):
    meta = metadata(family, base, toy=True)
    assert meta["ss_base_model_version"] == f"clood_{base}"
    assert not meta["modelspec.architecture"].startswith("stable-diffusion")
    assert base in meta["clood_toy_base"]
