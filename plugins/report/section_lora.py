"""8. Your LoRA: the weight × prompt grid, its size against the base model's, where the
file is and how to use it in ComfyUI and Automatic1111."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clood_candy.records import SampleImage
from clood_candy_plugins.report import concept_leaks
from clood_candy_plugins.report.media import img
from clood_candy_plugins.report.page import Section, details, esc, lesson, megabytes, note, number, table
from clood_candy_plugins.report.rundata import RunData


def lora_stats(path: Path) -> dict[str, Any]:
    """Parameters, modules and rank of a LoRA file, read from its header alone."""
    from safetensors import safe_open

    params, modules, ranks, text_encoder = 0, 0, set(), False
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            if key.endswith(".alpha"):
                continue
            shape = handle.get_slice(key).get_shape()
            count = 1
            for dim in shape:
                count *= dim
            params += count
            if "lora_down" in key or "lora_A" in key:
                modules += 1
                ranks.add(shape[0])
            text_encoder |= key.startswith("lora_te")
    return {"params": params, "modules": modules, "ranks": sorted(ranks), "text_encoder": text_encoder}


def weight_grid(run: RunData) -> str:
    samples = run.samples
    if samples is None or not samples.images:
        return note(esc(run.missing("samples/samples.json")) + ": run the sample stage to see the LoRA at work.",
                    "missing")
    images = samples.images
    named = [i.checkpoint for i in images if i.weight > 0]
    primary = "final" if "final" in named else (named[-1] if named else "final")
    prompts = list(dict.fromkeys(i.prompt for i in images))
    seed = min(i.seed for i in images)
    weights = sorted({i.weight for i in images if i.weight == 0 or i.checkpoint == primary})
    pick: dict[tuple[str, float], SampleImage] = {}
    for i in images:
        if i.seed == seed and (i.weight == 0 or i.checkpoint == primary):
            pick[(i.prompt, i.weight)] = i
    rows, pixels = [], {}
    for prompt in prompts:
        cells = [f'<span class="caption">{esc(prompt)}</span>']
        for w in weights:
            sample = pick.get((prompt, w))
            path = run.path(sample.image) if sample else None
            if path is None or not path.is_file():
                cells.append("—")
                continue
            with Image.open(path) as handle:
                picture = handle.convert("RGB")
            pixels[(prompt, w)] = np.asarray(picture, dtype=np.float32)
            cells.append(img(picture, f"{prompt} at weight {w:g}", cls="mid"))
        rows.append(cells)
    headers = ["prompt"] + ["0 (base alone)" if w == 0 else f"weight {w:g}" for w in weights]
    grids = ", ".join(f'<span class="code">{esc(p)}</span>' for p in samples.grids.values())
    more = f"<p>Every seed is in the grid images in the run folder: {grids}.</p>" if grids else ""
    return (f"<p>Seed {seed} everywhere, so the only change from column to column is how strongly the LoRA is "
            f"applied.</p>" + table(headers, rows, cls="grid") + _drift(pixels, prompts, weights) + more)


def _drift(pixels: dict, prompts: list[str], weights: list[float]) -> str:
    """How far each weight moves the picture from the base alone, averaged over prompts:
    the LoRA's effect in a number, visible even where the eye sees little."""
    moved = []
    for w in (w for w in weights if w > 0):
        diffs = [float(np.abs(pixels[(p, w)] - pixels[(p, 0.0)]).mean()) for p in prompts
                 if (p, w) in pixels and (p, 0.0) in pixels and pixels[(p, w)].shape == pixels[(p, 0.0)].shape]
        if diffs:
            moved.append(f"weight {w:g}: {sum(diffs) / len(diffs):.1f}")
    if not moved:
        return ""
    return ("<p>How far each weight moves the picture away from the base alone (average change per pixel, out of "
            "255 levels): " + ", ".join(moved) + ".</p>")


def _sizes(run: RunData, lora: Path) -> str:
    stats = lora_stats(lora)
    size = lora.stat().st_size
    base = run.base()
    base_params = None
    if base is not None:
        try:
            base_params = base.parameter_count()
        except NotImplementedError:
            base_params = None
    rank = "/".join(str(r) for r in stats["ranks"]) or "?"
    text = (f"The file holds <b>{number(stats['params'])}</b> numbers ({megabytes(size)}), spread over "
            f"{stats['modules']} small adapters of rank {rank}")
    if base_params:
        text += (f"; the base model's {esc(run.words()['denoiser'])} alone has <b>{number(base_params)}</b>. The LoRA is "
                 f"<b>{stats['params'] / base_params:.2%}</b> of it")
    text += (". It does not replace any of the base's weights: for each layer it adapts, it adds the product of "
             f"two thin matrices (rank {rank}) — a small, cheap correction. That is why the file is only "
             f"{megabytes(size)}, and why it only works on top of the base model it was trained on (or close "
             "relatives of it).")
    if stats["text_encoder"]:
        text += " This LoRA also adapts the text encoder."
    return lesson(text)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "<b>no</b>"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "none" if not value else f"{len(value)}: " + esc(", ".join(str(v) for v in value[:3])) + (
            " …" if len(value) > 3 else "")
    if isinstance(value, dict):
        return esc(", ".join(f"{k} {v}" for k, v in list(value.items())[:4]))
    return esc(value)


