"""The README's demo, end to end: every stage done, a report, a loadable kohya LoRA."""

import json

import pytest
from safetensors import safe_open

from clood_candy.runstore import STAGES, RunStore

pytestmark = pytest.mark.slow  # the whole demo run (about a minute)


def test_every_stage_is_done_and_outputs_are_named(demo_run):
    state = RunStore.open(demo_run).state
    assert {s: state.stages[s].status for s in STAGES} == dict.fromkeys(STAGES, "done")
    assert (demo_run / state.outputs["lora"]).is_file()
    assert (demo_run / state.outputs["report"]).is_file()
    assert state.config["base"] == "candy-mini" and state.demo


def test_run_store_contract(demo_run):
    prep = json.loads((demo_run / "prep" / "report.json").read_text())
    assert {"source", "status", "reason", "crop_box", "output"} <= set(prep["entries"][0])
    fight = json.loads((demo_run / "caption" / "fight.json").read_text())
    assert len(fight["fighters"]) >= 3 and len(fight["judges"]) >= 2 and fight["winner"]
    assert fight["winner"] != "baseline"
    for fighter in ("vision-stats", "exif-folder", "baseline"):
        captions = json.loads((demo_run / "caption" / fighter / "captions.json").read_text())
        assert captions and all(name.endswith(".png") for name in captions)
    lines = (demo_run / "dataset" / "metadata.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["text"].startswith("jlybn") for line in lines)
    for line in lines:
        row = json.loads(line)
        assert (demo_run / "dataset" / row["file_name"]).is_file()
        assert (demo_run / "dataset" / row["file_name"]).with_suffix(".txt").read_text().strip() == row["text"]
    train_fight = json.loads((demo_run / "train" / "fight.json").read_text())
    assert len(train_fight["configs"]) >= 3 and train_fight["rounds"][0]["scores"]
    assert train_fight["winner"] in {c["name"] for c in train_fight["configs"]}


def test_lora_is_kohya_keyed_with_alpha(demo_run):
    state = RunStore.open(demo_run).state
    with safe_open(str(demo_run / state.outputs["lora"]), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    # the demo trains the text encoder too: kohya's lora_te_ keys beside lora_unet_
    assert keys and all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert any(k.startswith("lora_unet_") for k in keys) and any(k.startswith("lora_te_") for k in keys)
    modules = {k.rsplit(".", 2)[0] for k in keys if k.endswith(".lora_down.weight")}
    assert all(f"{m}.alpha" in keys and f"{m}.lora_up.weight" in keys for m in modules)
    assert meta.get("ss_network_dim")
    outcome = json.loads((demo_run / "train" / "outcome.json").read_text())
    assert outcome["verification"].get("diffusers_load") is True


def test_the_demo_lora_names_its_miniature_base_and_the_report_never_sends_it_to_a_real_checkpoint(demo_run):
    state = RunStore.open(demo_run).state
    with safe_open(str(demo_run / state.outputs["lora"]), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_base_model_version"] == "clood_candy-mini" and meta["ss_sd_model_name"] == "candy-mini"
    assert "loads on that miniature only" in meta["clood_toy_base"]
    html = (demo_run / state.outputs["report"]).read_text(encoding="utf-8")
    lora_section = html[html.index('data-section="lora"'):]
    lora_section = lora_section[:lora_section.index("</section>")]
    assert "loads on that miniature only" in lora_section
    assert "&lt;lora:" not in lora_section and "ComfyUI/models/loras" not in lora_section


def test_goal_the_demo_lora_brings_the_look_the_base_never_saw(demo_run):
    """The demo's photos are teal beans, a colour candy-mini's pretraining held out: the
    samples show it with the LoRA on and not without (issue 14: ≥ 60 % at weight 1, ≤ 10 % at 0)."""
    from clood_candy_plugins.pretrain.evaluate import look_arrival

    look = look_arrival(demo_run)
    print("teal look per LoRA weight:", look)
    assert look[1.0]["present"] >= 0.60
    assert look[0.0]["present"] <= 0.10
