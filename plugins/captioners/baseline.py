"""``baseline``: trigger and class word only — the control every judge must beat.

If a judge cannot tell this from a real caption, the judge is not measuring captions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clood_candy.fighters import Captioner
from clood_candy.hookspecs import hookimpl
from clood_candy.records import CaptionResult, Photo, PhotoFacts

if TYPE_CHECKING:
    from clood_candy.context import StageContext


class BaselineCaptioner(Captioner):
    name = "baseline"
    description = "trigger and class word only: the control"

    def caption(self, photos: list[Photo], ctx: "StageContext") -> dict[str, CaptionResult]:
        text = f"{ctx.config.trigger}, {ctx.config.class_word}"
        return {p.id: CaptionResult(caption=text, facts=PhotoFacts(subject=ctx.config.class_word)) for p in photos}


@hookimpl
def register_captioners(register):
    register(BaselineCaptioner())
