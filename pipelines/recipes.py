"""Fine-tuning recipes: what a training example is made of, and the leakage guard over them.

A recipe turns a corpus into training items (qa, docs, synthetic, raft and its variants, replay,
synthetic-raft); the items are tokenised for the LoRA loop in `train.py`, and checked against the
eval set before any step is taken. Training, merging and serving are `finetune.py`; the run folder is `finetune_runs.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines import distill, embeddings, leakage, prompts, rag, serving, synthetic
from pipelines.config import Settings
from pipelines.corpus import QA, Corpus
from pipelines.errors import CorpusError, option
from pipelines.prompts import CLOSED_BOOK_SYSTEM
from pipelines.raft import RaftExample, raft_examples
from pipelines.train import Example, LoraParams, TrainingError

RECIPES = {
    "qa": "the corpus's qa/train.jsonl questions and answers, chat-formatted, loss on the answer only",
    "docs": "the corpus's chunks as plain text (continued pre-training), loss on every token",
    "synthetic": "question/answer pairs a teacher model writes from each chunk (documents only; answers kept when "
                 "they are a short span of their chunk), closed book like qa (pipelines/synthetic.py)",
    "raft": "qa/train.jsonl questions in the rag arm's prompt with k passages from the corpus's index (the one holding "
            "the answer among them for 80%, only distractors for the rest), short reference answer (pipelines/raft.py)",
    "raft-quote": "raft's prompts, the target the corpus's sentence that holds the answer, quoted (pipelines/raft.py)",
    "raft-self": "raft's prompts, the target the base model's own answer where it contains the reference, the reference "
                 "elsewhere (self-distillation: less forgetting; pipelines/distill.py)",
    "raft-sdft": "raft-self, and where the base model is wrong, its own rewording of the reference (shown the "
                 "reference, it answers in its own words); the reference where that fails (pipelines/distill.py)",
    "replay": "the qa/train.jsonl questions closed book, the target the base model's own answer whatever it says "
              "(self-rehearsal: holds closed-book behaviour where it was; train beside raft: raft,replay; "
              "pipelines/distill.py)",
    "synthetic-raft": "the teacher's pairs in the rag arm's prompt, like raft: the documents-only track, for a corpus "
                      "without training questions",
}
SYNTHETIC_KINDS = ("synthetic", "synthetic-raft")  # items a teacher wrote
SELF_DISTILLED = ("raft-self", "raft-sdft")  # targets the base model writes on the server
QUESTION_RAFT = ("raft", "raft-quote", *SELF_DISTILLED)  # the corpus's training questions in the rag prompt
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


def preview_recipes(recipes: list[str]) -> list[str]:
    """What can be guarded before training, without the server: teacher-written pairs do not exist yet,
    raft-self / raft-sdft ask raft's questions and replay qa's (only their targets' wording comes from the server)."""
    known = {**dict.fromkeys(SELF_DISTILLED, "raft"), "replay": "qa"}
    return list(dict.fromkeys(known.get(r, r) for r in recipes if r not in SYNTHETIC_KINDS))


def available_recipes(corpus: Corpus) -> list[str]:
    return (["qa", *QUESTION_RAFT, "replay"] if corpus.train else []) + ["docs", "synthetic", "synthetic-raft"]


def default_max_length(recipes: list[str]) -> int:
    return RAFT_MAX_LENGTH if _in_rag_prompt(recipes) else LoraParams().max_length


def _in_rag_prompt(recipes: list[str]) -> bool:
    return any(r in (*QUESTION_RAFT, "synthetic-raft") for r in recipes)


# raft's defaults, measured on the SQuAD subset (README → Evaluation results): one epoch of batches
# of 4 kept ft_rag above rag (0.39 vs 0.31) where qa's five epochs took it to 0.07; longer
# examples make each epoch ~2.5× the tokens of qa's.
RAFT_EPOCHS = 1
RAFT_BATCH_SIZE = 4


def default_recipes(corpus: Corpus, settings: Settings) -> list[str]:
    """raft + replay for a corpus with training questions and an index: raft keeps the model reading,
    where closed-book qa destroyed it, and replay keeps what it knew closed book, which raft alone
    cost (README → Evaluation results); qa otherwise (its error names the recipes that work without
    training questions)."""
    return ["raft", "replay"] if corpus.train and rag.index_record(corpus, settings) is not None else ["qa"]


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
        elif recipe in QUESTION_RAFT:
            if not corpus.train:
                raise CorpusError(f"corpus '{corpus.name}' has no qa/train.jsonl for the '{recipe}' recipe",
                                  "recipes that would work: docs, synthetic, synthetic-raft")
            if recipe in SELF_DISTILLED:
                items += self_items(corpus, settings, server, log, recipe)
            else:
                items += raft_items(corpus, corpus.train, settings, kind=recipe,
                                    answer_form="quote" if recipe == "raft-quote" else "short")
        elif recipe == "replay":
            if not corpus.train:
                raise CorpusError(f"corpus '{corpus.name}' has no qa/train.jsonl for the 'replay' recipe",
                                  "recipes that would work: docs, synthetic, synthetic-raft")
            items += replay_items(corpus, settings, server, log)
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


def _raft_examples(corpus: Corpus, questions: list[QA], settings: Settings, answer_form: str = "short"
                   ) -> list[RaftExample]:
    cfg = rag.RetrievalConfig.for_corpus(corpus, settings)
    return raft_examples(questions, lambda q, n: rag.retrieve(corpus, q, settings, k=n)[0], cfg.top_k,
                         seed=settings.seed, answer_form=answer_form)


def raft_items(corpus: Corpus, questions: list[QA], settings: Settings, kind: str = "raft",
               answer_form: str = "short") -> list[TrainItem]:
    """Training questions in the rag arm's prompt, passages from the corpus's own index (pipelines/raft.py)."""
    return [TrainItem(kind, e.question, e.answer, prompt=e.prompt, system=prompts.RAG_SYSTEM, sources=e.sources)
            for e in _raft_examples(corpus, questions, settings, answer_form)]


def self_items(corpus: Corpus, settings: Settings, server: serving.Server | None,
               log: Callable[[str], None] = print, recipe: str = "raft-self") -> list[TrainItem]:
    """raft's examples with the base model's own right answers (raft-sdft: and rewordings) as targets
    (pipelines/distill.py)."""
    if server is None:
        raise TrainingError(f"the {recipe} recipe needs the Ollama server (the base model answers its prompts there)",
                            "run `ragft setup`")
    examples = _raft_examples(corpus, corpus.train, settings)
    targets = distill.own_targets(corpus, examples, settings, server, log, rewrite=recipe == "raft-sdft")
    log(targets.summary(recipe, settings.model))
    return [TrainItem(recipe, e.question, answer, prompt=e.prompt, system=prompts.RAG_SYSTEM, sources=e.sources)
            for e, answer in zip(examples, targets.answers, strict=True)]


def replay_items(corpus: Corpus, settings: Settings, server: serving.Server | None,
                 log: Callable[[str], None] = print) -> list[TrainItem]:
    """The training questions closed book, the base model's own answers as targets (pipelines/distill.py)."""
    if server is None:
        raise TrainingError("the replay recipe needs the Ollama server (the base model answers its questions there)",
                            "run `ragft setup`")
    replay = distill.replay_targets(corpus, [q.question for q in corpus.train], settings, server, log)
    log(replay.summary(settings.model))
    return [TrainItem("replay", q.question, answer, sources=tuple(q.source_ids))
            for q, answer in zip(corpus.train, replay.answers, strict=True) if answer is not None]


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
                            f"raise {option('max_length')} to {max(too_long)} or more")
    return [e for e in out if any(x != -100 for x in e.labels)]


def check_leakage(corpus: Corpus, items: list[TrainItem], thresholds: leakage.Thresholds | None = None
                  ) -> leakage.LeakageReport:
    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(embeddings.sentence_model().encode(texts, normalize_embeddings=True, batch_size=64))

    eval_items = [(q.id, q.question, q.answers) for q in corpus.eval]
    return leakage.classify(eval_items, [it.guard_text() for it in items], embed, thresholds or leakage.Thresholds(),
                            {q.id: q.source_ids for q in corpus.eval})
