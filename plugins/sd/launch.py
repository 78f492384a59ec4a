"""Train one config of a run from the command line, in one process or several:

    python -m clood_candy_plugins.sd.launch --run RUN_DIR --config NAME
    accelerate launch --multi_gpu --num_processes 2 -m clood_candy_plugins.sd.launch --run RUN_DIR --config NAME

(On a machine without GPUs ``--multi_gpu`` still starts the processes, through torchrun,
and they train on the CPU over gloo; accelerate's ``--cpu`` alone would start one.)

The recipe is a config of the run by name (the defaults, the fight's configs or the
default grid) or a TrainConfig JSON file (``--recipe``); the data is the run's captioned
dataset or a TrainSet JSON file (``--trainset``). The LoRA lands where the train stage
puts that config's (``train/fight/<name>/``) unless ``--out`` says otherwise. The main
process prints the TrainOutcome as JSON; the exit status is 1 when training failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from clood_candy.errors import UserError
from clood_candy.records import TrainConfig, TrainSet


def _file_recipe(args) -> TrainConfig | None:
    return TrainConfig.model_validate_json(Path(args.recipe).read_text(encoding="utf-8")) if args.recipe else None


def _recipe(args, ctx, data: TrainSet) -> TrainConfig:
    from clood_candy.pipeline.planning import planned_recipes

    # The configs as the train stage trains them: the plan's choices where the run set none.
    plan, configs, _ = planned_recipes(ctx, data)
    defaults = ctx.config.train.defaults.model_copy(update=plan.train_updates())
    found = {c.name: c for c in [defaults, *configs]}
    if args.config not in found:
        raise UserError(f"no config named {args.config!r} in this run (configs: {', '.join(sorted(found))})")
    return found[args.config]


def _context(run_dir: Path, quiet: bool):
    from clood_candy.config import reload_config
    from clood_candy.context import StageContext
    from clood_candy.plugins import build_registry, load_plugins
    from clood_candy.progress import Progress
    from clood_candy.runstore import RunStore

    if not (run_dir / "run.json").is_file():
        raise UserError(f"not a run folder (no run.json): {run_dir}")
    run = RunStore.open(run_dir.resolve())
    config, _ = reload_config(run.state)
    load_plugins()
    return StageContext(run=run, config=config, registry=build_registry(), progress=Progress(quiet=quiet))


def main(argv: list[str] | None = None) -> int:
    from clood_candy_plugins.sd.distributed import launched

    parser = argparse.ArgumentParser(prog="python -m clood_candy_plugins.sd.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="the run folder (holds run.json)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="a config of the run, by name")
    which.add_argument("--recipe", help="a TrainConfig JSON file")
    parser.add_argument("--trainset", help="a TrainSet JSON file (default: the run's captioned dataset)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/train/fight/<config name>)")
    parser.add_argument("--max-steps", type=int, help="stop here; a later call continues from the checkpoint")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        ctx = _context(args.run, quiet=args.quiet or not main_process)
        config = _file_recipe(args)  # read first: a bad file is an error before any data or model
        if args.trainset:
            data = TrainSet.model_validate_json(Path(args.trainset).read_text(encoding="utf-8"))
        else:
            from clood_candy.pipeline.train_stage import load_trainset

            data = load_trainset(ctx)
        config = config or _recipe(args, ctx, data)
        family, resolution = ctx.family(), config.resolution or data.resolution
        problem = family.check_resolution(resolution, data.buckets)
        if problem:  # the pipeline checked the run's own resolutions; a recipe file's is checked here
            raise UserError(f"resolution {resolution} does not suit the {family.name} family: {problem}")
        base = ctx.base()
        out = args.out or ctx.run.path("train", "fight", config.name)
        outcome = family.train(base, data, config, out, ctx, max_steps=args.max_steps)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if main_process:
        print(json.dumps(outcome.model_dump(mode="json"), indent=2))
        if outcome.error:
            print(f"error: {outcome.error}", file=sys.stderr)
    if launched():
        import torch.distributed

        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 1 if outcome.error else 0


if __name__ == "__main__":
    sys.exit(main())
