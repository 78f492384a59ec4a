"""EXIF fields and folder names read as caption facts."""

import pytest

from clood_candy.captions import metadata


def test_exif_hour_flash_distance_and_light_level():
    night = {"DateTimeOriginal": "2024:03:02 23:10:00", "Flash": 0x19, "SubjectDistance": 0.15}
    assert metadata.time_of_day(night) == "night"
    assert metadata.flash_fired(night) is True
    assert metadata.framing(night) == "macro close-up"
    assert metadata.lighting(night) == "flash"

    day = {"DateTimeOriginal": "2024:03:02 13:35:58", "Flash": 16, "SubjectDistance": 1.4, "BrightnessValue": 8.0}
    assert metadata.time_of_day(day) == "day"
    assert metadata.flash_fired(day) is False  # 16: off, did not fire
    assert metadata.framing(day) == "wide shot"
    assert metadata.light_level(day) == pytest.approx(13.0)
    assert metadata.lighting(day) == "daylight"

    # no BrightnessValue: the level from shutter, ISO and aperture (f/2.8 1/60 s ISO 1600 ≈ EV 4.9)
    room = {"ExposureTime": 1 / 60, "ISOSpeedRatings": 1600, "FNumber": 2.8}
    assert metadata.light_level(room) == pytest.approx(4.88, abs=0.05)
    assert metadata.lighting(room) == "indoor light"
    assert metadata.time_of_day({"DateTimeOriginal": "2024:03:02 19:00:00"}) is None  # dusk says nothing
    assert metadata.time_of_day({"DateTimeOriginal": "garbage"}) is None


def test_numeric_tag_ids_and_string_flash_are_understood():
    assert metadata.flash_fired({"37385": 1}) is True
    assert metadata.flash_fired({"Flash": "Flash did not fire"}) is False
    assert metadata.time_of_day({36867: "2024:01:01 02:00:00"}) == "night"


def test_folder_words_become_facts_and_unknown_words_a_brand():
    facts = metadata.metadata_facts({}, ["jelly-belly", "night-flash", "Close-Up", "outdoor"], class_word="jellybean",
                                    trigger="jlybn")
    assert facts.brand == "jelly belly"
    assert facts.time_of_day == "night" and facts.lighting == "flash"
    assert facts.framing == "macro close-up" and facts.setting == "outdoors"
    # noise folders, dates and the class itself say nothing
    facts = metadata.metadata_facts({}, ["Photos", "2024-05-01", "jellybeans", "wooden table"], class_word="jellybean")
    assert facts.brand is None and facts.background == "wood"


def test_folder_beats_exif_and_daylight_at_night_is_dropped():
    exif = {"DateTimeOriginal": "2024:03:02 22:00:00", "BrightnessValue": 9.0}
    facts = metadata.metadata_facts(exif, ["day"])
    assert facts.time_of_day == "day"  # the photographer sorted it so
    facts = metadata.metadata_facts(exif, [])
    assert facts.time_of_day == "night" and facts.lighting is None
