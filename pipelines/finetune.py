"""The fine-tuned arm: training data recipes, the leakage guard, LoRA training, merge, export.

A run lives in `<data dir>/finetune/<run id>/` (run.json, leakage.json, loss.jsonl, checkpoint/,
adapter/). The merged weights are served by the same Ollama as the base model, created with the
same quantisation, under a name that is never reused: `ragft-<base>-<corpus>-ft[-vN]`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from pipelines import embeddings, files, leakage, models, prompts, rag, serving, synthetic
from pipelines.config import Settings
from pipelines.corpus import QA, Corpus
from pipelines.errors import CorpusError, ModelPrepError
from pipelines.prompts import CLOSED_BOOK_SYSTEM
from pipelines.raft import raft_examples
from pipelines.train import Example, LoraParams, TrainingError, merge_adapter, train_lora

RECIPES = {
    "qa": "the corpus's qa/train.jsonl questions and answers, chat-formatted, loss on the answer only",
    "docs": "the corpus's chunks as plain text (continued pre-training), loss on every token",
    "synthetic": "question/answer pairs a teacher model writes from each chunk (documents only; answers kept when "
                 "they are a short span of their chunk), closed book like qa (pipelines/synthetic.py)",
    "raft": "qa/train.jsonl questions in the rag arm's prompt with k passages from the corpus's index (the one holding "
            "the answer among them for 80%, only distractors for the rest), short reference answer (pipelines/raft.py)",
    "synthetic-raft": "the teacher's pairs in the rag arm's prompt, like raft: the documents-only track, for a corpus "
                      "without training questions",
}
SYNTHETIC_KINDS = ("synthetic", "synthetic-raft")  # items a teacher wrote
# A raft example carries k passages: its prompt is the rag arm's, several hundred tokens long.
RAFT_MAX_LENGTH = 1024

@dataclass
class TrainItem:
    """One training example before tokenisation: chat (system/user/assistant) or plain text."""

    kind: str
    question: str | None
    answer: str | None
    text: str | None = None
    prompt: str | None = None  # the user turn when it is more than the question (raft: passages + question)
    system: str | None = None  # the system prompt when it is not the closed-book one
    sources: tuple[str, ...] = ()  # documents it was made from (the fact-level guard's "same subject")

    def guard_text(self) -> leakage.TrainText:
        full = self.text if self.text is not None else f"{self.question}\n{self.answer}"
        return leakage.TrainText(self.question, full, self.answer, self.sources)


def parse_recipes(spec: str) -> list[str]:
    names = [r.strip() for r in spec.split(",") if r.strip()]
    unknown = [r for r in names if r not in RECIPES]
    if unknown or not names:
        raise CorpusError(f"unknown recipe(s) {', '.join(unknown) or '(none)'}", f"known recipes: {', '.join(RECIPES)}")
    return names


def available_recipes(corpus: Corpus) -> list[str]:
    return (["qa", "raft"] if corpus.train else []) + ["docs", "synthetic", "synthetic-raft"]


def default_max_length(recipes: list[str]) -> int:
    return RAFT_MAX_LENGTH if _in_rag_prompt(recipes) else LoraParams().max_length


def _in_rag_prompt(recipes: list[str]) -> bool:
    return any(r in ("raft", "synthetic-raft") for r in recipes)


# raft's defaults, measured on the SQuAD subset (README → Evaluation results): one epoch of batches
# of 4 kept ft_rag above rag (0.39 vs 0.31) where qa's five epochs took it to 0.07; longer
# examples make each epoch ~2.5× the tokens of qa's.
RAFT_EPOCHS = 1
RAFT_BATCH_SIZE = 4


def default_recipes(corpus: Corpus, settings: Settings) -> list[str]:
    """raft for a corpus with training questions and an index (it keeps the model reading, where
    closed-book qa destroyed it); qa otherwise (its error names the recipes that work without
    training questions)."""
    return ["raft"] if corpus.train and rag.index_record(corpus, settings) is not None else ["qa"]


def recipe_defaults(recipes: list[str]) -> dict[str, int]:
    """epochs, batch_size and max_length a recipe mix trains with unless the user says otherwise."""
    plain = LoraParams()
    if _in_rag_prompt(recipes):
        return {"epochs": RAFT_EPOCHS, "batch_size": RAFT_BATCH_SIZE, "max_length": RAFT_MAX_LENGTH}
    return {"epochs": plain.epochs, "batch_size": plain.batch_size, "max_length": plain.max_length}


def build_items(corpus: Corpus, recipes: list[str], settings: Settings, server: serving.Server | None = None,
                log: Callable[[str], None] = print) -> list[TrainItem]:
    items: list[TrainItem] = []
    for recipe in recipes:
        if recipe == "qa":
            if not corpus.train:
                raise CorpusError(f"corpus '{corpus.name}' has no qa/train.jsonl for the 'qa' recipe",
                                  f"recipes that would work: {', '.join(r for r in available_recipes(corpus) if r != 'qa')}")
            items += [TrainItem("qa", q.question, q.answer_sentence or q.answers[0], sources=tuple(q.source_ids))
                      for q in corpus.train]
        elif recipe == "raft":
            if not corpus.train:
                raise CorpusError(f"corpus '{corpus.name}' has no qa/train.jsonl for the 'raft' recipe",
                                  "recipes that would work: docs, synthetic, synthetic-raft")
            items += raft_items(corpus, corpus.train, settings)
        elif recipe == "docs":
            items += [TrainItem("docs", None, None, text, sources=(doc_id,)) for doc_id, text in _chunks(corpus, settings)]
        elif recipe in ("synthetic", "synthetic-raft"):
            if server is None:
                raise TrainingError(f"the {recipe} recipe needs the Ollama server (its teacher runs there)",
                                    "run `ragft setup`")
            written = synthetic.write_pairs(corpus, _chunks(corpus, settings), settings, server, log)
            log(written.summary())
            if recipe == "synthetic":
                items += [TrainItem("synthetic", p.question, p.answer, sources=(p.doc_id,)) for p in written.pairs]
            else:
                items += raft_items(corpus, written.as_qa(), settings, kind="synthetic-raft")
    return items


def raft_items(corpus: Corpus, questions: list[QA], settings: Settings, kind: str = "raft") -> list[TrainItem]:
    """Training questions in the rag arm's prompt, passages from the corpus's own index (pipelines/raft.py)."""
    cfg = rag.RetrievalConfig.for_corpus(corpus, settings)
    examples = raft_examples(questions, lambda q, n: rag.retrieve(corpus, q, settings, k=n)[0], cfg.top_k,
                             seed=settings.seed)
    return [TrainItem(kind, e.question, e.answer, prompt=e.prompt, system=prompts.RAG_SYSTEM, sources=e.sources)
            for e in examples]


# Mixed-in reading examples make up this share of the training set: enough to keep reading on
# passages of another domain in every batch, few enough that the corpus's own examples dominate.
MIX_SHARE = 0.25


def mix_items(other: Corpus, n_own: int, settings: Settings, share: float = MIX_SHARE) -> list[TrainItem]:
    """Reading examples from another corpus (its training questions, in the rag prompt with passages
    from its own index — never its eval questions), as `share` of the mixed set."""
    import random

    if not other.train:
        raise CorpusError(f"corpus '{other.name}' has no qa/train.jsonl to mix in",
                          "mix in a corpus with training questions (e.g. an imported SQuAD file)")
    want = round(n_own * share / (1 - share))
    questions = random.Random(settings.seed).sample(other.train, min(want, len(other.train)))
    return raft_items(other, questions, settings, kind="mix")


def _chunks(corpus: Corpus, settings: Settings) -> list[tuple[str, str]]:
    """(document id, chunk text) for every chunk of the corpus."""
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    docs, _ = corpus.read_docs(int(settings.max_file_mb * 1e6))
    splitter = SentenceSplitter(chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
    return [(n.ref_doc_id or "", n.get_content())
            for n in splitter.get_nodes_from_documents([Document(text=d.text, id_=d.id) for d in docs])]


def tokenize(items: list[TrainItem], tokenizer: Any, max_length: int) -> list[Example]:
    """Chat items: loss on the assistant turn only; text items: loss on every token."""
    out: list[Example] = []
    too_long: list[int] = []
    for it in items:
        if it.text is not None:
            ids = tokenizer(it.text + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"][:max_length]
            out.append(Example(ids, list(ids)))
            continue
        msgs = [{"role": "system", "content": it.system or CLOSED_BOOK_SYSTEM},
                {"role": "user", "content": it.prompt or it.question}]
        prompt_ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        full_ids = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": it.answer}],
                                                 tokenize=True, return_dict=False)
        if full_ids[:len(prompt_ids)] != prompt_ids:
            raise TrainingError("the chat template does not extend the prompt with the answer",
                                "use a model whose template renders turns in order")
        if len(full_ids) > max_length:  # cutting would drop the answer, the only part with a loss
            too_long.append(len(full_ids))
            continue
        labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
        out.append(Example(full_ids, labels[:len(full_ids)]))
    if too_long:
        raise TrainingError(f"{len(too_long)} of {len(items)} chat examples are longer than max_length {max_length} "
                            f"(the longest has {max(too_long)} tokens): cutting them would cut their answers",
                            f"raise --max-length to {max(too_long)} or more")
    return [e for e in out if any(x != -100 for x in e.labels)]


def check_leakage(corpus: Corpus, items: list[TrainItem], thresholds: leakage.Thresholds | None = None
                  ) -> leakage.LeakageReport:
    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(embeddings.sentence_model().encode(texts, normalize_embeddings=True, batch_size=64))

    eval_items = [(q.id, q.question, q.answers) for q in corpus.eval]
    return leakage.classify(eval_items, [it.guard_text() for it in items], embed, thresholds or leakage.Thresholds(),
                            {q.id: q.source_ids for q in corpus.eval})


# ---------------------------------------------------------------- runs


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser() / "finetune"


def new_run_id(corpus: Corpus, settings: Settings) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{models.safe_name(corpus.name)}-{settings.model}"


def make_run_dir(corpus: Corpus, settings: Settings) -> Path:
    """A new run folder, claimed atomically: two fine-tunes started in the same second (two tabs)
    get `…` and `…-2`, never one folder."""
    base = runs_dir(settings) / new_run_id(corpus, settings)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise TrainingError(f"cannot create a run folder next to {base}", "remove old runs from the finetune folder")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def resume_dir(run_id: str, corpus: Corpus, settings: Settings) -> Path:
    """The folder of an interrupted run to continue, after checking that it is one and that it
    trained this corpus on this base model."""
    root = runs_dir(settings)
    run_dir = root / run_id
    if not _RUN_ID.fullmatch(run_id) or run_dir.resolve().parent != root.resolve():
        raise TrainingError(f"'{run_id}' is not a fine-tune run id", "see `ragft finetune-runs` for run ids")
    if not (run_dir / "run.json").is_file():
        raise TrainingError(f"no fine-tune run '{run_id}'", "see `ragft finetune-runs` for run ids")
    record = load_run(run_dir)
    if record.get("corpus") != corpus.name or record.get("base_model") != settings.model:
        raise TrainingError(f"run '{run_id}' fine-tuned corpus '{record.get('corpus')}' on base model "
                            f"'{record.get('base_model')}', not '{corpus.name}' on '{settings.model}'",
                            f"resume it with its own corpus and model (--model {record.get('base_model')}), "
                            "or start a new fine-tune")
    return run_dir


def load_run(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "run.json").read_text(encoding="utf-8")))


def list_runs(settings: Settings) -> list[dict[str, Any]]:
    base = runs_dir(settings)
    runs = []
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if (d / "run.json").is_file():
            runs.append(load_run(d))
    return runs


def latest_run(corpus_name: str, settings: Settings) -> dict[str, Any] | None:
    done = [r for r in list_runs(settings) if r.get("corpus") == corpus_name and r.get("base_model") == settings.model
            and r.get("status") == "served" and r.get("quantization") == settings.quantization]
    return done[-1] if done else None


def find_run(corpus_name: str, settings: Settings, since: float) -> dict[str, Any] | None:
    """The newest run of a corpus created at or after `since` (a Unix time): the one a job just started."""
    found = [r for r in list_runs(settings) if r.get("corpus") == corpus_name
             and datetime.fromisoformat(str(r["created"])).timestamp() >= since - 2]  # clock granularity: seconds
    return found[-1] if found else None


def read_losses(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of loss.jsonl so far; a line the training loop is writing right now is skipped."""
    rows = []
    with contextlib.suppress(OSError):
        for line in (run_dir / "loss.jsonl").read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def training_progress(run_dir: Path) -> dict[str, Any]:
    """Where a run is, read from what it persists: run.json (status, examples, params) and loss.jsonl.

    The total step count is the training loop's own: ceil(ceil(examples / batch) / grad_accum) × epochs.
    """
    record = load_run(run_dir)
    rows = read_losses(run_dir)
    params = record.get("params") or {}
    total = (record.get("training") or {}).get("total_steps")
    if total is None and record.get("n_examples") and params:
        batches = math.ceil(record["n_examples"] / params["batch_size"])
        total = math.ceil(batches / params["grad_accum"]) * params["epochs"]
    return {"run_id": record["run_id"], "status": record.get("status"), "step": rows[-1]["step"] if rows else 0,
            "total_steps": total, "loss": rows[-1]["loss"] if rows else None, "losses": rows,
            "resumable": (run_dir / "checkpoint" / "state.pt").is_file() and record.get("status") != "served",
            "ollama_model": record.get("ollama_model")}


