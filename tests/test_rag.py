"""The RAG store and retriever against real ChromaDB and the real MiniLM; the rag arm against real Ollama."""

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pipelines import corpus as corpora
from pipelines import procs, prompts, rag, serving
from pipelines.arms import get_arm
from pipelines.config import Settings
from pipelines.errors import CorpusError
from tests.helpers import make_corpus

pytestmark = pytest.mark.slow


@pytest.fixture
def kelmouth(tmp_path: Path, settings: Settings) -> corpora.Corpus:
    return corpora.load(str(make_corpus(tmp_path / "kelmouth")), settings)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_known_source_is_retrieved_first(kelmouth: corpora.Corpus, settings: Settings, mode: str) -> None:
    rag.build_index(kelmouth, settings)
    for qa in kelmouth.eval:
        hits, ms = rag.retrieve(kelmouth, qa.question, settings, k=2, mode=mode)
        assert hits[0].doc_id == qa.source_ids[0], (mode, qa.question, [h.id for h in hits])
        assert ms > 0 and len(hits) == 2 and len({h.id for h in hits}) == 2


def test_index_is_incremental(kelmouth: corpora.Corpus, settings: Settings) -> None:
    first = rag.build_index(kelmouth, settings)
    assert sorted(first.added) == ["festival", "harbour", "library"] and first.chunks_total == first.chunks_embedded == 3
    again = rag.build_index(kelmouth, settings)
    assert (again.added, again.changed, again.removed, again.unchanged, again.chunks_embedded) == ([], [], [], 3, 0)

    harbour = kelmouth.doc_paths["harbour"]
    harbour.write_text(harbour.read_text() + " The harbour office closes at 17:00.")
    (kelmouth.root / "docs" / "library.html").unlink()
    changed = rag.build_index(corpora.load(str(kelmouth.root), settings), settings)
    assert changed.changed == ["harbour"] and changed.removed == ["library"] and changed.unchanged == 1
    assert changed.chunks_embedded == 1 and changed.chunks_total == 2
    hits, _ = rag.retrieve(kelmouth, "When does the harbour office close?", settings, k=1)
    assert "17:00" in hits[0].text


def test_bad_new_file_keeps_what_was_indexed(kelmouth: corpora.Corpus, settings: Settings) -> None:
    rag.build_index(kelmouth, settings)
    kelmouth.doc_paths["harbour"].write_bytes(b"\x00\x01binary now")
    (kelmouth.root / "docs" / "notes.txt").write_bytes("na\u00efve".encode("latin-1"))
    report = rag.build_index(corpora.load(str(kelmouth.root), settings), settings)
    assert report.removed == [] and report.chunks_total == 3
    assert any("binary data" in p for p in report.problems) and any("not UTF-8" in p for p in report.problems)
    assert any("kept the previously indexed version of: harbour" in p for p in report.problems)
    hits, _ = rag.retrieve(kelmouth, "Who is the harbour master?", settings, k=1)
    assert "Ida Brandt" in hits[0].text


def test_retrieve_before_index_says_what_to_do(kelmouth: corpora.Corpus, settings: Settings) -> None:
    with pytest.raises(CorpusError, match="run `ragft index"):
        rag.retrieve(kelmouth, "anything", settings)


def test_collection_names_are_valid_for_chroma(settings: Settings) -> None:
    cfg = rag.RetrievalConfig.for_corpus(None, settings)
    name = rag.collection_name("My Corpus/../x", cfg)
    assert name == "my-corpus-..-x.all-minilm-l6-v2.c256o32" or name.replace(".", "").replace("-", "").isalnum()
    assert 3 <= len(name) <= 512


def test_long_corpus_names_keep_their_chunking_apart_and_chroma_takes_them(tmp_path: Path) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    long = "quarterly-maintenance-reports-" * 4 + "x."
    names = {rag.collection_name(long, rag.RetrievalConfig("hybrid", 3, size, 32)) for size in (256, 512)}
    assert len(names) == 2  # the chunking survives truncation (in the name's hash)
    client = chromadb.PersistentClient(str(tmp_path / "c"), ChromaSettings(anonymized_telemetry=False))
    for name in names:
        assert len(name) <= 80 and name[-1].isalnum()
        client.get_or_create_collection(name)  # Chroma refuses names ending in '.' or '-'


def test_chroma_server_through_http_client(kelmouth: corpora.Corpus, settings: Settings, tmp_path: Path) -> None:
    chroma = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "chroma"
    exe = str(chroma) if chroma.is_file() else str(Path(__import__("sys").executable).parent / "chroma")
    port = procs.free_port()
    proc = subprocess.Popen([exe, "run", "--path", str(tmp_path / "chroma-server"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        remote = settings.model_copy(update={"chroma_url": f"http://127.0.0.1:{port}"})
        report = rag.build_index(kelmouth, remote)
        assert report.chunks_total == 3
        hits, _ = rag.retrieve(kelmouth, "Who is the harbour master of Kelmouth?", remote, k=1)
        assert hits[0].doc_id == "harbour"
        assert not (settings.chroma_dir / "chroma.sqlite3").exists()  # nothing went to the embedded store
    finally:
        proc.terminate()
        proc.wait(10)


def test_prompt_numbers_passages_with_sources() -> None:
    hits = [rag.Hit("a#0", "a", "Alpha text.", 0.9), rag.Hit("b#1", "b", "Beta text.", 0.5)]
    prompt = prompts.build_prompt("What?", hits)
    assert prompt.index("[2] (source: b)") < prompt.index("[1] (source: a)") < prompt.index("Question: What?")


@pytest.mark.ollama
def test_rag_arm_answers_from_passages(live_settings: Settings, ollama_server: serving.Server, base_model: str,
                                       tmp_path: Path) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load(str(make_corpus(tmp_path / "kelmouth")), s)
    rag.build_index(c, s)
    answer = get_arm("rag", s, ollama_server, c).answer("Who is the harbour master of Kelmouth?")
    assert answer.passages and answer.passages[0].source == "harbour"
    assert answer.retrieval_ms > 0 and answer.generation.output_tokens > 0 and answer.generation.ttft_ms > 0
    assert "Brandt" in answer.text
