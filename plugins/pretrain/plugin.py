"""``clood pretrain candy-mini --out DIR``: the project's miniature base, trained here."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from clood_candy.hookspecs import hookimpl
from clood_candy.progress import Progress


@click.command()
@click.argument("name", type=click.Choice(["candy-mini"]))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the work (shots, checkpoints) and the result (base/, clip/, pretraining/).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--smoke", is_flag=True, help="A few steps of every stage: checks the recipe, learns nothing.")
@click.option("--ship", is_flag=True, help="Copy the result into this install (what --base candy-mini loads).")
@click.option("--device", default="auto", show_default=True,
              help="auto: the GPU when there is one, else the CPU; or cpu, cuda, cuda:1 …")
@click.option("-q", "--quiet", is_flag=True)
def pretrain(name: str, out: Path, seed: int, smoke: bool, ship: bool, device: str, quiet: bool) -> None:
    """Train candy-mini from nothing on rendered studio shots (resumes a stopped run in OUT)."""
    import torch

    from clood_candy_plugins.pretrain.recipe import Recipe
    from clood_candy_plugins.pretrain.run import pretrain as run

    recipe = Recipe(seed=seed)
    recipe = recipe.smoke() if smoke else recipe
    # What rebuilds these weights (the record keeps it): the settings that change them, no more.
    command = f"clood pretrain {name} --out {shlex.quote(str(out))} --seed {seed}" + (" --smoke" if smoke else "")
    progress = Progress(quiet=quiet)
    chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    if chosen.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    progress.say(f"pretraining on {chosen}")
    run(recipe, out, progress, command, chosen)
    if ship:
        from clood_candy_plugins.pretrain.export import ship as copy_in

        progress.say(f"shipped: {copy_in(out)}")


@hookimpl
def register_commands(cli):
    cli.add_command(pretrain)
