"""The ``clood`` command. Thin: it parses, builds a context and hands over to the
pipeline; user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from clood_candy import fsutil
from clood_candy.config import CloodConfig, deep_merge, load_config, load_demo_config, reload_config
from clood_candy.context import StageContext
from clood_candy.errors import UserError
from clood_candy.plugins import build_registry, load_plugins, pm
from clood_candy.progress import Progress
from clood_candy.runstore import STAGES, RunStore


class CloodGroup(click.Group):
    """Turns UserError into one line and exit code 2, anywhere below."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=CloodGroup)
@click.version_option(package_name="clood-candy")
@click.option("--plugins-dir", type=click.Path(path_type=Path), envvar="CLOOD_PLUGINS_DIR",
              help="Also load every .py plugin file in this folder.")
@click.pass_context
def cli(click_ctx: click.Context, plugins_dir: Path | None) -> None:
    """clood candy: train a jellybean LoRA from your photos, and learn how it works."""
    try:
        load_plugins(plugins_dir)
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


def make_context(run: RunStore, config: CloodConfig, quiet: bool) -> StageContext:
    registry = build_registry()
    progress = Progress(quiet=quiet)
    for problem in registry.problems:
        progress.say(f"plugin {problem.plugin} failed to load: {problem.error}", style="yellow")
    return StageContext(run=run, config=config, registry=registry, progress=progress)


@cli.group()
def dogfood() -> None:
    """Run the whole pipeline on a subject."""


