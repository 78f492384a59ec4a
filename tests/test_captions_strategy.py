"""The caption strategy layer: raw captioner output → training captions."""

import pytest

from clood_candy.captions.strategy import (
    STRATEGIES,
    apply_for_run,
    apply_strategy,
    resolve_style,
)
from clood_candy.records import CaptionResult, Photo, PhotoFacts

COLOURS = ["red", "green", "blue", "red", "yellow", "green", "red", "blue", "green", "red"]
LIGHTS = ["daylight", "flash", "daylight", "warm indoor light", "daylight", "flash", "daylight", "flash",
          "daylight", "warm indoor light"]


def photos(n: int) -> list[Photo]:
    return [Photo(id=f"p{i}", source=f"p{i}.jpg", image=f"prep/p{i}.png", width=64, height=64) for i in range(n)]


def varied_set(n: int = 10) -> dict[str, CaptionResult]:
    """Colours and light vary; background and framing are the same in every photo."""
    return {f"p{i}": CaptionResult(caption="x", facts=PhotoFacts(
        subject="jellybean", colours=[COLOURS[i % 10]], arrangement="single", count=1, background="white",
        lighting=LIGHTS[i % 10], framing="closeup" if i % 2 else "macro")) for i in range(n)}


def run(raw, strategy="auto", n=10, **kw):
    kw.setdefault("trigger", "jlybn")
    kw.setdefault("class_word", "jellybean")
    return apply_strategy(raw, photos(n), strategy, **kw)


def test_what_varies_is_captioned_and_what_is_constant_binds_to_the_trigger():
    result = run(varied_set())
    assert result.decisions["colours"].startswith("captioned (varies: 4 values")
    assert result.decisions["lighting"].startswith("captioned")
    assert result.decisions["background"] == "bound to trigger (constant: white in 100%)"
    assert result.decisions["framing"].startswith("bound to trigger")  # closeup and macro are one term
    assert result.captions["p0"] == "jlybn, jellybean, red, daylight"
    assert result.captions["p1"] == "jlybn, jellybean, green, flash photo"
    assert all("background" not in c for c in result.captions.values())


def test_trigger_first_exactly_once_and_class_said_once():
    raw = {"p0": CaptionResult(caption="jellybean, jlybn, red jellybean, jlybn, jelly beans, white background")}
    caption = run(raw, n=1).captions["p0"]
    assert caption.startswith("jlybn, ")
    assert caption.count("jlybn") == 1 and caption.count("jellybean") == 1
    assert caption == "jlybn, jellybean, red, white background"


def test_object_lora_cuts_subject_features_other_types_follow_their_rule():
    raw = {f"p{i}": CaptionResult(caption=f"{c}, glossy, bean-shaped, {bg}, {light}")
           for i, (c, bg, light) in enumerate([("red", "white background", "daylight"),
                                               ("green", "wooden table", "flash"),
                                               ("blue", "red cloth", "dim light")])}
    obj = run(raw, n=3)
    assert obj.removed == {"glossy": 3, "bean shaped": 3}
    assert all("glossy" not in c and "bean" not in c.replace("jellybean", "") for c in obj.captions.values())
    concept = run(raw, n=3, lora_type="concept")  # its subject's look is not what it learns: kept as words
    assert concept.removed == {} and concept.decisions["extra: glossy"].startswith("bound to trigger (constant")
    assert "glossy" in run(raw, "everything", n=3, lora_type="concept").captions["p0"]
    style = run(raw, n=3, lora_type="style")
    assert style.decisions["lighting"].startswith("bound to trigger (the LoRA type")
    assert "daylight" not in style.captions["p0"] and "white background" in style.captions["p0"]
    scene = run(raw, n=3, lora_type="scene")
    assert "background" not in scene.captions["p0"] and "red" in scene.captions["p0"]


def test_caption_style_follows_the_base_model():
    assert resolve_style("auto", "runwayml/stable-diffusion-v1-5") == "tags"
    assert resolve_style("auto", "stabilityai/stable-diffusion-xl-base-1.0") == "hybrid"
    assert resolve_style("auto", "some/ponyDiffusionV6XL") == "tags"
    assert resolve_style("auto", "black-forest-labs/FLUX.1-dev") == "natural"
    assert resolve_style("auto", "", family="sd3") == "natural"
    assert resolve_style("natural", "runwayml/stable-diffusion-v1-5") == "natural"
    raw = {"p0": CaptionResult(caption="x", facts=PhotoFacts(colours=["red", "green"], arrangement="pile",
                                                            background="wood", lighting="daylight"))}
    assert run(raw, "natural", n=1).captions["p0"] == \
        "jlybn, a pile of red and green jellybeans on a wooden surface in daylight."
    assert run(raw, "hybrid", n=1).captions["p0"] == \
        "jlybn, a pile of red and green jellybeans, wooden surface, daylight"
    auto = run(raw, n=1, base="stabilityai/stable-diffusion-xl-base-1.0")
    assert auto.style == "hybrid"


