"""clood.toml: documented keys validate, mistakes name the key in one line."""

import pytest

from clood_candy.config import load_config
from clood_candy.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "clood.toml"
    path.write_text(text)
    return path


def test_values_from_file_and_cli_overrides_win(tmp_path):
    path = write(tmp_path, 'trigger = "beanz"\n[prep]\nresolution = 768\n[caption]\njudges = {rubric = 2.0}\n')
    config = load_config(path, {"prep": {"resolution": 512}})
    assert config.trigger == "beanz"
    assert config.prep.resolution == 512
    assert config.caption.judges == {"rubric": 2.0}


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'prep.resoluton'"):
        load_config(write(tmp_path, "[prep]\nresoluton = 512\n"))


def test_bad_value_is_named(tmp_path):
    with pytest.raises(UserError, match=r"'train.defaults.rank'"):
        load_config(write(tmp_path, '[train.defaults]\nrank = "big"\n'))


def test_training_configs_for_the_fight(tmp_path):
    path = write(tmp_path, '[[train.fight.configs]]\nname = "fast"\nlearning_rate = 1e-3\n'
                           '[[train.fight.configs]]\nname = "slow"\nlearning_rate = 1e-5\n')
    config = load_config(path)
    assert [c.name for c in config.train.fight.configs] == ["fast", "slow"]


def test_not_toml_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(write(tmp_path, "trigger = \n"))


def test_the_readme_clood_toml_example_is_a_valid_config():
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("## clood.toml", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = load_config(None, tomllib.loads(example))
    assert config.trigger == "jlybn" and config.train.defaults.variant == "lora"
    assert config.caption.judges == {"rubric": 1.0, "diffusion-likelihood": 0.5}


def test_the_demo_trains_candy_minis_text_encoder_but_not_a_flow_bases(tmp_path):
    from clood_candy.config import load_demo_config

    assert load_demo_config(None).train.defaults.train_text_encoder is True
    # Flux and SD3 train the transformer alone: the demo on them must not ask for more
    assert load_demo_config(None, {"base": "tiny-flux"}).train.defaults.train_text_encoder is False
    mine = tmp_path / "clood.toml"
    mine.write_text("[train.defaults]\ntrain_text_encoder = false\n")
    assert load_demo_config(mine).train.defaults.train_text_encoder is False
