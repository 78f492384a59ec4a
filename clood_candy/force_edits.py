"""``dogfood candy --resume RUN --force`` on a run with hand edits (clood review): the user is
asked before anything could be lost. Keeping them is the default and the safe answer (the
caption stage lays them over dataset/ again after it reruns, as every rerun does); dropping
them moves edits.json aside, never deletes it. With no terminal to ask on (CI, a pipe) they
are kept, and that is said in one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click

from clood_candy import edits
from clood_candy.edits import CaptionEdit, CropEdit, PhotoDecision
from clood_candy.errors import UserError


def plural_of(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def on_terminal() -> bool:
    """Someone can answer: stdin is a terminal (not CI, not a pipe, not a test runner)."""
    return sys.stdin is not None and sys.stdin.isatty()


def summary(found: edits.ReviewEdits) -> str:
    counts = [(sum(isinstance(e, kind) for e in found.edits), one, many) for kind, one, many in (
        (CaptionEdit, "caption", "captions"), (PhotoDecision, "photo kept or culled", "photos kept or culled"),
        (CropEdit, "crop box", "crop boxes"))]
    return ", ".join(plural_of(n, one, many) for n, one, many in counts if n)


def settle(run_root: Path, *, discard: bool, stages: list[str], echo: Callable[[str], None],
           ask: Callable[[str], bool], interactive: bool | None = None) -> None:
    """Before a forced rerun: keep the run's hand edits or move them aside, as the user says."""
    path = Path(run_root) / edits.EDITS
    try:
        found = edits.load(run_root)
    except ValueError as exc:  # a hand-mangled file: neither kept nor dropped without the user
        raise UserError(f"{path} could not be read ({str(exc).splitlines()[0]}): move it aside or fix it, "
                        "then run again") from None
    if not found.edits:
        return
    n = len(found.edits)
    what = f"{plural_of(n, 'hand edit', 'hand edits')} in {path} ({summary(found)})"
    if "caption" not in stages:
        if discard:
            raise UserError("--discard-edits: dataset/ holds your hand edits until the caption stage rewrites it; "
                            "include caption in --stages")
        echo(f"--force: keeping the {what}: the caption stage does not rerun, so dataset/ keeps them.")
        return
    if not discard:
        if not (on_terminal() if interactive is None else interactive):
            echo(f"--force: keeping the {what} (no terminal to ask on; add --discard-edits to drop them).")
            return
        if ask(f"{what}. --force reruns the stages; keep them?"):
            echo("Keeping them: the caption stage lays them over dataset/ again after it reruns.")
            return
    moved = edits.set_aside(run_root, datetime.now().strftime("%Y%m%d-%H%M%S"))
    echo(f"Moved the {plural_of(n, 'hand edit', 'hand edits')} aside to {moved}; the stages rerun without them "
         f"(move it back to {path} to have them again).")


def confirm(text: str) -> bool:
    """The question on stderr, so stdout keeps only the summary (--json); Enter keeps."""
    return click.confirm(text, default=True, err=True)
