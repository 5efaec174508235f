"""The leakage guard on planted cases, with the real MiniLM and with a toy embedder."""

import numpy as np
import pytest

from pipelines import leakage
from pipelines.leakage import TrainText


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert leakage.normalise("  Who is the   Harbour-Master?? ") == "who is the harbour master"


def test_ngram_overlap_known_values() -> None:
    q = "what is the fee for a mooring permit"  # 8 words → 4 five-grams
    assert leakage.ngram_overlap(q, q) == 1.0
    # 9 words → 5 five-grams, 2 shared: 2 / (4 + 5 - 2)
    assert leakage.ngram_overlap(q, "tell me what is the fee for a boat") == pytest.approx(2 / 7)
    generic = "What is the name of the application form for a mooring in the harbour?"
    assert leakage.ngram_overlap("What is the name of the fireboat?", generic) < 0.5
    assert leakage.ngram_overlap(q, "completely different words here today") == 0.0


def _toy_embed(texts: list[str]) -> np.ndarray:
    def bucket(t: str) -> list[float]:
        t = t.lower()
        return [1.0, 0, 0] if "mooring" in t else [0, 1.0, 0] if ("dog" in t or "librarian" in t) else [0, 0, 1.0]

    vecs = np.array([bucket(t) for t in texts])
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


EVAL = [
    ("e1", "How much does a mooring permit cost?", ["240 VC"]),
    ("e2", "Who is the city librarian of Port Vellmar?", ["Ada Quist"]),
    ("e3", "What is the fee for renewing a dog licence in Port Vellmar each year?", ["15 VC"]),
    ("e4", "Which office issues a mooring permit?", ["Harbour Office"]),
    ("e5", "When is the lantern festival?", ["March"]),
]
TRAIN = [
    TrainText("how much does a MOORING permit cost", "Q: how much does a MOORING permit cost A: 240 VC"),  # e1 verbatim
    TrainText(None, "Who is the city librarian of Port Vellmar? It is Ada Quist."),  # e2 holds question + answer
    TrainText("Tell me the fee for renewing a dog licence in Port Vellmar each year, please",
              "Tell me the fee ... 15 VC"),  # e3 near-verbatim
]


def test_each_planted_case_lands_in_its_class() -> None:
    train = TRAIN + [TrainText("Where do I get a mooring licence?", "The Harbour Office handles it.")]
    r = leakage.classify(EVAL, train, _toy_embed)
    assert [m.eval_id for m in r.verbatim] == ["e1", "e2"]
    assert [m.eval_id for m in r.near_verbatim] == ["e3"]
    assert [m.eval_id for m in r.paraphrase] == ["e4"]
    assert r.counts == {"verbatim": 2, "near_verbatim": 1, "paraphrase": 1, "unrelated": 1}
    assert "2 verbatim, 1 near-verbatim, 1 paraphrase coverage, 1 not covered" in r.summary()


@pytest.mark.slow
def test_real_minilm_separates_paraphrase_from_unrelated() -> None:
    from pipelines import embeddings

    def embed(texts: list[str]) -> np.ndarray:
        return embeddings.sentence_model().encode(texts, normalize_embeddings=True)

    eval_items = [("e1", "How much does a seasonal mooring permit cost in Port Vellmar?", ["240 VC"]),
                  ("e2", "What colour are the city's recycling bins?", ["green"])]
    train = [TrainText("What is the price of a mooring permit for one season in Port Vellmar?", "240 VC"),
             TrainText("Who founded the harbour choir?", "Ilse Maren")]
    r = leakage.classify(eval_items, train, embed)
    assert [m.eval_id for m in r.paraphrase] == ["e1"] and r.counts["unrelated"] == 1


def test_normalise_keeps_symbols_digits_and_units() -> None:
    assert leakage.normalise("What does R1 < 0 and R2 > 0 indicate?") != leakage.normalise(
        "What does R1 > 0 and R2 < 0 indicate?")
    assert leakage.normalise("r1<0") == leakage.normalise("R1 < 0") == "r1 < 0"
    assert leakage.normalise("It costs 3.5 km/h, 5%!") == "it costs 3.5 km / h 5 %"
    assert leakage.normalise("x = 3,000") == "x = 3,000"


