"""What the report reads from a run folder, each file loaded once into its typed record.

A missing or unreadable file is ``None`` with the reason kept in ``why``: sections say
what is missing and which stage makes it, and never fail because a stage has not run.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from clood_candy import fsutil
from clood_candy.records import (
    ConceptSet,
    ConfigFightResult,
    FightResult,
    Photo,
    PrepReport,
    SampleSet,
    TrainOutcome,
)
from clood_candy.stages import LoadedBase

if TYPE_CHECKING:
    from clood_candy.context import StageContext

TOY_BASES = {"tiny", "tiny-sdxl", "tiny-flux", "tiny-sd3"}
# What the report says of a base whose family does not describe itself (SD1/SDXL's words).
SD_WORDS = {"model_name": "Stable Diffusion", "denoiser": "UNet", "lora_tools": ["ComfyUI", "Automatic1111 / Forge"],
            "not_loaded_by": "", "objective_words": "", "real_base": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
STAGE_OF = {"prep": "prep", "caption": "caption", "dataset": "caption", "train": "train", "samples": "sample"}



def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The object rows of a JSON-lines file; a torn or foreign line is skipped, not fatal
    (a run killed mid-write can leave one)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows

class RunData:
    def __init__(self, run_dir: Path, ctx: "StageContext"):
        self.root = Path(run_dir)
        self.ctx = ctx
        self.config = ctx.config
        self.why: dict[str, str] = {}
        self._base: LoadedBase | None = None
        self.base_error: str | None = None
        self._base_tried = False

    # --- files ---------------------------------------------------------------

    def path(self, rel: str | Path) -> Path:
        return self.root / rel

    def _record(self, rel: str, model: type[BaseModel]) -> Any:
        path = self.path(rel)
        if not path.is_file():
            stage = STAGE_OF.get(rel.split("/")[0], rel.split("/")[0])
            self.why[rel] = f"{rel} is not there yet (the {stage} stage makes it)"
            return None
        try:
            return model.model_validate(fsutil.read_json(path))
        except (OSError, ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            self.why[rel] = f"{rel} could not be read: {first}"
            self.ctx.log.warning("report: %s unreadable: %s", rel, exc)
            return None

    def _json(self, rel: str) -> Any:
        path = self.path(rel)
        if not path.is_file():
            return None
        try:
            return fsutil.read_json(path)
        except (OSError, ValueError) as exc:
            self.why[rel] = f"{rel} could not be read: {exc}"
            return None

    def missing(self, rel: str) -> str:
        return self.why.get(rel, f"{rel} is not there yet")

    @cached_property
    def prep(self) -> PrepReport | None:
        return self._record("prep/report.json", PrepReport)

    @cached_property
    def photos(self) -> list[Photo]:
        return self.prep.photos if self.prep else []

    @cached_property
    def source(self) -> Path | None:
        src = self.ctx.run.state.source
        return Path(src) if src else None

    @cached_property
    def fight(self) -> FightResult | None:
        return self._record("caption/fight.json", FightResult)

    @cached_property
    def strategy(self) -> dict[str, Any]:
        found = self._json("caption/strategy.json")
        return found if isinstance(found, dict) else {}

    def captions(self, name: str, kind: str = "training_captions") -> dict[str, str]:
        """file name → caption, from caption/<name>/<kind>.json ({} when absent)."""
        found = self._json(f"caption/{name}/{kind}.json")
        return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}

    @cached_property
    def dataset(self) -> list[dict[str, Any]]:
        """The training set's rows (file_name, text, id, source)."""
        path = self.path("dataset/metadata.jsonl")
        if not path.is_file():
            self.why["dataset/metadata.jsonl"] = "dataset/metadata.jsonl is not there yet (the caption stage makes it)"
            return []
        return [row for row in read_jsonl(path) if isinstance(row.get("text"), str)]

    @cached_property
    def concepts(self) -> ConceptSet:
        """The run's concepts (brands with their own triggers); none: one concept."""
        path = self.path("dataset/concepts.json")
        return (self._record("dataset/concepts.json", ConceptSet) if path.is_file() else None) or ConceptSet()

    @cached_property
    def config_fight(self) -> ConfigFightResult | None:
        return self._record("train/fight.json", ConfigFightResult)

    @cached_property
    def outcome(self) -> TrainOutcome | None:
        return self._record("train/outcome.json", TrainOutcome)

    def train_log(self, config: str) -> list[dict[str, Any]]:
        path = self.path(f"train/fight/{config}/log.jsonl")
        if not path.is_file():
            return []
        return read_jsonl(path)

    @cached_property
    def samples(self) -> SampleSet | None:
        return self._record("samples/samples.json", SampleSet)

    @cached_property
    def lora(self) -> Path | None:
        rel = self.ctx.run.state.outputs.get("lora") or (self.outcome.lora if self.outcome else None)
        if rel and self.path(rel).is_file():
            return self.path(rel)
        self.why["lora"] = "no trained LoRA yet (the train stage makes it)"
        return None

    # --- the photos' pictures ------------------------------------------------

    def prepared(self, photo: Photo) -> Path | None:
        path = self.path(photo.image)
        return path if path.is_file() else None

    def original(self, source: str, photo: Photo | None = None) -> Path | None:
        """The original file of a prep entry: the photo's own record, else under the
        run's source folder (culled photos have no Photo record)."""
        candidates = [Path(photo.original)] if photo and photo.original else []
        if self.source is not None:
            candidates.append(self.source / source if self.source.is_dir() else self.source)
        return next((c for c in candidates if c.is_file()), None)

    def photo_by_file(self) -> dict[str, Photo]:
        return {Path(p.image).name: p for p in self.photos}

    # --- the base model ----------------------------------------------------

    def base(self) -> LoadedBase | None:
        """The loaded base, or None with ``base_error`` saying why (loaded once)."""
        if not self._base_tried:
            self._base_tried = True
            try:
                self._base = self.ctx.base()
            except Exception as exc:  # the report goes on without the model's sections
                self.base_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self.ctx.log.warning("report: base model not loadable: %s", exc)
        return self._base

    def words(self) -> dict[str, Any]:
        """How to speak of this base: its name, its denoiser, the tools that load its LoRAs
        (from the base's describe(); SD's words when it says nothing, or is not loaded)."""
        described = {}
        base = self.base()
        if base is not None:
            try:
                described = base.describe()
            except Exception:  # a family's describe() must not cost the report
                described = {}
        return {**SD_WORDS, **{k: v for k, v in described.items() if k in SD_WORDS or k.endswith("_words")}}

    @property
    def clood_made(self) -> bool:
        """The base is one clood built (tiny toys, candy-mini): LoRAs of it fit it only."""
        if self._base is not None:
            return bool(getattr(self._base, "clood_made", self._base.is_toy))
        return self.config.base in TOY_BASES | {"candy-mini"}

    @property
    def is_toy(self) -> bool:
        if self._base is not None:
            return bool(self._base.is_toy)
        return self.config.base in TOY_BASES
