"""The SD base's teaching methods (plugins/sd/teaching.py) that the report's VAE and
diffusion sections draw: latents, reconstruction, noising and the model's x0 guess."""

import numpy as np
import pytest
import torch
from clood_candy_plugins.sd import teaching
from clood_candy_plugins.sd.base import SDBase
from clood_candy_plugins.sd.loading import load_pipeline
from clood_candy_plugins.sd.teaching import TeachingMixin
from PIL import Image


@pytest.fixture(scope="module")
def base():
    return SDBase(load_pipeline("tiny", "sd1", dtype=torch.float32), "tiny", device=torch.device("cpu"))


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8) + 200
    image[16:48, 20:44] = rng.integers(0, 255, (32, 24, 3))
    path = tmp_path / "bean.png"
    Image.fromarray(image).save(path)
    return path


def test_the_family_base_can_teach():
    assert issubclass(SDBase, TeachingMixin)  # what the report's sections 4, 5 and 7 call


def test_latents_are_eight_times_smaller_and_decode_back_to_a_picture(base, photo):
    latents = base.encode_latents(photo)
    assert latents.shape == (4, 8, 8) and latents.dtype == np.float32
    rebuilt = base.decode_latents(latents)
    assert rebuilt.size == (64, 64) and rebuilt.mode == "RGB"
    assert np.array_equal(np.asarray(base.encode_latents(photo)), latents)  # the mean, not a random sample


def _oracle(clean: torch.Tensor, alphas: torch.Tensor, kind: str):
    """A perfect model: it knows the clean latent, so it predicts exactly the noise (or v)."""

    def predict(unet, noisy, timesteps, cond):
        a = alphas[timesteps].view(-1, 1, 1, 1)
        eps = (noisy.float() - a.sqrt() * clean) / (1 - a).sqrt()
        return eps if kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * clean

    return predict


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_a_perfect_models_guess_is_the_clean_photo_at_every_timestep(base, photo, monkeypatch, kind):
    monkeypatch.setattr(SDBase, "prediction_type", property(lambda self: kind))
    clean = torch.from_numpy(base.encode_latents(photo))[None]
    monkeypatch.setattr(teaching, "predict", _oracle(clean, base.noise_scheduler().alphas_cumprod.float(), kind))
    target = np.asarray(base.decode_latents(clean[0].numpy()), dtype=np.int16)
    steps = base.denoise_steps(photo, "jlybn, jellybean", [10, 500, 990], seed=3)
    assert [t for t, _, _ in steps] == [10, 500, 990]
    for t, noisy, guess in steps:
        assert np.abs(np.asarray(guess, dtype=np.int16) - target).max() <= 2, f"x0 guess wrong at t={t}"
    # The noised latent drifts from the photo as t grows: the schedule, not a constant.
    drift = [np.abs(np.asarray(noisy, dtype=np.int16) - target).mean() for _, noisy, _ in steps]
    assert drift[0] < drift[-1]


def test_reading_v_as_epsilon_would_show_the_wrong_guess(base, photo, monkeypatch):
    # The same perfect v-model read as an epsilon model: the test above can fail.
    clean = torch.from_numpy(base.encode_latents(photo))[None]
    monkeypatch.setattr(teaching, "predict", _oracle(clean, base.noise_scheduler().alphas_cumprod.float(), "v_prediction"))
    target = np.asarray(base.decode_latents(clean[0].numpy()), dtype=np.int16)
    _, _, guess = base.denoise_steps(photo, "jlybn", [500], seed=3)[0]
    assert np.abs(np.asarray(guess, dtype=np.int16) - target).max() > 2


def test_signal_share_falls_from_photo_to_noise_and_parameters_are_the_unets(base):
    shares = base.signal_share([0, 250, 500, 750, 999])
    assert shares[0] > 0.99 and shares[-1] < 0.01 and shares == sorted(shares, reverse=True)
    assert base.parameter_count() == sum(p.numel() for p in base.pipe.unet.parameters()) > 1_000_000
