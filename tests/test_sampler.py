"""The default sampler: prompts × LoRA weights with fixed seeds, the base alone generated
once, checkpoints × weights for the first prompt, labelled grids."""

from pathlib import Path

import pytest
from clood_candy_plugins.sampler.grid import MIN_CELL, labelled_grid
from clood_candy_plugins.sampler.plugin import BASE, DefaultSampler, plan
from PIL import Image

from clood_candy.errors import UserError
from clood_candy.records import SampleSet
from clood_candy.stages import ModelFamily


class RecordingFamily(ModelFamily):
    """Paints each call's arguments into a flat colour, so the images on disk can be
    traced back to the call that made them; ``fail_on`` names LoRA files that raise."""

    name = "recording"

    def __init__(self, fail_on: set[str] | None = None):
        self.calls: list[dict] = []
        self.fail_on = fail_on or set()

    def matches(self, base):
        return False

    def load(self, base, ctx):
        raise NotImplementedError

    def train(self, *args, **kwargs):
        raise NotImplementedError

    def generate(self, base, prompt, *, seed, lora=None, weight=1.0, negative_prompt="", steps=None, guidance=None):
        self.calls.append({"prompt": prompt, "seed": seed, "lora": lora, "weight": weight,
                           "negative_prompt": negative_prompt, "steps": steps, "guidance": guidance})
        if lora is not None and Path(lora).name in self.fail_on:
            raise RuntimeError("this checkpoint is broken")
        return Image.new("RGB", (64, 64), (seed * 40 % 256, int(weight * 200), len(prompt) % 256))


def _loras(tmp_path: Path, names=("step-30", "final")) -> dict[str, Path]:
    out = {}
    for name in names:
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(f"{name}: not read by the recording family".encode())
        out[name] = path
    return out


def test_plan_makes_the_base_once_per_prompt_and_seed_and_checkpoints_for_the_first_prompt(tmp_path):
    loras = _loras(tmp_path)
    jobs, primary = plan(["a", "b"], loras, [0.0, 0.5, 1.0], [1, 2])
    assert primary == "final"
    base_jobs = [j for j in jobs if j.weight == 0]
    assert sorted((j.prompt, j.seed) for j in base_jobs) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert all(j.lora is None and j.checkpoint == BASE for j in base_jobs)
    # final × 2 prompts × 2 seeds × 2 weights, plus step-30 × first prompt × 2 seeds × 2 weights
    assert len([j for j in jobs if j.checkpoint == "final"]) == 8
    assert {(j.prompt, j.weight) for j in jobs if j.checkpoint == "step-30"} == {("a", 0.5), ("a", 1.0)}
    assert len({j.file_name() for j in jobs}) == len(jobs), "two images would overwrite each other"


def test_sampler_writes_images_records_and_labelled_grids(make_ctx, tmp_path):
    ctx = make_ctx(sample={"steps": 3, "guidance_scale": 5.5})
    family = RecordingFamily()
    loras = _loras(tmp_path)
    out = ctx.run.path("samples")
    result = DefaultSampler().sample(family, None, loras, ["jlybn, jellybean", "jlybn in a bowl"], out, ctx,
                                     weights=[1.0, 0.0, 0.5], seeds=[7, 8], negative_prompt="blurry")
    assert isinstance(result, SampleSet)
    # 2 prompts × 2 seeds × (base + 2 weights) + step-30 × 2 seeds × 2 weights
    assert len(result.images) == len(family.calls) == 16
    assert all(c["steps"] == 3 and c["negative_prompt"] == "blurry" and c["guidance"] == 5.5 for c in family.calls)
    assert all(c["lora"] is None for c in family.calls if c["weight"] == 0)
    assert {c["seed"] for c in family.calls} == {7, 8}
    for sample in result.images:
        path = ctx.run.path(sample.image)
        assert not Path(sample.image).is_absolute() and path.is_file()
        with Image.open(path) as image:  # the file is the image generated for exactly this call
            assert image.getpixel((0, 0)) == (sample.seed * 40 % 256, int(sample.weight * 200), len(sample.prompt) % 256)
    assert set(result.grids) == {"prompt-1", "prompt-2", "prompts", "checkpoints"}
    with Image.open(ctx.run.path(result.grids["prompts"])) as grid:
        assert grid.height > 2 * MIN_CELL  # a row per prompt: with concepts, a row per trigger
    with Image.open(ctx.run.path(result.grids["prompt-1"])) as grid:
        # 3 weight columns and 2 seed rows of cells enlarged to at least MIN_CELL, plus labels
        assert grid.width > 3 * MIN_CELL and grid.height > 2 * MIN_CELL
    with Image.open(ctx.run.path(result.grids["checkpoints"])) as grid:
        assert grid.height > 4 * MIN_CELL  # 2 checkpoints × 2 seeds


