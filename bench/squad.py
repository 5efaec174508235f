"""The shared SQuAD subset as an indexed corpus, for the benches that measure on it."""

from __future__ import annotations

from pathlib import Path

from pipelines import corpus as corpora
from pipelines import importers, rag
from pipelines.config import Settings

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "squad-v1.1-dev" / "squad-dev-4-articles.json"


def indexed_squad(settings: Settings) -> corpora.Corpus:
    """Import the subset as corpus `squad` once, and bring its index up to date (incremental)."""
    if "squad" not in corpora.list_corpora(settings):
        importers.import_squad(SQUAD, settings, "squad")
    corpus = corpora.load("squad", settings)
    rag.build_index(corpus, settings)
    return corpus
