"""Scores per answer. Always, with no LLM: ragas SemanticSimilarity (MiniLM), RougeScore, BleuScore,
CHRFScore, NonLLMStringSimilarity; SQuAD exact match, token F1, reference contained; for the rag
arms, whether a reference source was retrieved. A metric that fails is stored as a failure with
its error and counted in every summary — never dropped.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from eval.metrics import contains_reference, exact_match, token_f1
from eval.store import ScoreRow
from pipelines.arms import kind

SQUAD_METRICS = ("exact_match", "token_f1", "contains")
RAGAS_METRICS = ("semantic_similarity", "rouge_score", "bleu_score", "chrf_score", "non_llm_string_similarity")
RETRIEVAL_METRICS = ("retrieval_hit",)
PRIMARY = "contains"  # correct-or-not: drives McNemar, win/loss and the recommendation


def ragas_metrics() -> list[Any]:
    from ragas.metrics.collections import BleuScore, CHRFScore, NonLLMStringSimilarity, RougeScore, SemanticSimilarity

    from pipelines import embeddings

    return [SemanticSimilarity(embeddings=embeddings.ragas_embedding()), RougeScore(), BleuScore(), CHRFScore(),
            NonLLMStringSimilarity()]


def score_answer(arm: str, qid: str, text: str, references: Sequence[str], source_ids: Sequence[str],
                 passages: Sequence[dict[str, Any]], metrics: list[Any]) -> list[ScoreRow]:
    rows: list[ScoreRow] = [
        (arm, qid, "exact_match", exact_match(text, references), None),
        (arm, qid, "token_f1", token_f1(text, references), None),
        (arm, qid, "contains", contains_reference(text, references), None),
    ]
    if kind(arm).uses_retrieval:
        docs = {p.get("source") for p in passages}
        rows.append((arm, qid, "retrieval_hit", float(any(s in docs for s in source_ids)), None))
    reference = references[0] if references else ""
    for m in metrics:
        try:
            value = asyncio.run(m.ascore(reference=reference, response=text)).value
            if value is None or (isinstance(value, float) and math.isnan(value)):
                rows.append((arm, qid, m.name, None, "NaN"))
            else:
                rows.append((arm, qid, m.name, float(value), None))
        except Exception as exc:  # any metric failure is recorded, with its reason
            rows.append((arm, qid, m.name, None, f"{type(exc).__name__}: {exc}"[:300]))
    return rows
