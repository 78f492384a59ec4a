"""``clood publish``: the model card a run makes (from its records and the LoRA's own
metadata), and the upload through the real huggingface_hub client to a fake Hub on
127.0.0.1 — a new private repo, a commit that fails after its files went up and is run
again without sending them twice, and a token that never reaches the run folder."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fakes.hub_server import FakeHub
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import save_file

from clood_candy import fsutil
from clood_candy.cli import cli
from clood_candy.plugins import load_plugins, pm
from clood_candy.records import SampleImage, SampleSet, TrainConfig, TrainOutcome

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture(scope="module", autouse=True)
def commands():
    load_plugins()
    if "publish" not in cli.commands:
        pm.hook.register_commands(cli=cli)


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks plain LFS
    with_hub = FakeHub().start()
    monkeypatch.setenv("HF_TOKEN", with_hub.token)
    try:
        yield with_hub
    finally:
        with_hub.stop()


def finished_run(root, base=SDXL, version="sdxl_base_v1-0", toy=""):
    """A run folder as the train and sample stages leave it, with a LoRA carrying kohya's metadata."""
    meta = {"ss_base_model_version": version, "ss_sd_model_name": base, "ss_num_train_images": "20",
            "ss_num_validation_images": "5", "modelspec.resolution": "1024x1024", "trigger": "jlybn",
            "class_word": "jellybean", "ss_tag_frequency": json.dumps({"1_jlybn": {"jlybn": 20, "glossy": 12}})}
    if toy:
        meta["clood_toy_base"] = toy
    weights = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 32)}
    fsutil.write_json(root / "run.json", {"name": "shoot", "config": {"trigger": "jlybn", "class_word": "jellybean"}})
    (root / "train").mkdir(parents=True)
    save_file(weights, str(root / "train" / "jlybn.safetensors"), metadata=meta)
    save_file(weights, str(root / "train" / "candy.diffusers.safetensors"))
    config = TrainConfig(name="default", rank=16, alpha=16.0, learning_rate=1e-4, steps=500, mixed_precision="bf16")
    fsutil.write_json(root / "train" / "outcome.json", TrainOutcome(
        config=config, steps_done=500, lora="train/jlybn.safetensors", lora_diffusers="train/candy.diffusers.safetensors",
        final_val_loss=0.1234, seconds=600.0))
    (root / "samples").mkdir()
    images = []
    for seed in (1, 2):
        for weight, checkpoint in ((0.0, "base"), (1.0, "final")):
            name = f"samples/p1-seed{seed}-{checkpoint}.png"
            Image.fromarray(np.full((32, 32, 3), 40 * seed, np.uint8)).save(root / name)
            images.append(SampleImage(image=name, prompt="jlybn, jellybean in a glass bowl", seed=seed, weight=weight,
                                      checkpoint=checkpoint))
    fsutil.write_json(root / "samples" / "samples.json", SampleSet(images=images))
    return root


def publish(*args, env=None):
    return CliRunner().invoke(cli, ["publish", *map(str, args)], env=env)


def test_the_card_names_the_base_trigger_and_how_to_load_it(tmp_path):
    run = finished_run(tmp_path / "run")
    result = publish(run, "--card-only")
    assert result.exit_code == 0, result.output
    folder = run / "publish"
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == SDXL and data["instance_prompt"] == "jlybn" and data["license"] == "openrail++"
    assert {"lora", "stable-diffusion-xl", "text-to-image"} <= set(data["tags"])
    for shown in data["widget"]:
        assert (folder / shown["output"]["url"]).is_file() and "jlybn" in shown["text"]
    assert "ComfyUI/models/loras/" in card.text and "<lora:jlybn:0.8>" in card.text
    assert "final validation loss | 0.1234" in card.text and "bf16" in card.text and "glossy (12)" in card.text
    assert (folder / "jlybn.safetensors").read_bytes() == (run / "train" / "jlybn.safetensors").read_bytes()
    assert (folder / "pytorch_lora_weights.safetensors").is_file()  # what diffusers' load_lora_weights(repo) reads
    assert "base" not in " ".join(p.name for p in (folder / "images").iterdir())  # the LoRA's samples, not the base's