def _plain_checks(checks: dict[str, Any]) -> list[str]:
    """The checks a photographer cares about, in sentences (keys as the SD trainer writes
    them; a family that writes others still gets the full table below)."""
    said = []
    if "diffusers_load" in checks:
        said.append("loads back with diffusers" if checks["diffusers_load"] else "<b>does not</b> load with diffusers")
    for key, tool in (("a1111_unmapped", "Automatic1111"), ("comfyui_unmapped", "ComfyUI")):
        if isinstance(checks.get(key), list):
            missing = len(checks[key])
            said.append(f"every key names a layer {tool} knows" if not missing else
                        f"<b>{missing} key(s) {tool} would ignore</b>")
    if "alpha_matches_config" in checks:
        said.append("its alpha (the strength scale stored in the file) is the one it was trained with"
                    if checks["alpha_matches_config"] else "<b>its alpha differs from training</b>")
    if "reproduces_trained" in checks:
        said.append("loaded from the file, it reproduces the trained model exactly" if checks["reproduces_trained"]
                    else "<b>loaded from the file, it does not reproduce the trained model</b>")
    if "output_changed" in checks:
        said.append("it changes the base model's output" if checks["output_changed"] else
                    "<b>it does not change the base model's output</b>")
    return said


def _verification(checks: dict[str, Any]) -> str:
    """The trainer's checks of the saved file: the headline in sentences, every check in a fold."""
    ok = checks.get("ok")
    said = _plain_checks(checks)
    head = "The file was loaded back and checked before you got it" if ok is not False else \
        "Some checks of the saved file did not pass"
    text = head + (": it " + "; ".join(said) + "." if said else ".")
    rows = [[esc(k.replace("_", " ")), _shown(v)] for k, v in checks.items() if k != "ok"]
    return note(text, "info" if ok is not False else "warn") + details("every check", table(["check", "result"], rows))


def _how_to_use(run: RunData, lora: Path) -> str:
    name, trigger, word = esc(lora.stem), esc(run.config.trigger), esc(run.config.class_word)
    base = esc(run.config.base)
    words = run.words()
    tools = words["lora_tools"]
    webui = next((t for t in tools if "Forge" in t), "Forge")
    unsupported = f"<p>{esc(words['not_loaded_by'])}.</p>" if words["not_loaded_by"] else ""
    return (f"<h3>Use it</h3><p>The file: <span class=\"code\">{esc(lora)}</span> — trained on "
            f"<span class=\"code\">{base}</span>. Start prompts with the trigger word "
            f"<span class=\"code\">{trigger}</span>, for example “{trigger}, {word} in a glass bowl”.</p>" + unsupported
            + table(["", "ComfyUI", esc(webui)], [
                ["put the file in", '<span class="code">ComfyUI/models/loras/</span>',
                 '<span class="code">stable-diffusion-webui/models/Lora/</span>'],
                ["then", "add a <b>Load LoRA</b> node (LoraLoader) between <i>Load Checkpoint</i> and your CLIP Text "
                 "Encode / KSampler nodes, pick this file, strength_model 0.8",
                 f'write <span class="code">&lt;lora:{name}:0.8&gt;</span> in the prompt, e.g. '
                 f'<span class="code">&lt;lora:{name}:0.8&gt; {trigger}, {word} on a wooden table</span>'],
                ["base model", f"the checkpoint you trained on ({base}) or one derived from it", "the same"],
            ])
            + "<p>A weight of 1 is the LoRA at full strength; 0.6–0.9 usually keeps more of the base model's "
              "flexibility. Look at the grid above to choose.</p>")


def _how_to_use_here(run: RunData, lora: Path) -> str:
    """A LoRA of a base clood made (a toy, candy-mini) has that base's shapes: in ComfyUI or
    A1111 on a real checkpoint every layer would fail to patch, so the only place to use it is
    where its base is."""
    base, trigger = esc(run.config.base), esc(run.config.trigger)
    kind = "toy" if run.is_toy else "miniature"
    return (f"<h3>Use it</h3><p>The file: <span class=\"code\">{esc(lora)}</span> — trained on clood's {kind} base "
            f"<span class=\"code\">{base}</span>, whose layers are far smaller than a real model's. It loads on that "
            f"{kind} only: in {' or '.join(esc(t) for t in run.words()['lora_tools'])} on a real "
            f"{esc(run.words()['model_name'])} checkpoint every one of its "
            f"patches would fail on shape, so this report does not tell you to put it there. Try it where the {kind} "
            f"lives: <span class=\"code\">clood sample {esc(run.root)} --prompt \"{trigger}, jellybean on a wooden "
            "table\"</span>. For a LoRA to use in ComfyUI or Forge, run clood on your photos with a real base, "
            f"e.g. <span class=\"code\">--base {esc(run.words()['real_base'])}</span>.</p>")


def build(run: RunData) -> Section:
    section = Section("lora", "8. Your LoRA")
    lora = run.lora
    body = [lesson(
        "Weight 0 is the base model alone; as the weight rises, the LoRA pushes the same starting noise towards "
        "what it learned from your photos.")]
    body.append(weight_grid(run))
    body.append(concept_leaks.html(run))
    if lora is None:
        section.missing = esc(run.why.get("lora", "no LoRA yet")) + "."
        section.body = "".join(body)
        return section
    body.append(_sizes(run, lora))
    verification = (run.outcome.verification if run.outcome else {}) or {}
    if verification:
        body.append(_verification(verification))
    body.append(_how_to_use_here(run, lora) if run.clood_made else _how_to_use(run, lora))
    if run.is_toy:
        body.append(note("This LoRA was trained on the random toy model: it proves the file format and the "
                         "pipeline, not the art.", "toy"))
    section.body = "".join(body)
    return section
