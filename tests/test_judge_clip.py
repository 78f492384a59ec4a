"""The clip judge on a tiny random CLIPModel built offline (the same classes as
openai/clip-vit-base-patch32, a few hundred kilobytes of weights).

Random weights make the scores meaningless as a judgement; these tests prove the real
code path: every candidate scored, batching, trigger removal, truncation, bad input."""

import re

import numpy as np
import pytest
from PIL import Image

from clood_candy.records import Candidate, FightItem, Photo

WINDOW = 32  # the tiny model's text window (real CLIPs: 77)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """CLIPModel + CLIPProcessor: a byte-level CLIPTokenizer (every byte a token, no merges)
    and a 32-pixel CLIPImageProcessor."""
    import torch
    from clood_candy_plugins.sd.tokenizer import write_tokenizer
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-clip")
    write_tokenizer(folder)  # byte-level vocab.json and a header-only merges.txt
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**small, "vocab_size": len(tokenizer), "max_position_embeddings": WINDOW,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                                    crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    # A random model's image and text embeddings point the same or opposite ways by chance;
    # CLIPScore clamps negatives to 0, which would hide every difference, so make them agree.
    with torch.no_grad():
        pixels = processor(images=[Image.new("RGB", (32, 32), (128, 60, 60))], return_tensors="pt")["pixel_values"]
        tokens = tokenizer(["a red jellybean"], return_tensors="pt")
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(**tokens).pooler_output
        if torch.cosine_similarity(image, text).item() < 0:
            model.visual_projection.weight.neg_()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def judge(make_ctx, tiny_clip):
    def make(trigger="jlybn", **options):
        ctx = make_ctx(trigger=trigger, plugins={"clip": {"model": str(tiny_clip), **options}})
        return ctx.registry.get("judge", "clip"), ctx

    return make


CAPTIONS = {
    "tags": "jlybn, jellybean, red, pile, white background",
    "short": "jlybn, a red jellybean",
    "plain": "a red jellybean",
    "long": "jlybn, a pile of red and green jellybeans on a white background in daylight",
}


def items_in(run_root, count=4, captions=CAPTIONS):
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        path = run_root / "prep" / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        photo = Photo(id=f"p{i}", source=f"p{i}.jpg", image=f"prep/p{i}.png", width=48, height=40)
        items.append(FightItem(id=f"p{i}", photo=photo,
                               candidates=[Candidate(fighter=f, text=t) for f, t in captions.items()]))
    return items


def cosine(score) -> float:
    return float(re.search(r"cosine (-?[\d.]+)", score.reason).group(1))


def test_every_candidate_gets_a_clipscore_with_its_reason(judge):
    clip, ctx = judge()
    assert clip.unavailable(ctx) is None and not clip.pairwise
    items = items_in(ctx.run.root)
    scores = clip.score(items, ctx)

    assert set(scores) == {i.id for i in items}
    for by_fighter in scores.values():
        assert set(by_fighter) == set(CAPTIONS)
        for score in by_fighter.values():
            assert re.fullmatch(r"CLIPScore \d\.\d\d \(cosine -?\d\.\d{3}\)(; caption cut .*)?", score.reason)
            assert score.score == pytest.approx(2.5 * max(cosine(score), 0.0), abs=3e-3)
    assert len({round(s.score, 6) for s in scores["p0"].values()}) >= 3  # captions are told apart
    assert len({round(scores[i.id]["tags"].score, 6) for i in items}) >= 3  # and so are photos


def test_scores_are_deterministic_and_batching_changes_nothing(judge):
    from clood_candy_plugins.judges.clip import load_model

    clip, ctx = judge(batch_size=8)
    batched = clip.score(items_in(ctx.run.root), ctx)
    load_model.cache_clear()  # a fresh load from disk, too
    clip, ctx = judge(batch_size=1)
    one_by_one = clip.score(items_in(ctx.run.root), ctx)
    clip, ctx = judge(batch_size=3)
    again = clip.score(items_in(ctx.run.root), ctx)
    for item_id, by_fighter in batched.items():
        for fighter, score in by_fighter.items():
            assert one_by_one[item_id][fighter].score == pytest.approx(score.score, abs=1e-5)
            assert again[item_id][fighter].score == pytest.approx(score.score, abs=1e-5)


def test_the_trigger_word_is_not_scored(judge):
    clip, ctx = judge(trigger="jlybn")
    scores = clip.score(items_in(ctx.run.root, 2), ctx)
    for by_fighter in scores.values():
        assert by_fighter["short"].score == pytest.approx(by_fighter["plain"].score, abs=1e-6)
    clip, ctx = judge(trigger="other")  # now "jlybn" is just a word, and CLIP reads it
    scores = clip.score(items_in(ctx.run.root, 2), ctx)
    assert any(abs(cosine(s["short"]) - cosine(s["plain"])) > 1e-3 for s in scores.values())


@pytest.mark.parametrize(("text", "trigger", "expected"), [
    ("jlybn, a red jellybean", "jlybn", "a red jellybean"),
    ("JLYBN jellybean, red", "jlybn", "jellybean, red"),
    ("a photo of jlybn, red", "jlybn", "a photo of red"),
    ("jlybnx, red", "jlybn", "jlybnx, red"),  # only the whole word
    ("jlybn", "jlybn", ""),
    ("a red jellybean", "", "a red jellybean"),
])
def test_strip_trigger(text, trigger, expected):
    from clood_candy_plugins.judges.clip import strip_trigger

    assert strip_trigger(text, trigger) == expected


def test_long_captions_are_cut_at_the_text_window_and_say_so(judge):
    clip, ctx = judge()
    head = "jlybn, " + "a" * 40  # byte-level tokens: far past the 32-token window
    items = items_in(ctx.run.root, 1, {"one": head + " red beans", "two": head + " blue bowl", "fits": "red"})
    scores = clip.score(items, ctx)["p0"]
    assert f"cut at the model's {WINDOW}-token limit" in scores["one"].reason
    assert "cut" not in scores["fits"].reason
    # What differs lies past the cut, so the model saw the same text.
    assert scores["one"].score == pytest.approx(scores["two"].score, abs=1e-6)


def test_a_broken_image_gives_its_photo_no_scores_and_the_rest_go_on(judge):
    clip, ctx = judge(batch_size=4)
    items = items_in(ctx.run.root, 3)
    ctx.run.path("prep", "p1.png").write_bytes(b"")  # a zero-byte file, as real folders have
    items.append(FightItem(id="no-photo", candidates=[Candidate(fighter="tags", text="red")]))
    scores = clip.score(items, ctx)
    assert set(scores) == {"p0", "p2"}
    assert all(len(by_fighter) == len(CAPTIONS) for by_fighter in scores.values())


def test_in_a_fight_clip_decides_pairs_by_score(judge):
    from clood_candy.fight.engine import Panel, run_fight

    clip, ctx = judge()
    items = items_in(ctx.run.root, 3, {"tags": CAPTIONS["tags"], "long": CAPTIONS["long"]})
    result = run_fight(items, Panel(judges={"clip": (clip, 1.0)}, problems={}), ctx, bootstrap=50)
    assert result.judges == {"clip": 1.0} and not result.forfeits
    for item in items:
        (verdict,) = result.items[item.id]
        tags, long = result.scores["clip"][item.id]["tags"].score, result.scores["clip"][item.id]["long"].score
        assert verdict.judge == "clip" and "CLIPScore" in verdict.reason
        assert verdict.outcome == ("a" if long > tags else "b" if tags > long else "tie")  # a = "long" (sorted)


def test_uncached_hub_model_is_reported_offline_without_touching_the_network(make_ctx, monkeypatch,
                                                                             network_attempts):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = make_ctx(plugins={"clip": {"model": "clood-candy-tests/no-such-clip"}})
    clip = ctx.registry.get("judge", "clip")
    reason = clip.unavailable(ctx)
    assert network_attempts == []
    assert "not in the Hugging Face cache" in reason and "HF_HUB_OFFLINE" in reason and "\n" not in reason
    with pytest.raises(RuntimeError, match="not in the Hugging Face cache"):  # the engine unseats the judge
        clip.score(items_in(ctx.run.root, 1), ctx)


def test_bad_options_and_folders_are_reported(make_ctx, tmp_path):
    ctx = make_ctx(plugins={"clip": {"weigth": 2.5}})
    assert "weigth" in ctx.registry.get("judge", "clip").unavailable(ctx)
    ctx = make_ctx(plugins={"clip": {"model": str(tmp_path)}})
    assert "no config.json" in ctx.registry.get("judge", "clip").unavailable(ctx)