def unused_model_name(server: serving.Server, settings: Settings, base: str) -> str:
    """`base`, or `base-v2`, `-v3`, … : an existing Ollama model is never overwritten."""
    existing = serving.served_models(server, settings)
    name, version = base, 1
    while f"{name}:{settings.quantization.lower()}" in existing:
        version += 1
        name = f"{base}-v{version}"
    return f"{name}:{settings.quantization.lower()}"


def finetune(
    corpus: Corpus,
    settings: Settings,
    server: serving.Server,
    recipes: list[str],
    params: LoraParams,
    allow_leakage: bool = False,
    resume_run: str | None = None,
    mix: Corpus | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, float], None] | None = None,
    stop_after_steps: int | None = None,
    stage: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Recipes → leakage guard → LoRA → merge → `ollama create`; returns the stored run record.

    `stage` hears what happens before the first step ("checking leakage…"), for progress bars.
    `mix`: another corpus whose training questions are mixed in as reading examples (`mix_items`).
    """
    spec = models.get_spec(settings.model, settings)
    base_dir = models.ensure_hf_weights(spec, settings, log)
    if resume_run:
        run_dir = resume_dir(resume_run, corpus, settings)
        record = load_run(run_dir)
        recipes, params = record["recipes"], LoraParams(**record["params"])
        if record.get("mix"):
            from pipelines import corpus as corpora

            mix = corpora.load(record["mix"]["corpus"], settings)
    else:
        run_dir = make_run_dir(corpus, settings)
        record = {"run_id": run_dir.name, "corpus": corpus.name, "base_model": settings.model,
                  "quantization": settings.quantization, "recipes": recipes, "params": asdict(params),
                  "status": "preparing", "created": datetime.now(UTC).isoformat()}
    stage("building training data…")
    items = build_items(corpus, recipes, settings, server, log)
    if mix is not None:
        mixed = mix_items(mix, len(items), settings)
        record["mix"] = {"corpus": mix.name, "examples": len(mixed), "share": MIX_SHARE}
        log(f"mixing in {len(mixed)} reading examples from corpus '{mix.name}' (its training questions)")
        items += mixed
    stage("checking leakage…")
    report = check_leakage(corpus, items)
    # A teacher that never saw the eval questions can still write one of them (on the demo corpus
    # it wrote 3 of 53 word for word): such a pair is dropped, not trained on and not a reason to
    # refuse — the documents-only track measures what the documents teach, not recall of an answer.
    repeats = {m.train_text for m in report.verbatim + report.near_verbatim}
    dropped = [it for it in items if it.kind in SYNTHETIC_KINDS and it.guard_text().text in repeats]
    if dropped:
        items = [it for it in items if not (it.kind in SYNTHETIC_KINDS and it.guard_text().text in repeats)]
        log(f"dropped {len(dropped)} teacher-written pair(s) that repeat an eval question (verbatim or near-verbatim)")
        report = check_leakage(corpus, items)
    record["teacher_repeats_dropped"] = len(dropped)
    files.write_json(run_dir / "leakage.json", report.as_dict(), indent=1)
    record["leakage"] = report.counts
    record["fact_coverage"] = report.fact_counts
    record["allow_leakage"] = allow_leakage
    log(report.summary())
    for m in report.verbatim[:3]:
        log(f"  verbatim: eval {m.eval_id} '{m.eval_question}' ↔ '{m.train_text[:80]}'")
    for m in report.near_verbatim[:3]:
        log(f"  near-verbatim ({m.score:.2f}): eval {m.eval_id} '{m.eval_question}' ↔ '{m.train_text[:80]}'")
    if report.verbatim and not allow_leakage:
        record["status"] = "refused: leakage"
        files.write_json(run_dir / "run.json", record, indent=1)
        raise TrainingError(f"{len(report.verbatim)} eval question(s) appear verbatim in the training data "
                            f"(see {run_dir / 'leakage.json'})",
                            "remove them from the training data, or pass --allow-leakage (the run will say so)")

    from transformers import AutoTokenizer

    stage("tokenising…")
    examples = tokenize(items, AutoTokenizer.from_pretrained(base_dir), params.max_length)
    record.update(status="training", n_items=len(items), n_examples=len(examples))
    files.write_json(run_dir / "run.json", record, indent=1)
    log(f"training LoRA on {len(examples)} examples ({', '.join(recipes)}) → {run_dir}")
    stage("loading model…" if not resume_run else "loading checkpoint…")
    result = train_lora(base_dir, examples, params, run_dir, settings.num_threads, resume=bool(resume_run),
                        progress=progress, stop_after_steps=stop_after_steps,
                        device_request=settings.train_device)
    if result["status"] == "interrupted":
        record["status"] = "interrupted"
        files.write_json(run_dir / "run.json", record, indent=1)
        return record
    record["training"] = result
    record["status"] = "trained"
    write_loss_plot(run_dir)
    files.write_json(run_dir / "run.json", record, indent=1)
    stage("merging and serving…")
    record.update(export(run_dir, record, settings, server, log))
    files.write_json(run_dir / "run.json", record, indent=1)
    return record


def loss_chart(run_dir: Path) -> Any:
    """The loss curve of a run as an Altair chart (the CLI saves it as PNG; the app draws it live)."""
    import altair as alt
    import pandas as pd

    rows = read_losses(run_dir)
    return alt.Chart(pd.DataFrame(rows), title=f"training loss · {run_dir.name}").mark_line(point=True).encode(
        x=alt.X("step:Q", title="optimizer step"), y=alt.Y("loss:Q", title="loss"), tooltip=["step", "epoch", "loss", "lr"])


def write_loss_plot(run_dir: Path) -> Path:
    import vl_convert as vlc

    out = run_dir / "loss.png"
    out.write_bytes(vlc.vegalite_to_png(loss_chart(run_dir).to_json(), scale=1.5))
    return out


def export(run_dir: Path, record: dict[str, Any], settings: Settings, server: serving.Server,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Merge the adapter into the base weights and create the served model (same quantisation)."""
    spec = models.get_spec(record["base_model"], settings)
    base_dir = models.ensure_hf_weights(spec, settings, log)
    started = time.perf_counter()
    merged = merge_adapter(base_dir, run_dir / "adapter", run_dir / "merged")
    models.add_legacy_rope_keys(merged / "config.json")
    # Choosing an unused name and creating it is one step across processes: two fine-tunes of one
    # corpus finishing together would otherwise both pick the same free name, and the second
    # `ollama create` would overwrite the first's model.
    with FileLock(str(files.ensure_dir(settings.data_dir / "locks") / "ollama-create.lock")):
        name = record.get("ollama_model") or unused_model_name(
            server, settings, f"ragft-{spec.name}-{models.safe_name(record['corpus'])}-ft")
        models.create_checked(server, settings, name, models.modelfile(spec, merged), log)
    shutil.rmtree(merged, ignore_errors=True)  # the adapter is kept; merging again takes seconds
    log(f"served as {name} ({time.perf_counter() - started:.0f} s to merge and create)")
    return {"status": "served", "ollama_model": name, "export_s": round(time.perf_counter() - started, 1)}


def ensure_ft_model(corpus_name: str, settings: Settings, server: serving.Server) -> str:
    """The newest fine-tuned model for (corpus, base model), recreated on this server if missing."""
    run = latest_run(corpus_name, settings)
    if run is None:
        raise ModelPrepError(f"no fine-tuned {settings.model} model for corpus '{corpus_name}'",
                             f"run `ragft finetune {corpus_name}` first")
    if not serving.has_model(server, settings, run["ollama_model"]):
        export(runs_dir(settings) / run["run_id"], run, settings, server)
    return str(run["ollama_model"])
