"""The freshness test: change facts in a copy of a corpus and measure which arms follow the edit.

For N eval facts whose answer the corpus states in exactly one document, a copy of that document
states a new value instead (a different number of the same length, or an invented name: nothing a
model can know). The copy's index starts from the original's vectors, so indexing it again embeds
only the edited documents — the rag arms' catch-up cost. Every arm is asked the changed questions:
does it give the new value, still the old one, or neither? Optionally the base model is then
fine-tuned on the edited documents with a documents-only recipe and asked again — the fine-tune's
catch-up cost, measured. The original corpus, its index and its fine-tune are only read.

Everything lives under `<data dir>/freshness/<id>/` (plan.json, the copy, answers.jsonl written as
they arrive, result.json); the same command again resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomli_w
from filelock import FileLock, Timeout

from eval.metrics import contains_reference, normalise_answer
from eval.stats import bootstrap_ci
from pipelines import corpus as corpora
from pipelines import files, finetune_runs, models, rag, serving, synthetic
from pipelines import finetune as ft
from pipelines.arms import ARM_NAMES, Arm, Missing, check_arm_name, finetuned_arms, get_arm, kind, ordered
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.errors import CorpusError, option
from pipelines.recipes import recipe_defaults
from pipelines.train import LoraParams, TrainingError

EDITABLE = (".md", ".txt", ".rst")  # plain text: a value is replaced where the document states it
SYLLABLES = ("vor", "kel", "dra", "min", "tas", "bru", "lon", "zet", "quar", "hel", "mot", "ris", "fen", "gal")
Log = Callable[[str], None]


@dataclass
class Edit:
    qid: str
    question: str
    doc_id: str
    old: str
    new: str
    replaced: int  # occurrences of the old value the copy changed


def corpus_fingerprint(root: Path) -> str:
    """A hash of every file of a corpus folder: equal before and after means nothing was touched."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def new_value(old: str, rng: random.Random, taken: str) -> str | None:
    """A value the model cannot know: numbers become other numbers of the same length; otherwise the
    last capitalised word (or the last word) becomes an invented one. None when nothing fits."""
    for _ in range(50):
        if re.search(r"\d", old):
            def swap(m: re.Match[str]) -> str:
                n = len(m.group())
                lo = 10 ** (n - 1) if n > 1 else 2
                v = str(rng.randint(lo, 10 ** n - 1))
                return v if v != m.group() else str(int(v) % (10 ** n - 1) + 1)
            value = re.sub(r"\d+", swap, old)
        else:
            words = old.split()
            caps = [i for i, w in enumerate(words) if w[:1].isupper()]
            i = caps[-1] if caps else len(words) - 1
            word = "".join(rng.choice(SYLLABLES) for _ in range(2 + rng.randint(0, 1)))
            words[i] = word.capitalize() if words[i][:1].isupper() else word
            value = " ".join(words)
        a, b = normalise_answer(old), normalise_answer(value)
        if a and b and a not in b and b not in a and b not in taken:
            return value
    return None


def plan_edits(corpus: Corpus, n: int, seed: int, settings: Settings) -> list[Edit]:
    """N eval facts stated in exactly one editable document, each given a new value (seeded)."""
    docs, _ = corpus.read_docs(int(settings.max_file_mb * 1e6))
    text = {d.id: d.text for d in docs}
    everything = normalise_answer(" ".join(text.values()))
    rng = random.Random(seed)
    candidates = sorted(corpus.eval, key=lambda q: q.id)
    rng.shuffle(candidates)
    edits: list[Edit] = []
    used_docs_values: set[tuple[str, str]] = set()
    for qa in candidates:
        if len(edits) == n:
            break
        old = qa.answers[0] if qa.answers else ""
        holders = [d for d, t in text.items() if old and old in t]
        if len(holders) != 1 or corpus.doc_paths[holders[0]].suffix.lower() not in EDITABLE:
            continue
        if any(normalise_answer(old) in normalise_answer(v) or normalise_answer(v) in normalise_answer(old)
               for d, v in used_docs_values if d == holders[0]):
            continue  # two edits of overlapping values in one document would undo each other
        raw = corpus.doc_paths[holders[0]].read_text(encoding="utf-8")
        value = new_value(old, rng, everything)
        if value is None or raw.count(old) == 0:
            continue
        edits.append(Edit(qa.id, qa.question, holders[0], old, value, raw.count(old)))
        used_docs_values.add((holders[0], old))
    if not edits:
        raise CorpusError(f"no eval fact of corpus '{corpus.name}' is stated word for word in exactly one text document",
                          "the freshness test edits a reference answer where a .md/.txt/.rst document states it")
    return edits


