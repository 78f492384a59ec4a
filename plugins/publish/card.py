"""The model card of a finished run, and the folder that goes to the Hub (or to Civitai by
hand): the LoRA, the card (README.md, YAML front matter the Hub reads) and a few samples.

Everything here comes from the run's records and the LoRA's own metadata (the ss_* and
modelspec keys the trainer wrote), so publishing loads no model and needs no GPU.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from safetensors import safe_open

from clood_candy import fsutil
from clood_candy.errors import UserError
from clood_candy.records import ConceptSet, ConfigFightResult, FightResult, SampleSet, TrainOutcome
from clood_candy_plugins.judges.concept_leaks import LEAKS, ConceptLeaks

FOLDER = "publish"  # RUN/publish: exactly what is uploaded
DIFFUSERS_NAME = "pytorch_lora_weights.safetensors"  # the name diffusers' load_lora_weights(repo) looks for
MAX_SAMPLES = 6
MAX_GRIDS = 6  # the run's prompt and one per concept, as the sample stage draws them


@dataclass
class Family:
    """How a base's LoRA is named on the Hub and loaded by the tools (by kohya's ss_base_model_version)."""

    name: str
    tags: list[str]
    comfy_node: str  # ComfyUI's loader node for this family
    webui: str  # "" when no A1111-family UI loads it
    license: tuple[str, str | None] | None = None  # the base's licence, for the card (id, name for "other")


FAMILIES = {
    "sd_v1": Family("Stable Diffusion 1.5", ["stable-diffusion"], "Load LoRA (LoraLoader)",
                    "Automatic1111 / Forge", ("creativeml-openrail-m", None)),
    "sdxl_base_v1-0": Family("Stable Diffusion XL", ["stable-diffusion-xl"], "Load LoRA (LoraLoader)",
                             "Automatic1111 / Forge", ("openrail++", None)),
    "flux1": Family("Flux.1", ["flux"], "LoraLoaderModelOnly", "Forge (Automatic1111 itself does not load Flux)"),
    "sd3": Family("Stable Diffusion 3", ["sd3"], "LoraLoaderModelOnly", ""),
}
TOY = Family("clood's toy base", [], "", "")
# Flux.1's two bases carry different licences; the card names the base's own.
FLUX_LICENSES = {"schnell": ("apache-2.0", None), "dev": ("other", "flux-1-dev-non-commercial-license")}


@dataclass
class Card:
    text: str  # README.md: YAML front matter, then Markdown
    toy: bool
    lora: Path  # the kohya-layout file
    lora_name: str  # its name on the Hub
    diffusers_lora: Path | None
    samples: list[tuple[Path, str]] = field(default_factory=list)  # (image, prompt) shown on the card


def lora_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})


def _read(root: Path, rel: str, model):
    path = root / rel
    return model.model_validate(fsutil.read_json(path)) if path.is_file() else None


def _family(meta: dict[str, str]) -> Family:
    version = meta.get("ss_base_model_version", "")
    if version.startswith("clood_") or meta.get("clood_toy_base"):
        return TOY
    return FAMILIES.get(version, Family(version or "an unknown base", [], "Load LoRA (LoraLoader)", ""))


def _license(meta: dict[str, str], family: Family) -> tuple[str, str | None] | None:
    if family.name == "Flux.1":
        return FLUX_LICENSES["schnell" if "schnell" in meta.get("ss_sd_model_name", "").lower() else "dev"]
    return family.license


def _hub_id(name: str) -> str | None:
    """The base's Hub id, when it was given as one (a local folder or file is no id)."""
    parts = name.split("/")
    looks_like_id = len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))
    return name if looks_like_id and not os.path.exists(name) and not name.endswith(".safetensors") else None


def _pick_samples(root: Path, samples: SampleSet | None) -> list[tuple[Path, str]]:
    """The final LoRA at its strongest weight, one image per prompt and seed, then the grids."""
    if samples is None:
        return []
    final = [i for i in samples.images if i.checkpoint in ("final", "resampled")]
    top = max((i.weight for i in final), default=0.0)
    chosen = [(root / i.image, i.prompt) for i in final if i.weight == top and top > 0]
    chosen = [(p, prompt) for p, prompt in chosen if p.is_file()][:MAX_SAMPLES]
    grids = [(root / rel, f"grid: {name}") for name, rel in samples.grids.items() if (root / rel).is_file()]
    return chosen + grids[:MAX_GRIDS]


