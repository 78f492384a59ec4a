"""The realesrgan upscaler on tiny Real-ESRGAN-layout weights built here (no download): sizes
at the model's own scale and at others, tiles that agree with the whole image, prep enlarging
a small photo with it and saying so (the report too), and missing weights as one line while
prep goes on."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from support.prep import candy_photo

from clood_candy import fsutil
from clood_candy.records import PrepReport
from clood_candy_plugins.upscalers import weights
from clood_candy_plugins.upscalers.realesrgan import RealEsrganOptions, RealEsrganUpscaler
from clood_candy_plugins.upscalers.tiles import to_tensor, upscale_tensor


def esrgan_state(ups: int = 2, unshuffle: int = 1, feat: int = 8, blocks: int = 1, seed: int = 0,
                 noise: float = 0.02) -> dict[str, torch.Tensor]:
    """A Real-ESRGAN RRDBNet state dict written key by key, as Real-ESRGAN saves one (not
    through the plugin's own classes): near-identity convolutions, so the output looks like
    the photo, plus random dense blocks, so every tile's context matters. The dense blocks
    grow by 32 channels, the size every released ESRGAN has (spandrel assumes it)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, cin: int, cout: int, identity: bool = False) -> None:
        weight = (noise / 10 if identity else noise) * torch.randn(cout, cin, 3, 3, generator=gen)
        if identity:
            for c in range(min(cin, cout, 3)):
                weight[c, c * unshuffle ** 2 if name == "conv_first" else c, 1, 1] += 1.0
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, torch.zeros(cout)

    conv("conv_first", 3 * unshuffle ** 2, feat, identity=True)
    for b in range(blocks):
        for r in (1, 2, 3):
            for i in range(1, 6):
                conv(f"body.{b}.rdb{r}.conv{i}", feat + (i - 1) * 32, 32 if i < 5 else feat)
    conv("conv_body", feat, feat)
    for i in range(1, ups + 1):
        conv(f"conv_up{i}", feat, feat, identity=True)
    conv("conv_hr", feat, feat, identity=True)
    conv("conv_last", feat, 3, identity=True)
    return state


@pytest.fixture
def x4_file(tmp_path):
    path = tmp_path / "tiny_x4.pth"
    torch.save({"params_ema": esrgan_state()}, path)  # nested as Real-ESRGAN's releases are
    return path


def small_photos(folder):
    folder.mkdir()
    candy_photo(size=(800, 600), blobs=((400, 300, 90, 70),)).save(folder / "big.png")
    # 80 px short side for 128: above the cull floor (0.5), below the resolution
    candy_photo(size=(100, 80), blobs=((50, 40, 18, 14),), texture=3).save(folder / "small.png")
    return folder


def prep_with(make_ctx, tmp_path, model: str, **options):
    ctx = make_ctx(prep={"resolution": 128, "upscaler": "realesrgan", "workers": 1},
                   plugins={"realesrgan": {"model": model, "tile": 0, **options}})
    source = small_photos(tmp_path / "photos")
    preparer = ctx.registry.get("preparer", "default")
    report = preparer.prepare(source, ctx.run.path("prep"), ctx.config.prep, ctx)
    return ctx, source, report, {e.source: e for e in report.entries}


def test_sizes_at_the_models_scale_and_at_others(tmp_path, x4_file):
    x2_file = tmp_path / "tiny_x2.safetensors"
    from safetensors.torch import save_file

    save_file(esrgan_state(unshuffle=2), str(x2_file))  # Real-ESRGAN's 2x: the input folded 2x2 first
    image = candy_photo(size=(31, 21), blobs=((15, 10, 6, 4),))  # odd sides: the 2x model pads them
    x4 = RealEsrganUpscaler(RealEsrganOptions(model=str(x4_file)))
    assert x4.upscale(image, 4).size == (124, 84)
    assert x4.upscale(image, 3).size == (93, 63)  # its own 4x, then resized to what was asked
    assert "4x" in x4.describe() and "tiny_x4.pth" in x4.describe()
    x2 = RealEsrganUpscaler(RealEsrganOptions(model=str(x2_file)))
    assert x2.upscale(image, 2).size == (62, 42)
    assert x2.upscale(image, 4).size == (124, 84)  # two passes
    # Near-identity weights: the enlargement still looks like the photo.
    plain = np.asarray(image.resize((124, 84), Image.Resampling.NEAREST), dtype=np.float32)
    assert np.abs(np.asarray(x4.upscale(image, 4), dtype=np.float32) - plain).mean() < 12


