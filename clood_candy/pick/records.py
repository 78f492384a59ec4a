"""The pick fight's records: which saved LoRA ships (RUN/train/pick/, ``pick`` in
train/fight.json). Also importable from clood_candy.records, with every stage's."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from clood_candy.records import Record, Score


class PickCandidate(Record):
    """One LoRA the pick fight samples: a saved checkpoint of a config, at one LoRA weight."""

    name: str  # "default-step40", "default-step40-w0.8": also its folder under train/pick/
    config: str
    step: int
    lora: str  # kohya .safetensors, relative to the run folder
    weight: float = 1.0
    val_loss: float | None = None  # the validation loss recorded at (or last before) this step
    final: bool = False  # the config's last step (what training alone would have shipped)


class PickPrompt(Record):
    text: str
    kind: Literal["held-out", "novel"]  # a held-out photo's caption, or the trigger somewhere new
    photo: str | None = None  # held-out: that photo (absolute path of the prepared image)
    change: str = ""  # novel: what is new ("background: on a sandy beach")


class PickImage(Record):
    candidate: str
    prompt: int  # index into PickSheet.prompts
    seed: int
    image: str  # relative to the run folder


class PickSheet(Record):
    """Everything a sample judge gets: the samples, the prompts and the photos."""

    candidates: list[PickCandidate]
    prompts: list[PickPrompt]
    seeds: list[int]
    images: list[PickImage]
    held_out: list[str]  # prepared photos training never saw (absolute paths)
    training: list[str]  # prepared photos it trained on (absolute paths)
    trigger: str
    class_word: str
    failures: list[str] = Field(default_factory=list)  # samples that could not be made, with why
    seconds: float = 0.0  # the sampling, as measured

    def of(self, candidate: str, kind: str | None = None) -> list[PickImage]:
        """A candidate's samples (only on ``kind`` prompts, when given)."""
        return [i for i in self.images
                if i.candidate == candidate and (kind is None or self.prompts[i.prompt].kind == kind)]


class PickVote(Record):
    """A person's choice (``clood pick`` or the review page): the ``user`` judge's answer."""

    candidate: str
    by: str = "user"
    why: str = ""
    at: str = ""  # ISO time


class PickResult(Record):
    sheet: PickSheet
    judges: dict[str, float]  # judge → weight, as configured
    scores: dict[str, dict[str, Score]] = Field(default_factory=dict)  # judge → candidate → score
    ranks: dict[str, dict[str, float]] = Field(default_factory=dict)  # judge → candidate → 0 (worst)..1 (best)
    sat_out: dict[str, str] = Field(default_factory=dict)  # judge → one line why it did not vote
    panel: dict[str, float] = Field(default_factory=dict)  # candidate → weighted mean rank
    flags: dict[str, list[str]] = Field(default_factory=dict)  # candidate → warnings (memorised, …)
    winner: str
    why: str  # one plain sentence for people
    disagreements: list[str] = Field(default_factory=list)  # judges that preferred another candidate
    votes: list[PickVote] = Field(default_factory=list)
    seconds: float = 0.0  # the judging