def _overrides(**flags: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None or value == () or value is False:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@dogfood.command()
@click.argument("photos", required=False, type=click.Path(path_type=Path))
@click.option("--demo", is_flag=True, help="Use the built-in jellybean photo studio and the tiny offline base.")
@click.option("--base", help="HF id, local diffusers folder, single-file .safetensors, or 'tiny'.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="A clood.toml file.")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Default: runs/<time>-<name>.")
@click.option("--stages", help=f"Comma-separated subset of {','.join(STAGES)}.")
@click.option("--resume", "resume", type=click.Path(path_type=Path), help="Continue an interrupted run.")
@click.option("--trigger", help="The trigger word (default jlybn).")
@click.option("--resolution", type=int, help="Training resolution (default: the base model's).")
@click.option("--keep-all", is_flag=True, help="Keep every photo; culling still reports.")
@click.option("--merge", is_flag=True, help="Best caption per photo instead of one winning captioner.")
@click.option("--concepts-from", type=click.Choice(["none", "folders"]),
              help="folders: each first-level folder of PHOTOS is a concept (a brand) with its own trigger.")
@click.option("--force", is_flag=True, help="Rerun stages even when nothing changed; asks before a run's hand edits "
              "(clood review) could go, keeping them by default.")
@click.option("--discard-edits", is_flag=True, help="With --resume RUN --force: move the run's hand edits aside "
              "(review/edits-discarded-<time>.json) and rerun without them.")
@click.option("--gpu-memory", type=float, help="Plan for this many GB of device memory (default: the device's).")
@click.option("--review", is_flag=True, help="After captioning, open the review page (clood review) and train once "
              "you press “Train with these captions” there; Ctrl-C stops, --resume goes on later.")
@click.option("--review-port", type=click.IntRange(0, 65535), default=0,
              help="With --review: its port (default: a free one).")
@click.option("--no-browser", is_flag=True, help="With --review: print the page's address; do not open a browser.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def candy(photos: Path | None, demo: bool, base: str | None, config_path: Path | None, run_dir: Path | None,
          stages: str | None, resume: Path | None, trigger: str | None, resolution: int | None, keep_all: bool,
          merge: bool, concepts_from: str | None, force: bool, discard_edits: bool, gpu_memory: float | None,
          review: bool, review_port: int, no_browser: bool, as_json: bool, quiet: bool) -> None:
    """Prep → caption fight → config fight and training → samples → report."""
    from clood_candy.pipeline.orchestrator import StageFailed, run_pipeline

    overrides = _overrides(base=base, trigger=trigger, concepts_from=concepts_from, **{"prep.resolution": resolution, "prep.keep_all": keep_all,
                                                           "caption.merge": merge, "train.gpu_memory": gpu_memory})
    warning = None
    if discard_edits and not (resume and force):
        raise UserError("--discard-edits drops a run's hand edits before rerunning it: "
                        "use it with --resume RUN --force")
    if resume:
        run, config, warning = _resume(resume, config_path, overrides)
        demo = run.state.demo
        source = Path(run.state.source) if run.state.source else None
    else:
        config = load_demo_config(config_path, overrides) if demo else load_config(config_path, overrides)
        if demo and photos is None:
            source = None  # rendered into the run folder below
        elif photos is None:
            raise UserError("give a photos folder (clood dogfood candy ~/photos/jellybeans) or --demo")
        else:
            source = photos.expanduser().resolve()
            if not source.exists():
                raise UserError(f"photos folder not found: {photos}")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        root = run_dir or Path("runs") / f"{stamp}-{config.name}{'-demo' if demo else ''}"
        run = RunStore.create(root.resolve(), config.name, config.model_dump(mode="json"),
                              str(source) if source else None, demo,
                              config_file=str(config_path.resolve()) if config_path else None, flags=overrides,
                              config_set=config.model_dump(mode="json", exclude_unset=True))
    ctx = make_context(run, config, quiet)
    if warning:
        ctx.progress.say(warning, style="yellow")
    if demo and source is None:
        source = _render_demo_photos(ctx)
        run.state.source = str(source)
        run.save()
    chosen = [s.strip() for s in stages.split(",")] if stages else list(STAGES)
    if resume and force:
        from clood_candy import force_edits

        force_edits.settle(run.root, discard=discard_edits, stages=chosen, echo=lambda text: click.echo(text, err=True),
                           ask=force_edits.confirm)
    try:
        if review:
            _train_after_review(ctx, source, chosen, force, review_port, not no_browser)
        else:
            run_pipeline(ctx, source, chosen, force=force)
    except StageFailed as exc:
        click.echo(f"Error: stage {exc.stage} failed: {exc} (traceback in {exc.log})", err=True)
        sys.exit(1)
    summary = {"run": str(run.root), "stages": {k: v.status for k, v in run.state.stages.items()},
               **{k: str(run.path(v)) for k, v in run.state.outputs.items()}}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif not quiet:
        click.echo(f"Run folder: {run.root}")
        for key in ("lora", "report"):
            if key in run.state.outputs:
                click.echo(f"{key.capitalize():>10}: {run.path(run.state.outputs[key])}")


def _train_after_review(ctx: StageContext, source: Path | None, chosen: list[str], force: bool, port: int,
                        browser: bool) -> None:
    """--review: the stages before training, then the review page until its “Train with these
    captions” (every save there is in dataset/ already), then training and what follows.
    Ctrl-C on the wait stops there, leaving the run as it is for --resume."""
    from clood_candy.pipeline.orchestrator import check_inputs, check_plugins, run_pipeline

    if not pm.hook.review_before_training.get_hookimpls():
        raise UserError("--review needs a review plugin (the built-in clood review is not installed)")
    if "train" not in chosen:
        raise UserError("--review waits to train: include train in --stages (or leave --stages out)")
    check_plugins(ctx, chosen)  # training's own mistakes are named now, not after the review
    check_inputs(ctx, source, chosen)
    later = STAGES[STAGES.index("train"):]
    run_pipeline(ctx, source, [s for s in chosen if s not in later], force=force)
    try:
        # The address goes to stderr with the progress, keeping stdout for the summary (--json).
        pressed = pm.hook.review_before_training(run_dir=ctx.run.root, port=port, open_browser=browser,
                                                 echo=lambda text: click.echo(text, err=True))
    except KeyboardInterrupt:  # raised once the server has shut down cleanly
        pressed = False
    if not pressed:
        click.echo(f"Stopped before training; your edits are kept (dataset/, review/edits.json). Train with them: "
                   f"clood dogfood candy --resume {ctx.run.root}", err=True)
        sys.exit(130)
    run_pipeline(ctx, source, [s for s in chosen if s in later], force=force)


def _resume(resume: Path, config_path: Path | None, overrides: dict[str, Any]) -> tuple[RunStore, CloodConfig, str | None]:
    """The run to continue, its config rebuilt with the real secrets (run.json has none),
    and a warning when the config file it was started with is gone."""
    if not (resume / "run.json").is_file():
        raise UserError(f"not a run folder (no run.json): {resume}")
    run = RunStore.open(resume)
    recorded = run.state.config_file
    config, used = reload_config(run.state, config_path, overrides)
    run.set_config(config.model_dump(mode="json"), str(used.resolve()) if used else recorded,
                   deep_merge(run.state.flags, overrides), config.model_dump(mode="json", exclude_unset=True))
    if recorded and used is None:
        return run, config, (f"The config file this run used is gone ({recorded}): going on with the settings in "
                             "run.json; secrets it held are left to the plugins' defaults and the environment")
    return run, config, None


def _render_demo_photos(ctx: StageContext) -> Path:
    from clood_candy.studio import render_studio

    target = ctx.run.path("demo_photos")
    if not (target / "labels.json").is_file():
        ctx.progress.say("Rendering the demo photo studio …")
        # Teal beans: a look candy-mini never saw, so the LoRA has something new to learn.
        render_studio(target, count=32, seed=ctx.config.seed, look="teal")
    return target


@cli.command()
@click.argument("photos", type=click.Path(path_type=Path))
@click.option("--base", help="HF id, local diffusers folder, single-file .safetensors, or 'tiny'.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="A clood.toml file.")
@click.option("--resolution", type=int, help="Training resolution (default: the base model's).")
@click.option("--lora-type", type=click.Choice(["object", "style", "character", "concept", "scene"]),
              help="What the LoRA learns (caption.lora_type; default object).")
@click.option("--gpu-memory", type=float, help="Plan for this many GB of GPU memory (default: this machine's device).")
@click.option("--concepts-from", type=click.Choice(["none", "folders"]),
              help="folders: each first-level folder is a concept (a brand) with its own trigger.")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON on stdout.")
def plan(photos: Path, base: str | None, config_path: Path | None, resolution: int | None, lora_type: str | None,
         gpu_memory: float | None, concepts_from: str | None, as_json: bool) -> None:
    """The settings training would use for these photos, base and device, each with its
    reason, and the memory it needs. Loads no model."""
    from clood_candy.pipeline.orchestrator import check_resolutions
    from clood_candy.pipeline.planning import plan_from_source
    from clood_candy.plan.render import render

    config = load_config(config_path, _overrides(base=base, concepts_from=concepts_from, **{
        "prep.resolution": resolution, "caption.lora_type": lora_type, "train.gpu_memory": gpu_memory}))
    registry = build_registry()
    source = photos.expanduser().resolve()
    problem = registry.get("preparer", config.prep.preparer).check_source(source)
    if problem:
        raise UserError(problem)
    check_resolutions(config, registry)
    made = plan_from_source(config, registry, source)
    if as_json:
        click.echo(made.model_dump_json(indent=2))
        return
    for line in render(made):
        click.echo(line)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """List every plugin with its kind, name, version and source."""
    registry = build_registry()
    rows = registry.listing()
    problems = [{"plugin": p.plugin, "error": p.error} for p in registry.problems]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "problems": problems}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['kind']:<10} {row['name']:<22} {row['plugin']:<22} {row['version']:<8} {row['source']}")
    for p in problems:
        click.echo(f"FAILED     {p['plugin']}: {p['error']}")