def words(text: str) -> int:
    return len(text.replace(",", " ").split())


def test_over_the_token_window_auto_drops_least_important_context_tags_only_warns():
    raw = {"p0": CaptionResult(caption="x", facts=PhotoFacts(
        colours=["red"], background="wood", lighting="daylight", framing="medium shot", view="top-down view",
        extra=["bokeh", "shallow depth of field"]))}
    short = run(raw, n=1, count_tokens=words, token_window=8)
    assert short.captions["p0"] == "jlybn, jellybean, red, wooden surface, daylight, medium shot"
    assert short.dropped["p0"] == ["shallow depth of field", "bokeh", "top-down view"]
    assert "p0: over the 8-token window; dropped: shallow depth of field, bokeh" in short.warnings[0]
    assert short.tokens["p0"] <= 8 and short.exact_tokens

    kept = run(raw, "tags", n=1, count_tokens=words, token_window=8)
    assert "shallow depth of field" in kept.captions["p0"]
    assert "never sees: 'top-down view, bokeh, shallow depth of field'" in kept.warnings[0]


def test_named_strategies():
    assert {"auto", "tags", "natural", "short", "no-context"} <= set(STRATEGIES)
    raw = varied_set()
    for i, r in enumerate(raw.values()):
        r.facts.view = "top-down view" if i < 3 else "side view"
    short = run(raw, "short")
    assert short.captioned == ["colours", "lighting"]  # the two that vary most
    assert short.captions["p2"] == "jlybn, jellybean, blue, daylight"
    assert run(raw, "no-context").captions["p3"] == "jlybn, jellybean, red"
    everything = run(raw, "everything").captions["p0"]
    assert "white background" in everything and "macro close-up" in everything
    with pytest.raises(ValueError, match="unknown caption strategy"):
        run(raw, "bogus")


def test_failed_photos_contradictions_and_free_text_captioners():
    raw = {"p0": CaptionResult(error="timeout"),
           "p1": CaptionResult(caption="", facts=None),
           "p2": CaptionResult(caption="x", facts=PhotoFacts(colours=["red"], lighting="daylight", time_of_day="night")),
           "p3": CaptionResult(caption="a close up of a crimson jelly bean on a white table")}
    result = run(raw, n=4)
    assert result.errors == {"p0": "timeout", "p1": "empty caption"}
    assert set(result.captions) == {"p2", "p3"}
    assert "daylight" not in result.captions["p2"] and "night" not in result.captions["p2"]
    assert any("'daylight' contradicts 'night'" in w for w in result.warnings)
    # a BLIP-style sentence, standardised: crimson → red, close up → macro close-up
    assert result.captions["p3"] == "jlybn, jellybean, red, white background, macro close-up"


@pytest.mark.slow
def test_apply_for_run_counts_with_the_base_models_own_tokenizer(make_ctx):
    ctx = make_ctx(base="tiny")
    raw = {"p0": CaptionResult(caption="red, pile, wooden table, warm indoor light, macro, top-down, " +
                                       ", ".join(f"extra detail number {i}" for i in range(20)))}
    result = apply_for_run(raw, photos(1), "auto", ctx)
    assert result.exact_tokens and result.token_window == 75
    assert result.tokens["p0"] == ctx.base().count_tokens(result.captions["p0"]) <= 75
    assert result.dropped["p0"][0] == "extra detail number 19"  # extras go first, last first


def test_a_colour_in_every_photo_of_a_mixed_set_binds_to_the_trigger():
    """Every bag has teal beans (named green) among others: "green" in every caption would
    teach the base's green, so it binds to the trigger while the other colours stay."""
    others = ["red", "blue", "yellow", "pink", "orange"]
    raw = {f"p{i}": CaptionResult(caption="x", facts=PhotoFacts(
        colours=["green", others[i % 5]] if i % 3 else ["green"], background="white" if i % 2 else "wood"))
        for i in range(10)}
    result = run(raw)
    assert result.decisions["colours"].startswith("captioned (varies")
    assert result.decisions["colours: green"] == "bound to trigger (in 100% of the photos: the subject's own colour)"
    assert result.captions["p1"] == "jlybn, jellybean, blue, white background"
    assert result.captions["p0"] == "jlybn, jellybean, wooden surface"
    assert not any("green" in c for c in result.captions.values())
    assert "green" in run(raw, "everything").captions["p0"]  # the counter-example says it all
    raw["p9"] = CaptionResult(caption="x", facts=PhotoFacts(colours=["red"], background="white"))
    raw["p8"] = CaptionResult(caption="x", facts=PhotoFacts(colours=["blue"], background="wood"))
    assert "colours: green" not in run(raw).decisions  # 80 %: a colour the set varies in, captioned
