"""Hand-checked values for the shared text helpers and the numeric `mean`."""

from __future__ import annotations

import math

import pytest

from mbt_online.scoring.stats import harmonic, mean
from mbt_online.scoring.text import (
    count_words,
    mentions,
    normalize_answer,
    normalize_loose,
    split_paragraphs,
    split_sentences,
    squash,
)


def test_normalize_answer():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("  An apple, a Day ") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_split_sentences_keeps_initials_abbreviations_and_list_markers():
    text = (
        "J. R. R. Tolkien wrote it. He served in the U.S. Army!  Did he?\n"
        '1. Find the author. Mr. Smith said "no." Then stop'
    )
    assert split_sentences(text) == [
        "J. R. R. Tolkien wrote it.",
        "He served in the U.S. Army!",
        "Did he?",
        "1. Find the author.",
        'Mr. Smith said "no."',
        "Then stop",
    ]
    assert split_sentences("") == []
    assert split_sentences("pi is 3.14 exactly. Yes.") == ["pi is 3.14 exactly.", "Yes."]


def test_split_paragraphs():
    assert split_paragraphs("a\nstill a\n\nb\n  \n\nc\n") == ["a\nstill a", "b", "c"]
    assert split_paragraphs("  \n\n ") == []


def test_normalize_loose_splits_at_punctuation():
    assert normalize_loose("Jay-Z's 1990-1995") == "jay z s 1990 1995"


def test_mentions_is_whole_word_after_normalisation():
    assert mentions("It was the U.S. Army.", "US army")
    assert not mentions("Knowles", "no")
    assert not mentions("anything", "  ")


def test_word_helpers():
    assert count_words(" two\twords ") == 2
    assert squash("  Two\n  WORDS ") == "two words"


def test_mean_says_what_empty_gives():
    assert mean([1.0, 2.0], empty=None) == 1.5
    assert mean([], empty=0.0) == 0.0
    assert mean(iter([]), empty=None) is None
    assert math.isnan(mean([], empty=float("nan")))
    assert harmonic(0.5, 0.5) == pytest.approx(0.5) and harmonic(0.0, 0.0) == 0.0
