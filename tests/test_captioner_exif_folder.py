"""exif-folder and baseline: captions from what the photographer recorded, and the control."""

from clood_candy_plugins.captioners.baseline import BaselineCaptioner
from clood_candy_plugins.captioners.exif_folder import ExifFolderCaptioner

from clood_candy.records import Photo


def photo(pid: str, folders: list[str], exif: dict) -> Photo:
    return Photo(id=pid, source="/".join([*folders, f"{pid}.jpg"]), image=f"prep/{pid}.png", width=64, height=64,
                 exif=exif, folders=folders)


def test_folders_and_exif_become_facts_and_tags(make_ctx):
    photos = [
        photo("a", ["sunkist", "night", "indoor"], {"DateTimeOriginal": "2024:03:02 21:40:00", "Flash": 25,
                                                   "SubjectDistance": 0.2}),
        photo("b", ["jelly-belly", "day", "outdoor"], {"DateTimeOriginal": "2024:03:02 10:05:00", "Flash": 16,
                                                      "SubjectDistance": 1.3, "ExposureTime": 1 / 250,
                                                      "ISOSpeedRatings": 100, "FNumber": 5.6}),
        photo("c", ["Macro shots"], {"Flash": "weird", "DateTimeOriginal": 12}),  # odd values: still a caption
    ]
    results = ExifFolderCaptioner().caption(photos, make_ctx())
    a, b, c = (results[k].facts for k in "abc")
    assert (a.brand, a.time_of_day, a.setting, a.lighting, a.framing) == \
        ("sunkist", "night", "indoors", "flash", "macro close-up")
    assert (b.brand, b.time_of_day, b.setting, b.lighting, b.framing) == \
        ("jelly belly", "day", "outdoors", "daylight", "wide shot")
    assert results["a"].caption == "jellybean, flash photo, macro close-up, night, indoors, sunkist"
    assert c.framing == "macro close-up" and results["c"].error is None


def test_baseline_is_trigger_and_class_only(make_ctx):
    ctx = make_ctx(trigger="zxq", class_word="gumdrop")
    results = BaselineCaptioner().caption([photo("a", [], {}), photo("b", ["night"], {})], ctx)
    assert {r.caption for r in results.values()} == {"zxq, gumdrop"}
    assert results["b"].facts.colours == [] and results["b"].facts.time_of_day is None


def test_captioners_are_registered_by_their_plugins(make_ctx):
    registry = make_ctx().registry
    for name in ("baseline", "vision-stats", "exif-folder"):
        assert registry.get("captioner", name).name == name
    assert registry.get("judge", "rubric").name == "rubric"
