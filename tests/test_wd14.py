"""The wd14 captioner on a tiny tagger built offline: an ONNX graph with the v3 taggers'
interface (NHWC BGR 0–255 in, one sigmoid score per tag out) in a folder laid out as the
SmilingWolf repos are (model.onnx + selected_tags.csv). Its head is planted: each tag's
score is a sigmoid of the image's mean B, G, R, so the tests know which tags must fire."""

import csv

import numpy as np
import pytest
from PIL import Image

from clood_candy.captions.strategy import apply_strategy
from clood_candy.records import Photo

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from clood_candy_plugins.captioners import wd14  # noqa: E402

SIDE = 32  # the real ones are 448: read from the graph, never assumed
# name, category, (weight on mean B, G, R in 0..1), bias → score = sigmoid(w · bgr + bias)
TAGS = [
    ("general", 9, (0, 0, 0), 5.0),             # a rating: always 0.99, never captioned
    ("sensitive", 9, (0, 0, 0), 4.0),
    ("no_humans", 0, (0, 0, 0), 2.0),           # 0.88
    ("food", 0, (0, 0, 0), -0.1),               # 0.475: in at 0.35, out when strict (0.5)
    ("red_theme", 0, (-10, 0, 10), -4.0),       # weight on R, the *last* channel: BGR order matters
    ("blue_theme", 0, (10, 0, -10), -4.0),
    ("white_background", 0, (6, 6, 6), -15.0),  # only a (nearly) white image
    ("^_^", 0, (0, 0, 0), 1.0),                 # 0.73, a kaomoji: its underscore stays
    ("hatsune_miku", 4, (0, 0, 0), 1.0),        # a character at 0.73: under 0.85
    ("kaname_madoka", 4, (0, 0, 0), 2.5),       # a character at 0.92
    ("still_life", 0, (0, 0, 0), -3.0),         # 0.05: never
]
RED, BLUE = (200, 20, 20), (20, 20, 200)


