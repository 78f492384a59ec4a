"""What a captioner or a judge plugin implements.

A plugin subclasses one of these and hands an instance to ``register`` in
``register_captioners`` / ``register_judges`` (see README, "Writing a plugin").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from clood_candy.records import CaptionResult, Candidate, Comparison, FightItem, Photo, Score

if TYPE_CHECKING:
    from clood_candy.context import StageContext


class Fighter(ABC):
    name: str = ""
    description: str = ""

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

    def score(self, items: list[FightItem], ctx: "StageContext") -> dict[str, dict[str, Score]]:
        """Pointwise: item id → fighter → Score (higher is better)."""
        raise NotImplementedError

    def compare(
        self, pairs: list[tuple[FightItem, Candidate, Candidate]], ctx: "StageContext"
    ) -> list[Comparison]:
        """Pairwise: one Comparison per (item, first, second), in order."""
        raise NotImplementedError