def test_a_checkpoint_that_is_the_shipped_file_is_not_drawn_twice(make_ctx, tmp_path):
    ctx = make_ctx()
    family = RecordingFamily()
    loras = _loras(tmp_path, ["step-20", "step-40", "final"])
    loras["step-40"].write_bytes(loras["final"].read_bytes())  # the pick shipped step 40
    result = DefaultSampler().sample(family, None, loras, ["jlybn", "jlybn in a bowl"], ctx.run.path("samples"), ctx,
                                     weights=[0.0, 1.0], seeds=[1, 2])
    # 2 prompts × 2 seeds × (base + final) + step-20 × 2 seeds; step-40 borrows final's
    assert len(family.calls) == 10
    row = sorted((s.seed, s.image) for s in result.images if s.checkpoint == "step-40")
    shipped = {s.seed: s.image for s in result.images if s.checkpoint == "final" and s.prompt == "jlybn"}
    assert [seed for seed, _ in row] == [1, 2]
    for seed, image in row:
        assert ctx.run.path(image).read_bytes() == ctx.run.path(shipped[seed]).read_bytes()
    assert "checkpoints" in result.grids


def test_a_broken_checkpoint_costs_only_its_own_cells(make_ctx, tmp_path):
    ctx = make_ctx()
    family = RecordingFamily(fail_on={"step-30.safetensors"})
    result = DefaultSampler().sample(family, None, _loras(tmp_path), ["jlybn"], ctx.run.path("samples"), ctx,
                                     weights=[0.0, 1.0], seeds=[1])
    assert {s.checkpoint for s in result.images} == {BASE, "final"}
    assert "checkpoints" in result.grids  # drawn, with the failed cells marked


def test_every_sample_failing_is_an_error_not_an_empty_set(make_ctx, tmp_path):
    ctx = make_ctx()
    family = RecordingFamily(fail_on={"final.safetensors"})
    with pytest.raises(RuntimeError, match="every sample failed"):
        DefaultSampler().sample(family, None, _loras(tmp_path, ["final"]), ["jlybn"], ctx.run.path("s"), ctx,
                                weights=[1.0], seeds=[1])


def test_missing_lora_file_and_empty_prompts_are_clear_errors(make_ctx, tmp_path):
    ctx = make_ctx()
    sampler, family = DefaultSampler(), RecordingFamily()
    with pytest.raises(UserError, match="missing"):
        sampler.sample(family, None, {"final": tmp_path / "gone.safetensors"}, ["jlybn"], tmp_path, ctx,
                       weights=[1.0], seeds=[1])
    with pytest.raises(UserError, match="no prompts"):
        sampler.sample(family, None, _loras(tmp_path), ["  "], tmp_path, ctx, weights=[1.0], seeds=[1])
    assert family.calls == []


def test_grid_marks_a_missing_cell_instead_of_leaving_it_black():
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    grid = labelled_grid([[red, None]], ["seed 1"], ["LoRA 1", "LoRA 0.5"], title="t")
    counts = {colour: n for n, colour in grid.getcolors(grid.width * grid.height)}
    cell = MIN_CELL * MIN_CELL  # small samples are enlarged to at least MIN_CELL
    assert counts.get((255, 0, 0), 0) == cell
    assert counts.get((235, 235, 235), 0) > 0.8 * cell  # the grey "failed" cell, minus its word


@pytest.mark.slow
def test_clood_sample_resamples_a_finished_demo_run(demo_run):
    import json

    from click.testing import CliRunner

    from clood_candy.cli import cli, open_run
    from clood_candy.pipeline.sample_stage import loras

    checkpoint = next(name for name in loras(open_run(demo_run)) if name != "final")
    result = CliRunner().invoke(cli, ["sample", str(demo_run), "--prompt", "jlybn, jellybean on a plate",
                                      "--weights", "0,1", "--checkpoint", checkpoint, "-q"])
    assert result.exit_code == 0, result.output
    out = demo_run / "samples" / "resampled"
    samples = SampleSet.model_validate(json.loads((out / "samples.json").read_text()))
    seeds = open_run(demo_run).config.sample.seeds
    assert sorted((s.weight, s.checkpoint, s.seed) for s in samples.images) == sorted(
        [(0.0, BASE, seed) for seed in seeds] + [(1.0, checkpoint, seed) for seed in seeds])
    assert all(s.prompt == "jlybn, jellybean on a plate" and (demo_run / s.image).is_file() for s in samples.images)
    assert (demo_run / samples.grids["prompt-1"]).is_file() and "checkpoints" not in samples.grids
    # The base alone and the LoRA at full weight, same seed: the LoRA changed the picture.
    with Image.open(demo_run / samples.images[0].image) as a, Image.open(demo_run / samples.images[1].image) as b:
        assert a.tobytes() != b.tobytes()
