"""``clood dogfood candy --review``: the review page between captioning and training. The
run waits for the Captions page's “Train with these captions”, then trains on the captions
as edited there; Ctrl-C stops it cleanly and ``--resume`` trains on the edits later. No real
browser: a stand-in for ``webbrowser.open`` uses the page over HTTP, as a person would."""

import json
import os
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from click.testing import CliRunner
from safetensors import safe_open
from support.review import TOKEN, client, review_run

from clood_candy.cli import cli
from clood_candy.runstore import RunStore

SMALL = """base = "tiny"
[prep]
resolution = 64
[caption]
captioners = ["vision-stats", "baseline"]
judges = { rubric = 1.0 }
[train.defaults]
steps = 4
rank = 2
alpha = 2.0
batch_size = 2
checkpoint_every = 4
validate_every = 4
[[train.fight.configs]]
name = "only"
[train.pick]
enabled = false
[sample]
prompts = ["jlybn, jellybean"]
weights = [1.0]
seeds = [1]
steps = 2
"""
RENAMED = "hand-checked bean"


def fetch(url: str, fields: dict | None = None) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode() if fields is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def serve_in_thread(root, before_training):
    """The review plugin's serve(), as ``dogfood candy --review`` runs it, on a thread."""
    from clood_candy_plugins.review.plugin import serve

    said, outcome = [], {}
    thread = threading.Thread(target=lambda: outcome.setdefault("pressed", serve(
        root, 0, False, before_training=before_training, echo=said.append)), daemon=True)
    thread.start()
    return thread, said, outcome


def address(said: list[str]) -> tuple[str, str]:
    """(base URL, token) from the lines serve() printed."""
    line = next(line for text in said for line in text.splitlines() if line.startswith("Open "))
    url = urllib.parse.urlsplit(line.removeprefix("Open "))
    return f"{url.scheme}://{url.netloc}", urllib.parse.parse_qs(url.query)["token"][0]


def test_train_with_these_captions_stops_the_page_and_says_training_starts(make_ctx, tmp_path):
    import time

    ctx, _ = review_run(make_ctx, tmp_path)
    thread, said, outcome = serve_in_thread(ctx.run.root, before_training=True)
    deadline = time.monotonic() + 20
    while not said and time.monotonic() < deadline:
        time.sleep(0.02)
    base, token = address(said)
    assert "“Train with these captions” on the Captions page" in said[0] and token in said[0]
    status, page = fetch(f"{base}/captions?token={token}")
    assert status == 200 and "Train with these captions" in page and "Training waits for you" in page
    status, page = fetch(f"{base}/train", {"token": "wrong"})
    assert status == 403 and "Nothing was changed" in page
    assert thread.is_alive()  # a wrong token does not stop the wait
    status, page = fetch(f"{base}/train", {"token": token})
    assert status == 200 and "Training with these captions" in page and "Follow it in the terminal" in page
    thread.join(20)
    assert not thread.is_alive() and outcome == {"pressed": True}


def test_clood_review_alone_has_no_train_button_and_says_why(make_ctx, tmp_path):
    ctx, _ = review_run(make_ctx, tmp_path)
    http = client(ctx.run.root)
    assert "Train with these captions" not in http.get(f"/captions?token={TOKEN}").text
    reply = http.post("/train", data={"token": TOKEN})
    assert reply.status_code == 409 and "no training waits for it" in reply.text
    assert "clood dogfood candy --resume" in reply.text


def test_review_without_a_review_plugin_is_one_line_before_any_work(tmp_path):
    from clood_candy.plugins import load_plugins, pm

    load_plugins()
    plugin = pm.get_plugin("review")
    pm.unregister(plugin)  # as if it were not installed, for this test only
    try:
        photos = tmp_path / "photos"
        photos.mkdir()
        result = CliRunner().invoke(cli, ["dogfood", "candy", str(photos), "--review", "--run-dir",
                                          str(tmp_path / "r"), "-q"])
    finally:
        pm.register(plugin, name="review")
    assert result.exit_code == 2 and "--review needs a review plugin" in result.output
    assert "Traceback" not in result.output
    assert all(s.status == "pending" for s in RunStore.open(tmp_path / "r").state.stages.values())