def test_a_flux_dev_lora_carries_its_base_licence_and_no_automatic1111_line(tmp_path):
    run = finished_run(tmp_path / "run", base="black-forest-labs/FLUX.1-dev", version="flux1")
    assert publish(run, "--card-only").exit_code == 0
    card = ModelCard.load(run / "publish" / "README.md")
    assert (card.data.license, card.data.license_name) == ("other", "flux-1-dev-non-commercial-license")
    assert "LoraLoaderModelOnly" in card.text and "<lora:" in card.text  # Forge reads the prompt tag
    assert "Automatic1111 itself does not load Flux" in card.text


def test_publish_creates_a_private_repo_and_uploads_card_lora_and_samples(tmp_path, hub):
    run = finished_run(tmp_path / "run")
    result = publish(run, "--repo", "photog/jellybeans", "--private", "--endpoint", hub.url)
    assert result.exit_code == 0, result.output
    repo = hub.repos["photog/jellybeans"]
    assert repo.private and len(repo.commits) == 1
    assert {"README.md", "jlybn.safetensors", "pytorch_lora_weights.safetensors"} <= set(repo.files)
    assert repo.files["jlybn.safetensors"].lfs
    assert repo.files["jlybn.safetensors"].content == (run / "train" / "jlybn.safetensors").read_bytes()
    assert any(p.startswith("images/") for p in repo.files)
    record = json.loads((run / "published.json").read_text())
    assert record["repo"] == "photog/jellybeans" and record["private"] is True
    assert all(ok for _, _, ok in hub.calls)  # every call carried the token from HF_TOKEN
    assert not any(hub.token in p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file())
    assert hub.token not in result.output


def test_a_commit_that_fails_is_retried_and_run_again_without_sending_files_twice(tmp_path, hub, monkeypatch):
    from clood_candy_plugins.publish import hub as upload

    monkeypatch.setattr(upload, "ATTEMPTS", 2)
    run = finished_run(tmp_path / "run")
    hub.fail_commits = 1  # one 500: the retry inside clood gets through
    assert publish(run, "--repo", "photog/a", "--endpoint", hub.url).exit_code == 0
    assert len(hub.repos["photog/a"].commits) == 1 and set(hub.lfs_uploads.values()) == {1}

    hub.fail_commits = 2  # more 500s than attempts: one line, then the user runs it again
    failed = publish(run, "--repo", "photog/b", "--endpoint", hub.url)
    assert failed.exit_code == 2
    assert "failed" in failed.output and "run clood publish again" in failed.output and "Traceback" not in failed.output
    assert not hub.repos["photog/b"].commits
    again = publish(run, "--repo", "photog/b", "--endpoint", hub.url)
    assert again.exit_code == 0, again.output
    assert set(hub.repos["photog/b"].files) == set(hub.repos["photog/a"].files)
    assert set(hub.lfs_uploads.values()) == {1}  # no LFS file went up twice, across repos and retries


def test_a_missing_or_refused_token_is_one_line(tmp_path, hub, monkeypatch):
    import huggingface_hub.constants

    run = finished_run(tmp_path / "run")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    result = publish(run, "--repo", "photog/x", "--endpoint", hub.url)
    assert result.exit_code == 2 and "no Hugging Face token" in result.output
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    result = publish(run, "--repo", "photog/x", "--endpoint", hub.url)
    assert result.exit_code == 2 and "refused the token (401)" in result.output and "hf_wrong" not in result.output
    assert not hub.repos