def work_dir(corpus: Corpus, n: int, seed: int, settings: Settings, fingerprint: str | None = None) -> Path:
    """Same corpus, edits, models and settings → same folder (a resume); another fine-tune or
    decoding → another test, never answers mixed from two."""
    tuned = finetune_runs.latest_run(corpus.name, settings)
    key = json.dumps({"corpus": corpus.name, "files": fingerprint or corpus_fingerprint(corpus.root), "n": n, "seed": seed,
                      "model": settings.model, "quant": settings.quantization, "decoding": settings.decoding_options(),
                      "retrieval": [settings.top_k, settings.retrieval_mode, settings.chunk_size, settings.chunk_overlap],
                      "ft": tuned["run_id"] if tuned else None,
                      "reference": [settings.reference_base_url, settings.reference_model]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return settings.data_dir.expanduser() / "freshness" / f"{models.safe_name(corpus.name)}-fresh-{digest}"


def make_copy(corpus: Corpus, edits: list[Edit], dest: Path, settings: Settings) -> Corpus:
    """The edited copy: every document, the edits applied, the changed questions with their new answers."""
    if not (dest / "corpus.toml").is_file():
        staging = dest.with_name(dest.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(corpus.root / "docs", staging / "docs")
        for e in edits:
            path = staging / corpus.doc_paths[e.doc_id].relative_to(corpus.root)
            path.write_text(path.read_text(encoding="utf-8").replace(e.old, e.new), encoding="utf-8")
        (staging / "qa").mkdir()
        by_id = {q.id: q for q in corpus.eval}
        rows = [{"id": e.qid, "question": e.question, "answers": [e.new], "source_ids": by_id[e.qid].source_ids}
                for e in edits]
        (staging / "qa" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        meta: dict[str, Any] = {"name": dest.parent.name, "description": f"{corpus.name} with {len(edits)} facts edited "
                                f"(ragft freshness test)", "source": f"edited copy of {corpus.name}: {corpus.source}",
                                "license": corpus.license}
        if corpus.retrieval:
            meta["retrieval"] = dict(corpus.retrieval)
        (staging / "corpus.toml").write_text(tomli_w.dumps(meta), encoding="utf-8")
        staging.rename(dest)  # the copy appears whole or not at all
    return corpora.load(str(dest), settings)


AS_IS, RETRAINED = "as is", "retrained"  # the arms right after the edit (index updated), and after a new fine-tune


def run_freshness(corpus: Corpus, settings: Settings, n: int = 20, seed: int = 42, arms: list[str] | None = None,
                  retrain: bool = True, recipes: list[str] | None = None, params: LoraParams | None = None,
                  price_per_hour: float = 0.10, log: Log = print, started: Log | None = None) -> dict[str, Any]:
    """Edit N facts in a copy, update its index, ask every arm the changed questions (and, with
    `retrain`, a fine-tune of the edited documents); returns (and writes) result.json."""
    names = ordered(check_arm_name(a) for a in (arms or ["base", "rag", "ft", "ft_rag"]))
    for name in names:
        if isinstance(r := kind(name).ready(settings, corpus), Missing):
            raise CorpusError(f"arm {name} needs {r.what}", f"run `ragft {r.step} {corpus.name}` first, or leave {name} out "
                              f"of {option('arms')}" if r.step != "reference" else "set the RAGFT_REFERENCE_* settings")
    fingerprint = corpus_fingerprint(corpus.root)
    wd = work_dir(corpus, n, seed, settings, fingerprint)
    wd.mkdir(parents=True, exist_ok=True)
    with _exclusive(wd, corpus):
        if started:
            started(wd.name)
        plan = files.read_json(wd / "plan.json")
        if plan is None:
            plan = {"corpus": corpus.name, "n": n, "seed": seed, "fingerprint": fingerprint,
                    "edits": [asdict(e) for e in plan_edits(corpus, n, seed, settings)]}
            files.write_json(wd / "plan.json", plan)
        edits = [Edit(**e) for e in plan["edits"]]
        log(f"{len(edits)} facts edited in a copy at {wd / 'corpus'} (the original is only read)")
        copy = make_copy(corpus, edits, wd / "corpus", settings)
        index = files.read_json(wd / "index.json")
        if index is None and any(kind(a).uses_retrieval for a in names):
            copied = rag.copy_index(corpus, copy, settings)
            report = rag.build_index(copy, settings)
            index = {"chunks_copied": copied, "changed_docs": report.changed, "chunks_embedded": report.chunks_embedded,
                     "seconds": report.seconds}
            files.write_json(wd / "index.json", index)
            log(f"re-indexed: {len(report.changed)} changed documents, {report.chunks_embedded} chunks embedded in "
                f"{report.seconds:.1f} s")
        server = serving.ensure_server(settings, log)
        models.ensure_served(models.get_spec(settings.model, settings), settings, server, log)
        answers_path = wd / "answers.jsonl"
        _ask_all(names, AS_IS, edits, answers_path, lambda a: get_arm(a, settings, server, copy, finetuned_on=corpus), log)
        tuned = files.read_json(wd / "finetune.json")
        if retrain and tuned is None and finetuned_arms(names):
            tuned = _retrain(corpus, copy, settings, server, recipes or ["synthetic"], params, log, wd / "retrain.json")
            files.write_json(wd / "finetune.json", tuned)
        if tuned is not None:
            _ask_all(finetuned_arms(names), RETRAINED, edits, answers_path,
                     lambda a: get_arm(a, settings, server, copy), log)
        result = summarise(plan, _read(answers_path), index, tuned, price_per_hour)
        result["original_unchanged"] = corpus_fingerprint(corpus.root) == fingerprint
        result["id"], result["finished"] = wd.name, time.time()
        files.write_json(wd / "result.json", result)
        return result


def _read(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill: that answer is asked again
    return rows


def _ask_all(names: list[str], stage: str, edits: list[Edit], path: Path, make: Callable[[str], Arm], log: Log) -> None:
    done = {(r["arm"], r["stage"], r["qid"]) for r in _read(path)}
    for name in names:
        todo = [e for e in edits if (name, stage, e.qid) not in done]
        if not todo:
            continue
        arm = make(name)
        for e in todo:
            a = arm.answer(e.question)
            row = {"arm": name, "stage": stage, "qid": e.qid, "model": a.model, "text": a.text, "error": a.error,
                   "total_ms": a.generation.total_ms + a.retrieval_ms}
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        log(f"{name} ({stage}, {arm.model}): answered {len(todo)} changed questions")


@contextlib.contextmanager
def _exclusive(wd: Path, corpus: Corpus) -> Iterator[None]:
    """One process at a time per freshness folder: two would append the same answers twice."""
    lock = FileLock(wd / ".lock", blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise CorpusError(f"this freshness test of corpus '{corpus.name}' ({wd.name}) is running in another process",
                          "wait for it to finish: the same command then shows its result without asking again") from None
    try:
        yield
    finally:
        lock.release()


def _retrain(original: Corpus, copy: Corpus, settings: Settings, server: serving.Server, recipes: list[str],
             params: LoraParams | None, log: Log, begun_path: Path) -> dict[str, Any]:
    """Fine-tune the base model on the edited documents (documents only), timed from the first teacher
    call to the served model. The teacher's pairs for unchanged chunks come from the original's cache.

    The run id is recorded the moment the fine-tune starts (`begun_path`): a killed retrain is
    continued from its last checkpoint by the same command, and one that was served before the kill
    is used as it is."""
    synthetic.copy_cache(original, copy, settings)
    d = recipe_defaults(recipes)
    chosen = params or LoraParams(epochs=d["epochs"], batch_size=d["batch_size"], max_length=d["max_length"])
    runs = finetune_runs.runs_dir(settings)
    begun = (files.read_json(begun_path) or {}).get("run_id")
    previous = finetune_runs.load_run(runs / begun) if begun and (runs / begun / "run.json").is_file() else None
    if previous is None:
        begun = None  # never begun, or its folder was removed: start afresh
    t0 = time.perf_counter()
    if previous is not None and previous.get("status") == "served":
        record = previous
    else:
        if begun:
            log(f"continuing the interrupted retrain {begun} from its last checkpoint")
        record = ft.finetune(copy, settings, server, recipes, chosen, log=log, resume_run=begun,
                             started=lambda run_id: files.write_json(begun_path, {"run_id": run_id}))
    if record.get("status") != "served":
        raise TrainingError(f"the retrain {record['run_id']} stopped before it was served (status {record.get('status')})",
                            "run the same command again: it continues from the last checkpoint")
    wall = time.perf_counter() - t0
    if begun:  # the time before the interruption is known only for training and export
        wall = max(wall, record["training"]["wall_s"] + record.get("export_s", 0.0))
    return {"run_id": record["run_id"], "recipes": record["recipes"], "model": record.get("ollama_model"), "wall_s": wall,
            "training_s": record["training"]["wall_s"], "export_s": record.get("export_s", 0.0),
            "examples": record.get("n_examples"), "teacher": settings.teacher_model or settings.model,
            "resumed": bool(begun)}


def summarise(plan: dict[str, Any], rows: list[dict[str, Any]], index: dict[str, Any] | None,
              tuned: dict[str, Any] | None, price_per_hour: float) -> dict[str, Any]:
    """Per arm and stage: share giving the new value, the old one, or neither (bootstrap 95% CIs), and
    what it cost the arm to catch up."""
    by_q = {e["qid"]: e for e in plan["edits"]}
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["qid"] in by_q:
            per.setdefault((r["arm"], r["stage"]), []).append(r)
    out = []
    for (arm, stage), rs in sorted(per.items(), key=lambda kv: (kv[0][1] != AS_IS, ARM_NAMES.index(kv[0][0]))):
        new = [contains_reference(r["text"], [by_q[r["qid"]]["new"]]) for r in rs]
        old = [0.0 if n else contains_reference(r["text"], [by_q[r["qid"]]["old"]]) for r, n in zip(rs, new, strict=True)]
        out.append({"arm": arm, "stage": stage, "n": len(rs), "follows": asdict(bootstrap_ci(new, seed=plan["seed"])),
                    "still_old": asdict(bootstrap_ci(old, seed=plan["seed"])),
                    "neither": sum(1 for a, b in zip(new, old, strict=True) if not a and not b),
                    "failed": sum(1 for r in rs if r.get("error")),
                    "catch_up": _catch_up(arm, stage, index, tuned, price_per_hour)})
    return {"corpus": plan["corpus"], "seed": plan["seed"], "edits": plan["edits"], "n_edits": len(plan["edits"]),
            "index": index, "finetune": tuned, "price_per_hour": price_per_hour, "arms": out}


def _catch_up(arm: str, stage: str, index: dict[str, Any] | None, tuned: dict[str, Any] | None,
              price_per_hour: float) -> dict[str, Any] | None:
    """What the arm needed to answer from the edited documents: nothing it can do (base, api), a
    re-index (the rag arms), or a fine-tune run on the edited documents (after it, the ft arms)."""
    k = kind(arm)
    seconds = 0.0
    what = []
    if k.uses_retrieval and index:
        seconds += index["seconds"]
        what.append(f"re-index {len(index['changed_docs'])} documents ({index['seconds']:.1f} s)")
    if k.uses_finetune and stage == RETRAINED and tuned:
        seconds += tuned["wall_s"]
        what.append(f"fine-tune on the edited documents ({tuned['wall_s'] / 60:.1f} min, {'+'.join(tuned['recipes'])})")
    if not what:
        return None
    return {"what": "; ".join(what), "seconds": seconds, "cost": seconds * price_per_hour / 3600}


def latest(corpus_name: str, settings: Settings) -> dict[str, Any] | None:
    """The newest freshness result of a corpus (for its reports), or None."""
    root = settings.data_dir.expanduser() / "freshness"
    found = [r for r in (files.read_json(p) for p in root.glob("*/result.json")) if r and r.get("corpus") == corpus_name]
    return max(found, key=lambda r: r.get("finished", 0), default=None)
