"""`clood export` writes the captioned dataset as kohya, ai-toolkit and imagefolder read it."""

import json

import pytest
from click.testing import CliRunner

from clood_candy.cli import cli


def export(run, fmt, dest, *extra):
    result = CliRunner().invoke(cli, ["export", str(run), "--format", fmt, str(dest), *extra])
    assert result.exit_code == 0, result.output
    return result


def dataset_rows(run):
    return [json.loads(line) for line in (run / "dataset" / "metadata.jsonl").read_text().splitlines() if line]


@pytest.mark.slow
def test_kohya_folder_is_repeats_trigger_class(demo_run, tmp_path):
    export(demo_run, "kohya", tmp_path / "kohya", "--repeats", "5")
    folder = tmp_path / "kohya" / "5_jlybn jellybean"
    rows = dataset_rows(demo_run)
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(r["file_name"] for r in rows)
    first = rows[0]
    assert (folder / first["file_name"]).with_suffix(".txt").read_text().strip() == first["text"]


@pytest.mark.slow
def test_ai_toolkit_is_one_folder_of_image_and_txt_and_a_job_that_trains_what_the_run_trained(demo_run, tmp_path):
    import yaml

    from clood_candy.records import TrainOutcome

    export(demo_run, "ai-toolkit", tmp_path / "ait")
    rows = dataset_rows(demo_run)
    assert len(list((tmp_path / "ait").glob("*.txt"))) == len(rows)

    job = yaml.safe_load((tmp_path / "ait" / "config.yaml").read_text())
    process = job["config"]["process"][0]
    trained = TrainOutcome.model_validate_json((demo_run / "train" / "outcome.json").read_text()).config
    assert process["type"] == "sd_trainer" and process["model"]["arch"] == "sd1"  # the demo's base is SD1-shaped
    assert (process["train"]["steps"], process["train"]["lr"]) == (trained.steps, trained.learning_rate)
    assert (process["network"]["linear"], process["network"]["linear_alpha"]) == (trained.rank, trained.alpha)
    [dataset] = process["datasets"]
    assert dataset["folder_path"] == str((tmp_path / "ait").resolve()) and dataset["trigger_word"] == "jlybn"
    assert dataset["num_repeats"] == 1 and dataset["caption_ext"] == "txt"
    assert "jlybn, jellybean" in process["sample"]["prompts"]


@pytest.mark.slow
def test_imagefolder_has_metadata_jsonl(demo_run, tmp_path):
    export(demo_run, "imagefolder", tmp_path / "hf")
    lines = [json.loads(line) for line in (tmp_path / "hf" / "metadata.jsonl").read_text().splitlines()]
    assert {"file_name", "text"} == set(lines[0])
    assert all((tmp_path / "hf" / row["file_name"]).is_file() for row in lines)


def test_export_before_captioning_is_a_one_line_error(tmp_path):
    from clood_candy.runstore import RunStore

    RunStore.create(tmp_path / "run", "candy", {}, None, demo=False)
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--format", "kohya", str(tmp_path / "out")])
    assert result.exit_code == 2 and "run the caption stage first" in result.stderr