def build_card(root: Path, repo_id: str, *, license_id: str | None = None) -> Card:
    """The card for RUN; a run without a LoRA is a one-line error saying which stage to run."""
    outcome = _read(root, "train/outcome.json", TrainOutcome)
    run = fsutil.read_json(root / "run.json")
    trigger = (run.get("config") or {}).get("trigger") or "jlybn"
    lora = root / "train" / f"{trigger}.safetensors"
    if not lora.is_file() and outcome is not None and outcome.lora:
        lora = root / outcome.lora
    if outcome is None or outcome.error or not lora.is_file():
        why = f" (training failed: {outcome.error})" if outcome is not None and outcome.error else ""
        raise UserError(f"{root} has no trained LoRA to publish{why}: run the train stage first")
    meta = lora_metadata(lora)
    family = _family(meta)
    toy = family is TOY
    diffusers = root / outcome.lora_diffusers if outcome.lora_diffusers else None
    samples = _pick_samples(root, _read(root, "samples/samples.json", SampleSet))
    captions = _read(root, "caption/fight.json", FightResult)
    fight = _read(root, "train/fight.json", ConfigFightResult)
    base = meta.get("ss_sd_model_name", "")
    class_word = meta.get("class_word") or (run.get("config") or {}).get("class_word") or "subject"
    lora_name = f"{trigger}.safetensors"

    data = ModelCardData(
        base_model=None if toy else _hub_id(base),
        tags=["text-to-image", "lora", "diffusers", *family.tags, "template:sd-lora", "clood-candy"],
        instance_prompt=trigger,
        widget=[{"text": prompt, "output": {"url": f"images/{p.name}"}} for p, prompt in samples
                if not prompt.startswith("grid:")] or None,
    )
    licence = (license_id, None) if license_id else _license(meta, family)
    if licence:
        data.license = licence[0]
        if licence[1]:
            data.license_name = licence[1]
    body = _body(repo_id, meta, family, toy, trigger, class_word, lora_name, diffusers is not None, outcome,
                 captions, fight, samples, _read(root, "dataset/concepts.json", ConceptSet) or ConceptSet(),
                 _read(root, LEAKS, ConceptLeaks))
    text = ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + body).content  # parsed back: the YAML is the Hub's
    return Card(text=text, toy=toy, lora=lora, lora_name=lora_name, diffusers_lora=diffusers, samples=samples)


