"""Typed records that cross stage boundaries.

Every stage reads and writes these; the JSON files in a run folder are their
``model_dump`` so other tools can rely on the shapes (see README, "The run store").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- prep -----------------------------------------------------------------


class Upscaled(Record):
    """How an upscaler plugin (``prep.upscaler``) enlarged a photo smaller than its output
    size, instead of a plain resize."""

    by: str  # the upscaler's name
    factor: int  # the enlargement prep asked for; the result is then resized to the output size
    detail: str = ""  # the upscaler's own account: model, architecture, its native scale


class Photo(Record):
    """A kept, prepared photo: what captioners, judges and the trainer see."""

    id: str  # file stem in the dataset, unique within a run
    source: str  # path relative to the input folder (folder names are data)
    image: str  # prepared PNG (square, or its aspect bucket's size), relative to the run folder
    original: str = ""  # absolute path of the original (never modified)
    width: int
    height: int
    crop_box: list[int] | None = None  # [x0, y0, x1, y1] in the EXIF-rotated original
    original_size: tuple[int, int] | None = None  # (width, height) of the EXIF-rotated original
    exif: dict[str, Any] = Field(default_factory=dict)
    folders: list[str] = Field(default_factory=list)  # relative folder parts, outermost first
    metrics: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, Any] | None = None  # ground truth when known (demo studio)
    upscaled: Upscaled | None = None


class PrepEntry(Record):
    source: str
    status: Literal["kept", "culled", "failed"]
    reason: str = ""
    crop_box: list[int] | None = None
    output: str | None = None
    duplicate_of: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    upscaled: Upscaled | None = None


class PrepReport(Record):
    entries: list[PrepEntry]
    photos: list[Photo] = Field(default_factory=list)
    # The resolution prep framed for (prep.resolution, else the base's), so a photo prepared
    # later (clood review) is made at the same size without loading the base; None in older reports.
    resolution: int | None = None


# --- captioning and fights ------------------------------------------------


class PhotoFacts(Record):
    """What a captioner saw, field by field, so the strategy layer can choose what to say.

    Words are plain and lower case, from the shared vocabulary in
    ``clood_candy.captions.vocab`` where one exists (e.g. background "white", "wood").
    """

    subject: str = ""  # the class word as the captioner saw it ("jellybean", "candy")
    colours: list[str] = Field(default_factory=list)
    speckled: bool | None = None
    count: int | None = None
    arrangement: str | None = None  # single, few, pile, scattered, bowl
    background: str | None = None  # white, grey, wood, <colour> cloth (grey cloth too), textured, dark
    lighting: str | None = None  # daylight, warm indoor light, indoor light, dim light, flash
    framing: str | None = None  # macro close-up, medium shot, wide shot
    view: str | None = None  # top-down, angled, side
    brand: str | None = None
    time_of_day: str | None = None  # day, night
    setting: str | None = None  # indoors, outdoors
    extra: list[str] = Field(default_factory=list)  # anything else worth saying


class CaptionResult(Record):
    """One fighter's output for one photo: a caption or a reason it has none."""

    caption: str | None = None
    error: str | None = None
    usage: dict[str, float] = Field(default_factory=dict)  # tokens, cost, seconds…
    facts: PhotoFacts | None = None  # structured output, when the captioner has it
    details: dict[str, Any] = Field(default_factory=dict)


class Candidate(Record):
    fighter: str
    text: str


class FightItem(Record):
    """One thing fighters compete on (a photo) and what each fighter offers for it."""

    id: str
    photo: Photo | None = None
    candidates: list[Candidate]


class Score(Record):
    """A pointwise judge's score of one candidate (higher is better)."""

    score: float
    reason: str = ""
    evidence: dict[str, str | float] = Field(default_factory=dict)  # what a report shows for it (paths, figures)


class Comparison(Record):
    """A pairwise judge's verdict on (first, second) as shown to it, or why it has none.

    A failed comparison (``error`` set, no winner) is not a tie: the engine counts it as no
    vote from that judge on that pair and never caches it, so the next run asks again.
    """

    winner: Literal["first", "second", "tie"] | None = None
    reason: str = ""
    error: str | None = None

    @model_validator(mode="after")
    def _winner_or_error(self) -> "Comparison":
        if (self.winner is None) == (self.error is None):
            raise ValueError("a comparison has either a winner or an error")
        return self


