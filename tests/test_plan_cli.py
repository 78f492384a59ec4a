"""``clood plan PHOTOS --base B``: the plan for real-size SD1.5 and SDXL bases, counted from
the shipped configs without loading a model or touching the network."""

import json
import zipfile

from click.testing import CliRunner
from PIL import Image

from clood_candy.cli import cli

SD15, SDXL = "stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0"


def photo_folder(tmp_path, count, size=(640, 480), small=()):
    folder = tmp_path / "photos"
    (folder / "day").mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", size, (200, 30 + i, 40)).save(folder / "day" / f"bean{i:02}.jpg")
    for name, wh in small:
        Image.new("RGB", wh, (10, 200, 40)).save(folder / name)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def plan_json(*args):
    result = CliRunner().invoke(cli, ["plan", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def test_plan_json_for_sd15_loads_nothing_and_touches_no_network(tmp_path, load_calls, network_attempts):
    folder = photo_folder(tmp_path, 30, small=[("thumb.png", (300, 200))])
    made = plan_json(folder, "--base", SD15)
    assert load_calls == [] and network_attempts == []
    assert made["family"] == "sd1" and made["photos"] == 31 and made["resolution"] == 512
    keys = {c["key"]: c for c in made["choices"]}
    assert keys["train.defaults.steps"]["value"] == 550  # 22 × 25 training photos
    assert {"reason", "set_by_user", "value"} <= set(keys["train.defaults.learning_rate"])
    memory = made["memory"]
    assert set(memory["parts"]) == {"weights", "adapter", "gradients", "optimizer", "activations", "weight copies",
                                    "workspace", "runtime"}
    assert memory["parts"]["weight copies"] == 0  # fp32 on the CPU: backward reads the weights themselves
    assert memory["parts"]["weights"] == (859_520_964 + 123_060_480 + 83_653_863) * 4  # the shipped configs, fp32
    assert made["fight"]["budgets"] and made["fight"]["cost"] <= made["fight"]["limit"]
    assert any("thumb.png (300×200)" in w for w in made["warnings"])


def test_sdxl_on_a_12_gb_gpu_takes_the_remedies_in_order(tmp_path, load_calls):
    folder = photo_folder(tmp_path, 30, size=(1024, 1024))
    made = plan_json(folder, "--base", SDXL, "--gpu-memory", "12")
    assert load_calls == []
    assert made["device"]["kind"] == "cuda" and made["device"]["assumed"] and made["resolution"] == 1024
    keys = {c["key"]: c["value"] for c in made["choices"]}
    assert keys["train.defaults.mixed_precision"] == "bf16"
    assert made["remedies"][0]["step"].startswith("gradient checkpointing")
    assert keys["train.defaults.gradient_checkpointing"] is True
    # SDXL's fp32 weights alone are 12.9 GB: the plan says how to halve them
    assert any('[plugins.sd] dtype = "bf16"' in n for n in made["notes"])


def test_the_text_plan_marks_what_you_set(tmp_path, load_calls):
    folder = photo_folder(tmp_path, 20)
    config = tmp_path / "clood.toml"
    config.write_text("[train.defaults]\nsteps = 1234\n")
    result = CliRunner().invoke(cli, ["plan", str(folder), "--base", SD15, "--config", str(config)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("steps"))
    assert "1234" in line and "you set this (the plan: 500)" in line
    assert "Memory, estimated:" in result.stdout and "Config fight:" in result.stdout
    assert load_calls == []


def test_a_too_small_dataset_warns_in_the_plan(tmp_path, load_calls):
    made = plan_json(photo_folder(tmp_path, 6), "--base", "tiny", "--lora-type", "character")
    assert any("at least 15" in w and "character" in w for w in made["warnings"])


def test_the_plan_shows_each_concept_and_counts_its_repeats_in_the_steps(tmp_path, load_calls):
    folder = tmp_path / "photos"
    for brand, n in (("jelly-belly", 30), ("sunkist", 10), ("Jelly Belly", 20)):
        (folder / brand).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (640, 480), (200, 30 + i, 40)).save(folder / brand / f"b{i:02}.jpg")
    result = CliRunner().invoke(cli, ["plan", str(folder), "--base", SD15, "--concepts-from", "folders"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Concepts: 3 triggers, balanced by repeats:" in out
    assert "jellybelly 20 photos × 2" in out and "jellybelly2 30 photos × 1" in out and "sunkist 10 photos × 3" in out
    # 60 photos: 48 train; an epoch shows 20×2 + 30 + 10×3 = 100 images, 80 of them training ones
    steps = next(line for line in out.splitlines() if line.strip().startswith("steps"))
    assert "22 repeats × 80 training images an epoch, concept repeats included" in steps
    assert "Warning: concepts Jelly Belly and jelly-belly both make the trigger 'jellybelly'" in out
    assert "Warning: concept sunkist has 10 photos" in out  # seed 004's minimum, said before any work
    assert load_calls == []


def test_plan_of_an_empty_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["plan", str(tmp_path / "empty"), "--base", "tiny"])
    assert result.exit_code == 2 and "no images found" in result.stderr


def test_the_survey_counts_what_prep_would_try_and_reads_sizes_upright(tmp_path):
    from clood_candy_plugins.prep.survey import survey

    folder = photo_folder(tmp_path, 3)
    upright = Image.new("RGB", (600, 400))
    exif = upright.getexif()
    exif[0x0112] = 6  # rotated 90°: stands 400 wide, 600 high
    upright.save(folder / "portrait.jpg", exif=exif)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    found = survey(folder)
    assert len(found.photos) == 5 and "notes.txt" not in found.photos
    assert found.sizes["portrait.jpg"] == (400, 600) and "broken.jpg" not in found.sizes
    archive = tmp_path / "beans.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "day" / "bean00.jpg", "a/bean00.jpg")
        zf.writestr("__MACOSX/._bean00.jpg", "resource fork")
    zipped = survey(archive)
    assert zipped.photos == ["a/bean00.jpg"] and zipped.sizes["a/bean00.jpg"] == (640, 480)
