"""Trust before use: the pick panel on planted candidates whose truth is known.

Until the project has a base that has learned (issue 14), no trained LoRA draws anything a
judge could tell apart, so the candidates' samples are planted from the studio, each what
that kind of LoRA draws:
- sensible: the held-out photos' own scenes (same beans, colours, background) drawn anew —
  another layout and light from the studio's renderer — and the novel prompts' new background;
- barely trained: the base's idea of candy, another shoot's scenes;
- absurd learning rate: blotchy saturated noise, what a diverged LoRA draws;
- overfitted: its training photos again, whatever the prompt — with the lowest validation
  loss of the four (the trap validation loss alone falls into).
The judges see only images and losses; they are not told which is which."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from clood_candy.pick.panel import judge_sheet
from clood_candy.records import PickCandidate, PickImage, PickPrompt, PickSheet
from clood_candy.studio.render import _plan, _shoot

SIZE = (192, 144)
JUDGES = {"subject-colour": 1.0, "memorisation": 1.0, "validation-loss": 1.0}
TRUTHS = ("sensible above absurd", "sensible above barely", "overfit below sensible")


def _save(image: Image.Image, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").resize((64, 64)).save(path)


def planted_sheet(root, seed: int) -> PickSheet:
    count = 20
    plans = [p for p in _plan(count, seed) if p.defect is None and p.duplicate_of is None]
    ids = {p.index for p in _plan(count, seed) if p.duplicate_of is not None}
    plans = [p for p in plans if p.index not in ids]  # a burst's source stays out too: prep would cull its copy
    everything = _plan(count, seed)
    photo = {}
    for p in plans:
        photo[p.index] = root / "photos" / f"s{seed}-{p.index}.png"
        _save(_shoot(p, everything, seed, SIZE)[0], photo[p.index])
    held, train = plans[:3], plans[3:]
    prompts = [PickPrompt(text=f"held-out {p.index}", kind="held-out", photo=str(photo[p.index])) for p in held]
    prompts.append(PickPrompt(text="jlybn, jellybean, on a new background", kind="novel", change="background"))
    others = [p for p in _plan(count, seed + 1000) if p.defect is None]
    noise = np.random.default_rng(seed)

    def draw(kind: str, i: int) -> Image.Image:
        p = held[i] if i < len(held) else held[0]
        if kind == "sensible":
            new = replace(p, salt=p.salt + 2) if i < len(held) else replace(
                p, salt=p.salt + 2, background="wood" if p.background != "wood" else "white")
            return _shoot(new, everything, seed, SIZE)[0]
        if kind == "barely":
            return _shoot(others[i], _plan(count, seed + 1000), seed + 1000, SIZE)[0]
        if kind == "absurd":
            blotches = noise.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
            return Image.fromarray(blotches).resize(SIZE, Image.Resampling.BICUBIC)
        return Image.open(photo[train[i % len(train)].index])  # overfit: a training photo, whatever the prompt

    losses = {"sensible": 0.14, "barely": 0.20, "absurd": 0.90, "overfit": 0.10}
    steps = {"sensible": 600, "barely": 50, "absurd": 600, "overfit": 5000}
    candidates, images = [], []
    for kind in losses:
        candidates.append(PickCandidate(name=kind, config=kind, step=steps[kind], lora=f"{kind}.safetensors",
                                        val_loss=losses[kind], final=True))
        for i in range(len(prompts)):
            rel = f"train/pick/s{seed}/{kind}/p{i + 1}.png"
            _save(draw(kind, i), root / rel)
            images.append(PickImage(candidate=kind, prompt=i, seed=1, image=rel))
    return PickSheet(candidates=candidates, prompts=prompts, seeds=[1], images=images,
                     held_out=[str(photo[p.index]) for p in held], training=[str(photo[p.index]) for p in train],
                     trigger="jlybn", class_word="jellybean")


def agreement(result, judge: str | None) -> dict[str, bool]:
    """Which planted truths a judge alone (or the panel, None) gets right."""
    if judge is None:
        order = result.panel
        overfit_ok = "overfit" in result.flags or order["overfit"] < order["sensible"]
    else:
        order = {c: s.score for c, s in result.scores[judge].items()}
        overfit_ok = order["overfit"] < order["sensible"]
    return {TRUTHS[0]: order["sensible"] > order["absurd"], TRUTHS[1]: order["sensible"] > order["barely"],
            TRUTHS[2]: overfit_ok}


@pytest.mark.slow
def test_the_panel_picks_the_sensible_candidate_and_flags_the_copier(make_ctx, capsys):
    ctx = make_ctx()
    tally = {name: [] for name in [None, *JUDGES]}
    for seed in (0, 1, 2):
        result = judge_sheet(ctx, planted_sheet(ctx.run.root, seed), JUDGES)
        assert result.winner == "sensible", (seed, result.panel, result.why)
        assert "overfit" in result.flags and "memorised" in result.flags["overfit"][0], result.flags
        assert not {"sensible", "barely", "absurd"} & set(result.flags), result.flags
        # validation loss alone falls into the trap: it likes the copier best
        assert max(result.scores["validation-loss"], key=lambda c: result.scores["validation-loss"][c].score) == "overfit"
        for judge in tally:
            tally[judge].extend(agreement(result, judge).values())
    with capsys.disabled():
        print("\nplanted truths agreed (3 shoots x 3 truths):")
        for judge, got in tally.items():
            print(f"  {judge or 'panel':<16} {sum(got)}/{len(got)}")
    assert all(tally[None])
