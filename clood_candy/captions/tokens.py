"""Counting caption tokens the way the base model's text encoder does.

The real count comes from the base model's own tokenizer (``LoadedBase.count_tokens``);
:func:`approx_tokens` is only a stand-in for when no base model can be loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clood_candy.context import StageContext

TokenCounter = Callable[[str], int]
CLIP_WINDOW = 75  # CLIP's 77 positions minus BOS/EOS

_PIECES = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def approx_tokens(text: str) -> int:
    """Roughly what CLIP's BPE makes of ``text``: a token per common word, per digit and
    per punctuation mark; long or made-up words (a trigger like "jlybn") split into pieces
    of about five letters."""
    return sum(max(1, -(-len(p) // 7)) if p.isalpha() else 1 for p in _PIECES.findall(text))


def token_counter(ctx: "StageContext") -> tuple[TokenCounter, int, bool]:
    """(count, window, exact): the loaded base model's tokenizer when it can be had,
    else :func:`approx_tokens` with CLIP's 75-token window (``exact`` False)."""
    try:
        base = ctx.base()
    except Exception as exc:  # no base here (offline, not installed): count roughly, say so
        ctx.log.warning("token counts are approximate: base model not loadable (%s)", exc)
        return approx_tokens, CLIP_WINDOW, False
    return base.count_tokens, base.token_window, True


def overflow(text: str, count: TokenCounter, window: int) -> tuple[int, str]:
    """(tokens, the tail the text encoder never sees). Comma-separated parts are kept
    whole so the report can show which words fall off."""
    total = count(text)
    if total <= window:
        return total, ""
    parts = [p for p in re.split(r"(?<=,)\s*", text) if p]
    kept = ""
    for i, part in enumerate(parts):
        trial = f"{kept} {part}".strip() if kept else part
        if count(trial.rstrip(",")) > window:
            return total, " ".join(parts[i:]).strip().rstrip(",")
        kept = trial
    return total, ""