def test_mistakes_are_named_before_anything_uploads(tmp_path, hub):
    toy = finished_run(tmp_path / "toy", base="tiny", version="clood_tiny", toy="trained on clood's toy base 'tiny'")
    refused = publish(toy, "--repo", "photog/toy", "--endpoint", hub.url)
    assert refused.exit_code == 2 and "--allow-toy" in refused.output and not hub.repos
    assert publish(toy, "--repo", "photog/toy", "--allow-toy", "--endpoint", hub.url).exit_code == 0
    assert "A toy" in hub.repos["photog/toy"].files["README.md"].content.decode()
    bad = publish(toy, "--repo", "no slashes here", "--endpoint", hub.url)
    assert bad.exit_code == 2 and "not a Hub repo id" in bad.output
    untrained = tmp_path / "untrained"
    fsutil.write_json(untrained / "run.json", {"name": "x", "config": {}})
    result = publish(untrained, "--card-only")
    assert result.exit_code == 2 and "no trained LoRA to publish" in result.output


@pytest.mark.slow
def test_the_demo_run_publishes_with_its_own_samples_and_fight(demo_run, tmp_path, hub):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    result = publish(run, "--repo", "photog/demo", "--allow-toy", "--endpoint", hub.url)
    assert result.exit_code == 0, result.output
    files = hub.repos["photog/demo"].files
    card = ModelCard(files["README.md"].content.decode())
    assert card.data.base_model is None  # a toy has no base on the Hub to point at
    urls = [w["output"]["url"] for w in card.data.widget]
    assert urls and all(url in files for url in urls)
    assert "recipes raced by successive halving" in card.text and "captioners fought over every photo" in card.text
    assert "jlybn.safetensors" in files and "pytorch_lora_weights.safetensors" in files


def test_a_multi_concept_lora_lists_each_brands_trigger(tmp_path):
    from clood_candy.records import ConceptInfo, ConceptSet

    run = finished_run(tmp_path / "run")
    fsutil.write_json(run / "dataset" / "concepts.json", ConceptSet(concepts=[
        ConceptInfo(name="jelly-belly", trigger="jellybelly", class_word="jellybean", photos=["a", "b"]),
        ConceptInfo(name="sunkist", trigger="sunkist", class_word="jellybean", photos=["c"], repeats=2)]))
    assert publish(run, "--card-only").exit_code == 0
    text = (run / "publish" / "README.md").read_text()
    assert "| `jlybn jellybelly` | jelly-belly: 2 photos |" in text and "| `jlybn sunkist` | sunkist: 1 photo |" in text


def test_the_card_carries_the_leak_check_and_every_concepts_grid(tmp_path):
    from PIL import Image

    from clood_candy.records import ConceptInfo, ConceptSet
    from clood_candy_plugins.judges.concept_leaks import ConceptLeak, ConceptLeaks

    run = finished_run(tmp_path / "run")
    fsutil.write_json(run / "dataset" / "concepts.json", ConceptSet(concepts=[
        ConceptInfo(name="jelly-belly", trigger="jellybelly", class_word="jellybean", photos=["a", "b"]),
        ConceptInfo(name="sunkist", trigger="sunkist", class_word="jellybean", photos=["c"], repeats=2)]))
    fsutil.write_json(run / "samples" / "concept_leaks.json", ConceptLeaks(miniature=True, concepts=[
        ConceptLeak(trigger="jellybelly", name="jelly-belly", samples=4, own=3, own_share=0.75),
        ConceptLeak(trigger="sunkist", name="sunkist", samples=2, own=0, leaks_to="jellybelly", leak_share=1.0)]))
    samples = json.loads((run / "samples" / "samples.json").read_text())
    samples["grids"] = {}
    for k in range(1, 4):  # the run's prompt, then one per concept
        Image.new("RGB", (8, 8)).save(run / "samples" / f"grid-{k}.png")
        samples["grids"][f"prompt-{k}"] = f"samples/grid-{k}.png"
    (run / "samples" / "samples.json").write_text(json.dumps(samples))
    assert publish(run, "--card-only").exit_code == 0
    text = (run / "publish" / "README.md").read_text()
    assert "| `jlybn jellybelly` | jelly-belly: 2 photos; its samples look like its own photos 3/4 |" in text
    assert "| `jlybn sunkist` | sunkist: 1 photo; its samples look like its own photos 0/2 (100% like jellybelly) |" in text
    assert "a toy model's figure" in text
    assert all(f"images/grid-{k}.png" in text for k in range(1, 4))
