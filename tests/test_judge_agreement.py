"""How often each offline judge, and the default panel, prefers the right caption over a
wrong one (pairs from the studio's ground truth). The figures go in the issue notes."""

import pytest
from support.rubric import studio_pairs

from clood_candy.fight.engine import Panel, run_fight


@pytest.mark.slow
def test_default_panel_prefers_the_right_caption(tmp_path, make_ctx):
    items = studio_pairs(tmp_path / "studio")
    ctx = make_ctx(base="tiny")
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
