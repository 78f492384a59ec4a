"""Several brands in one LoRA (seed 004's multi-concept workflow): concepts from folders or
[[concepts]], each with its own trigger after the run's, balanced by repeats, with the
checks a user needs; then, end to end on the tiny base, two brands trained into one LoRA."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from clood_candy.concepts import resolve, trigger_of, with_trigger
from clood_candy.config import load_config
from clood_candy.records import ConceptSet, Photo


def photo(source: str) -> Photo:
    parts = source.split("/")
    return Photo(id=parts[-1].split(".")[0], source=source, image=f"prep/{parts[-1]}", width=64, height=64,
                 folders=parts[:-1])


def shoot(counts: dict[str, int]) -> list[Photo]:
    return [photo(f"{brand}/day/IMG_{brand[:2]}{i}.jpg") for brand, n in counts.items() for i in range(n)]


def test_each_first_level_folder_is_a_concept_balanced_by_repeats():
    config = load_config(None, {"concepts_from": "folders"})
    found = resolve(config, shoot({"jelly-belly": 24, "sunkist": 8}) + [photo("loose.jpg")])
    jb, sk = found.concepts
    assert (jb.name, jb.trigger, len(jb.photos), jb.repeats) == ("jelly-belly", "jellybelly", 24, 1)
    assert (sk.trigger, len(sk.photos), sk.repeats) == ("sunkist", 8, 3)
    assert jb.share == pytest.approx(0.5) and sk.share == pytest.approx(0.5)  # 24×1 against 8×3
    assert found.unassigned == ["loose"]
    assert any("concept sunkist has 8 photos" in w and "20–40" in w for w in found.warnings)
    assert not any("jelly-belly has" in w for w in found.warnings)


def test_declared_concepts_take_their_own_trigger_glob_and_class_and_overlaps_are_named():
    config = load_config(None, {"concepts": [
        {"name": "Jelly Belly", "trigger": "jbx", "folder": "jelly-belly"},
        {"name": "night", "glob": "*/night/*", "class_word": "candy"},
        {"name": "sunkist"}]})
    photos = shoot({"jelly-belly": 3, "sunkist": 2}) + [photo("jelly-belly/night/IMG_n1.jpg")]
    found = resolve(config, photos)
    by_name = {c.name: c for c in found.concepts}
    assert by_name["Jelly Belly"].trigger == "jbx" and "IMG_n1" in by_name["Jelly Belly"].photos
    assert "night" not in by_name  # its only photo stayed with the concept that claimed it first
    assert any("IMG_n1.jpg is in 2 concepts (Jelly Belly, night)" in w for w in found.warnings)
    assert any("concept night matched no photo" in w for w in found.warnings)
    assert by_name["sunkist"].class_word == "jellybean" and len(by_name["sunkist"].photos) == 2


def test_a_trigger_the_model_already_knows_or_that_splits_into_many_tokens_is_a_warning():
    config = load_config(None, {"concepts": [{"name": "red", "folder": "jelly-belly"},
                                             {"name": "sunkist", "trigger": "sunkistorangeflavoured"}]})
    found = resolve(config, shoot({"jelly-belly": 20, "sunkist": 20}), tokens=lambda text: len(text) // 4)
    warnings = " ".join(found.warnings)
    assert "trigger 'red' is a word the model already knows" in warnings
    assert "'sunkistorangeflavoured' splits into 5 tokens" in warnings


def test_the_concept_trigger_goes_right_after_the_runs_in_every_caption_style():
    assert with_trigger("jlybn, jellybean, red, glossy", "jlybn", "sunkist") == "jlybn sunkist, jellybean, red, glossy"
    assert with_trigger("jlybn, a red jellybean on a table.", "jlybn", "sunkist").startswith("jlybn sunkist, a red")
    assert with_trigger("a red jellybean", "jlybn", "sunkist") == "jlybn sunkist, a red jellybean"
    assert with_trigger("jlybnx, jlybn, red", "jlybn", "sk") == "jlybnx, jlybn sk, red"  # whole words only
    assert trigger_of("Speckled & Co.") == "speckledco"


def test_two_folders_that_make_one_trigger_get_two_and_a_warning():
    config = load_config(None, {"concepts_from": "folders"})
    found = resolve(config, shoot({"Jelly Belly": 20, "jelly_belly": 20}))
    assert [c.trigger for c in found.concepts] == ["jellybelly", "jellybelly2"]
    assert any("concepts Jelly Belly and jelly_belly both make the trigger 'jellybelly': jelly_belly trains as "
               "'jellybelly2'" in w for w in found.warnings)


def test_a_concepts_own_class_word_replaces_the_runs_in_its_captions():
    assert with_trigger("jlybn, jellybean, red", "jlybn", "gb", "jellybean", "gummy bear") == "jlybn gb, gummy bear, red"
    assert with_trigger("jlybn, a red jellybean.", "jlybn", "sk", "jellybean", "jellybean") == "jlybn sk, a red jellybean."


def test_no_concepts_unless_asked():
    assert resolve(load_config(None), shoot({"jelly-belly": 3, "sunkist": 3})) == ConceptSet()


def _brands(root, counts):
    """The demo studio's photos, keeping the first n of each brand named (the others dropped)."""
    import shutil

    from clood_candy.studio import render_studio

    studio = root / "studio"
    render_studio(studio, count=32, seed=0)
    for folder in [p for p in studio.iterdir() if p.is_dir()]:
        if folder.name not in counts:
            shutil.rmtree(folder)
            continue
        for extra in sorted(folder.rglob("*.jpg"))[counts[folder.name]:]:
            extra.unlink()
    return studio