class JudgeVerdict(Record):
    """One judge on one pair of fighters for one item, both orders resolved."""

    judge: str
    a: str
    b: str
    outcome: Literal["a", "b", "tie"]
    flipped: bool = False  # pairwise judge changed its mind when the order was swapped
    reason: str = ""


class FighterStanding(Record):
    fighter: str
    win_rate: float
    ci_low: float | None = None
    ci_high: float | None = None
    strength: float | None = None  # Bradley–Terry, when more than two fighters
    mean_scores: dict[str, float] = Field(default_factory=dict)  # per pointwise judge


class JudgeFailures(Record):
    """Answers of one judge the engine could not use; each costs that judge its vote on one
    pair of one photo, nothing more."""

    failed: int = 0  # comparisons that failed, or captions the judge left unscored
    non_finite: int = 0  # scores that were NaN or infinite, dropped
    note: str = ""  # one line for people, e.g. "judge claude: 3 comparisons failed (first: HTTP 529 …)"


class FightResult(Record):
    fighters: list[str]
    judges: dict[str, float]  # judge name → weight
    items: dict[str, list[JudgeVerdict]]  # item id → verdicts
    scores: dict[str, dict[str, dict[str, Score]]] = Field(default_factory=dict)  # judge → item → fighter
    standings: list[FighterStanding]
    flip_rates: dict[str, float] = Field(default_factory=dict)
    forfeits: dict[str, str] = Field(default_factory=dict)  # fighter → why it could not fight
    judge_failures: dict[str, JudgeFailures] = Field(default_factory=dict)  # judge → what it answered unusably
    winner: str | None
    clear: bool  # False: the confidence interval does not separate the top two
    verdict: str  # one plain sentence for people
    per_item_winners: dict[str, str] = Field(default_factory=dict)  # for --merge
    placements: dict[str, "TrialRun"] = Field(default_factory=dict)  # captioner → where it ran (Ray executor)


# --- training -------------------------------------------------------------


class TrainConfig(Record):
    """One training recipe: a fighter in the config fight."""

    name: str = "default"
    rank: int = 8
    alpha: float = 8.0
    learning_rate: float = 1e-4
    steps: int = 400
    batch_size: int = 1
    gradient_accumulation: int = 1
    optimizer: Literal["adamw", "adamw8bit", "prodigy", "sgd"] = "adamw"
    lr_scheduler: Literal["constant", "cosine", "linear", "constant_with_warmup"] = "constant"
    warmup_steps: int = 0
    variant: Literal["lora", "dora", "loha", "lokr"] = "lora"
    # Which layers the adapter trains. "full": what a kohya LoRA patches (the UNet's transformer
    # blocks whole: attention, feed-forward, proj_in/proj_out; the text encoders' attention and
    # MLP when they train); "attention": attention q/k/v/out only (fewer weights, less memory).
    targets: Literal["full", "attention"] = "full"
    target_modules: list[str] | None = None  # UNet module names (peft's suffix match): when set, the UNet's list
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None
    caption_dropout: float = 0.0
    shuffle_tags: bool = False
    keep_tokens: int = 1  # tags kept in place when shuffling (the trigger)
    resolution: int | None = None  # None: the base model's
    prediction_type: Literal["epsilon", "v_prediction"] | None = None  # None: the base's
    snr_gamma: float | None = None
    noise_offset: float = 0.0
    loss: Literal["l2", "huber"] = "l2"
    huber_c: float = 0.1
    timestep_min: int = 0
    timestep_max: int = 1000
    repeats: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    compile: bool = False
    prior_preservation: bool = False
    prior_loss_weight: float = 1.0
    class_prompt: str | None = None
    num_class_images: int = 0
    seed: int = 0
    checkpoint_every: int = 100
    validate_every: int = 50
    sample_every: int = 0


class TrainSample(Record):
    image: str  # path relative to the run folder
    prompt: str
    caption: str = ""