def _body(repo_id, meta, family, toy, trigger, class_word, lora_name, has_diffusers, outcome, captions, fight,
          samples, concepts: ConceptSet, leaks: ConceptLeaks | None = None) -> str:
    cfg = outcome.config
    photos = meta.get("ss_num_train_images", "?")
    base = meta.get("ss_sd_model_name", "?")
    lines = [f"# {repo_id.split('/')[-1]}", ""]
    if toy:
        said = meta.get("clood_toy_base") or "trained on a toy base with random weights"
        lines += [f"> **A toy**, {said}. It shows "
                  "how clood candy trains and publishes; it draws nothing on a real model.", ""]
    lines += [f"A LoRA of **{class_word}** for {family.name} (`{base}`), trained with "
              f"clood candy from {photos} photos. Write the trigger word in your prompt:", "",
              "| trigger | what it brings |", "|---|---|", f"| `{trigger}` | the {class_word} of the photos |"]
    lines += [f"| `{trigger} {c.trigger}` | {c.name}: {len(c.photos)} photo{'s' * (len(c.photos) != 1)}"
              f"{_leak_words(leaks, c.trigger)} |" for c in concepts.concepts] + [""]
    if leaks is not None and leaks.concepts and not leaks.sat_out:
        toy = " (embeddings from candy-mini's miniature CLIP: a toy model's figure)" if leaks.miniature else ""
        lines += [f"Leak check: each concept's samples at weight {leaks.weight:g}, matched by CLIP to the "
                  f"concept whose photos they look most like{toy}.", ""]
    shown = [(p, prompt) for p, prompt in samples if not prompt.startswith("grid:")]
    if shown:
        lines += ["## Samples", ""] + [f"![{prompt}](images/{p.name})\n\n*{prompt}*\n" for p, prompt in shown]
    grids = [(p, prompt) for p, prompt in samples if prompt.startswith("grid:")]
    if grids:
        lines += ["Each grid: the base alone (weight 0) beside the LoRA at rising weights, same seeds.", ""]
        lines += [f"![{prompt}](images/{p.name})" for p, prompt in grids] + [""]
    lines += ["## Use it", ""]
    if not toy:
        lines += [f"- **ComfyUI**: put `{lora_name}` in `ComfyUI/models/loras/`, add a *{family.comfy_node}* node "
                  "after the checkpoint loader, strength 0.7–1.0."]
        if family.webui:
            lines += [f"- **{family.webui}**: put it in `models/Lora/` and write "
                      f"`<lora:{lora_name.removesuffix('.safetensors')}:0.8>` in the prompt, with `{trigger}`."]
        if has_diffusers:
            lines += ["- **diffusers**:", "", "```python",
                      f'pipe.load_lora_weights("{repo_id}")  # reads {DIFFUSERS_NAME}',
                      f'image = pipe("{trigger}, {class_word} on a wooden table").images[0]', "```"]
    else:
        lines += ["Only on clood's toy base (`clood dogfood candy --demo`): every layer has the toy's shapes."]
    lines += ["", "## How it was trained", "",
              "| setting | value |", "|---|---|",
              f"| base | `{base}` |", f"| photos | {photos} (+ {meta.get('ss_num_validation_images', 0)} held out) |",
              f"| steps | {outcome.steps_done} |", f"| resolution | {meta.get('modelspec.resolution', cfg.resolution)} |",
              f"| LoRA | {cfg.variant}, rank {cfg.rank}, alpha {cfg.alpha:g} |",
              f"| learning rate | {cfg.learning_rate:g} ({cfg.lr_scheduler}, {cfg.warmup_steps} warm-up steps) |",
              f"| batch | {cfg.batch_size} × {cfg.gradient_accumulation} accumulated |",
              f"| optimizer | {cfg.optimizer} |",
              f"| precision | {'fp32' if cfg.mixed_precision == 'no' else cfg.mixed_precision} |"]
    if outcome.final_val_loss is not None:
        lines += [f"| final validation loss | {outcome.final_val_loss:.4f} (photos held out of training) |"]
    lines += [""]
    if captions is not None and captions.winner:
        lines += [f"**Captions.** {len(captions.fighters)} captioners fought over every photo; "
                  f"{captions.winner} won: {captions.verdict}", ""]
    if fight is not None and fight.winner and len(fight.configs) > 1:
        rounds = "; ".join(f"{r.budget} steps: " + ", ".join(
            f"{n} {s:.4f}" if s is not None else f"{n} failed" for n, s in r.scores.items()) for r in fight.rounds)
        lines += [f"**Settings.** {len(fight.configs)} recipes raced by successive halving on validation loss "
                  f"({rounds}); `{fight.winner}` won.", ""]
    counts: dict[str, int] = {}
    for folder in json.loads(meta.get("ss_tag_frequency") or "{}").values():  # one per concept
        for word, n in folder.items():
            counts[word] = counts.get(word, 0) + n
    if counts:
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:12]
        lines += ["**Caption words** (how many photos): " + ", ".join(f"{w} ({n})" for w, n in top), ""]
    return "\n".join(lines) + "\n"


def _leak_words(leaks: ConceptLeaks | None, trigger: str) -> str:
    """"; its samples look like its own photos 3/4 (1/4 like sunkist)": the leak check's row."""
    row = next((c for c in leaks.concepts if c.trigger == trigger), None) if leaks is not None else None
    if row is None or not row.samples:
        return ""
    out = f"; its samples look like its own photos {row.own}/{row.samples}"
    if row.leaks_to:
        out += f" ({row.leak_share:.0%} like {row.leaks_to})"
    return out


def stage(root: Path, card: Card) -> Path:
    """RUN/publish: the card, the LoRA file(s) and the card's images, as they go up. The
    LoRA is hard-linked where the disk allows (an SDXL LoRA is hundreds of MB)."""
    out = root / FOLDER
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    _link(card.lora, out / card.lora_name)
    if card.diffusers_lora is not None and card.diffusers_lora.is_file():
        _link(card.diffusers_lora, out / DIFFUSERS_NAME)
    for image, _ in card.samples:
        shutil.copy2(image, out / "images" / image.name)
    fsutil.write_text(out / "README.md", card.text)
    return out


def _link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)