@pytest.mark.slow
def test_two_brands_train_one_lora_with_two_triggers_balanced_and_the_report_shows_both(tmp_path):
    from safetensors import safe_open

    from clood_candy.cli import cli

    photos = _brands(tmp_path, {"jelly-belly": 11, "sunkist": 4})
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["dogfood", "candy", str(photos), "--demo", "--concepts-from", "folders",
                                      "--run-dir", str(run), "-q"])
    assert result.exit_code == 0, result.output
    concepts = ConceptSet.model_validate_json((run / "dataset" / "concepts.json").read_text())
    kept = {c.trigger: (len(c.photos), c.repeats) for c in concepts.concepts}
    (n_jb, r_jb), (n_sk, r_sk) = kept["jellybelly"], kept["sunkist"]
    assert n_jb > n_sk and r_jb == 1 and r_sk == round(n_jb / n_sk) > 1  # the smaller brand repeated to balance
    rows = [json.loads(line) for line in (run / "dataset" / "metadata.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["text"].startswith(f"jlybn {row['concept']}, ")
        assert (run / "dataset" / row["file_name"]).with_suffix(".txt").read_text().startswith("jlybn " + row["concept"])
    with safe_open(str(run / "train" / "jlybn.safetensors"), "pt") as lora:
        folders = json.loads(lora.metadata()["ss_tag_frequency"])
    assert {k.split("_", 1)[1] for k in folders} == {"jlybn jellybelly", "jlybn sunkist"}
    assert "1_jlybn jellybelly" in folders and f"{r_sk}_jlybn sunkist" in folders  # as kohya's folders say
    prompts = {i["prompt"] for i in json.loads((run / "samples" / "samples.json").read_text())["images"]}
    assert {"jlybn jellybelly, jellybean", "jlybn sunkist, jellybean"} <= prompts
    report = (run / "report.html").read_text()
    assert "Concepts: 2 triggers in one LoRA" in report
    assert "jlybn jellybelly" in report and "jlybn sunkist" in report
    # the leak check beside the samples: each brand's word matched to the photos it draws like
    assert "Does each concept's word draw that concept?" in report
    leaks = json.loads((run / "samples" / "concept_leaks.json").read_text())
    print("concept leaks:", json.dumps(leaks.get("matrix"), sort_keys=True), leaks.get("sat_out"))
    assert not leaks.get("sat_out")  # candy-mini ships its CLIP: the check must measure here
    assert set(leaks["matrix"]) == {"jellybelly", "sunkist"}

    out = tmp_path / "kohya"
    exported = CliRunner().invoke(cli, ["export", str(run), "--format", "kohya", str(out), "--repeats", "10"])
    assert exported.exit_code == 0, exported.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["10_jlybn jellybelly jellybean", f"{10 * r_sk}_jlybn sunkist jellybean"]
    config = (out / "dataset_config.toml").read_text()
    assert f"num_repeats = {10 * r_sk}" in config and 'class_tokens = "jlybn sunkist jellybean"' in config

    import yaml

    ait = tmp_path / "ai-toolkit"
    exported = CliRunner().invoke(cli, ["export", str(run), "--format", "ai-toolkit", str(ait)])
    assert exported.exit_code == 0, exported.output
    datasets = yaml.safe_load((ait / "config.yaml").read_text())["config"]["process"][0]["datasets"]
    assert {(Path(d["folder_path"]).name, d["trigger_word"], d["num_repeats"]) for d in datasets} == {
        ("jellybelly", "jlybn jellybelly", 1), ("sunkist", "jlybn sunkist", r_sk)}