def test_tiles_agree_with_the_whole_image(x4_file):
    net = weights.load_network(str(x4_file), use_spandrel=False)
    x = to_tensor(candy_photo(size=(70, 50), blobs=((30, 25, 12, 9), (55, 20, 8, 6)), texture=8))
    whole = upscale_tensor(net, x, tile=0, pad=0, device="cpu")
    # One dense-block network reaches about 18 input pixels: 20 of padding leave every seam exact.
    tiled = upscale_tensor(net, x, tile=24, pad=20, device="cpu")
    assert tiled.shape == whole.shape == (1, 3, 200, 280)
    assert (tiled - whole).abs().max().item() < 1e-4
    # With too little context the seams show, which is what tile_pad is for.
    assert (upscale_tensor(net, x, tile=24, pad=0, device="cpu") - whole).abs().max().item() > 1e-3


def test_prep_upscales_a_small_photo_records_it_and_the_report_marks_it(make_ctx, tmp_path, x4_file):
    ctx, source, report, e = prep_with(make_ctx, tmp_path, str(x4_file), tile=48)
    small, big = e["small.png"], e["big.png"]
    assert small.status == "kept" and "upscaled 2x with realesrgan (tiny_x4.pth" in small.reason
    assert "LANCZOS" not in small.reason
    assert small.upscaled is not None and small.upscaled.by == "realesrgan" and small.upscaled.factor == 2
    assert big.status == "kept" and big.upscaled is None and "upscaled" not in big.reason
    photo = next(p for p in report.photos if p.source == "small.png")
    assert photo.upscaled == small.upscaled
    with Image.open(ctx.run.root / small.output) as im:
        assert im.size == (128, 128)
        got = np.asarray(im.convert("RGB"), dtype=np.float32)
    with Image.open(source / "small.png") as original:  # the crop, enlarged: the same candy
        box = tuple(small.crop_box)
        plain = np.asarray(original.convert("RGB").crop(box).resize((128, 128), Image.Resampling.LANCZOS), np.float32)
    assert np.abs(got - plain).mean() < 15

    from clood_candy_plugins.report import section_photos
    from clood_candy_plugins.report.rundata import RunData

    fsutil.write_json(ctx.run.path("prep", "report.json"), report)
    ctx.run.state.source = str(source)
    ctx.run.save()
    html = section_photos.build(RunData(ctx.run.root, ctx)).body
    assert html.count('<span class="badge upscaled">upscaled 2x</span>') == 1
    assert "<b>1</b> kept photo was smaller than the training size and enlarged by realesrgan" in html
    assert PrepReport.model_validate(fsutil.read_json(ctx.run.path("prep", "report.json"))).entries[0].reason


