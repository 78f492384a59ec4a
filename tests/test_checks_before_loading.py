"""Mistakes that need no model are found before the base model loads (on a user's machine
that load can be a download of gigabytes): an empty or image-less photo folder, and a
resolution the model family cannot train at. One line on stderr, exit code 2."""

import pytest
from click.testing import CliRunner
from PIL import Image

from clood_candy.cli import cli


def candy(tmp_path, photos, *args):
    return CliRunner().invoke(cli, ["dogfood", "candy", str(photos), "--base", "tiny",
                                    "--run-dir", str(tmp_path / "run"), "-q", *args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def a_photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir(parents=True)
    Image.new("RGB", (96, 96), (200, 30, 40)).save(folder / "bean.png")
    return folder


def test_an_empty_folder_is_named_before_the_base_loads(tmp_path, load_calls):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(candy(tmp_path, empty))
    assert "no images found" in line and str(empty) in line
    assert load_calls == []


def test_a_folder_of_text_files_has_no_images(tmp_path, load_calls):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "readme.txt").write_text("beans")
    (notes / "sub" / "list.csv").write_text("red,green")
    (notes / "sub" / "script.py").write_text("print('not a photo')")
    line = one_line_error(candy(tmp_path, notes))
    assert "no images found" in line and str(notes) in line and ".jpg" in line
    assert load_calls == []


def test_a_zip_without_photos_has_no_images(tmp_path, load_calls):
    import zipfile

    archive = tmp_path / "beans.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes/readme.txt", "beans")
        zf.writestr("__MACOSX/._bean.jpg", "resource fork, not a photo")
    line = one_line_error(candy(tmp_path, archive))
    assert "no images found" in line and str(archive) in line
    assert load_calls == []


def test_the_check_goes_by_the_preparers_own_extensions(tmp_path, load_calls):
    from clood_candy_plugins.prep.sources import IMAGE_SUFFIXES

    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "bean.heic").write_bytes(b"not decodable, but named like a photo")
    assert ".heic" in IMAGE_SUFFIXES
    # An image by its name passes the check; prep then judges the file itself (and fails it).
    line = one_line_error(candy(tmp_path, folder, "--resolution", "64"))
    assert "no usable photos" in line
    assert load_calls == []


@pytest.mark.parametrize("resolution, why", [("13", "multiple of 8"), ("4104", "4096"), ("32", "64")])
def test_a_resolution_the_family_cannot_train_at(tmp_path, load_calls, resolution, why):
    line = one_line_error(candy(tmp_path, a_photo_folder(tmp_path), "--resolution", resolution))
    assert f"prep.resolution {resolution}" in line and why in line and "sd1" in line
    assert load_calls == []


def test_buckets_need_a_multiple_of_64(tmp_path, load_calls):
    config = tmp_path / "clood.toml"
    config.write_text("[prep]\nbuckets = true\nresolution = 520\n")
    line = one_line_error(candy(tmp_path, a_photo_folder(tmp_path), "--config", str(config)))
    assert "prep.resolution 520" in line and "multiple of 64" in line and "buckets" in line
    assert load_calls == []


def test_training_resolutions_are_checked_too(tmp_path, load_calls):
    config = tmp_path / "clood.toml"
    config.write_text("[train.defaults]\nresolution = 100\n")
    line = one_line_error(candy(tmp_path, a_photo_folder(tmp_path), "--config", str(config)))
    assert "train.defaults.resolution 100" in line and "multiple of 8" in line

    config.write_text('[[train.fight.configs]]\nname = "fast"\n'
                      '[[train.fight.configs]]\nname = "wide"\nresolution = 36\n')
    line = one_line_error(candy(tmp_path, a_photo_folder(tmp_path / "again"), "--config", str(config)))
    assert "[[train.fight.configs]] 'wide' resolution 36" in line and "multiple of 8" in line
    assert load_calls == []


def test_the_generic_rule_a_family_inherits():
    from clood_candy.stages import ModelFamily

    class Plain(ModelFamily):
        name = "plain"
        matches = load = train = generate = None

    plain = Plain()
    assert plain.check_resolution(512, buckets=False) is None
    assert plain.check_resolution(520, buckets=False) is None
    assert "multiple of 64" in plain.check_resolution(520, buckets=True)
    assert "multiple of 8" in plain.check_resolution(13, buckets=False)
    assert "64" in plain.check_resolution(32, buckets=False) and "4096" in plain.check_resolution(8192, buckets=False)


def test_a_recipe_trained_from_the_command_line_is_checked_too(tmp_path, load_calls, capsys):
    from clood_candy_plugins.sd import launch

    from clood_candy.config import load_config
    from clood_candy.records import TrainConfig, TrainSet
    from clood_candy.runstore import RunStore

    run = tmp_path / "run"
    RunStore.create(run, "t", load_config(None, {"base": "tiny"}).model_dump(mode="json"), None, demo=False)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(TrainConfig(name="odd", resolution=100).model_dump_json())
    trainset = tmp_path / "trainset.json"
    trainset.write_text(TrainSet(train=[], validation=[], trigger="jlybn", class_word="jellybean",
                                 resolution=64).model_dump_json())
    assert launch.main(["--run", str(run), "--recipe", str(recipe), "--trainset", str(trainset), "-q"]) == 2
    assert "resolution 100" in capsys.readouterr().err and load_calls == []
