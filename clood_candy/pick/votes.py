"""A person's picks (``clood pick``, the review page): RUN/train/pick/votes.json, oldest
first. The ``user`` sample judge reads them; the latest one counts."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from clood_candy import fsutil
from clood_candy.records import PickVote

VOTES = Path("train") / "pick" / "votes.json"


def load_votes(run_root: Path) -> list[PickVote]:
    path = run_root / VOTES
    return [PickVote.model_validate(v) for v in fsutil.read_json(path)] if path.is_file() else []


def add_vote(run_root: Path, candidate: str, why: str = "", by: str = "user") -> PickVote:
    vote = PickVote(candidate=candidate, by=by, why=why, at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    fsutil.write_json(run_root / VOTES, [v.model_dump() for v in [*load_votes(run_root), vote]])
    return vote