@cli.command()
@click.option("--dir", "runs_dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs(runs_dir: Path, as_json: bool) -> None:
    """List runs with the status of each stage."""
    found = []
    for path in sorted(runs_dir.glob("*/run.json")):
        try:
            store = RunStore.open(path.parent)
        except Exception as exc:
            found.append({"run": str(path.parent), "error": f"unreadable run.json: {exc}"})
            continue
        found.append({"run": str(path.parent), "created": store.state.created,
                      "stages": {k: v.status for k, v in store.state.stages.items()},
                      "lora": store.state.outputs.get("lora"),
                      "symptoms": [s.model_dump() for s in _symptoms(path.parent)]})
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo(f"no runs in {runs_dir}")
    for row in found:
        stages_line = " ".join(f"{k}:{v}" for k, v in row.get("stages", {}).items()) or row.get("error", "")
        click.echo(f"{row['run']}  {stages_line}")
        for symptom in row.get("symptoms", []):
            click.echo(f"    {symptom['title']}: {symptom['evidence']} → {symptom['fix']}")


def _symptoms(root: Path) -> list:
    """The run's doctor: its last answer (RUN/doctor.json), else asked now without writing."""
    from clood_candy import doctor

    try:
        kept = root / doctor.DOCTOR
        found = doctor.Diagnosis.model_validate(fsutil.read_json(kept)) if kept.is_file() else doctor.diagnose(root, False)
    except Exception:  # a run the doctor cannot read is still listed
        return []
    return found.symptoms


def open_run(run_dir: Path, quiet: bool = True) -> StageContext:
    if not (run_dir / "run.json").is_file():
        raise UserError(f"not a run folder (no run.json): {run_dir}")
    run = RunStore.open(run_dir.resolve())
    config, _ = reload_config(run.state)
    return make_context(run, config, quiet)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["kohya", "ai-toolkit", "imagefolder"]), required=True)
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--repeats", type=int, default=10, show_default=True, help="kohya folder repeats.")
def export(run_dir: Path, fmt: str, dest: Path, repeats: int) -> None:
    """Write the captioned dataset in the layout another trainer reads."""
    from clood_candy.export import export_dataset, trainer_job

    ctx = open_run(run_dir)
    where = export_dataset(ctx.run.path("dataset"), fmt, dest, trigger=ctx.config.trigger,
                           class_word=ctx.config.class_word, repeats=repeats,
                           job=trainer_job(ctx) if fmt == "ai-toolkit" else None)
    click.echo(f"exported to {where}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable). Default: the run's own.")