def test_missing_weights_are_one_line_and_prep_goes_on(make_ctx, tmp_path, caplog):
    missing = tmp_path / "nowhere" / "RealESRGAN_x4plus.pth"
    with caplog.at_level(logging.WARNING, logger="clood_candy"):
        ctx, _, report, e = prep_with(make_ctx, tmp_path, str(missing))
    warned = [r.getMessage() for r in caplog.records if "realesrgan" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert "unavailable, prep goes on without it: model file not found" in warned[0] and str(missing) in warned[0]
    small = e["small.png"]
    assert small.status == "kept" and small.upscaled is None  # the plain resize it had before
    assert "LANCZOS; upscaler realesrgan unavailable" in small.reason
    with Image.open(ctx.run.root / small.output) as im:
        assert im.size == (128, 128)
    assert e["big.png"].status == "kept"
    upscaler = ctx.registry.get("upscaler", "realesrgan")
    with pytest.raises(RuntimeError, match="model file not found"):
        upscaler.upscale(Image.new("RGB", (8, 8)), 2)


def test_too_small_photo_stays_culled_with_the_reason_when_weights_are_missing(make_ctx, tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    candy_photo(size=(200, 150), blobs=((100, 75, 40, 30),)).save(source / "tiny.png")
    ctx = make_ctx(prep={"resolution": 512, "upscaler": "realesrgan", "workers": 1},
                   plugins={"realesrgan": {"model": str(tmp_path / "gone.pth")}})
    report = ctx.registry.get("preparer", "default").prepare(source, ctx.run.path("prep"), ctx.config.prep, ctx)
    entry = report.entries[0]
    assert entry.status == "culled" and "too small" in entry.reason
    assert "upscaler realesrgan unavailable: model file not found" in entry.reason


def test_what_cannot_load_says_why_in_one_line(make_ctx, tmp_path, network_attempts):
    odd = tmp_path / "other_arch.pth"
    torch.save({"head.weight": torch.zeros(3, 3)}, odd)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    cases = {
        str(odd): "not a Real-ESRGAN RRDBNet state dict",
        str(junk): "cannot read junk.safetensors",
        "hf://nobody/nothing/x4.pth": "cannot get x4.pth from the Hub repo nobody/nothing",
        "hf://just-a-name": "is not hf://<owner>/<repo>/<file",
    }
    for model, said in cases.items():
        why = RealEsrganUpscaler().unavailable(make_ctx(plugins={"realesrgan": {"model": model}}))
        if model == str(odd) and weights.spandrel_problem() is None:
            said = "spandrel cannot read"
        assert why is not None and said in why and "\n" not in why, (model, why)
    bad = RealEsrganUpscaler().unavailable(make_ctx(plugins={"realesrgan": {"tile": -1}}))
    assert bad is not None and bad.startswith("[plugins.realesrgan] tile")


def test_hub_references_and_local_paths_are_told_apart(tmp_path):
    assert weights.hub_reference("ai-forever/Real-ESRGAN/RealESRGAN_x4.pth") == ("ai-forever/Real-ESRGAN", "RealESRGAN_x4.pth")
    assert weights.hub_reference("hf://owner/repo/sub/dir/x2.safetensors") == ("owner/repo", "sub/dir/x2.safetensors")
    local = tmp_path / "a" / "b.pth"
    local.parent.mkdir()
    local.write_bytes(b"")
    assert weights.hub_reference(str(local)) is None
    assert weights.hub_reference("./models/esrgan/x4.pth") is None
    assert weights.hub_reference("weights/x4.pth") is None  # two parts: a relative path, not a repo


@pytest.mark.skipif(weights.spandrel_problem() is not None, reason="spandrel does not import here")
def test_spandrel_reads_the_same_network(x4_file):
    by_spandrel = weights.load_network(str(x4_file))
    built_in = weights.load_network(str(x4_file), use_spandrel=False)
    assert (by_spandrel.loader, by_spandrel.arch, by_spandrel.scale) == ("spandrel", "ESRGAN", 4)
    x = to_tensor(candy_photo(size=(40, 30), blobs=((20, 15, 8, 6),)))
    a = upscale_tensor(by_spandrel, x, tile=0, pad=0, device="cpu")
    b = upscale_tensor(built_in, x, tile=0, pad=0, device="cpu")
    assert (a - b).abs().max().item() < 1e-5


def test_the_plan_and_the_prep_fingerprint_know_the_upscaler(make_ctx, tmp_path):
    from clood_candy.pipeline.orchestrator import stage_inputs
    from clood_candy.plan.build import dataset_warnings

    sizes = {"small.png": (100, 80)}
    said = dataset_warnings("object", 20, 128, sizes, 0.5, upscaler="realesrgan")
    assert any("the upscaler realesrgan (prep.upscaler) enlarges them" in w for w in said)
    assert any('prep.upscaler = "realesrgan"' in w for w in dataset_warnings("object", 20, 128, sizes, 0.5))
    source = small_photos(tmp_path / "photos")
    one = make_ctx(prep={"upscaler": "realesrgan"}, plugins={"realesrgan": {"model": "a.pth"}})
    other = make_ctx(prep={"upscaler": "realesrgan"}, plugins={"realesrgan": {"model": "b.pth"}})
    unrelated = make_ctx(plugins={"realesrgan": {"model": "b.pth"}})  # no upscaler: its table changes nothing
    assert stage_inputs(one, "prep", source) != stage_inputs(other, "prep", source)
    assert stage_inputs(unrelated, "prep", source) == stage_inputs(make_ctx(), "prep", source)
