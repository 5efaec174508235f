"""Answer metrics on hand-checked examples."""

import pytest

from eval.metrics import contains_reference, exact_match, normalise_answer, token_f1


def test_normalisation_follows_squad() -> None:
    assert normalise_answer("The  Eiffel Tower!") == "eiffel tower"


@pytest.mark.parametrize(
    ("pred", "refs", "em", "f1", "contained"),
    [
        ("Paris", ["Paris"], 1.0, 1.0, 1.0),
        ("The capital is Paris.", ["Paris"], 0.0, 0.5, 1.0),  # p=1/3 (capital, is, paris), r=1 → 0.5
        ("240 VC per season", ["240 VC"], 0.0, 2 * (2 / 4) * 1 / (2 / 4 + 1), 1.0),
        ("I don't know.", ["Ida Brandt"], 0.0, 0.0, 0.0),
        ("Parisian food", ["Paris"], 0.0, 0.0, 0.0),  # containment is by whole words
        ("March", ["in March", "March"], 1.0, 1.0, 1.0),  # best reference counts
    ],
)
def test_known_scores(pred: str, refs: list[str], em: float, f1: float, contained: float) -> None:
    assert exact_match(pred, refs) == em
    assert token_f1(pred, refs) == pytest.approx(f1)
    assert contains_reference(pred, refs) == contained
