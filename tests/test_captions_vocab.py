"""The shared caption vocabulary and reading free text into facts."""

from clood_candy.captions import vocab
from clood_candy.captions.parse import facts_from_text
from clood_candy.captions.tokens import approx_tokens, overflow


def test_synonyms_collapse_to_one_term_per_concept():
    for word in ("close-up", "closeup", "close up", "macro", "Macro shot"):
        assert vocab.canonical("framing", word) == "macro close-up"
    for word in ("3/4 view", "three-quarter view", "angled"):
        assert vocab.canonical("view", word) == "three quarter view"
    assert vocab.canonical("colours", "Crimson") == "red"
    assert vocab.canonical("background", "wooden table") == "wood"
    assert vocab.canonical("background", "red fabric") == "red cloth"
    assert vocab.canonical("framing", "red") is None


def test_find_terms_reads_a_sentence_longest_match_first():
    terms = {(t.concept, t.value) for t in vocab.find_terms("A close up of a red jelly bean on white cloth, at night")}
    assert terms == {("framing", "macro close-up"), ("colours", "red"), ("background", "white cloth"),
                     ("time_of_day", "night")}
    # "white background" is a background, not a white bean
    assert [(t.concept, t.value) for t in vocab.find_terms("white background")] == [("background", "white")]


def test_conflicts_know_what_cannot_both_be_true():
    assert vocab.conflicts(("lighting", "daylight"), ("time_of_day", "night"))
    assert vocab.conflicts(("framing", "macro close-up"), ("framing", "wide shot"))
    assert not vocab.conflicts(("lighting", "flash"), ("time_of_day", "night"))
    assert not vocab.conflicts(("colours", "red"), ("colours", "green"))


def test_subject_features_and_generic_words():
    assert vocab.subject_features_in("a glossy, bean-shaped red candy") == ["bean shaped", "glossy"]
    assert vocab.is_generic("a photo") and vocab.is_generic("Image")
    assert vocab.is_class_word("jelly beans", "jellybean") and vocab.is_class_word("jellybeans", "jellybean")
    assert not vocab.is_class_word("red", "jellybean")


def test_free_text_becomes_facts_and_drops_contradictions():
    parsed = facts_from_text("jlybn, glossy, three yellow jellybeans, on a wooden table, daylight, at night, "
                             "jelly belly, bokeh", class_word="jellybean", trigger="jlybn")
    facts = parsed.facts
    assert facts.colours == ["yellow"] and facts.count == 3 and facts.arrangement == "few"
    assert facts.background == "wood"
    assert facts.lighting is None and facts.time_of_day is None  # daylight vs night: both dropped
    assert parsed.conflicts == ["daylight / night"]
    assert parsed.features == ["glossy"]
    assert facts.extra == ["jelly belly", "bokeh"]  # unknown tags kept, trigger/class/features not


def test_a_sentence_keeps_only_vocabulary_terms():
    facts = facts_from_text("a close up of a red jelly bean on a white table", class_word="jellybean").facts
    assert facts.colours == ["red"] and facts.framing == "macro close-up" and facts.background == "white"
    assert facts.extra == []


def test_token_stand_in_and_overflow_tail():
    assert approx_tokens("jlybn, red") == 3
    total, tail = overflow("a, b, c, d, e", approx_tokens, 5)
    assert total == 9 and tail == "d, e"
    assert overflow("a, b", approx_tokens, 5) == (3, "")