class TrainOutcome(Record):
    config: TrainConfig
    steps_done: int
    lora: str | None = None  # kohya-keyed .safetensors, relative to the run folder
    lora_diffusers: str | None = None
    checkpoints: list[str] = Field(default_factory=list)
    train_loss: list[tuple[int, float]] = Field(default_factory=list)
    val_loss: list[tuple[int, float]] = Field(default_factory=list)
    final_val_loss: float | None = None
    verification: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


class TrialRun(Record):
    """Where one config's round ran under the Ray executor, and how it went there."""

    node: str  # the node's host name and IP
    node_id: str
    pid: int  # the worker process of the attempt that finished
    device: str  # "GPU 0" (Ray's id, what CUDA_VISIBLE_DEVICES named), or "CPU"
    waited_s: float  # from submission to the start of that attempt (the clocks of driver and node)
    seconds: float  # that attempt, base loading included
    attempts: int = 1  # more than 1: a worker or node was lost and the trial ran again
    resumed_from: int | None = None  # the step it continued from (0: from scratch); None: it trained no step


class HalvingRound(Record):
    budget: int
    scores: dict[str, float | None]  # config name → validation loss (lower is better); None: failed
    survivors: list[str]
    trials: dict[str, TrialRun] = Field(default_factory=dict)  # config name → where it ran (Ray executor only)
    decided_by: Literal["validation-loss", "panel"] = "validation-loss"
    panel: PickResult | None = None  # the sample judges' verdict on the survivors, when they decided


class ConfigFightResult(Record):
    configs: list[TrainConfig]
    rounds: list[HalvingRound]
    winner: str | None  # None: every config failed (failures says why)
    judge: Literal["validation-loss", "panel"] = "validation-loss"  # [train.fight] judge: who decides rounds 2+
    failures: dict[str, str] = Field(default_factory=dict)
    executor: str = "local"  # where the rounds ran: local (this process, in turn) or ray
    pick: PickResult | None = None  # which saved LoRA ships, by the sample judges ([train.pick])


# --- the pick fight: which saved LoRA ships (RUN/train/pick/, ``pick`` in train/fight.json)


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


# --- sampling -------------------------------------------------------------


class SampleImage(Record):
    image: str  # relative to the run folder
    prompt: str
    seed: int
    weight: float
    checkpoint: str = "final"


class SampleSet(Record):
    images: list[SampleImage]
    grids: dict[str, str] = Field(default_factory=dict)  # grid name → image path
    negative_prompt: str = ""


class ConceptInfo(Record):
    """One concept of a multi-concept LoRA (a brand): its own trigger beside the run's."""

    name: str
    trigger: str  # written after the run's trigger in each of its captions: "jlybn sunkist, ..."
    class_word: str
    photos: list[str] = Field(default_factory=list)  # photo ids
    repeats: int = 1  # copies per epoch, so a concept with fewer photos weighs as much (seed 004)
    share: float = 0.0  # its share of what training sees, repeats counted


class ConceptSet(Record):
    """What the caption stage decided about concepts (dataset/concepts.json)."""

    concepts: list[ConceptInfo] = Field(default_factory=list)
    unassigned: list[str] = Field(default_factory=list)  # photo ids in no concept: the run's trigger only
    warnings: list[str] = Field(default_factory=list)

    def of(self, photo_id: str) -> ConceptInfo | None:
        return next((c for c in self.concepts if photo_id in c.photos), None)


class TrainItem(Record):
    image: str  # absolute path of a prepared image
    caption: str
    # Where the image came from, for SDXL's size and crop conditioning (None: the image is
    # the whole photo): the photo's upright size and the image's box in its pixels.
    original_size: tuple[int, int] | None = None  # (width, height)
    crop_box: list[int] | None = None  # [x0, y0, x1, y1]
    concept: str | None = None  # the concept's trigger (multi-concept runs)


class TrainSet(Record):
    """What the trainer gets: the winning captions on the prepared images."""

    train: list[TrainItem]
    validation: list[TrainItem]  # held out, for validation loss and the config fight
    trigger: str
    class_word: str
    resolution: int
    buckets: bool = False  # prep.buckets: each image trains at its aspect bucket, not as its centre square
