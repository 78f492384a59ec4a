"""The dino-subject sample judge: DreamBooth's DINO metric, on a tiny Dinov2 built offline
(random weights: the mechanics — loading a folder, class-token cosines, pairing each sample
with its own held-out photo — not a trained model's figures)."""

import shutil

import pytest

from clood_candy.records import PickCandidate, PickImage, PickPrompt, PickSheet


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    import torch
    from transformers import Dinov2Config, Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    folder = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=32)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _sheet(ctx, root) -> PickSheet:
    """'copies' draws each held-out photo itself; 'elsewhere' draws the other one's scene."""
    from clood_candy.studio import render_studio

    render_studio(root / "photos", count=6, seed=3)
    photos = sorted((root / "photos").rglob("*.jpg"))[:2]
    prompts = [PickPrompt(text=f"jlybn, held-out {k}", kind="held-out", photo=str(p)) for k, p in enumerate(photos)]
    images = []
    for cand, sources in (("copies", photos), ("elsewhere", photos[::-1])):
        for k, source in enumerate(sources):
            path = ctx.run.path("train", "pick", cand, f"p{k + 1}-seed1.jpg")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
            images.append(PickImage(candidate=cand, prompt=k, seed=1, image=ctx.run.rel(path)))
    candidates = [PickCandidate(name=n, config="c", step=10 * (i + 1), lora=f"{n}.safetensors", val_loss=loss)
                  for i, (n, loss) in enumerate((("copies", 0.2), ("elsewhere", 0.1)))]
    return PickSheet(candidates=candidates, prompts=prompts, seeds=[1], images=images, held_out=[str(p) for p in photos],
                     training=[], trigger="jlybn", class_word="jellybean")


def test_a_sample_that_is_its_held_out_photo_scores_one_and_ranks_first(make_ctx, tmp_path, tiny_dino):
    from clood_candy.pick.panel import judge_sheet

    ctx = make_ctx(plugins={"dino": {"model": str(tiny_dino)}})
    judge = ctx.registry.get("judge", "dino-subject")
    assert judge.unavailable(ctx) is None
    sheet = _sheet(ctx, tmp_path)
    scores = judge.score_samples(sheet, ctx)
    assert scores["copies"].score == pytest.approx(1.0, abs=1e-5)
    assert scores["elsewhere"].score < scores["copies"].score
    assert scores["copies"].reason.startswith("DINO 1.000 over 2 held-out sample(s)")
    assert judge_sheet(ctx, sheet, {"dino-subject": 1.0}).winner == "copies"


def test_without_the_model_it_sits_out_in_one_line(make_ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = make_ctx(plugins={"dino": {"model": "clood-candy-tests/no-such-dino"}})
    reason = ctx.registry.get("judge", "dino-subject").unavailable(ctx)
    assert "not in the Hugging Face cache" in reason and "\n" not in reason


def test_the_default_panel_seats_it_and_an_unknown_option_is_named(make_ctx):
    from clood_candy.config import PickSettings

    assert "dino-subject" in PickSettings().judges
    ctx = make_ctx(plugins={"dino": {"modle": "facebook/dinov2-small"}})
    assert "modle" in ctx.registry.get("judge", "dino-subject").unavailable(ctx)


def test_an_unreadable_sample_is_not_a_crash_of_the_pick(make_ctx, tmp_path, tiny_dino):
    from clood_candy.pick.panel import judge_sheet

    ctx = make_ctx(plugins={"dino": {"model": str(tiny_dino)}})
    sheet = _sheet(ctx, tmp_path)
    ctx.run.path(sheet.images[0].image).write_bytes(b"not a png")
    result = judge_sheet(ctx, sheet, {"dino-subject": 1.0, "validation-loss": 1.0})
    assert result.sat_out["dino-subject"].startswith("failed: ")  # it loses its vote; the pick goes on
    assert result.winner == "elsewhere" and set(result.scores) == {"validation-loss"}