def test_review_needs_the_train_stage(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    result = CliRunner().invoke(cli, ["dogfood", "candy", str(photos), "--review", "--stages", "prep,caption",
                                      "--run-dir", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2 and "--review waits to train: include train in --stages" in result.output


# --- the whole pipeline on the tiny base (about 25 s on 2 cores) ------------------------


@pytest.fixture
def small_shoot(tmp_path):
    from clood_candy.studio import render_studio

    render_studio(tmp_path / "photos", count=8, seed=0, size=(192, 144))
    config = tmp_path / "clood.toml"
    config.write_text(SMALL)
    return tmp_path / "photos", config


@pytest.fixture
def browser(monkeypatch):
    """Stands in for the browser ``--review`` opens: ``browser.then(fn)`` makes it call
    ``fn(base, token)`` on the address it is given. What fn raises is kept for the test."""
    import webbrowser

    class StandIn:
        def __init__(self):
            self.act, self.failed, self.opened = None, [], []

        def then(self, act):
            self.act = act

        def open(self, url, *args, **kwargs):
            self.opened.append(url)
            split = urllib.parse.urlsplit(url)
            base, token = f"{split.scheme}://{split.netloc}", urllib.parse.parse_qs(split.query)["token"][0]
            try:
                self.act(base, token)
            except BaseException as exc:  # a failing page must not leave the run waiting forever
                self.failed.append(exc)
                fetch(f"{base}/train", {"token": token})
            return True

    stand_in = StandIn()
    monkeypatch.setattr(webbrowser, "open", stand_in.open)
    return stand_in


def rename_jellybean(base: str, token: str) -> None:
    status, page = fetch(f"{base}/captions?token={token}")
    assert status == 200 and "Train with these captions" in page
    status, page = fetch(f"{base}/captions/bulk", {"token": token, "mode": "tag", "find": "jellybean",
                                                   "replace": RENAMED})
    assert status == 200 and "Changed 8 caption(s)" in page, page[-600:]


def trained_tags(run) -> dict[str, int]:
    with safe_open(str(run / RunStore.open(run).state.outputs["lora"]), "pt") as lora:
        return next(iter(json.loads(lora.metadata()["ss_tag_frequency"]).values()))


@pytest.mark.slow
def test_dogfood_review_waits_then_trains_on_the_edited_captions(small_shoot, browser, tmp_path):
    photos, config = small_shoot
    run = tmp_path / "run"

    def edit_then_train(base, token):
        rename_jellybean(base, token)
        status, page = fetch(f"{base}/train", {"token": token})
        assert status == 200 and "Training with these captions" in page

    browser.then(edit_then_train)
    result = CliRunner().invoke(cli, ["dogfood", "candy", str(photos), "--config", str(config), "--run-dir", str(run),
                                      "--review"])
    assert not browser.failed, browser.failed
    assert result.exit_code == 0, result.output + str(result.exception)
    assert browser.opened and browser.opened[0].startswith("http://127.0.0.1:") and "token=" in browser.opened[0]
    assert f"Open {browser.opened[0]}" in result.output
    state = RunStore.open(run).state
    assert {s: v.status for s, v in state.stages.items()} == dict.fromkeys(state.stages, "done")
    assert all(RENAMED in t.read_text() for t in (run / "dataset").glob("*.txt"))
    tags = trained_tags(run)  # what the shipped LoRA was trained on (kohya's tag counts)
    assert tags.get(RENAMED, 0) >= 1 and "jellybean" not in tags, tags
    assert (run / "report.html").is_file()


@pytest.mark.slow
def test_ctrl_c_on_the_review_stops_cleanly_and_resume_trains_on_the_edits(small_shoot, browser, tmp_path):
    photos, config = small_shoot
    run = tmp_path / "run"

    def edit_then_ctrl_c(base, token):
        rename_jellybean(base, token)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends

    browser.then(edit_then_ctrl_c)
    result = CliRunner().invoke(cli, ["dogfood", "candy", str(photos), "--config", str(config), "--run-dir", str(run),
                                      "--review", "-q"])
    assert not browser.failed, browser.failed
    assert result.exit_code == 130, result.output + str(result.exception)
    assert "Stopped before training; your edits are kept" in result.output
    assert f"clood dogfood candy --resume {run.resolve()}" in result.output
    state = RunStore.open(run).state
    assert (state.stages["caption"].status, state.stages["train"].status) == ("done", "pending")
    assert not (run / "train").exists()

    resumed = CliRunner().invoke(cli, ["dogfood", "candy", "--resume", str(run), "-q"])
    assert resumed.exit_code == 0, resumed.output + str(resumed.exception)
    assert RunStore.open(run).state.stages["report"].status == "done"
    tags = trained_tags(run)
    assert tags.get(RENAMED, 0) >= 1 and "jellybean" not in tags, tags
