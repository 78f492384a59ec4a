"""The ``diffusion-likelihood`` judge: asks the base model itself which caption explains a
photo best. The photo is noised at fixed noise levels and the model, given a caption,
predicts the noise; the lower its error, the more the caption helps it reconstruct the
photo (a Monte-Carlo estimate of the diffusion loss, the model's own likelihood bound).
Scores are the negative error, so higher is better."""

from __future__ import annotations

from typing import Any

from clood_candy.fighters import Judge
from clood_candy.hookspecs import hookimpl
from clood_candy.records import FightItem, Score


class DiffusionLikelihoodJudge(Judge):
    name = "diffusion-likelihood"
    description = ("The base model's denoising error on the photo under each caption, at fixed noise "
                   "(lower error: the caption explains the photo better to this model).")

    def identity(self, ctx) -> dict[str, Any]:
        """Plus the seed: it draws the noise every caption is measured under."""
        found = super().identity(ctx)
        if ctx is not None:
            found["seed"] = ctx.config.seed
        return found

    def score(self, items: list[FightItem], ctx) -> dict[str, dict[str, Score]]:
        base = ctx.base()
        pairs = [(item, cand) for item in items if item.photo is not None for cand in item.candidates]
        if not pairs:
            return {}
        # One batched call for every item × candidate: the model runs in big chunks and
        # every caption of a photo meets the same noise.
        errors = base.denoising_error([ctx.run.path(item.photo.image) for item, _ in pairs],
                                      [cand.text for _, cand in pairs], seed=ctx.config.seed)
        toy = " (toy model with random weights: the mechanics, not a real judgement)" if base.is_toy else ""
        scores: dict[str, dict[str, Score]] = {}
        for (item, cand), error in zip(pairs, errors):
            cut = base.count_tokens(cand.text) - base.token_window
            note = f"; the model saw only the first {base.token_window} tokens ({cut} cut)" if cut > 0 else ""
            scores.setdefault(item.id, {})[cand.fighter] = Score(
                score=-error, reason=f"denoising error {error:.4f} under this caption{note}{toy}")
        return scores


@hookimpl
def register_judges(register):
    register(DiffusionLikelihoodJudge())
