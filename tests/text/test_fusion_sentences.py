"""The sentence evidence's definition (kindred.text.fusion.item_sentences / sentence_evidence)."""

from __future__ import annotations

import pytest

from kindred.errors import InvalidArgument
from kindred.text.fusion import item_sentences, sentence_evidence


def test_title_then_each_sentence() -> None:
    text = "Vitamin D raises density. 25 of 40 improved (p<0.05). [Note] e.g. small. Done!"
    assert item_sentences("Bone density", text) == [
        "Bone density",
        "Vitamin D raises density.",
        "25 of 40 improved (p<0.05).",
        "[Note] e.g. small.",  # a lower-case word after the full stop does not start a sentence
        "Done!",
    ]


def test_empty_parts_dropped_and_never_no_vector() -> None:
    assert item_sentences("", "Only text.") == ["Only text."]
    assert item_sentences("  ", "") == [""]


def test_best_and_mean_of_two_best() -> None:
    assert sentence_evidence([0.1, 0.7, 0.5]) == pytest.approx((0.7, 0.6))
    assert sentence_evidence([0.3]) == pytest.approx((0.3, 0.3))
    with pytest.raises(InvalidArgument):
        sentence_evidence([])
