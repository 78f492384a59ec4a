"""3. What the text encoder sees: the winning captions cut into the tokenizer's pieces,
with whatever falls past the encoder's window struck through."""

from __future__ import annotations

from clood_candy_plugins.report.page import Section, esc, lesson, note, table
from clood_candy_plugins.report.rundata import RunData

SHOWN = 6  # captions tokenised on the page: the longest ones, where the window matters


def _piece(token: str) -> tuple[str, bool]:
    """(the piece as written, whether a word ends with it). CLIP marks word ends '</w>';
    T5's sentencepiece marks word starts '▁'."""
    if token.endswith("</w>"):
        return token[:-4], True
    return token.removeprefix("▁") or token, False


def token_chips(tokens: list[str], window: int, trigger_pieces: int = 0) -> str:
    chips = []
    for i, token in enumerate(tokens):
        text, end = _piece(token)
        classes = ["tok"]
        if i < trigger_pieces:
            classes.append("trigger")
        if end:
            classes.append("end")
        if i >= window:
            classes.append("cut")
        chips.append(f'<span class="{" ".join(classes)}" title="token {i + 1}">{esc(text)}</span>')
    return "".join(chips)


def _captions(run: RunData) -> list[str]:
    """The winning captions: the dataset's, else the winner's training captions."""
    if run.dataset:
        return [row["text"] for row in run.dataset]
    if run.fight and run.fight.winner:
        return list(run.captions(run.fight.winner).values())
    return []


def _longest_raw(run: RunData) -> tuple[str, str] | None:
    """The longest caption any captioner wrote before the strategy trimmed it."""
    best: tuple[str, str] | None = None
    for name in run.config.caption.captioners:
        for text in run.captions(name, "captions").values():
            if best is None or len(text) > len(best[1]):
                best = (name, text)
    return best


def build(run: RunData) -> Section:
    section = Section("text-encoder", "3. What the text encoder sees")
    captions = _captions(run)
    if not captions:
        section.missing = ("No training captions yet (dataset/metadata.jsonl): run the caption stage to see how the "
                           "model reads them.")
        return section
    base = run.base()
    if base is None:
        section.missing = f"The base model could not be loaded ({esc(run.base_error)}), so its tokenizer is unknown."
        return section
    window = base.token_window
    trigger = run.config.trigger
    trigger_tokens = base.tokens(trigger)
    counted = sorted(((len(base.tokens(c)), c) for c in captions), reverse=True)
    over = [c for n, c in counted if n > window]
    longest, shortest = counted[0][0], counted[-1][0]
    pieces = " + ".join(f'<span class="tok trigger">{esc(_piece(t)[0])}</span>' for t in trigger_tokens)
    known = "a word it knows" if len(trigger_tokens) == 1 else f"{len(trigger_tokens)} pieces"
    body = [lesson(
        "The model never reads letters. A tokenizer cuts every caption into pieces from a fixed vocabulary of "
        "common words and word fragments; the text encoder turns each piece into a list of numbers, and the image "
        "model listens to those numbers while it paints.",
        f"Your trigger <span class=\"code\">{esc(trigger)}</span> is {known}: {pieces}. "
        "A made-up word starts with no meaning of its own, which is exactly why it is a good trigger: training gives "
        "it one — your jellybeans.",
        f"The encoder reads at most <b>{window}</b> pieces; anything after that is simply not seen. "
        f"Your {len(captions)} captions run from {shortest} to {longest} pieces"
        + (f", and <b>{len(over)}</b> of them run past the window." if over else ", so every word is read."))]
    windows = getattr(base, "encoder_windows", None)  # a family with several text encoders says what each reads
    if callable(windows):
        body.append(_encoders(windows(), captions))
    rows = []
    for count, caption in counted[:SHOWN]:
        tokens = base.tokens(caption)
        rows.append([f"{count} of {window}", token_chips(tokens, window, len(trigger_tokens) if caption.startswith(trigger) else 0)])
    body.append(table(["pieces", "the caption as the text encoder receives it (blue line: a word ends)"], rows))
    if len(counted) > SHOWN:
        body.append(note(f"The {SHOWN} longest of {len(counted)} captions are shown."))
    raw = _longest_raw(run)
    if raw is not None:
        name, text = raw
        tokens = base.tokens(text)
        if len(tokens) > window:
            cut = " ".join(_piece(t)[0] for t in tokens[window:])
            body.append(f"<h3>What a caption too long loses</h3><p>{esc(name)} wrote this before the caption "
                        f"strategy shortened it: {len(tokens)} pieces, so the last {len(tokens) - window} "
                        f"(“{esc(cut)}”) would never reach the model.</p>"
                        + f"<p>{token_chips(tokens, window)}</p>")
    section.body = "".join(body)
    return section


def _encoders(windows, captions: list[str]) -> str:
    """One row per text encoder: its window, what it gives the model, how many captions run past it."""
    rows = []
    for name, window, tokenize, role in windows:
        over = sum(len(tokenize(c)) > window for c in captions)
        rows.append([esc(name), str(window), esc(role), f"{over} of {len(captions)}"])
    return ("<p>This model reads each caption with more than one text encoder, each with its own window. The "
            "pieces below are the first one's.</p>"
            + table(["encoder", "window", "what it gives the model", "captions past it"], rows))
