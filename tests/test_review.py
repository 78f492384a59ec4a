"""``clood review``: the web app's guards (token, Host, body size, escaping) and its edits,
each checked by what lands in the run folder — and by what does not when it is refused."""

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from click.testing import CliRunner
from support.review import TOKEN, Served, caption_of, client, pick_fight, review_run

from clood_candy import edits, fsutil
from clood_candy.pipeline import caption_stage
from clood_candy.pipeline.orchestrator import stage_inputs


@pytest.fixture
def run(make_ctx, tmp_path):
    ctx, _ = review_run(make_ctx, tmp_path)
    return ctx


def snapshot(ctx) -> dict[str, str]:
    """Every file of dataset/ and review/ by name: a refused request leaves it as it was."""
    files = [*ctx.run.path("dataset").iterdir(), *(ctx.run.path("review").glob("*"))]
    return {f.name: f.read_bytes().hex() for f in files if f.is_file()}


def save(http, photo, caption, version, token=TOKEN, headers=None):
    return http.post(f"/captions/{photo}", data={"token": token, "caption": caption, "version": version},
                     headers=headers)


def test_pages_render_the_run(run):
    http = client(run.run.root)
    page = http.get(f"/captions?token={TOKEN}")
    assert page.status_code == 200
    for text in ("jlybn, jellybean, red, wooden surface", "tagger", "plain", "wordy score", "terse score",
                 "in the dataset", "judges disagree"):
        assert text in page.text, text
    assert "content-security-policy" in page.headers and "nonce-" in page.headers["content-security-policy"]
    photos = http.get(f"/photos?token={TOKEN}")
    assert photos.status_code == 200
    assert "blurry: sharpness 0.02" in photos.text and "crop box 20, 0, 100, 80" in photos.text
    thumb = http.get(f"/thumb/0?token={TOKEN}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert http.get(f"/thumb/5?token={TOKEN}").status_code == 404  # the failed file: no picture, no crash
    assert http.get(f"/image/p0?token={TOKEN}").status_code == 200
    assert http.get(f"/image/..%2Frun.json?token={TOKEN}").status_code == 404


def test_disputed_filter_shows_where_the_judges_disagreed(run):
    page = client(run.run.root).get(f"/captions?token={TOKEN}&filter=disputed").text
    assert 'id="photo-p0"' in page  # terse and wordy pull opposite ways on p0 only
    assert 'id="photo-p1"' not in page


def test_wrong_or_missing_token_is_refused_and_changes_nothing(run):
    http, before = client(run.run.root), snapshot(run)
    version = edits.version(caption_of(run, "p0"))
    for token in ("wrong", ""):
        reply = save(http, "p0", "jlybn, hacked", version, token=token)
        assert reply.status_code == 403 and "Nothing was changed" in reply.text
    bulk = {"token": "x", "mode": "tag", "find": "red", "replace": "x"}
    assert http.post("/captions/bulk", data=bulk).status_code == 403
    assert http.post("/photos/4", data={"decision": "kept"}).status_code == 403
    assert http.post("/api/tokens", json={"text": "a"}).status_code == 403
    assert http.get("/captions?token=wrong").status_code == 403
    assert http.get("/image/p0").status_code == 403
    assert snapshot(run) == before and not run.run.path("review", "edits.json").exists()


def test_other_host_headers_are_refused(run):
    http, before = client(run.run.root), snapshot(run)
    version = edits.version(caption_of(run, "p0"))
    for host in ("evil.example:8765", "127.0.0.1:9999", "localhost", "127.0.0.1.nip.io:8765"):
        assert http.get(f"/captions?token={TOKEN}", headers={"Host": host}).status_code == 400, host
        reply = http.post("/captions/p0", data={"token": TOKEN, "caption": "jlybn, x", "version": version},
                          headers={"Host": host})
        assert reply.status_code == 400 and "answers only as" in reply.text
    assert http.get(f"/captions?token={TOKEN}", headers={"Host": "localhost:8765"}).status_code == 200
    # A page on another origin that knew the token still may not post.
    assert save(http, "p0", "jlybn, x", version, headers={"Origin": "http://evil.example"}).status_code == 403
    assert snapshot(run) == before


def test_oversized_bodies_are_refused(run):
    http, before = client(run.run.root), snapshot(run)
    version = edits.version(caption_of(run, "p0"))
    reply = save(http, "p0", "jlybn, " + "x" * 300_000, version)
    assert reply.status_code == 413 and "Nothing was changed" in reply.text
    # No Content-Length (chunked): counted while read, refused all the same.
    chunks = (b"token=" + TOKEN.encode() + b"&caption=" + b"y" * 65536 for _ in range(5))
    reply = http.post("/captions/p0", content=chunks, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 413
    assert snapshot(run) == before


def test_a_script_in_a_caption_is_stored_as_typed_and_shown_escaped(run):
    http = client(run.run.root)
    evil = 'jlybn, <script>alert("x")</script>, <img src=x onerror=alert(1)>'
    reply = save(http, "p1", evil, edits.version(caption_of(run, "p1")))
    assert reply.status_code == 303
    assert caption_of(run, "p1") == evil
    rows = {r["id"]: r["text"] for r in edits.dataset_rows(run.run.root)}
    assert rows["p1"] == evil
    page = http.get(f"/captions?token={TOKEN}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


@pytest.mark.parametrize("caption, says", [
    ("jlybn, bell\x07", "U+0007"),
    ("jlybn, two\nlines", "a line break"),
    ("jlybn, \u202egnp.exe", "U+202E"),
    ("jlybn, " + "x" * 10_000, "10,007 characters"),
    ("   ", "empty"),
])
def test_bad_captions_get_a_clear_error_and_change_nothing(run, caption, says):
    http, before = client(run.run.root), snapshot(run)
    reply = save(http, "p0", caption, edits.version(caption_of(run, "p0")))
    assert reply.status_code == 400 and "Not saved" in reply.text and says in reply.text
    assert snapshot(run) == before


def test_a_save_from_a_stale_page_is_refused_showing_both(run):
    http = client(run.run.root)
    seen = edits.version(caption_of(run, "p2"))
    assert save(http, "p2", "jlybn, jellybean, from tab one", seen).status_code == 303
    reply = save(http, "p2", "jlybn, jellybean, from tab two", seen)  # tab two drew the page before tab one saved
    assert reply.status_code == 409 and "changed meanwhile" in reply.text
    assert "from tab one" in reply.text and "from tab two" in reply.text
    assert caption_of(run, "p2") == "jlybn, jellybean, from tab one"
    # Having seen both, the user may still save theirs: the form carries the current version.
    now = edits.version("jlybn, jellybean, from tab one")
    assert save(http, "p2", "jlybn, jellybean, from tab two", now).status_code == 303
    assert caption_of(run, "p2") == "jlybn, jellybean, from tab two"
    history = [e for e in edits.load(run.run.root).edits if e.photo == "p2"]
    assert [e.new for e in history] == ["jlybn, jellybean, from tab one", "jlybn, jellybean, from tab two"]
    assert history[1].old == "jlybn, jellybean, from tab one" and history[1].who and history[1].when


def test_tag_rename_across_the_set_is_recorded_and_survives_a_caption_rerun(run):
    http = client(run.run.root)
    assert "wooden surface" in caption_of(run, "p0")
    rename = {"token": TOKEN, "mode": "tag", "find": "Wooden Surface", "replace": "wood"}
    reply = http.post("/captions/bulk", data=rename)
    assert reply.status_code == 303
    tagged = [p for p in ("p0", "p1", "p2", "p3") if "wood" in caption_of(run, p)]
    assert tagged and all("wooden surface" not in caption_of(run, p) for p in tagged)
    recorded = edits.load(run.run.root).edits
    assert {e.photo for e in recorded} == set(tagged)
    assert all(e.how == "renamed tag 'Wooden Surface' to 'wood'" and "wooden surface" in e.old for e in recorded)
    assert all("wood" in r["text"] for r in edits.dataset_rows(run.run.root) if r["id"] in tagged)

    trained_on = stage_inputs(run, "train", None)
    caption_stage.run(run)  # the fight rewrites dataset/ from scratch: the hand edits are laid over it again
    assert all(caption_of(run, p) == e.new for p, e in zip(tagged, recorded, strict=True))
    assert stage_inputs(run, "train", None) == trained_on  # same edits, same training inputs
    assert save(http, "p0", "jlybn, jellybean, wood, by hand", edits.version(caption_of(run, "p0"))).status_code == 303
    assert stage_inputs(run, "train", None) != trained_on  # a new edit makes training run again


def test_find_and_replace_text_and_refuses_a_bad_result_whole(run):
    http = client(run.run.root)
    assert http.post("/captions/bulk", data={"token": TOKEN, "mode": "text", "find": "jellybean",
                                             "replace": "jelly bean"}).status_code == 303
    assert all("jelly bean" in caption_of(run, p) for p in ("p0", "p1", "p2", "p3"))
    before = snapshot(run)
    reply = http.post("/captions/bulk", data={"token": TOKEN, "mode": "text", "find": "jelly", "replace": "a\tb"})
    assert reply.status_code == 400 and "Not changed" in reply.text
    assert snapshot(run) == before


def test_keep_a_culled_photo_and_cull_a_kept_one_are_recorded(run):
    http = client(run.run.root)
    reply = http.post("/photos/4", data={"token": TOKEN, "decision": "kept", "why": "sharp enough for me"})
    note = urllib.parse.unquote_plus(reply.headers["location"])
    assert reply.status_code == 303 and "Prepared now as prep would have" in note and "needs a caption" in note
    assert caption_of(run, "blurry") == "jlybn, jellybean"  # prep culled it: prepared now, with the placeholder
    decision = edits.load(run.run.root).edits[-1]
    assert (decision.source, decision.old, decision.new, decision.why) == ("blurry.jpg", "culled", "kept",
                                                                           "sharp enough for me")
    assert decision.who == edits.who() and decision.when
    page = http.get(f"/photos?token={TOKEN}").text
    assert f"by {edits.who()}" in page and "sharp enough for me" in page

    caption = caption_of(run, "p3")
    assert http.post("/photos/3", data={"token": TOKEN, "decision": "culled", "why": "a duplicate"}).status_code == 303
    assert not run.run.path("dataset", "p3.txt").exists() and not run.run.path("dataset", "p3.png").exists()
    assert "p3" not in {r["id"] for r in edits.dataset_rows(run.run.root)}
    caption_stage.run(run)  # a rerun brings the fight's p3 back; the user's cull takes it out again
    assert "p3" not in {r["id"] for r in edits.dataset_rows(run.run.root)}
    assert http.post("/photos/3", data={"token": TOKEN, "decision": "kept"}).status_code == 303
    assert caption_of(run, "p3") == caption and run.run.path("dataset", "p3.png").is_file()
    # prep could not read this one: nothing to keep
    assert http.post("/photos/5", data={"token": TOKEN, "decision": "kept"}).status_code == 400


def test_live_token_count(run):
    reply = client(run.run.root).post("/api/tokens", json={"text": "jlybn, " + ", ".join(["red bean"] * 60)},
                                      headers={"X-Review-Token": TOKEN})
    found = reply.json()
    assert found["window"] == 75 and found["tokens"] > 75 and found["cut"] and found["approximate"]


def test_the_real_server_refuses_other_hosts(run):
    with Served(run.run.root) as served:
        page = urllib.request.urlopen(served.url, timeout=10)  # follows / to /captions
        assert page.status == 200 and b"tagger" in page.read()
        request = urllib.request.Request(served.url, headers={"Host": f"attacker.example:{served.port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400


def test_review_command_says_what_is_wrong(tmp_path, run):
    from clood_candy_plugins.review.plugin import bind

    from clood_candy.cli import cli
    from clood_candy.plugins import load_plugins, pm

    load_plugins()
    pm.hook.register_commands(cli=cli)
    runner = CliRunner()
    result = runner.invoke(cli, ["review", str(tmp_path / "nowhere"), "--no-browser"])
    assert result.exit_code == 2 and "not a run folder" in result.output
    taken = bind(0)
    try:
        result = runner.invoke(cli, ["review", str(run.run.root), "--no-browser", "--port",
                                     str(taken.getsockname()[1])])
        assert result.exit_code == 2 and "is in use" in result.output
    finally:
        taken.close()
    assert json.loads(run.run.path("run.json").read_text())["name"] == "test"


# --- the Pick page: the pick fight's candidates, the judges, and a vote ----------------


@pytest.fixture
def picked(run):
    """The review run with a pick fight decided by the real panel (support.review.pick_fight)."""
    return run, pick_fight(run)


def train_files(ctx) -> dict[str, str]:
    """What a vote may change: train/ (fight.json, votes.json, the shipped LoRA) and run.json."""
    files = [*ctx.run.path("train").rglob("*"), ctx.run.path("run.json")]
    return {str(f.relative_to(ctx.run.root)): f.read_bytes().hex() for f in files if f.is_file()}


def pick_record(ctx) -> dict:
    return json.loads(ctx.run.path("train", "fight.json").read_text())["pick"]


def vote(http, candidate, why="", token=TOKEN, headers=None):
    return http.post("/pick/vote", data={"token": token, "candidate": candidate, "why": why}, headers=headers)


def test_the_pick_page_lists_every_candidate_with_its_images(picked):
    ctx, names = picked
    http = client(ctx.run.root)
    assert 'href="/pick?token=' in http.get(f"/captions?token={TOKEN}").text  # beside Photos and Captions
    page = http.get(f"/pick?token={TOKEN}")
    assert page.status_code == 200
    pick = pick_record(ctx)
    assert pick["winner"] == "default-step20"  # subject-colour's and the validation loss's; step 10 is flagged
    for text in ('Ships now: <b id="winner-name">default-step20</b>',
                 "default-step20 has the panel&#39;s best mean rank", "train/jlybn.safetensors", "train/fight/default/checkpoints/step-20/step-20.safetensors",
                 "memorisation: 2 of 2 samples copy a training photo", "validation loss 0.3000",
                 "default-step10 = default-step20 = default-step30",  # memorisation could not tell them apart
                 "default-step20 &gt; default-step30 &gt; default-step10",  # subject-colour's ranking
                 "sat out: no vote yet (clood pick RUN CANDIDATE)", "new — background: on a sandy beach",
                 "training alone would have shipped default-step30"):
        assert text in page.text, text
    for name in names:
        row = page.text.split(f'id="cand-{name}"', 1)[1].split("</tr>", 1)[0]
        assert f"panel score <b class=\"panel\">{pick['panel'][name]:.2f}</b>" in row
        assert 'name="candidate" value="' + name + '"' in row and "Vote for this one" in row
        for p in (1, 2):
            src = f"/pick/sample/train/pick/{name}/p{p}-seed1.png?token={TOKEN}"
            assert src in row
            image = http.get(src)
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content == ctx.run.path("train", "pick", name, f"p{p}-seed1.png").read_bytes()
    assert f'src="/image/p0?token={TOKEN}"' in page.text  # the held-out prompt's photo above its caption


def test_a_vote_ships_that_candidate_and_the_page_says_so(picked):
    ctx, _ = picked
    http = client(ctx.run.root)
    reply = vote(http, "default-step30", "  crisper beans  ")
    assert reply.status_code == 303
    note = urllib.parse.unquote_plus(reply.headers["location"])
    assert ("Your vote for default-step30 is recorded. The panel now ships default-step30: train/jlybn.safetensors "
            "is now a copy of train/fight/default/checkpoints/step-30/step-30.safetensors.") in note
    pick = pick_record(ctx)
    assert pick["winner"] == "default-step30" and pick["votes"][-1]["why"] == "crisper beans"
    assert pick["scores"]["user"]["default-step30"]["score"] == 1.0
    shipped = ctx.run.path("train", "jlybn.safetensors").read_bytes()
    assert shipped == b"the LoRA at step 30"
    assert json.loads(ctx.run.path("run.json").read_text())["outputs"]["picked"] == "default-step30"
    page = http.get(reply.headers["location"]).text
    assert 'Ships now: <b id="winner-name">default-step30</b>' in page and "user put it first" in page
    assert "picked <b>default-step30</b>: “crisper beans” (this one counts)" in page
    # A flagged candidate the person picks has been seen: the vote ships it all the same.
    assert vote(http, "default-step10").status_code == 303
    assert pick_record(ctx)["winner"] == "default-step10"
    assert ctx.run.path("train", "jlybn.safetensors").read_bytes() == b"the LoRA at step 10"


@pytest.mark.parametrize("why, says", [
    ("x" * 501, "your reason has 501 characters; at most 500 are kept"),
    ("crisp\x07", "your reason holds U+0007 at character 6"),
    ("two\nlines", "your reason holds a line break at character 4"),
    ("\u202enaeb", "your reason holds U+202E at character 1"),
])
def test_a_bad_reason_is_refused_clearly_and_changes_nothing(picked, why, says):
    ctx, _ = picked
    http, before = client(ctx.run.root), train_files(ctx)
    reply = vote(http, "default-step30", why)
    assert reply.status_code == 400 and "Not voted" in reply.text and says in reply.text
    assert train_files(ctx) == before and pick_record(ctx)["winner"] == "default-step20"


def test_a_vote_without_the_token_from_elsewhere_or_oversized_changes_nothing(picked):
    ctx, _ = picked
    http, before = client(ctx.run.root), train_files(ctx)
    for token in ("wrong", ""):
        reply = vote(http, "default-step30", token=token)
        assert reply.status_code == 403 and "Nothing was changed" in reply.text
    reply = vote(http, "default-step30", headers={"Host": "evil.example:8765"})
    assert reply.status_code == 400 and "answers only as" in reply.text
    assert vote(http, "default-step30", headers={"Origin": "http://evil.example"}).status_code == 403
    reply = vote(http, "default-step30", "x" * 300_000)
    assert reply.status_code == 413 and "Nothing was changed" in reply.text
    reply = vote(http, "default-step99")
    assert reply.status_code == 400 and "no candidate &#39;default-step99&#39; (have: default-step10" in reply.text
    assert http.get("/pick?token=wrong").status_code == 403
    assert train_files(ctx) == before


def test_the_sample_route_serves_only_the_sheets_images_inside_the_run(picked):
    ctx, _ = picked
    http = client(ctx.run.root)
    listed = "train/pick/default-step10/p1-seed1.png"
    assert http.get(f"/pick/sample/{listed}?token={TOKEN}").status_code == 200
    assert http.get(f"/pick/sample/{listed}?token=wrong").status_code == 403
    for path in ("..%2Frun.json", "train%2F..%2Frun.json", "train/jlybn.safetensors", "train/fight.json",
                 "train/pick/default-step10/p9-seed1.png", "%2Fetc%2Fpasswd"):
        reply = http.get(f"/pick/sample/{path}?token={TOKEN}")
        assert reply.status_code == 404 and "no such sample" in reply.text, path
    # A hand-edited fight.json that lists a file outside the run still gets nothing from it.
    outside = ctx.run.root.parent / "secret.png"
    outside.write_bytes(b"not yours")
    fight = json.loads(ctx.run.path("train", "fight.json").read_text())
    fight["pick"]["sheet"]["images"][0]["image"] = "../secret.png"
    ctx.run.path("train", "fight.json").write_text(json.dumps(fight))
    assert http.get(f"/pick/sample/..%2Fsecret.png?token={TOKEN}").status_code == 404


def test_the_pick_page_says_when_there_is_no_pick_fight_and_what_to_run(run):
    http = client(run.run.root)
    page = http.get(f"/pick?token={TOKEN}").text
    assert "This run has no pick fight yet" in page and f"clood dogfood candy --resume {run.run.root}" in page
    reply = vote(http, "default-step10")
    assert reply.status_code == 400 and "has no pick fight yet" in reply.text
    assert not run.run.path("train").exists()
    fsutil.write_json(run.run.path("train", "fight.json"), {"configs": [], "rounds": [], "winner": None, "pick": None})
    page = http.get(f"/pick?token={TOKEN}").text
    assert "shipped its last step without a pick fight" in page and "[train.pick] enabled = true" in page
