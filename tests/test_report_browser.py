"""The demo's report as the photographer sees it: opened from disk in headless Chromium,
every section drawn, every image loaded, no errors, nothing fetched from anywhere."""

import pytest
from clood_candy_plugins.report.plugin import SECTIONS
from support.browser import CHROMIUM_FLAGS, chromium


@pytest.mark.slow
def test_demo_report_renders_completely_in_a_browser(demo_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium()
    report = demo_run / "report.html"
    assert report.stat().st_size < 15_000_000, "the report should stay small enough to mail"

    with sync_api.sync_playwright() as pw:
        # A fresh profile per run: nothing cached from an earlier report can hide a broken image.
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                        headless=True, args=CHROMIUM_FLAGS,
                                                        viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            sections = page.eval_on_selector_all(
                "section[data-section]",
                "els => els.map(s => ({key: s.dataset.section, title: s.querySelector('h2').innerText,"
                " missing: s.querySelectorAll('.note.missing').length, failed: s.innerText.includes('could not be drawn'),"
                " text: s.innerText}))")
            images = page.eval_on_selector_all(
                "img", "els => els.map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}))")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert [s["key"] for s in sections] == [key for key, _, _ in SECTIONS]
    for s in sections:  # a finished demo has every input: no section may be a placeholder
        assert not s["failed"] and s["missing"] == 0 and len(s["text"]) > 200, s["key"]
    text = {s["key"]: s["text"] for s in sections}
    # Numbers computed from this run, not boilerplate: the demo's 64 px photos and its jlybn LoRA.
    assert "64×64×3 = 12,288 numbers" in text["vae"] and "12× fewer numbers" in text["vae"]  # candy-mini: 16×16×4 latents
    assert "loads on that miniature only" in text["lora"] and "% of it" in text["lora"]
    assert "random weights" not in text["diffusion"] and "% photo" in text["diffusion"]
    broken = [i["alt"] for i in images if not i["ok"]]
    assert images and not broken, f"broken images: {broken}"
    assert len(images) >= 40  # photos, captions, latents, noising, curves, samples
    assert not errors, errors
    assert all(url.startswith(("file:", "data:")) for url in requests), [u[:80] for u in requests]
    assert shot.stat().st_size > 100_000
    print(f"screenshot: {shot}")

