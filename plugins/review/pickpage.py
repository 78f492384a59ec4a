"""The Pick page: the pick fight's candidates side by side (every candidate × prompt sample,
its panel score, validation loss and flags), each judge's ranking, why the winner won, and a
vote per candidate that goes through ``clood pick``'s own vote() (Desk.vote), so a vote
here and one in the terminal are the same record."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from clood_candy import edits, fsutil
from clood_candy.records import ConfigFightResult, PickCandidate, PickImage, PickResult, Score
from clood_candy.runstore import RunStore
from clood_candy_plugins.review.desk import MAX_WHY_CHARS, Refused

if TYPE_CHECKING:
    from clood_candy_plugins.review.app import Kit

FIGHT = Path("train") / "fight.json"


@dataclass
class PromptHead:
    label: str
    text: str
    photo: str | None  # a held-out prompt's photo id (shown through /image/<id>), if it is in this run


@dataclass
class CandidateRow:
    candidate: PickCandidate
    panel: float | None  # the weighted mean rank; None: no judge could score it
    flags: list[str]
    winner: bool
    cells: list[list[PickImage]]  # per prompt, its samples by seed


@dataclass
class JudgeRow:
    name: str
    weight: float
    ranking: str  # "a > b = c", best first; "" when it sat out
    sat_out: str
    scores: dict[str, Score]


@dataclass
class PickView:
    result: PickResult
    prompts: list[PromptHead]
    rows: list[CandidateRow]
    judges: list[JudgeRow]
    lora: str | None  # the run's LoRA (run.json outputs.lora)
    shipped_from: str  # the winner's own file: the run's LoRA is a copy of it


def ranking(ranks: dict[str, float]) -> str:
    """'a > b = c': best first, candidates a judge could not tell apart joined by '='."""
    levels: dict[float, list[str]] = {}
    for cand, rank in ranks.items():
        levels.setdefault(rank, []).append(cand)
    return " > ".join(" = ".join(levels[r]) for r in sorted(levels, reverse=True))


@lru_cache(maxsize=4)
def _parsed(path: Path, inode: int, mtime_ns: int, size: int) -> ConfigFightResult:
    """One parse per version of fight.json (an atomic rewrite is a new inode): the page's
    grid asks for every sample through it."""
    return ConfigFightResult.model_validate(fsutil.read_json(path))


def read_pick(root: Path) -> tuple[PickResult | None, str]:
    """The run's pick fight, or None and what the page says instead, with what to run."""
    path = root / FIGHT
    if not path.is_file():
        return None, ("This run has no pick fight yet: it comes at the end of the train stage, which has not run. "
                      f"Train with: clood dogfood candy --resume {root} (or, where clood dogfood candy --review "
                      "is waiting, press “Train with these captions” on the Captions page).")
    try:
        stat = path.stat()
        fight = _parsed(path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError) as exc:  # bad JSON and a record that does not validate are ValueErrors
        return None, (f"train/fight.json could not be read ({type(exc).__name__}): train again with "
                      f"clood dogfood candy --resume {root} --stages train --force.")
    if fight.pick is None:
        return None, ("This run shipped its last step without a pick fight ([train.pick] enabled = false, or "
                      "training saved only one LoRA). For one, set [train.pick] enabled = true and a "
                      "train.defaults.checkpoint_every below the steps, then train again: clood dogfood candy "
                      f"--resume {root} --config clood.toml.")
    return fight.pick, ""


def build(root: Path, result: PickResult) -> PickView:
    sheet = result.sheet
    # A held-out prompt names its photo by absolute path, which a copied or moved run no
    # longer matches: find it by its file name among this run's training set instead.
    ids = {Path(str(r["file_name"])).name: str(r.get("id", "")) for r in edits.dataset_rows(root)}
    prompts = [PromptHead(label="held-out photo's caption" if p.kind == "held-out" else f"new — {p.change}",
                          text=p.text, photo=ids.get(Path(p.photo).name) if p.photo else None)
               for p in sheet.prompts]
    rows = []
    for cand in sheet.candidates:
        cells = [sorted((i for i in sheet.images if i.candidate == cand.name and i.prompt == n), key=lambda i: i.seed)
                 for n in range(len(sheet.prompts))]
        rows.append(CandidateRow(candidate=cand, panel=result.panel.get(cand.name),
                                 flags=result.flags.get(cand.name, []), winner=cand.name == result.winner, cells=cells))
    judges = [JudgeRow(name=name, weight=weight, ranking=ranking(result.ranks[name]) if name in result.ranks else "",
                       sat_out=result.sat_out.get(name, ""), scores=result.scores.get(name, {}))
              for name, weight in result.judges.items()]
    shipped_from = next((c.lora for c in sheet.candidates if c.name == result.winner), "")
    return PickView(result=result, prompts=prompts, rows=rows, judges=judges,
                    lora=RunStore.open(root).state.outputs.get("lora"), shipped_from=shipped_from)


def routes(kit: Kit) -> list[Route]:
    async def pick_page(request: Request) -> Response:
        if not kit.token_ok(request.query_params.get("token")):
            return kit.forbidden(request)
        result, missing = read_pick(kit.root)
        return kit.page(request, "pick.html", view=build(kit.root, result) if result else None, missing=missing,
                        note=request.query_params.get("note", ""), max_why=MAX_WHY_CHARS)

    async def cast(request: Request) -> Response:
        fields = await kit.form(request)
        if fields is None:
            return kit.forbidden(request)
        candidate = fields.get("candidate", "")
        try:  # on a worker thread: deciding again and copying the LoRA must not stall the other pages
            result = await run_in_threadpool(kit.desk.vote, candidate, fields.get("why", ""))
        except Refused as exc:
            return kit.message(request, "Not voted", str(exc), exc.status, back=kit.where("/pick"))
        view = build(kit.root, result)
        done = (f"Your vote for {candidate} is recorded. The panel now ships {result.winner}: "
                f"{view.lora} is now a copy of {view.shipped_from}.")
        return RedirectResponse(kit.where("/pick", note=done) + f"#cand-{result.winner}", status_code=303)

    def sample(request: Request) -> Response:  # sync: Starlette runs it on a worker thread
        if not kit.token_ok(request.query_params.get("token")):
            return PlainTextResponse("wrong or missing token", status_code=403)
        result, _ = read_pick(kit.root)
        wanted = request.path_params["path"]
        listed = result is not None and any(i.image == wanted for i in result.sheet.images)
        path = (kit.root / wanted).resolve() if listed else None
        # Listed is not enough: a hand-edited fight.json may name a file outside the run.
        if path is None or kit.root not in path.parents or not path.is_file():
            return PlainTextResponse("no such sample in this run's pick fight", status_code=404)
        return FileResponse(path)

    return [Route("/pick", pick_page), Route("/pick/vote", cast, methods=["POST"]),
            Route("/pick/sample/{path:path}", sample)]
