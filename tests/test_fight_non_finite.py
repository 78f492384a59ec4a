"""A judge's NaN or infinite score is that judge's fault for that photo: dropped, counted,
said once; fight.json stays strict JSON."""

import json
import logging
import math

from clood_candy import fsutil
from clood_candy.fight.engine import Panel, run_fight
from clood_candy.fighters import Judge
from clood_candy.records import Candidate, FightItem, Score

BROKEN = {("p0", "short"): math.nan, ("p1", "long"): math.inf, ("p2", "long"): -math.inf}


class GlitchyJudge(Judge):
    """Pointwise: longer captions score higher, except where its maths broke."""

    name = "glitchy"

    def score(self, items, ctx):
        return {i.id: {c.fighter: Score(score=BROKEN.get((i.id, c.fighter), len(c.text)), reason="length")
                       for c in i.candidates} for i in items}


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_scores_are_dropped_counted_and_said_once(tmp_path, caplog):
    items = [FightItem(id=f"p{i}", candidates=[Candidate(fighter="long", text="jlybn, red bean on white"),
                                               Candidate(fighter="short", text="jlybn")]) for i in range(10)]
    cache: dict = {}
    with caplog.at_level(logging.WARNING):
        result = run_fight(items, Panel({"glitchy": (GlitchyJudge(), 1.0)}, {}), ctx=None, cache=cache)

    for item_id in ("p0", "p1", "p2"):
        assert result.items[item_id] == []  # that judge has no say on a photo it broke on
        assert set(result.scores["glitchy"][item_id]) == {"long", "short"} - {f for (i, f) in BROKEN if i == item_id}
    assert result.winner == "long" and result.standings[0].win_rate == 1.0
    assert all(math.isfinite(v) for s in result.standings for v in s.mean_scores.values())
    failures = result.judge_failures["glitchy"]
    assert failures.non_finite == 3 and "3 scores were not finite" in failures.note
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "glitchy" in r.getMessage()]
    assert len(warnings) == 1

    path = fsutil.write_json(tmp_path / "fight.json", result)
    strict_loads(path.read_text())
    strict_loads(json.dumps(cache))


def test_a_run_file_holding_nan_is_named_in_the_log(tmp_path, caplog):
    target = tmp_path / "outcome.json"
    with caplog.at_level(logging.WARNING):
        fsutil.write_json(target, {"final_val_loss": math.nan})
        fsutil.write_json(tmp_path / "fine.json", {"final_val_loss": 0.5})
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "outcome.json" in said[0] and "not valid JSON" in said[0]
    assert math.isnan(json.loads(target.read_text())["final_val_loss"])  # still saved: a diverged run stops cleanly