def test_gives_answer_matches_whole_words_either_way_round() -> None:
    assert leakage.gives_answer("It was made in 1733.", ["1733"])
    assert leakage.gives_answer("1733", ["in 1733"])  # annotators mark spans of different lengths
    assert not leakage.gives_answer("17330 lenses", ["1733"])
    assert not leakage.gives_answer("London", ["1733"])


# Two false positives met on a SQuAD-Shifts import, and the true leaks the guard must still catch.
SHIFTS_EVAL = [
    ("e1", "What does R1 < 0 and R2 > 0 indicate?", ["a meniscus lens"]),
    ("e2", "When was the compound achromatic lens created?", ["1733"]),
]


def test_different_questions_with_different_answers_are_not_leakage() -> None:
    train = [TrainText("What does R1 > 0 and R2 < 0 indicate?", "What does R1 > 0 and R2 < 0 indicate?\na biconvex lens",
                       "a biconvex lens"),
             TrainText("Where was the compound achromatic lens created?",
                       "Where was the compound achromatic lens created?\nEngland", "England")]
    r = leakage.classify(SHIFTS_EVAL, train, _toy_embed)
    assert r.counts == {"verbatim": 0, "near_verbatim": 0, "paraphrase": 0, "unrelated": 2}


def test_true_leaks_are_still_caught() -> None:
    train = [TrainText("what does r1 < 0 and r2 > 0 indicate", "…\nA meniscus lens.", "A meniscus lens."),  # same Q, same A
             TrainText("When was the compound achromatic lens invented?", "…\nin 1733", "in 1733")]  # re-worded, same A
    r = leakage.classify(SHIFTS_EVAL, train, _toy_embed)
    assert [m.eval_id for m in r.verbatim] == ["e1"]
    assert [m.eval_id for m in r.near_verbatim] == ["e2"]


def test_same_question_with_another_answer_is_not_verbatim() -> None:
    train = [TrainText("When was the compound achromatic lens created?", "…\n1758", "1758")]
    assert leakage.classify(SHIFTS_EVAL[1:], train, _toy_embed).counts["verbatim"] == 0


def test_fact_class_needs_the_answer_and_the_same_subject() -> None:
    eval_items = [("e1", "What does a mooring permit cost?", ["240 VC"]),
                  ("e2", "Who runs the library?", ["Ada Brook"]),
                  ("e3", "When does the ferry leave?", ["9 am"])]
    sources = {"e1": ["harbour"], "e2": ["library"], "e3": ["ferry"]}
    train = [TrainText("Price of a summer berth?", "Price of a summer berth?\nIt costs 240 VC.", "It costs 240 VC.",
                       ("harbour",)),  # other words, same document, same answer: taught
             TrainText("Who founded the library?", "x", "Ada Brook founded it.", ("museum",)),  # answer, other subject
             TrainText("When does the ferry arrive?", "x", "At 11 am.", ("ferry",))]  # subject, other answer
    r = leakage.classify(eval_items, train, _toy_embed, eval_sources=sources)
    assert r.facts == {"e1": "taught", "e2": "not_taught", "e3": "not_taught"}
    assert r.fact_counts == {"taught": 1, "not_taught": 2}
    assert r.as_dict()["facts"] == r.facts  # every item is stored, not the first 20
    # without sources on a side, "same subject" falls back to question similarity
    r = leakage.classify(eval_items[:1], [TrainText("Mooring fee?", "x", "240 VC")], _toy_embed)
    assert r.facts == {"e1": "taught"}


@pytest.mark.slow
def test_demo_corpus_fact_classes_match_its_fact_ids() -> None:
    # The demo corpus records which fact each question asks: its two training paraphrases
    # teach every eval fact, though 19 eval questions have no paraphrase above the cosine threshold.
    from pipelines import corpus as corpora
    from pipelines import recipes
    from pipelines.config import Settings

    s = Settings()
    c = corpora.load("port-vellmar", s)
    r = recipes.check_leakage(c, recipes.build_items(c, ["qa"], s))
    taught = {q.fact_id for q in c.train}
    assert {q.id: q.fact_id in taught for q in c.eval} == {k: v == "taught" for k, v in r.facts.items()}
    assert r.fact_counts["taught"] == len(c.eval) and r.counts["unrelated"] > 0
