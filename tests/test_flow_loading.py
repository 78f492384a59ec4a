"""Which family claims a base, and loading a Flux or SD3 base from what a user names: the
Hub ids, folders and toys are the flow families', never SD's, and a Hub id that cannot be
reached is one line naming the id."""

import shutil

import pytest

from clood_candy.errors import UserError
from clood_candy_plugins.flow import loading
from clood_candy_plugins.flow.family import FLUX, SD3, FluxFamily, SD3Family
from clood_candy_plugins.sd.family import SD1Family, SDXLFamily


@pytest.mark.parametrize("base, family", [
    ("tiny-flux", "flux"), ("black-forest-labs/FLUX.1-dev", "flux"), ("black-forest-labs/FLUX.1-schnell", "flux"),
    ("someone/my-flux.1-finetune", "flux"), ("tiny-sd3", "sd3"), ("stabilityai/stable-diffusion-3.5-medium", "sd3"),
    ("stabilityai/stable-diffusion-3-medium-diffusers", "sd3"), ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd1"),
    ("black-forest-labs/FLUX.1-Fill-dev", None), ("black-forest-labs/FLUX.1-Kontext-dev", None),
    ("stabilityai/stable-diffusion-3.5-large-controlnet-canny", None),
])
def test_each_base_has_one_family(base, family):
    claimed = [f.name for f in (SD1Family(), SDXLFamily(), FluxFamily(), SD3Family()) if f.matches(base)]
    assert claimed == ([family] if family else [])


def test_a_diffusers_folder_is_claimed_by_its_pipeline_class(tmp_path):
    for kind in (FLUX, SD3):
        folder = tmp_path / kind.family
        shutil.copytree(kind.tiny_folder(), folder)
        assert loading.claims(kind, str(folder)) and not loading.claims(FLUX if kind is SD3 else SD3, str(folder))
        loaded = loading.load(kind, str(folder))
        assert loaded.kind == "folder" and type(loaded.pipe).__name__ == kind.pipeline


def test_an_unreachable_hub_id_is_one_line(network_attempts, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # nothing cached
    with pytest.raises(UserError) as caught:
        loading.load(FLUX, "black-forest-labs/FLUX.1-dev")
    message = str(caught.value)
    assert "\n" not in message and "'black-forest-labs/FLUX.1-dev'" in message and "gated" in message
