"""Training benchmark: useful (non-pad) training tokens/s and peak memory of ragft's LoRA loop
(length-grouped batches, padding to the batch's longest example) vs. a naive HF Trainer that
pads every batch to max length. Same model, LoRA config, examples, batch size and threads;
each variant runs in its own process so peak RSS is its own. Run with `make bench`.

Two example sets: `qa` + `docs` (short QA turns and document chunks, max length 256) and `raft`
(the rag arm's prompt with k passages per question, max length 1024: fewer, longer examples).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.squad import SQUAD, indexed_squad  # noqa: E402

STEPS = 8
# example set → (max length, batch size): each at the defaults `ragft finetune` trains it with
RECIPES = {"qa,docs": (256, 8), "raft": (1024, 4)}


def _examples(recipes: str):
    from transformers import AutoTokenizer

    from pipelines import corpus as corpora
    from pipelines import importers, models
    from pipelines import recipes as training_recipes
    from pipelines.config import load_settings

    settings = load_settings()
    base = models.ensure_hf_weights(models.get_spec(settings.model, settings), settings)
    with tempfile.TemporaryDirectory() as tmp:
        s = settings.model_copy(update={"data_dir": Path(tmp)})
        c = indexed_squad(s) if "raft" in recipes else corpora.load(str(importers.import_squad(SQUAD, s, "squad")), s)
        items = training_recipes.build_items(c, recipes.split(","), s)
    return base, training_recipes.tokenize(items, AutoTokenizer.from_pretrained(base), RECIPES[recipes][0]), settings.num_threads


def run_ours(recipes: str) -> dict:
    from pipelines.train import LoraParams, train_lora

    base, examples, threads = _examples(recipes)
    with tempfile.TemporaryDirectory() as tmp:
        max_len, batch = RECIPES[recipes]
        train_lora(base, examples, LoraParams(batch_size=batch, max_length=max_len, checkpoint_every=10**6),
                   Path(tmp), threads, stop_after_steps=STEPS)
        last = json.loads((Path(tmp) / "loss.jsonl").read_text().splitlines()[-1])
    return {"tokens": last["tokens"], "seconds": last["elapsed_s"]}


def run_naive(recipes: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from pipelines.train import default_checkpointing

    base, examples, threads = _examples(recipes)
    max_len, batch = RECIPES[recipes]
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(base)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    import random

    random.Random(42).shuffle(examples)
    examples = examples[:STEPS * batch]  # one epoch of exactly STEPS batches: every row is seen once
    rows = []
    for e in examples:  # pad every example to max length, as a plain tokenizer(padding="max_length") would
        n = len(e.input_ids)
        rows.append({"input_ids": e.input_ids + [pad] * (max_len - n), "labels": e.labels + [-100] * (max_len - n),
                     "attention_mask": [1] * n + [0] * (max_len - n)})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))

    def collate(batch):
        return {k: torch.tensor([r[k] for r in batch]) for k in batch[0]}

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=STEPS, learning_rate=1e-3,
                                 report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=42,
                                 dataloader_num_workers=0, remove_unused_columns=False,
                                 # the same memory strategy as ragft's loop (LoraParams.checkpointing)
                                 gradient_checkpointing=default_checkpointing(batch, max_len),
                                 gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    tokens = sum(sum(r["attention_mask"]) for r in rows)
    return {"tokens": tokens, "seconds": seconds}


def main() -> None:
    if len(sys.argv) > 2:
        out = run_ours(sys.argv[2]) if sys.argv[1] == "ours" else run_naive(sys.argv[2])
        import resource

        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out))
        return
    results: dict[str, dict] = {}
    labels = {"ours": "ragft (length-grouped, dynamic pad)", "naive": "HF Trainer, padded to max length"}
    chosen = sys.argv[1:] or list(RECIPES)  # e.g. `python bench/bench_train.py raft`
    for recipes, (max_len, batch) in ((r, RECIPES[r]) for r in chosen):
        per = results.setdefault(recipes, {})
        for variant in ("ours", "naive"):
            proc = subprocess.run([sys.executable, __file__, variant, recipes], capture_output=True, text=True, check=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            per[variant] = json.loads(line[7:])
        print(f"\ntraining benchmark · SmolLM2-135M · LoRA r=32 all-linear · batch {batch} · {STEPS} steps · "
              f"SQuAD subset {recipes} examples, max length {max_len}")
        print(f"{'variant':<34} {'useful tokens':>13} {'seconds':>8} {'tokens/s':>9} {'peak RSS MB':>12}")
        for v, r in per.items():
            if isinstance(r, dict):
                r["tokens_per_s"] = r["tokens"] / r["seconds"]
                print(f"{labels[v]:<34} {r['tokens']:>13} {r['seconds']:>8.1f} {r['tokens_per_s']:>9.1f} "
                      f"{r['peak_rss_mb']:>12.0f}")
        per["ratio"] = per["ours"]["tokens_per_s"] / per["naive"]["tokens_per_s"]
        print(f"ratio ragft / naive useful tokens/s ({recipes}): {per['ratio']:.2f}x")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / "train.json"
    kept = json.loads(path.read_text()) if path.is_file() else {}  # a one-set run keeps the other set's numbers
    path.write_text(json.dumps({**kept, **results}, indent=1))


if __name__ == "__main__":
    main()
