"""``clood review`` as the photographer uses it: a real server, headless Chromium, a caption
edited by typing, a tag renamed across the set, a culled photo kept (and one prep culled brought
back, its crop box moved), a vote in the pick fight;
after a reload the page and the run folder say the same, and nothing was fetched from
anywhere but the server."""

import json
import shutil
import time

import pytest
from support.browser import CHROMIUM_FLAGS, chromium
from support.review import Served, caption_of, prepped_run, review_run

from clood_candy import edits


def broken_images(page, patience_s=20.0):
    """The alt text of every image that did not load. The pages load thumbnails lazily, so
    each is scrolled into view first, and a busy machine gets time to serve them."""
    for image in page.locator("img").all():
        image.scroll_into_view_if_needed()
    deadline = time.monotonic() + patience_s
    while True:
        broken = page.eval_on_selector_all("img", "els => els.filter(i => !(i.complete && i.naturalWidth > 0))"
                                                  ".map(i => i.alt)")
        if not broken or time.monotonic() > deadline:
            return broken
        time.sleep(0.2)


@pytest.mark.slow
def test_edit_a_caption_in_the_browser(make_ctx, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium()
    ctx, _ = review_run(make_ctx, tmp_path)
    typed = "jlybn, jellybean, red, <b>glossy</b>, " + ", ".join(f"bean number {i}" for i in range(30))

    with Served(ctx.run.root) as served, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                        headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(served.url, wait_until="load")
            card = page.locator("#photo-p0")
            assert card.locator(".count").inner_text().startswith("≈ ")

            # Typing: the counter follows live and strikes out what falls past the window.
            card.locator("textarea").fill(typed)
            card.locator(".count.over").wait_for()  # (the page's CSP allows no eval: no wait_for_function)
            cut = card.locator("mark.cut").inner_text()
            assert cut and typed.endswith(cut)
            card.locator("textarea").press("Enter")  # Enter saves
            page.wait_for_url("**/captions?*")
            assert "Saved the caption of p0" in page.locator("#note").inner_text()

            page.reload(wait_until="load")
            assert page.locator("#photo-p0 textarea").input_value() == typed
            assert "edited by you" in page.locator("#photo-p0").inner_text()

            # Rename a tag across the set.
            page.select_option("#bulk select[name=mode]", "tag")
            page.fill("#bulk input[name=find]", "white background")
            page.fill("#bulk input[name=replace]", "white")
            page.click("#bulk button")
            page.wait_for_url("**note=Changed*")
            page.reload(wait_until="load")
            assert page.locator("#photo-p1 textarea").input_value().endswith(", white")

            # Keep the photo prep culled, saying why.
            page.goto(served.url.replace("/?", "/photos?"), wait_until="load")
            blurry = page.locator("[data-source='blurry.jpg']")
            blurry.locator("input[name=why]").fill("soft, but the only purple one")
            blurry.locator("button").click()
            page.wait_for_url("**/photos?*")
            page.reload(wait_until="load")
            text = page.locator("[data-source='blurry.jpg']").inner_text()
            assert "soft, but the only purple one" in text and f"by {edits.who()}" in text
            images = broken_images(page)
        finally:
            browser.close()

    assert caption_of(ctx, "p0") == typed  # what the page showed is what trains
    assert caption_of(ctx, "p1").endswith(", white")
    assert {r["id"]: r["text"] for r in edits.dataset_rows(ctx.run.root)}["p0"] == typed
    assert images == [] and not errors, (images, errors)
    assert all(url.startswith(f"http://127.0.0.1:{served.port}/") for url in requests), requests


@pytest.mark.slow
def test_bring_back_a_culled_photo_and_move_its_crop_in_the_browser(make_ctx, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium()
    ctx, _ = prepped_run(make_ctx, tmp_path)

    with Served(ctx.run.root) as served, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                        headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served.url.replace("/?", "/photos?"), wait_until="load")
            card = page.locator("[data-source='blurry.jpg']")
            card.locator("form.decide input[name=why]").fill("the only soft one I like")
            card.locator("form.decide button").click()
            page.wait_for_url("**/photos?*")
            assert "Prepared now as prep would have" in page.locator("#note").inner_text()
            card = page.locator("[data-source='blurry.jpg']")
            assert "brought back" in card.inner_text()

            card.locator("details.crop summary").click()
            for key, value in zip(("x0", "y0", "x1", "y1"), ("60", "0", "240", "180"), strict=True):
                card.locator(f"form.crop input[name={key}]").fill(value)
            card.locator("form.crop button").click()
            page.wait_for_url("**/photos?*")
            assert "crop box moved to 60, 0, 240, 180" in page.locator("#note").inner_text()
            page.reload(wait_until="load")
            assert "crop box 60, 0, 240, 180" in page.locator("[data-source='blurry.jpg']").inner_text()
            photos_broken = broken_images(page)

            page.goto(served.url.replace("/?", "/captions?") + "&filter=needs", wait_until="load")
            assert "needs a caption" in page.locator("#photo-blurry").inner_text()
            captions_broken = broken_images(page)
        finally:
            browser.close()

    assert ctx.run.path("dataset", "blurry.png").is_file() and caption_of(ctx, "blurry") == "jlybn, jellybean"
    assert edits.load(ctx.run.root).edits[-1].new == [60, 0, 240, 180]
    assert photos_broken == [] and captions_broken == [] and not errors, (photos_broken, captions_broken, errors)


@pytest.mark.slow
def test_vote_on_the_pick_page_in_the_browser(demo_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium()
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)  # other tests read the demo run as it was
    before = json.loads((run / "train" / "fight.json").read_text())["pick"]
    other = next(c for c in before["sheet"]["candidates"] if c["name"] != before["winner"])

    with Served(run) as served, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                        headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(served.url, wait_until="load")
            page.click("header >> text=Pick")  # the header link beside Photos and Captions
            page.wait_for_url("**/pick?*")
            assert page.locator("#winner-name").inner_text() == before["winner"]
            shown = [row.get_attribute("data-candidate") for row in page.locator("tr[data-candidate]").all()]
            assert shown == [c["name"] for c in before["sheet"]["candidates"]]
            assert page.locator("table.pick img").count() == len(before["sheet"]["images"]) + len(
                [p for p in before["sheet"]["prompts"] if p["kind"] == "held-out"])
            images = broken_images(page)

            row = page.locator(f"tr[data-candidate='{other['name']}']")
            row.locator("input[name=why]").fill("crisper beans")
            row.locator("button").click()
            page.wait_for_url("**/pick?*")
            assert f"Your vote for {other['name']} is recorded" in page.locator("#note").inner_text()
            page.reload(wait_until="load")
            assert page.locator("#winner-name").inner_text() == other["name"]
            assert page.locator("#shipped-from").inner_text() == other["lora"]
            assert "crisper beans" in page.locator("#votes").inner_text()
            assert "ships" in page.locator(f"tr[data-candidate='{other['name']}']").inner_text()
        finally:
            browser.close()

    after = json.loads((run / "train" / "fight.json").read_text())["pick"]
    assert after["winner"] == other["name"] and after["votes"][-1]["why"] == "crisper beans"
    assert (run / "train" / "jlybn.safetensors").read_bytes() == (run / other["lora"]).read_bytes()
    assert images == [] and not errors, (images, errors)
    assert all(url.startswith(f"http://127.0.0.1:{served.port}/") for url in requests), requests
