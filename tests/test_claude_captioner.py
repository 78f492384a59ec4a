"""The Claude captioner against a real local HTTP fake of the Messages API (real SDK)."""

import base64
import io
from string import Template

import pytest
from fakes.anthropic_server import solid_photos
from PIL import Image

KEY = "sk-ant-test-0123456789-SECRET"
RED, BLUE, YELLOW, GREEN = (200, 30, 40), (40, 80, 200), (240, 220, 40), (40, 170, 60)
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "max_attempts": 3, "malformed_retries": 1, "timeout": 5}


@pytest.fixture
def claude(make_ctx, anthropic_fake, monkeypatch):
    """make(**options, **config) → (captioner, ctx) talking to the fake."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)

    def make(config=None, **options):
        ctx = make_ctx(**(config or {}), plugins={"claude": {"base_url": anthropic_fake.url, **FAST, **options}})
        return ctx.registry.get("captioner", "claude"), ctx

    return make


def test_happy_path_captions_facts_and_usage(claude, anthropic_fake):
    captioner, ctx = claude()
    photos = solid_photos(ctx.run.root, {"r": RED, "b": BLUE, "y": YELLOW})
    results = captioner.caption(photos, ctx)

    assert set(results) == {"r", "b", "y"}
    for photo_id, colour in (("r", "red"), ("b", "blue"), ("y", "yellow")):
        result = results[photo_id]
        assert result.error is None
        assert colour in result.caption  # the image's content reached the model and came back
        assert result.facts is not None and result.facts.colours == [colour] and result.facts.count == 1
        assert result.usage["input_tokens"] > 0 and result.usage["output_tokens"] > 0
        price_in, price_out = 2.0, 10.0  # the default model's published price
        expected = (result.usage["input_tokens"] * price_in + result.usage["output_tokens"] * price_out) / 1e6
        assert result.usage["cost_usd"] == pytest.approx(expected, rel=1e-3)
        assert result.details["prompt"] == "caption_object_tags.md"
    sent = anthropic_fake.messages_calls()[0].body
    assert sent["tools"][0]["name"] == "record_caption"
    assert {"caption", "colours", "background", "framing"} <= set(sent["tools"][0]["input_schema"]["properties"])


def test_big_images_are_shrunk_to_1568_long_edge(claude, anthropic_fake):
    captioner, ctx = claude()
    photos = solid_photos(ctx.run.root, {"wide": GREEN}, size=(2400, 1200))
    assert captioner.caption(photos, ctx)["wide"].caption
    block = anthropic_fake.messages_calls()[0].body["messages"][0]["content"][0]
    with Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))) as sent:
        assert sent.size == (1568, 784)


def test_prompt_follows_lora_type_and_style(claude, anthropic_fake):
    captioner, ctx = claude(config={"caption": {"lora_type": "style", "style": "natural"}, "trigger": "zqx"})
    result = captioner.caption(solid_photos(ctx.run.root, {"r": RED}), ctx)["r"]
    assert result.details["prompt"] == "caption_style_natural.md"
    text = anthropic_fake.messages_calls()[0].body["messages"][0]["content"][1]["text"]
    assert "style LoRA" in text and "zqx style" in text and "sentences" in text


@pytest.mark.parametrize("lora_type", ["object", "style", "character", "concept", "scene"])
@pytest.mark.parametrize("style", ["tags", "natural"])
def test_every_prompt_template_fills_in(lora_type, style):
    from clood_candy_plugins.captioners.claude import load_prompt

    text = load_prompt(f"caption_{lora_type}_{style}.md").substitute(trigger="zqx", class_word="bean", context="")
    assert "zqx" in text and "$" not in text
    assert ("comma-separated tags" in text) == (style == "tags")


# fault script → (captioned?, requests made, words expected in the error)
FAULTS = [
    (["429"], True, 2, None),
    (["529"], True, 2, None),
    (["500"], True, 2, None),
    (["timeout"], True, 2, None),
    (["no_tool"], True, 2, None),
    (["bad_json"], True, 2, None),
    (["500", "500", "500"], False, 3, "HTTP 500"),  # max_attempts=3: bounded
    (["529", "529", "529"], False, 3, "HTTP 529"),
    (["no_tool", "no_tool"], False, 2, "malformed reply"),  # malformed_retries=1
    (["bad_json", "bad_json"], False, 2, "malformed reply"),
    (["timeout", "timeout", "timeout"], False, 3, "timed out"),
    (["401"], False, 1, "HTTP 401"),  # not worth retrying
    (["400"], False, 1, "HTTP 400"),
]


@pytest.mark.parametrize("script,captioned,requests,words", FAULTS, ids=["+".join(f[0]) for f in FAULTS])
def test_each_fault_recovers_or_ends_as_a_marked_failure(claude, anthropic_fake, script, captioned, requests, words):
    anthropic_fake.timeout_sleep = 0.8
    captioner, ctx = claude(timeout=0.3, max_concurrency=1)
    anthropic_fake.script(*script)
    result = captioner.caption(solid_photos(ctx.run.root, {"r": RED}), ctx)["r"]

    assert len(anthropic_fake.messages_calls()) == requests
    assert result.usage["attempts"] == requests
    if captioned:
        assert result.error is None and "red" in result.caption
    else:
        assert result.caption is None and words in result.error and f"after {requests} attempt" in result.error


def test_sdk_retries_are_off_so_attempts_do_not_multiply(claude, anthropic_fake):
    anthropic_fake.default = "529"
    captioner, ctx = claude(max_attempts=4)
    result = captioner.caption(solid_photos(ctx.run.root, {"r": RED}), ctx)["r"]
    calls = anthropic_fake.messages_calls()
    assert result.error and len(calls) == 4  # the SDK's default of 2 retries would make 12
    assert {c.headers["x-stainless-retry-count"] for c in calls} == {"0"}


def test_retry_after_is_honoured(claude, anthropic_fake):
    anthropic_fake.retry_after = "0.5"
    anthropic_fake.script("429")
    captioner, ctx = claude()
    assert captioner.caption(solid_photos(ctx.run.root, {"r": RED}), ctx)["r"].caption
    first, second = anthropic_fake.messages_calls()
    assert second.at - first.at >= 0.5  # backoff alone would have waited ~0.01 s


def test_mixed_faults_leave_no_photo_missing(claude, anthropic_fake):
    # A timeout well above a loaded CI worker's normal reply: 0.3 s, then 1 s, failed good replies
    # under -n auto on 2 cores (one extra photo lost, 5 captions instead of 6).
    anthropic_fake.timeout_sleep = 8.0
    captioner, ctx = claude(timeout=4.0, max_concurrency=3)
    colours = {f"p{i}": c for i, c in enumerate([RED, BLUE, YELLOW, GREEN] * 2)}
    anthropic_fake.script("429", "529", "500", "timeout", "no_tool", "bad_json", "400", "500", "500")
    photos = solid_photos(ctx.run.root, colours)
    broken = ctx.run.path("prep", "broken.png")
    broken.write_bytes(b"not a png")
    photos.append(photos[0].model_copy(update={"id": "broken", "image": "prep/broken.png"}))

    results = captioner.caption(photos, ctx)
    assert set(results) == {p.id for p in photos}
    for result in results.values():
        assert (result.caption is None) != (result.error is None)
    assert "cannot read image" in results["broken"].error
    assert sum(r.caption is not None for r in results.values()) >= 6  # one 400 + at most one exhausted 500
    assert len(anthropic_fake.messages_calls()) <= len(colours) * FAST["max_attempts"]


def test_concurrency_is_bounded_and_used(claude, anthropic_fake):
    anthropic_fake.latency = 0.2
    captioner, ctx = claude(max_concurrency=3)
    photos = solid_photos(ctx.run.root, {f"p{i}": RED for i in range(9)})
    results = captioner.caption(photos, ctx)
    assert all(r.caption for r in results.values())
    # Three at a time, never more: the bound holds and the concurrency is really used.
    assert anthropic_fake.max_in_flight == 3


def test_a_bad_key_stops_asking_after_the_first_refusal(claude, anthropic_fake):
    anthropic_fake.default = "401"
    captioner, ctx = claude(max_concurrency=1)
    results = captioner.caption(solid_photos(ctx.run.root, {"r": RED, "b": BLUE, "y": YELLOW}), ctx)
    assert all("HTTP 401" in r.error for r in results.values())
    assert len(anthropic_fake.messages_calls()) == 1


def test_no_key_means_skipped_with_a_one_line_reason(make_ctx, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    ctx = make_ctx()
    reason = ctx.registry.get("captioner", "claude").unavailable(ctx)
    assert reason and "ANTHROPIC_API_KEY" in reason and "\n" not in reason


def test_bad_option_is_reported_by_unavailable(claude):
    captioner, ctx = claude(max_concurency=2)
    assert "max_concurency" in captioner.unavailable(ctx)


def test_key_goes_only_in_the_auth_header_and_never_to_disk(claude, anthropic_fake):
    from clood_candy.records import Candidate, FightItem

    captioner, ctx = claude()
    anthropic_fake.script("429", "401")
    photos = solid_photos(ctx.run.root, {"r": RED, "b": BLUE})
    results = captioner.caption(photos, ctx)
    ctx.registry.get("judge", "claude").compare(
        [(FightItem(id="r", photo=photos[0], candidates=[]), Candidate(fighter="a", text="red"),
          Candidate(fighter="b", text="blue"))], ctx)
    ctx.run.save()

    for call in anthropic_fake.requests:
        assert KEY.encode() not in call.raw and KEY not in call.path
        assert KEY in (call.headers.get("x-api-key", "") + call.headers.get("authorization", ""))
    assert any(r.error for r in results.values())  # the failure path wrote its reason too
    files = [p for p in ctx.run.root.rglob("*") if p.is_file()]
    assert any(p.parent.name == "claude" for p in files)  # the cache was written
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_batches_api_path(claude, anthropic_fake):
    anthropic_fake.script("ok", "ok", "no_tool", "ok")  # batch create, then one fault per item
    captioner, ctx = claude(batch=True, batch_poll_initial=0.01, batch_poll_max=0.02)
    results = captioner.caption(solid_photos(ctx.run.root, {"r": RED, "b": BLUE, "y": YELLOW}), ctx)

    assert all(r.error is None for r in results.values())
    assert "blue" in results["b"].caption
    paths = [(c.method, c.path.rsplit("/", 1)[-1]) for c in anthropic_fake.requests]
    assert ("POST", "batches") in paths and ("GET", "results") in paths
    assert len(anthropic_fake.messages_calls()) == 1  # only the malformed item was re-asked directly
    assert results["r"].usage["batch"] == 1
    full_price = (results["r"].usage["input_tokens"] * 2 + results["r"].usage["output_tokens"] * 10) / 1e6
    assert results["r"].usage["cost_usd"] == pytest.approx(full_price / 2, rel=1e-3)


def test_rerun_is_served_from_the_cache(claude, anthropic_fake):
    captioner, ctx = claude()
    photos = solid_photos(ctx.run.root, {"r": RED, "b": BLUE})
    first = captioner.caption(photos, ctx)
    before = len(anthropic_fake.messages_calls())
    again = captioner.caption(photos, ctx)
    assert len(anthropic_fake.messages_calls()) == before
    assert again["r"].caption == first["r"].caption and again["r"].usage["cached"] == 1


def test_template_placeholders_are_only_known_names():
    from importlib import resources

    known = {"trigger", "class_word", "context", "lora_type", "style", "first", "second"}
    for path in resources.files("clood_candy_prompts").iterdir():
        if path.name.endswith(".md"):
            names = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(path.read_text())
                     if m.group("named") or m.group("braced")}
            assert names <= known, path.name


def test_real_phone_photos_and_a_zero_byte_file(claude, anthropic_fake, shared_photos):
    from clood_candy.records import Photo

    captioner, ctx = claude()
    files = sorted((shared_photos / "candy-table").glob("*.jpg"))
    photos = [Photo(id=f.stem, source=f.name, image=str(f), width=0, height=0) for f in files]
    results = captioner.caption(photos, ctx)

    assert set(results) == {f.stem for f in files}
    assert "cannot read image" in results["28"].error  # the zero-byte file
    good = [r for k, r in results.items() if k != "28"]
    assert good and all(r.caption and r.facts for r in good)
    for call in anthropic_fake.messages_calls():
        data = base64.b64decode(call.body["messages"][0]["content"][0]["source"]["data"])
        with Image.open(io.BytesIO(data)) as sent:
            assert max(sent.size) == 1568  # 4080×3072 originals, shrunk before upload


def test_a_failed_batch_falls_back_to_one_by_one(claude, anthropic_fake):
    anthropic_fake.script("500", "500", "500")  # the batch create fails max_attempts times
    captioner, ctx = claude(batch=True)
    results = captioner.caption(solid_photos(ctx.run.root, {"r": RED, "b": BLUE}), ctx)
    assert all(r.error is None for r in results.values())
    assert sum(c.path == "/v1/messages/batches" for c in anthropic_fake.requests) == 3
    assert len(anthropic_fake.messages_calls()) == 2


def test_a_batch_that_never_ends_is_cancelled_and_asked_directly(claude, anthropic_fake):
    anthropic_fake.batch_polls = 10_000
    captioner, ctx = claude(batch=True, batch_poll_initial=0.01, batch_poll_max=0.02, batch_timeout=0.2)
    results = captioner.caption(solid_photos(ctx.run.root, {"r": RED}), ctx)
    assert results["r"].caption and "batch" not in results["r"].usage
    assert any(c.path.endswith("/cancel") for c in anthropic_fake.requests)
