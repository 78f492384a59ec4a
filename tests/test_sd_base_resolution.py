"""A base works at the resolution the run trains at: samples, the denoising-error judge
and the report's panels follow prep.resolution, not the model's native size (a real SD1.5
trained at 256 px was judged and drawn at 512 px, four times the work for nothing)."""


def test_the_base_follows_the_runs_resolution(make_ctx):
    ctx = make_ctx(base="tiny", prep={"resolution": 96})
    base = ctx.base()
    assert base.resolution == 96
    image = ctx.family().generate(base, "a photo of jlybn jellybean", seed=1, steps=1)
    assert image.size == (96, 96)


def test_without_a_resolution_the_base_keeps_its_own(make_ctx):
    assert make_ctx(base="tiny").base().resolution == 64
