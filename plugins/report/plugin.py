"""The report that teaches: ``RUN/report.html``, one self-contained file that opens from
disk, explaining every stage with this run's own photos and numbers.

Each section is built on its own: a section whose inputs are missing says what to run,
and one that fails says so and leaves its traceback in the run's log; neither stops the
others or the report.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from clood_candy import fsutil
from clood_candy.hookspecs import hookimpl
from clood_candy.stages import Reporter
from clood_candy_plugins.report import (
    section_base,
    section_captions,
    section_diffusion,
    section_doctor,
    section_lora,
    section_photos,
    section_pick,
    section_text_encoder,
    section_training,
    section_vae,
)
from clood_candy_plugins.report.page import Section, esc, note, render_page
from clood_candy_plugins.report.rundata import RunData

if TYPE_CHECKING:
    from clood_candy.context import StageContext

SECTIONS: list[tuple[str, str, Callable[[RunData], Section | None]]] = [
    ("base", section_base.TITLE, section_base.build),
    ("photos", "1. Your photos", section_photos.build),
    ("captions", "2. Captions and the fight", section_captions.build),
    ("text-encoder", "3. What the text encoder sees", section_text_encoder.build),
    ("vae", "4. What the VAE sees", section_vae.build),
    ("diffusion", "5. What diffusion does", section_diffusion.build),
    ("training", "6. Training", section_training.build),
    ("pick", section_pick.TITLE, section_pick.build),
    ("lora", "8. Your LoRA", section_lora.build),
    ("doctor", section_doctor.TITLE, section_doctor.build),
]


def _intro(run: RunData) -> str:
    cfg = run.config
    kept = len(run.photos)
    lines = [f"<p>A LoRA that teaches the base model <b>{esc(cfg.base)}</b> a new word, <b>{esc(cfg.trigger)}</b>, "
             f"for your {esc(cfg.class_word)}"
             + (f" — learned from {kept} of your photos." if kept else ".") + "</p>",
             "<p>Read it top to bottom: each section is one stage of the pipeline, what it did with your photos, "
             "and why it matters for the model.</p>"]
    return "".join(lines)


def _toy(run: RunData) -> str:
    if run.config.base == "candy-mini":
        return note("candy-mini is a miniature Stable Diffusion that clood trained itself, on pictures rendered by "
                    "its candy studio (see “how candy-mini was made” below): small, simple 64-pixel pictures, but "
                    "learned — its beans follow the prompt and your LoRA changes them. A real base "
                    "(--base stable-diffusion-v1-5/stable-diffusion-v1-5) draws real photographs.", "toy")
    if not run.is_toy:
        return ""
    words = run.words()
    return note("These results come from a tiny model with random weights, built on this computer in seconds. "
                f"It has the real architecture — the same VAE, {esc(words['denoiser'])}, text encoders and LoRA file "
                f"format as {esc(words['model_name'])} — so every number and every step below is real, but its "
                "pictures are noise: it shows the "
                f"mechanics, not art. Give clood a real base model (--base {esc(words['real_base'])}) for "
                "pictures of jellybeans.", "toy")


class HtmlReporter(Reporter):
    name = "html"

    def build(self, run_dir: Path, ctx: "StageContext") -> Path:
        run = RunData(run_dir, ctx)
        sections = []
        with ctx.progress.task("Writing the report", total=len(SECTIONS)) as advance:
            for key, title, make in SECTIONS:
                began = time.perf_counter()
                try:
                    section = make(run)
                except Exception as exc:  # one broken section never costs the whole report
                    ctx.log.error("report section %s failed:\n%s", key, traceback.format_exc())
                    section = Section(key, title, failed=f"{type(exc).__name__}: {exc}".splitlines()[0])
                ctx.log.info("report section %s: %.1f s", key, time.perf_counter() - began)
                if section is not None:  # None: not about this run (the base's making, on other bases)
                    sections.append(section)
                advance(note=key)
        state = ctx.run.state
        stages = {name: ("this page" if name == "report" else st.status) for name, st in state.stages.items()}
        footer = (f"clood candy {esc(state.versions.get('clood-candy', ''))} · run {esc(state.name)} · "
                  f"created {esc(state.created)} · {esc(run.root)}")
        html = render_page(title=f"clood candy: {ctx.config.name}", intro=_intro(run), stages=stages,
                           sections=sections, toy=_toy(run), footer=footer)
        out = Path(run_dir) / "report.html"
        fsutil.write_text(out, html)
        return out


@hookimpl
def register_reporters(register):
    register(HtmlReporter())
