"""What a captioner or a judge plugin implements.

A plugin subclasses one of these and hands an instance to ``register`` in
``register_captioners`` / ``register_judges`` (see README, "Writing a plugin").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clood_candy.records import CaptionResult, Candidate, Comparison, FightItem, Photo, PickSheet, Score
from clood_candy.runstore import redact

if TYPE_CHECKING:
    from clood_candy.context import StageContext


class Fighter(ABC):
    name: str = ""
    description: str = ""
    # A fighter that runs a model here (memory, a GPU): with [fight] executor = "ray" it runs
    # on a Ray worker with the per-trial resources. An API fighter stays in the driver, where its key is.
    runs_a_model: bool = False

    def unavailable(self, ctx: "StageContext") -> str | None:
        """A one-line reason this fighter cannot run here (no API key, no model), or None."""
        return None


class Captioner(Fighter):
    """Describes photos. The strategy layer turns its raw text into training captions."""

    @abstractmethod
    def caption(self, photos: list[Photo], ctx: "StageContext") -> dict[str, CaptionResult]:
        """Return a result for every photo id; a photo that fails gets ``error`` set."""


class Judge(Fighter):
    """Scores candidates (pointwise) or picks between two (pairwise, ``pairwise = True``)."""

    pairwise: bool = False
    version: str = "0"  # bump when the same inputs should get different verdicts (a new rubric)

    def identity(self, ctx: "StageContext | None") -> dict[str, Any]:
        """Everything besides the photo and the captions that this judge's verdicts depend
        on. The engine reuses a recorded verdict only under the same identity, so a judge
        whose answers depend on more (a model id, a prompt) extends this dict."""
        found: dict[str, Any] = {"name": self.name, "version": self.version}
        if ctx is not None:
            registered = ctx.registry.items["judge"].get(self.name)
            cfg = ctx.config
            found.update(
                plugin_version=registered.version if registered else "?",
                options=redact(ctx.options(self.name)),  # a key is not set-up, and never goes to disk
                base=cfg.base,
                task={"trigger": cfg.trigger, "class_word": cfg.class_word, "lora_type": cfg.caption.lora_type},
            )
        return found

    def score(self, items: list[FightItem], ctx: "StageContext") -> dict[str, dict[str, Score]]:
        """Pointwise: item id → fighter → Score (higher is better)."""
        raise NotImplementedError

    def compare(
        self, pairs: list[tuple[FightItem, Candidate, Candidate]], ctx: "StageContext"
    ) -> list[Comparison] | Mapping[tuple[str, str, str], Comparison]:
        """Pairwise: one Comparison per (item, first, second) — a list in the order asked,
        or a mapping keyed by (item id, first fighter, second fighter), which suits a judge
        that answers out of order. A pair it could not judge gets ``Comparison(error=...)``."""
        raise NotImplementedError


class SampleJudge(Fighter):
    """Scores LoRA candidates from their samples (the pick fight, ``[train.pick] judges``).
    Registered through ``register_judges`` like a caption judge; the stage asks only the
    kind it needs. Gets the images, the prompts and the photos in one ``PickSheet``."""

    version: str = "0"

    @abstractmethod
    def score_samples(self, sheet: PickSheet, ctx: "StageContext") -> dict[str, Score]:
        """Candidate name → Score (higher is better). A candidate it cannot judge is left
        out; a Score's reason says what was measured, in the user's words."""

    def flags(self, sheet: PickSheet, scores: dict[str, Score], ctx: "StageContext") -> dict[str, str]:
        """Candidate → a warning worth a person's attention (a memorised candidate), if any."""
        return {}
