"""How often each offline judge, and the default panel, prefers the right caption over a
wrong one (pairs from the studio's ground truth). The figures go in the issue notes."""

import pytest
from support.rubric import photo_for, right_caption, wrong_versions

from clood_candy.captions.render import render
from clood_candy.fight.engine import Panel, run_fight
from clood_candy.records import Candidate, FightItem


@pytest.mark.slow
def test_default_panel_prefers_the_right_caption(tmp_path, make_ctx):
    from clood_candy.studio import render_studio

    root = tmp_path / "studio"
    shots = render_studio(root, count=32, seed=0)
    ctx = make_ctx(base="tiny")
    items = []
    for shot in shots:
        photo = photo_for(root, shot.path)
        right = render(right_caption(shot.labels), "tags", trigger="jlybn", class_word="jellybean")
        for kind, wrong in wrong_versions(shot.labels, right_caption(shot.labels)).items():
            items.append(FightItem(id=f"{shot.path}|{kind}", photo=photo,
                                   candidates=[Candidate(fighter="right", text=right), Candidate(fighter="wrong", text=wrong)]))
    figures = {}
    for name, judges in {"rubric": {"rubric": 1.0}, "diffusion-likelihood": {"diffusion-likelihood": 1.0},
                         "default panel": ctx.config.caption.judges}.items():
        panel = Panel({j: (ctx.registry.get("judge", j), w) for j, w in judges.items()}, {})
        result = run_fight(items, panel, ctx)
        won = sum(1 for i in items if result.per_item_winners.get(i.id) == "right"
                  and any(v.outcome == "a" for v in result.items[i.id]))
        figures[name] = won / len(items)
    print("agreement with ground truth over", len(items), "pairs:",
          ", ".join(f"{k} {v:.1%}" for k, v in figures.items()))
    assert figures["rubric"] >= 0.9
    assert figures["default panel"] >= 0.9
