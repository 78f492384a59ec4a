"""``clood publish RUN --repo user/name``: the run's LoRA, a model card and its samples on
the Hugging Face Hub; the same folder stays in RUN/publish for Civitai or a second upload."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from clood_candy import fsutil
from clood_candy.errors import UserError
from clood_candy.hookspecs import hookimpl

RECORD = "published.json"  # in the run folder: where it went (never the token)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--repo", "repo_id", help="The Hub repo, user/name (created when new).")
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--license", "license_id", help="The card's licence id (default: the base model's).")
@click.option("--card-only", is_flag=True, help="Write RUN/publish (card, LoRA, images); upload nothing.")
@click.option("--allow-toy", is_flag=True, help="Publish a LoRA of clood's toy base (it loads on the toy only).")
@click.option("--endpoint", envvar="HF_ENDPOINT", default="https://huggingface.co", show_default=True,
              help="The Hub to upload to (env HF_ENDPOINT).")
def publish(run_dir: Path, repo_id: str | None, private: bool, license_id: str | None, card_only: bool,
            allow_toy: bool, endpoint: str) -> None:
    """Share a run's LoRA: a model card (trigger words, samples, how to load it, how it was trained)."""
    from clood_candy_plugins.publish.card import build_card, stage
    from clood_candy_plugins.publish.hub import check_repo_id, upload

    root = run_dir.expanduser().resolve()
    if not (root / "run.json").is_file():
        raise UserError(f"not a run folder (no run.json): {run_dir}")
    if not card_only and not repo_id:
        raise UserError("give --repo user/name to upload, or --card-only to write the card and files only")
    if repo_id:
        check_repo_id(repo_id)
    card = build_card(root, repo_id or f"you/{root.name}", license_id=license_id)
    if card.toy and not allow_toy and not card_only:
        raise UserError("this LoRA was trained on clood's toy base (random weights) and loads on the toy only: "
                        "train on a real base to share it, or add --allow-toy to try publishing anyway")
    folder = stage(root, card)
    click.echo(f"Card and files in {folder} ({len(list(folder.rglob('*.*')))} files)")
    if card_only:
        return
    done = upload(folder, repo_id, private=private, endpoint=endpoint.rstrip("/"),
                  message=f"{card.lora_name} from clood candy run {root.name}")
    fsutil.write_json(root / RECORD, {"repo": done.repo_id, "url": done.url, "commit": done.commit_url,
                                      "files": done.files, "private": done.private, "endpoint": endpoint,
                                      "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    click.echo(f"Published to {done.url} ({'private' if done.private else 'public'}; {len(done.files)} files)")


@hookimpl
def register_commands(cli):
    cli.add_command(publish)
