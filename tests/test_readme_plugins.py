"""The captioner and judge examples in the README load from a plugins dir and fight."""

import re
from pathlib import Path

from clood_candy import plugins as plugin_mod
from clood_candy.fight.engine import Panel, run_fight
from clood_candy.records import Candidate, FightItem, Photo

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_plugin_files() -> dict[str, str]:
    """Python blocks in the README whose first line names a file: ``# name.py``."""
    blocks = re.findall(r"```python\n# (\w+\.py)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return {name: body for name, body in blocks}


def test_readme_examples_load_and_take_part_in_a_fight(tmp_path, make_ctx):
    files = readme_plugin_files()
    assert set(files) == {"folder_words.py", "says_a_colour.py"}
    plugin_dir = tmp_path / "my_plugins"
    plugin_dir.mkdir()
    for name, body in files.items():
        (plugin_dir / name).write_text(body)
    plugin_mod.load_plugin_dir(plugin_dir)
    try:
        ctx = make_ctx()
        captioner = ctx.registry.get("captioner", "folder-words")
        judge = ctx.registry.get("judge", "says-a-colour")
        assert ctx.registry.items["judge"]["says-a-colour"].source.endswith("says_a_colour.py")
        photos = [Photo(id=f"p{i}", source=f"red/day/IMG_{i}.jpg", image=f"p{i}.png", width=8, height=8,
                        folders=["red", "day"]) for i in range(6)]
        captions = captioner.caption(photos, ctx)
        assert captions["p0"].caption == "jlybn, jellybean, red, day"
        items = [FightItem(id=p.id, photo=p, candidates=[
            Candidate(fighter="folder-words", text=captions[p.id].caption),
            Candidate(fighter="baseline", text="jlybn, jellybean")]) for p in photos]
        result = run_fight(items, Panel({"says-a-colour": (judge, 1.0)}, {}), ctx)
        assert result.winner == "folder-words" and result.clear
        assert "names red" in result.items["p0"][0].reason
    finally:
        for name in files:
            plugin_mod.pm.unregister(name=Path(name).stem)
        plugin_mod._loaded_dirs.discard(plugin_dir.resolve())
