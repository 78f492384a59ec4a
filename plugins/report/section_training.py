"""6. Training: the loss curves, the config fight's bracket, and the same seeds sampled
at each checkpoint."""

from __future__ import annotations

from typing import Any

from clood_candy.records import ConfigFightResult, TrainConfig, TrainOutcome
from clood_candy_plugins.report.media import chart_figure, chart_uri, image_cell
from clood_candy_plugins.report.page import Section, esc, lesson, note, table
from clood_candy_plugins.report.rundata import RunData
from clood_candy_plugins.report.section_pick import candidate_grid

VAL_KINDS = {"val", "validation", "eval"}
KNOBS = ("learning_rate", "rank", "alpha", "steps", "batch_size", "optimizer", "lr_scheduler", "variant",
         "targets", "caption_dropout", "snr_gamma", "noise_offset", "loss", "train_text_encoder")


def curves(rows: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(training, validation) loss by step from a log.jsonl, whichever way a row names them."""
    train, val = [], []
    for row in rows:
        step = row.get("step", row.get("global_step"))
        if not isinstance(step, (int, float)):
            continue
        kind = str(row.get("kind", row.get("type", row.get("split", "")))).lower()
        for key in ("val_loss", "validation_loss"):
            if isinstance(row.get(key), (int, float)):
                val.append((int(step), float(row[key])))
        for key in ("train_loss", "loss"):
            if isinstance(row.get(key), (int, float)):
                (val if kind in VAL_KINDS and key == "loss" else train).append((int(step), float(row[key])))
                break
    return train, val


def _smooth(values: list[float], width: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def loss_chart(train: list[tuple[int, float]], val: list[tuple[int, float]], title: str) -> str:
    fig = chart_figure()
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="#e0b48f", linewidth=0.8, label="training loss (each step)")
        ax.plot(steps, _smooth(list(losses), max(3, len(losses) // 15)), color="#b3541e", linewidth=2,
                label="training loss (running average)")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, losses, "o-", color="#1f5fa8", linewidth=2, label="validation loss (held-out photos)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return f'<img class="chart" src="{chart_uri(fig)}" alt="{esc(title)}">'


def race_chart(run: RunData, fight: ConfigFightResult) -> str | None:
    fig = chart_figure()
    ax = fig.add_subplot()
    drawn = False
    for config in fight.configs:
        _, val = curves(run.train_log(config.name))
        if val:
            steps, losses = zip(*sorted(val))
            ax.plot(steps, losses, "o-", linewidth=2 if config.name == fight.winner else 1,
                    label=config.name + (" (winner)" if config.name == fight.winner else ""))
            drawn = True
    if not drawn:
        return None
    for r in fight.rounds:
        ax.axvline(r.budget, color="#999", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training step (dashed: end of a round)")
    ax.set_ylabel("validation loss")
    ax.set_title("the config fight: validation loss of each recipe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return f'<img class="chart" src="{chart_uri(fig)}" alt="validation loss of each config">'


def _knob(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _differs(config: TrainConfig, reference: TrainConfig) -> str:
    changed = [f"{k.replace('_', ' ')} {_knob(getattr(config, k))}" for k in KNOBS
               if getattr(config, k) != getattr(reference, k)]
    return ", ".join(changed) or "the defaults"


def bracket(fight: ConfigFightResult, reference: TrainConfig) -> str:
    headers = ["recipe", "what it changes"] + [f"round {i + 1}: {r.budget} steps" for i, r in enumerate(fight.rounds)]
    rows = []
    for config in fight.configs:
        row = [esc(config.name) + (' <span class="badge win">winner</span>' if config.name == fight.winner else ""),
               esc(_differs(config, reference))]
        out = False
        for r in fight.rounds:
            if out or config.name not in r.scores:
                row.append("—")
                continue
            score = r.scores[config.name]
            kept = config.name in r.survivors
            shown = f"{score:.4f}" if score is not None else "failed"
            if r.panel is not None and r.panel.sheet.candidates:
                judged = {c.config: r.panel.panel.get(c.name) for c in r.panel.sheet.candidates}
                if judged.get(config.name) is not None:
                    shown += f" · panel {judged[config.name]:.2f}"
            row.append(f"{shown} {'✓ goes on' if kept and len(r.survivors) > 1 else '✓ wins' if kept else '✗ out'}")
            out = not kept
        rows.append(row)
    return table(headers, rows)


def panel_notes(run: RunData, fight: ConfigFightResult) -> list[str]:
    """Why each round the sample judges decided went the way it did, with its samples."""
    found = []
    for number, r in enumerate(fight.rounds, 1):
        if r.panel is not None:
            found.append(lesson(
                f"Round {number} ({r.budget} steps) was decided by the sample judges, not by the validation loss "
                "(the score beside each recipe; between sensible recipes it differs by noise, and over a short round "
                f"it favours whichever learns fastest): each survivor drew the pick's prompts, and {esc(r.panel.why)}. "
                f"The panel's score is its weighted mean rank, 1 the best ([train.fight] judge = \"validation-loss\" "
                "lets the loss decide alone)."))
            found.append(candidate_grid(run, r.panel, f"Round {number}: each recipe after {r.budget} steps"))
    return found


def placement(fight: ConfigFightResult) -> str:
    """Where each trial of a fight on Ray ran, how long it waited for a place, and whether
    Ray had to run it again (its worker or node lost) from its checkpoint."""
    rows = []
    for number, r in enumerate(fight.rounds, 1):
        for name, t in r.trials.items():
            resumed = ("no step left to train" if t.resumed_from is None else "from the start" if t.resumed_from == 0
                       else f"from step {t.resumed_from}")
            again = f"{t.attempts} (lost {t.attempts - 1}×, continued from its checkpoint)" if t.attempts > 1 else "1"
            rows.append([f"{number}: {r.budget} steps", esc(name), esc(t.node), esc(t.device), f"{t.waited_s:.1f} s",
                         f"{t.seconds:.1f} s", esc(again), resumed])
    if not rows:
        return ""
    return ("<p>The fight ran on Ray: every trial of a round at once, each on a worker Ray placed "
            "([fight] gpus_per_trial, cpus_per_trial); a later round's survivors continue from their checkpoints "
            "in the run folder. Waiting is the time from submission until a worker was free.</p>"
            + table(["round", "recipe", "node", "device", "waited", "trained", "attempts", "started"], rows))


SHORT_HORIZON = 0.25  # rounds shorter than this share of the final run mostly measure speed


def short_horizon(fight: ConfigFightResult, outcome: TrainOutcome | None) -> str:
    """A warning when the fight's longest round is a small share of the run it chose for."""
    if outcome is None or not fight.rounds or outcome.steps_done <= 0:
        return ""
    budgets = [r.budget for r in fight.rounds]
    share = max(budgets) / outcome.steps_done
    if share >= SHORT_HORIZON:
        return ""
    listed = ", ".join(str(b) for b in budgets[:-1]) + (" and " if len(budgets) > 1 else "") + str(budgets[-1])
    return (f"The rounds were {listed} steps, the longest {round(share * 100):g} % of the {outcome.steps_done}-step "
            "run. A short round favours the recipe that learns fastest, usually the one with the highest learning "
            "rate, and says little about which ends best or which starts to copy your photos: longer rounds "
            "([train.fight] budgets) make a fairer fight.")


def checkpoint_label(name: str) -> str:
    """'step-20' → 'after 20 steps'; other names as they are."""
    digits = "".join(ch for ch in name if ch.isdigit())
    if name == "final":
        return "the final LoRA"
    return f"after {int(digits)} steps" if digits and name.lower().startswith(("step", "checkpoint")) else name


def checkpoint_strip(run: RunData) -> str:
    """The first prompt at full LoRA weight, checkpoint by checkpoint, a row per seed."""
    if run.samples is None or not run.samples.images:
        return note(esc(run.missing("samples/samples.json")) + ": run the sample stage to see the checkpoints.",
                    "missing")
    images = run.samples.images
    first = images[0].prompt
    mine = [i for i in images if i.prompt == first]
    top = max((i.weight for i in mine), default=0.0)
    # Oldest checkpoint first, the final LoRA last: training's progress reads left to right.
    order = list(dict.fromkeys(i.checkpoint for i in mine if i.weight == top and i.weight > 0))
    order.sort(key=lambda name: name == "final")
    columns = [("the base alone", lambda i: i.weight == 0)] + [
        (checkpoint_label(name), lambda i, name=name: i.checkpoint == name and i.weight == top) for name in order]
    rows = []
    for seed in sorted({i.seed for i in mine}):
        row = [f"seed {seed}"]
        for label, wanted in columns:
            sample = next((i for i in mine if i.seed == seed and wanted(i)), None)
            row.append(image_cell(run.path(sample.image) if sample else None, f"{label}, seed {seed}"))
        rows.append(row)
    grid = table(["", *(esc(label) for label, _ in columns)], rows)
    if len(order) < 2:
        return note("Training saved no checkpoint before the final LoRA, so there is no checkpoint-by-checkpoint "
                    "view; lower checkpoint_every in [train.defaults] to get one.") + grid
    return (f"<p>Prompt “{esc(first)}”, LoRA weight {top:g}, at each saved checkpoint. Each row starts from the "
            f"same noise (its seed), so every change along a row is training's doing.</p>" + grid)


def build(run: RunData) -> Section:
    section = Section("training", "6. Training")
    outcome, fight = run.outcome, run.config_fight
    if outcome is None and fight is None:
        section.missing = esc(run.missing("train/outcome.json")) + ": run the train stage to see the loss curves."
        return section
    winner = (fight.winner or "") if fight else (outcome.config.name if outcome else "")
    train, val = curves(run.train_log(winner))
    if outcome is not None and not train:
        train, val = list(outcome.train_loss), list(outcome.val_loss)
    config = outcome.config if outcome else next((c for c in fight.configs if c.name == winner), None)
    parts = []
    if outcome is not None and config is not None:
        total = len(run.dataset)
        held = min(max(1, round(total * run.config.train.fight.validation_split)), total - 1) if total > 1 else 0
        n_val = f", on {total - held} photos with {held} held out for validation" if held else ""
        parts.append(f"The winning recipe, <b>{esc(winner)}</b>, trained for {outcome.steps_done} steps "
                     f"(batch {config.batch_size}, learning rate {config.learning_rate:g}, rank {config.rank}) in "
                     f"{outcome.seconds:.0f} s{n_val}.")
        if outcome.final_val_loss is not None:
            parts.append(f"Its final validation loss is {outcome.final_val_loss:.4f}.")
    body = [lesson(
        " ".join(parts) + " Each step is the exercise of section 5 on a few of your photos: noise, guess, "
        "measure the miss, nudge the LoRA's weights to miss less.",
        "The training loss jumps around because every step draws a new random amount of noise; read its running "
        "average. The validation loss is measured on photos held out of training, always with the same noise, so "
        "it is the fair score: when it stops falling while the training loss keeps falling, the LoRA has started "
        "memorising your photos instead of learning jellybeans.")]
    if train or val:
        body.append(loss_chart(train, val, f"{winner}: loss while training"))
    else:
        body.append(note(f"train/fight/{esc(winner)}/log.jsonl has no losses to plot.", "missing"))
    if fight is not None and len(fight.configs) > 1:
        body.append("<h3>The config fight</h3>")
        body.append(lesson(
            f"Instead of guessing the settings, {len(fight.configs)} recipes raced. Each round every survivor "
            "trains a few more steps and is scored on the held-out photos; the better half goes on "
            "(<i>successive halving</i>), so the slow recipes are dropped early and the time goes to the promising "
            + (f"ones. {esc(fight.winner)} won." if fight.winner else "ones. Every recipe failed, so none won.")))
        body.append(bracket(fight, run.config.train.defaults))
        body.extend(panel_notes(run, fight))
        horizon = short_horizon(fight, outcome)
        if horizon:
            body.append(note(horizon, "warn"))
        if fight.failures:
            body.append(note("Failed: " + "; ".join(f"{esc(k)} — {esc(v)}" for k, v in fight.failures.items()), "warn"))
        if fight.executor == "ray":
            body.append(placement(fight))
        race = race_chart(run, fight)
        if race:
            body.append(race)
    body.append("<h3>The same seed, checkpoint by checkpoint</h3>")
    body.append(checkpoint_strip(run))
    if run.is_toy:
        body.append(note("With the toy model the loss falls but the pictures stay noise: it shows the mechanics of "
                         "training, not art.", "toy"))
    section.body = "".join(body)
    return section
