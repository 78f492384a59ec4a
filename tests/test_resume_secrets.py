"""Secrets never reach run.json, and a resumed or reopened run gets the real values back
from where they came from (the user's config file, or the plugin's own default and the
environment), never the "<redacted>" placeholder."""

import json

import pytest
from click.testing import CliRunner

from clood_candy.cli import cli, open_run
from clood_candy.pipeline import orchestrator

SECRETS = {"api_key": "sk-real-0123456789", "token": "hf_real_token"}


@pytest.fixture
def pipeline_configs(monkeypatch):
    """The config each `clood dogfood candy` hands the pipeline (the stages are not run)."""
    seen = []
    monkeypatch.setattr(orchestrator, "run_pipeline", lambda ctx, source, stages, force=False: seen.append(ctx.config))
    return seen


def write_config(path, trigger="beanz"):
    path.write_text(f'trigger = "{trigger}"\n[plugins.keyed]\napi_key = "{SECRETS["api_key"]}"\n'
                    f'token = "{SECRETS["token"]}"\nmodel = "m-1"\nmax_tokens = 40\n')
    return path


def candy(*args):
    return CliRunner().invoke(cli, ["dogfood", "candy", "-q", *args])


def started_run(tmp_path, config):
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    run = tmp_path / "run"
    result = candy(str(photos), "--config", str(config), "--run-dir", str(run), "--base", "tiny")
    assert result.exit_code == 0, result.output
    return run


def assert_no_secret_in(run):
    text = (run / "run.json").read_text()
    assert all(value not in text for value in SECRETS.values())
    return json.loads(text)


def test_resume_gets_the_real_secrets_from_the_config_file_the_run_used(tmp_path, pipeline_configs):
    run = started_run(tmp_path, write_config(tmp_path / "clood.toml"))
    state = assert_no_secret_in(run)
    assert state["config"]["plugins"]["keyed"]["api_key"] == "<redacted>"

    result = candy("--resume", str(run))
    assert result.exit_code == 0, result.output
    resumed = pipeline_configs[-1]
    assert resumed.plugins["keyed"] == {**SECRETS, "model": "m-1", "max_tokens": 40}
    assert resumed.base == "tiny" and resumed.trigger == "beanz"  # the run's own flags and file, as before
    assert_no_secret_in(run)


def test_resume_with_the_config_file_given_again(tmp_path, pipeline_configs):
    first = write_config(tmp_path / "clood.toml")
    run = started_run(tmp_path, first)
    moved = tmp_path / "elsewhere.toml"
    first.rename(moved)

    result = candy("--resume", str(run), "--config", str(moved))
    assert result.exit_code == 0, result.output
    assert pipeline_configs[-1].plugins["keyed"]["api_key"] == SECRETS["api_key"]
    assert pipeline_configs[-1].base == "tiny"
    assert assert_no_secret_in(run)["config_file"] == str(moved.resolve())


def test_without_the_file_the_secret_is_left_to_the_plugin_and_never_redacted(tmp_path, pipeline_configs):
    config = write_config(tmp_path / "clood.toml")
    run = started_run(tmp_path, config)
    config.unlink()

    result = CliRunner().invoke(cli, ["dogfood", "candy", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    # the console wraps long lines anywhere, even inside the path: compare without the white space
    said = "".join(result.stderr.split())
    assert "".join(f"config file this run used is gone ({config.resolve()})".split()) in said
    keyed = pipeline_configs[-1].plugins["keyed"]
    assert "api_key" not in keyed and "token" not in keyed  # the plugin's default / the environment apply
    assert keyed["model"] == "m-1" and pipeline_configs[-1].trigger == "beanz"
    assert "<redacted>" not in json.dumps(pipeline_configs[-1].model_dump(mode="json"))


def test_a_reopened_run_reads_the_real_secrets_too(tmp_path, pipeline_configs):
    run = started_run(tmp_path, write_config(tmp_path / "clood.toml"))
    ctx = open_run(run)  # clood sample / report / export
    assert ctx.options("keyed")["api_key"] == SECRETS["api_key"]
    assert ctx.config.base == "tiny"


def test_a_secret_does_not_decide_whether_a_stage_reruns(make_ctx):
    """Stage fingerprints (kept in run.json) hold no trace of a secret: a rotated key, or a
    resumed run whose key now comes from the environment, redoes no finished stage."""
    from clood_candy.pipeline.orchestrator import stage_inputs
    from clood_candy.runstore import fingerprint

    contexts = [make_ctx(plugins={"keyed": {"api_key": "sk-1", "model": "m-1"}}),
                make_ctx(plugins={"keyed": {"api_key": "sk-2", "model": "m-1"}}),
                make_ctx(plugins={"keyed": {"model": "m-1"}})]
    for stage in ("caption", "train", "sample"):
        assert len({fingerprint(stage_inputs(ctx, stage, None)) for ctx in contexts}) == 1
    changed = make_ctx(plugins={"keyed": {"api_key": "sk-1", "model": "m-2"}})
    assert fingerprint(stage_inputs(changed, "caption", None)) != fingerprint(stage_inputs(contexts[0], "caption", None))
