"""User mistakes are one line on stderr and exit code 2; runs are listed."""

import json

from click.testing import CliRunner

from clood_candy.cli import cli
from clood_candy.runstore import RunStore


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, text):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_no_photos_and_no_demo():
    assert_one_line_error(invoke("dogfood", "candy"), "give a photos folder")


def test_missing_photos_folder(tmp_path):
    assert_one_line_error(invoke("dogfood", "candy", str(tmp_path / "nope")), "photos folder not found")


def test_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "clood.toml"
    cfg.write_text("[caption]\njudgez = {}\n")
    assert_one_line_error(invoke("dogfood", "candy", str(tmp_path), "--config", str(cfg),
                                 "--run-dir", str(tmp_path / "r")), "unknown key 'caption.judgez'")


def test_unknown_plugin_is_named_before_any_work(tmp_path):
    cfg = tmp_path / "clood.toml"
    cfg.write_text('[caption]\ncaptioners = ["vision-stats", "gpt-9"]\n')
    result = invoke("dogfood", "candy", str(tmp_path), "--config", str(cfg), "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(result, "unknown captioner 'gpt-9'")
    state = RunStore.open(tmp_path / "r").state
    assert all(s.status == "pending" for s in state.stages.values())


def test_unknown_stage(tmp_path):
    result = invoke("dogfood", "candy", str(tmp_path), "--stages", "prep,polish", "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(result, "unknown stage(s) polish")


def test_resume_needs_a_run_folder(tmp_path):
    assert_one_line_error(invoke("dogfood", "candy", "--resume", str(tmp_path)), "not a run folder")


def test_runs_lists_runs_with_stage_status(tmp_path):
    RunStore.create(tmp_path / "runs" / "r1", "candy", {}, None, demo=False)
    result = invoke("runs", "--dir", str(tmp_path / "runs"), "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert rows[0]["stages"]["prep"] == "pending"