def build_tagger(folder, tags=TAGS, batch="batch"):
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([t[2] for t in tags], dtype=np.float32).T  # (3, tags)
    bias = np.array([t[3] for t in tags], dtype=np.float32)
    nodes = [
        helper.make_node("Div", ["input", "scale"], ["unit"]),
        helper.make_node("ReduceMean", ["unit"], ["bgr"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["bgr", "weight"], ["logits"]),
        helper.make_node("Add", ["logits", "bias"], ["raw"]),
        helper.make_node("Sigmoid", ["raw"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny-wd14",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, len(tags)])],
        initializer=[numpy_helper.from_array(np.array(255, dtype=np.float32), "scale"),
                     numpy_helper.from_array(weights, "weight"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime since 1.10 reads
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows([(9999 - i, name, category, 1000 - i) for i, (name, category, _, _) in enumerate(tags)])
    return folder


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory):
    return build_tagger(tmp_path_factory.mktemp("tiny-wd14"))


@pytest.fixture
def tagger(make_ctx, tiny_tagger):
    def make(lora_type="object", **options):
        ctx = make_ctx(plugins={"wd14": {"model": str(tiny_tagger), **options}}, caption={"lora_type": lora_type})
        return ctx.registry.get("captioner", "wd14"), ctx

    return make


def photos_in(run_root, colours=(RED, BLUE), size=(SIDE, SIDE)):
    photos = []
    for i, rgb in enumerate(colours):
        path = run_root / "prep" / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, rgb).save(path)
        photos.append(Photo(id=f"p{i}", source=f"p{i}.jpg", image=f"prep/p{i}.png", width=size[0], height=size[1]))
    return photos


def tags_of(result):
    return result.caption.split(", ")


def test_tags_by_confidence_after_trigger_and_class_rating_tags_dropped(tagger):
    captioner, ctx = tagger()
    assert captioner.unavailable(ctx) is None
    results = captioner.caption(photos_in(ctx.run.root), ctx)
    red, blue = results["p0"], results["p1"]
    assert red.error is None
    # Sorted by score: red theme 0.96, kaname madoka 0.92, no humans 0.88, ^_^ 0.73, food 0.475.
    assert tags_of(red) == ["jlybn", "jellybean", "red theme", "kaname madoka", "no humans", "^_^", "food"]
    assert "blue theme" in tags_of(blue) and "red theme" not in tags_of(blue)
    for result in results.values():
        assert not {"general", "sensitive", "still life", "hatsune miku"} & set(tags_of(result))
        assert "_" not in result.caption.replace("^_^", "")
    scores = red.details["tags"]
    assert list(scores) == tags_of(red)[2:] and scores["food"] == pytest.approx(0.475, abs=1e-3)
    assert red.details["device"] == "cpu" and red.usage["batch_size"] == 2


def test_strict_threshold_and_an_own_threshold(tagger):
    captioner, ctx = tagger(strict=True)
    assert "food" not in tags_of(captioner.caption(photos_in(ctx.run.root), ctx)["p0"])
    captioner, ctx = tagger(threshold=0.8)
    assert tags_of(captioner.caption(photos_in(ctx.run.root), ctx)["p0"])[2:] == [
        "red theme", "kaname madoka", "no humans"]
    captioner, ctx = tagger(threshold=0.4, strict=True)
    assert "threshold or strict" in captioner.unavailable(ctx)


def test_character_tags_follow_their_threshold_and_the_lora_type(tagger):
    captioner, ctx = tagger(character_threshold=0.7)
    tags = tags_of(captioner.caption(photos_in(ctx.run.root), ctx)["p0"])
    assert {"kaname madoka", "hatsune miku"} <= set(tags)
    captioner, ctx = tagger(lora_type="style")  # seed 004: a style LoRA drops character tags
    tags = tags_of(captioner.caption(photos_in(ctx.run.root), ctx)["p0"])
    assert "kaname madoka" not in tags and "no humans" in tags
    captioner, ctx = tagger(lora_type="style", characters="keep")
    assert "kaname madoka" in tags_of(captioner.caption(photos_in(ctx.run.root), ctx)["p0"])


def test_excluded_tags_and_max_tags(tagger):
    captioner, ctx = tagger(exclude=["no_humans", "Kaname Madoka"], max_tags=2)
    assert tags_of(captioner.caption(photos_in(ctx.run.root), ctx)["p0"]) == ["jlybn", "jellybean", "red theme", "^_^"]


def test_padding_is_white_and_channels_bgr():
    wide = Image.new("RGB", (4, 2), RED)
    array = wd14.prepare(wide, 4)
    assert array.shape == (4, 4, 3) and array.dtype == np.float32
    assert (array[0] == 255).all() and (array[3] == 255).all()  # the pad rows, top and bottom
    assert array[1, 0].tolist() == [20, 20, 200]  # B, G, R
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # transparency reads as white, not black
    assert (wd14.prepare(clear, 4) == 255).all()


def test_a_narrow_photo_is_padded_not_cropped(tagger):
    captioner, ctx = tagger()
    # A red strip a quarter of the frame: padded on white its mean is mostly white.
    result = captioner.caption(photos_in(ctx.run.root, [RED], size=(8, 32)), ctx)["p0"]
    assert "red theme" not in tags_of(result)


def test_batches_keep_each_photo_its_tags(tagger):
    captioner, ctx = tagger(batch_size=1)
    one = captioner.caption(photos_in(ctx.run.root, [RED, BLUE, RED]), ctx)
    captioner, ctx = tagger(batch_size=3)
    three = captioner.caption(photos_in(ctx.run.root, [RED, BLUE, RED]), ctx)
    assert {k: r.caption for k, r in one.items()} == {k: r.caption for k, r in three.items()}
    assert one["p0"].caption != one["p1"].caption


def test_a_broken_image_fails_alone(tagger):
    captioner, ctx = tagger()
    photos = photos_in(ctx.run.root, [RED, BLUE])
    ctx.run.path("prep", "p1.png").write_bytes(b"")
    results = captioner.caption(photos, ctx)
    assert "cannot read image" in results["p1"].error and results["p0"].caption


def test_tags_become_a_sentence_for_a_natural_language_base(tagger):
    captioner, ctx = tagger()
    photos = photos_in(ctx.run.root, [(250, 250, 250)])
    raw = captioner.caption(photos, ctx)
    assert "white background" in tags_of(raw["p0"])
    natural = apply_strategy(raw, photos, "natural", trigger="jlybn", class_word="jellybean").captions["p0"]
    assert natural.startswith("jlybn, ") and natural.endswith(".") and "white background" in natural
    tags = apply_strategy(raw, photos, "tags", trigger="jlybn", class_word="jellybean").captions["p0"]
    assert tags.startswith("jlybn, jellybean") and not tags.endswith(".")


def test_tag_list_that_does_not_match_the_model_is_one_error(make_ctx, tmp_path):
    folder = build_tagger(tmp_path / "mismatch")
    with open(folder / "selected_tags.csv", "a", newline="") as f:
        f.write("1,extra_tag,0,1\n")
    wd14.load_tagger.cache_clear()
    ctx = make_ctx(plugins={"wd14": {"model": str(folder)}})
    result = ctx.registry.get("captioner", "wd14").caption(photos_in(ctx.run.root, [RED]), ctx)["p0"]
    assert "gives 11 scores but selected_tags.csv lists 12 tags" in result.error and "\n" not in result.error


def test_unreachable_hub_id_sits_out_in_one_line(make_ctx, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes = []

    def model_info(self, repo_id, **kwargs):  # the hub as an offline machine sees it
        probes.append((repo_id, kwargs.get("timeout")))
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(HfApi, "model_info", model_info)
    ctx = make_ctx()  # the default model: SmilingWolf/wd-swinv2-tagger-v3
    captioner = ctx.registry.get("captioner", "wd14")
    reason = captioner.unavailable(ctx)
    assert probes == [(wd14.DEFAULT_MODEL, 5)]
    assert reason.startswith(f"model {wd14.DEFAULT_MODEL} is not cached") and "\n" not in reason
    assert captioner.caption(photos_in(ctx.run.root, [RED]), ctx)["p0"].error == reason


def test_offline_hub_id_is_reported_without_touching_the_network(make_ctx, monkeypatch, network_attempts):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = make_ctx(plugins={"wd14": {"model": "SmilingWolf/wd-vit-tagger-v3"}})
    reason = ctx.registry.get("captioner", "wd14").unavailable(ctx)
    assert network_attempts == []
    assert "not in the Hugging Face cache" in reason and "HF_HUB_OFFLINE" in reason


def test_a_folder_without_the_tagger_files_or_a_bad_option_is_named(make_ctx, tmp_path):
    (tmp_path / "timm-only").mkdir()
    (tmp_path / "timm-only" / "config.json").write_text("{}")
    ctx = make_ctx(plugins={"wd14": {"model": str(tmp_path / "timm-only")}})
    assert "has no model.onnx" in ctx.registry.get("captioner", "wd14").unavailable(ctx)
    ctx = make_ctx(plugins={"wd14": {"treshold": 0.4}})
    assert "treshold" in ctx.registry.get("captioner", "wd14").unavailable(ctx)
    ctx = make_ctx(plugins={"wd14": {"device": "gpu"}})
    assert "device" in ctx.registry.get("captioner", "wd14").unavailable(ctx)


def test_without_onnxruntime_it_sits_out_naming_the_extra(make_ctx, tiny_tagger, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    ctx = make_ctx(plugins={"wd14": {"model": str(tiny_tagger)}})
    assert "clood-candy[wd14]" in ctx.registry.get("captioner", "wd14").unavailable(ctx)


def test_kaomoji_keep_their_underscore():
    assert [wd14.display_name(n) for n in ("^_^", "o_o", "0_0", "+_+", "long_hair", "1girl")] == [
        "^_^", "o_o", "0_0", "+_+", "long hair", "1girl"]
    assert wd14.never_kept("rating:safe", 0) and wd14.never_kept("score_9", 0) and not wd14.never_kept("food", 0)
