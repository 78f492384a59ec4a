"""The report on partial and damaged run folders: every section present, the ones whose
inputs are missing say which stage makes them, a broken file or section never stops the
report, and the page needs nothing outside itself."""

import base64
import io
import json
import re
from pathlib import Path

import pytest
import torch
from clood_candy_plugins.report import section_training
from clood_candy_plugins.report.media import draw_box, open_thumbnail
from clood_candy_plugins.report.plugin import SECTIONS, HtmlReporter
from clood_candy_plugins.report.section_lora import lora_stats
from clood_candy_plugins.report.section_photos import reason_kind
from PIL import Image
from safetensors.torch import save_file

from clood_candy import fsutil
from clood_candy.records import (
    ConfigFightResult,
    HalvingRound,
    Photo,
    PrepEntry,
    PrepReport,
    TrainConfig,
    TrainOutcome,
)

ORANGE = (255, 120, 0)


def _photo_file(path: Path, size=(400, 300), colour=(40, 90, 200), orientation: int | None = None) -> Path:
    image = Image.new("RGB", size, (230, 230, 225))
    image.paste(colour, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=92, exif=exif.tobytes())
    return path


def prep_only_run(ctx) -> Path:
    """What ``--stages prep`` leaves: two kept photos, one culled, one unreadable."""
    source = ctx.run.root.parent / "photos"
    _photo_file(source / "a.jpg")
    _photo_file(source / "b.jpg", colour=(200, 40, 40))
    _photo_file(source / "blurry.jpg")
    (source / "broken.jpg").write_bytes(b"")
    entries, photos = [], []
    for name in ("a", "b"):
        out = ctx.run.path("prep", "images", f"{name}.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(source / f"{name}.jpg").crop((50, 0, 350, 300)).resize((64, 64)).save(out)
        entries.append(PrepEntry(source=f"{name}.jpg", status="kept", reason="subject crop, fill 75%",
                                 crop_box=[50, 0, 350, 300], output=f"prep/images/{name}.png"))
        photos.append(Photo(id=name, source=f"{name}.jpg", image=f"prep/images/{name}.png",
                            original=str(source / f"{name}.jpg"), width=64, height=64, crop_box=[50, 0, 350, 300]))
    entries.append(PrepEntry(source="blurry.jpg", status="culled", reason="blurry: sharpness 0.02 < 0.35"))
    entries.append(PrepEntry(source="broken.jpg", status="failed", reason="empty file (0 bytes)"))
    fsutil.write_json(ctx.run.path("prep", "report.json"), PrepReport(entries=entries, photos=photos))
    ctx.run.state.source = str(source)
    ctx.run.save()
    return source


def sections_of(html: str) -> dict[str, str]:
    found = re.findall(r'<section class="[^"]*" id="([^"]+)" data-section="[^"]+">(.*?)</section>', html, re.S)
    return dict(found)


def images_in(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', html)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The tiny base loaded once for this module (loading is most of a report's time)."""
    from clood_candy.config import load_config
    from clood_candy.context import StageContext
    from clood_candy.plugins import build_registry, load_plugins
    from clood_candy.progress import Progress
    from clood_candy.runstore import RunStore

    load_plugins()
    config = load_config(None, {"base": "tiny"})
    run = RunStore.create(tmp_path_factory.mktemp("base") / "run", "t", config.model_dump(mode="json"), None, False)
    return StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=True)).base()


@pytest.fixture
def tiny_ctx(make_ctx, tiny_base):
    def make(**overrides):
        ctx = make_ctx(base="tiny", **overrides)
        ctx._base = tiny_base
        return ctx

    return make


@pytest.fixture
def prep_ctx(tiny_ctx):
    ctx = tiny_ctx()
    prep_only_run(ctx)
    return ctx


def test_prep_only_run_shows_every_photo_and_says_what_each_later_section_needs(prep_ctx):
    path = HtmlReporter().build(prep_ctx.run.root, prep_ctx)
    html = path.read_text(encoding="utf-8")
    sections = sections_of(html)
    # every section, but the making of candy-mini only on that base
    assert list(sections) == [key for key, _, _ in SECTIONS if key != "base"]
    photos = sections["photos"]
    assert "4</b> files: <b>2</b> kept, <b>1</b> culled, <b>1</b> could not be read" in photos
    assert "blurry: sharpness 0.02 &lt; 0.35" in photos and "empty file (0 bytes)" in photos
    assert photos.count("<img") == 3  # the unreadable file is a labelled box, never a broken image
    assert "the caption stage" in sections["captions"] and "run the caption stage" in sections["captions"]
    assert "the train stage" in sections["training"]
    assert "the sample stage" in sections["lora"] and "the train stage" in sections["lora"]
    assert "could not be drawn" not in html
    assert "random weights" in html  # the toy base is named for what it is


def test_report_is_one_self_contained_file(prep_ctx):
    html = HtmlReporter().build(prep_ctx.run.root, prep_ctx).read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r'(?:src|href)="(?!data:|#)', html), "everything must be inline or an in-page anchor"
    assert not re.search(r"url\((?!data:)", html)
    assert all(image.width > 0 for image in images_in(html))


def test_crop_box_is_drawn_where_prep_put_it_and_the_rest_is_dimmed(tmp_path):
    thumb, full = open_thumbnail(_photo_file(tmp_path / "p.jpg", size=(800, 600)), 200)
    assert full == (800, 600) and thumb.size == (200, 150)
    boxed = draw_box(thumb, full, [200, 0, 800, 600])  # the right three quarters
    assert boxed.getpixel((50, 75))[0] >= 240 and boxed.getpixel((50, 75))[1] < 150  # orange left edge
    inside, outside = boxed.getpixel((150, 140)), boxed.getpixel((20, 140))
    assert inside == thumb.getpixel((150, 140))
    assert sum(outside) < sum(thumb.getpixel((20, 140))) * 0.75


def test_rotated_phone_photo_reports_its_upright_size(tmp_path):
    # Stored landscape with EXIF orientation 6: the upright photo (and prep's crop box) is portrait.
    thumb, full = open_thumbnail(_photo_file(tmp_path / "r.jpg", size=(400, 300), orientation=6), 100)
    assert full == (300, 400) and thumb.size == (75, 100)


def test_unreadable_file_and_failing_section_cost_only_their_own_section(prep_ctx, monkeypatch):
    fsutil.write_text(prep_ctx.run.path("caption", "fight.json"), "{not json")

    def broken(run):
        raise ValueError("the plotting went wrong")

    monkeypatch.setattr("clood_candy_plugins.report.plugin.SECTIONS",
                        [s if s[0] != "training" else ("training", "6. Training", broken) for s in SECTIONS])
    html = HtmlReporter().build(prep_ctx.run.root, prep_ctx).read_text(encoding="utf-8")
    sections = sections_of(html)
    assert "caption/fight.json could not be read" in sections["captions"]
    assert "could not be drawn: ValueError: the plotting went wrong" in sections["training"]
    assert "blurry" in sections["photos"] and len(sections) == len(SECTIONS) - 1  # no "how candy-mini was made" on tiny


def test_reason_kinds_group_verdicts_without_their_numbers():
    assert reason_kind("blurry: sharpness 0.02 < 0.35") == "blurry"
    assert reason_kind("near-duplicate of a/b.jpg (hash distance 2)") == "near-duplicate"
    assert reason_kind("") == "no reason given"


def test_training_section_plots_losses_and_shows_who_went_out_when(tiny_ctx):
    ctx = tiny_ctx()
    configs = [TrainConfig(name="default"), TrainConfig(name="lr-x3", learning_rate=3e-4),
               TrainConfig(name="rank-x2", rank=16, alpha=16.0)]
    fight = ConfigFightResult(configs=configs, winner="lr-x3", rounds=[
        HalvingRound(budget=10, scores={"default": 0.9, "lr-x3": 0.8, "rank-x2": None}, survivors=["lr-x3", "default"]),
        HalvingRound(budget=20, scores={"lr-x3": 0.7, "default": 0.75}, survivors=["lr-x3"])])
    fsutil.write_json(ctx.run.path("train", "fight.json"), fight)
    lines = [{"step": 0, "loss": None, "val_loss": 1.0}] + [
        {"step": s, "loss": 1.0 - s / 50, "val_loss": (1.0 - s / 40) if s % 5 == 0 else None} for s in range(1, 21)]
    fsutil.write_text(ctx.run.path("train", "fight", "lr-x3", "log.jsonl"), "\n".join(json.dumps(r) for r in lines))
    fsutil.write_json(ctx.run.path("train", "outcome.json"),
                      TrainOutcome(config=configs[1], steps_done=20, final_val_loss=0.5, seconds=3.0))
    train, val = section_training.curves(lines)
    assert len(train) == 20 and val[0] == (0, 1.0) and len(val) == 5
    from clood_candy_plugins.report.rundata import RunData

    section = section_training.build(RunData(ctx.run.root, ctx))
    assert section.missing is None
    assert section.body.count('class="chart"') == 2  # the winner's curves and the race
    rows = re.findall(r"<tr>(.*?)</tr>", section.body)
    by_name = {re.sub("<[^>]+>", " ", r).split()[0]: r for r in rows if "round" not in r}
    assert "✗ out" in by_name["rank-x2"] and "failed" in by_name["rank-x2"]
    assert "✓ goes on" in by_name["default"] and "✗ out" in by_name["default"]
    assert "✓ wins" in by_name["lr-x3"] and "learning rate 0.0003" in by_name["lr-x3"]


def test_lora_stats_read_parameters_and_rank_from_the_header(tmp_path):
    path = tmp_path / "jlybn.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(4, 320), "lora_unet_a.lora_up.weight": torch.zeros(320, 4),
               "lora_unet_a.alpha": torch.tensor(4.0),
               "lora_te_b.lora_down.weight": torch.zeros(4, 768), "lora_te_b.lora_up.weight": torch.zeros(768, 4),
               "lora_te_b.alpha": torch.tensor(4.0)}, str(path))
    assert lora_stats(path) == {"params": 2 * 4 * 320 + 2 * 4 * 768, "modules": 2, "ranks": [4], "text_encoder": True}


def test_text_encoder_strikes_out_what_falls_past_the_window(tiny_ctx):
    ctx = tiny_ctx()
    long = "jlybn, jellybean, " + ", ".join(f"red bean number {i}" for i in range(30))
    fsutil.write_text(ctx.run.path("dataset", "metadata.jsonl"), "\n".join(json.dumps(
        {"file_name": f"{i}.png", "text": text, "id": str(i)}) for i, text in enumerate([long, "jlybn, jellybean"])))
    from clood_candy_plugins.report import section_text_encoder
    from clood_candy_plugins.report.rundata import RunData

    base = ctx.base()
    section = section_text_encoder.build(RunData(ctx.run.root, ctx))
    tokens = base.tokens(long)
    assert len(tokens) > base.token_window
    assert len(re.findall(r'class="tok[^"]*\bcut\b', section.body)) == len(tokens) - base.token_window
    assert "<b>1</b> of them run past the window" in section.body
    assert f"{len(base.tokens('jlybn'))} pieces" in section.body or "a word it knows" in section.body