@click.option("--weights", help="Comma-separated LoRA weights, e.g. 0,0.5,1.")
@click.option("--checkpoint", help="A checkpoint name instead of all of them.")
@click.option("-q", "--quiet", is_flag=True)
def sample(run_dir: Path, prompts: tuple[str, ...], weights: str | None, checkpoint: str | None, quiet: bool) -> None:
    """Sample a finished run again: prompts × LoRA weights."""
    from clood_candy.pipeline import sample_stage

    ctx = open_run(run_dir, quiet)
    try:
        parsed = [float(w) for w in weights.split(",")] if weights else None
    except ValueError:
        raise UserError(f"--weights must be numbers separated by commas, got '{weights}'") from None
    out = sample_stage.run(ctx, list(prompts) or None, parsed, checkpoint, out_name="samples/resampled")
    click.echo(json.dumps(out, indent=2))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("candidate", required=False)
@click.option("--why", default="", help="Your reason, kept with the vote.")
@click.option("--json", "as_json", is_flag=True)
def pick(run_dir: Path, candidate: str | None, why: str, as_json: bool) -> None:
    """Show the pick fight's candidates, or vote for CANDIDATE: the user judge's vote joins
    the panel, and the panel's choice becomes the run's LoRA."""
    from clood_candy.pick.fight import vote
    from clood_candy.records import ConfigFightResult

    ctx = open_run(run_dir)
    if candidate:
        result = vote(ctx, candidate, why)
    else:
        path = ctx.run.path("train", "fight.json")
        result = ConfigFightResult.model_validate(fsutil.read_json(path)).pick if path.is_file() else None
        if result is None:
            raise UserError(f"{run_dir} has no pick fight yet: run the train stage first")
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    for cand in result.sheet.candidates:
        mark = "*" if cand.name == result.winner else " "
        click.echo(f"{mark} {cand.name:<28} panel {result.panel.get(cand.name, float('nan')):.2f}  "
                   + "  ".join(f"{j} {r[cand.name]:.2f}" for j, r in result.ranks.items() if cand.name in r))
    click.echo(result.why)
    click.echo(f"LoRA: {ctx.run.path(ctx.run.state.outputs.get('lora', ''))}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> None:
    """Rebuild a run's report.html."""
    from clood_candy.pipeline import report_stage

    ctx = open_run(run_dir)
    out = report_stage.run(ctx)
    click.echo(str(ctx.run.path(out["report"])))


def main() -> None:
    load_plugins()
    pm.hook.register_commands(cli=cli)
    cli()
