"""LoRA training on CPU (or CUDA when present): length-grouped batches, answer-only loss,
checkpoints that make `resume` reach the same weights as an uninterrupted run.

Plain data in, files out: examples are token ids with labels (-100 = no loss); the loop writes
loss.jsonl, checkpoints and the adapter into one run directory. Nothing here knows corpora.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import RagftError, option


class TrainingError(RagftError):
    """Training stopped (NaN loss, out of memory, bad parameters); checkpoints are kept."""


# Gradient checkpointing is on by default when a batch can hold more than this many tokens
# (batch_size × max_length): activation memory grows with both. Measured on SmolLM2-135M, raft
# examples up to 854 tokens: batch 8 × 1024 grew to 23.5 GB and the kernel killed it on a 24 GB
# machine; batch 4 × 1024 peaked at 16.2 GB without it (147 useful tok/s; 54 tok/s with it at batch 8).
GC_FROM_TOKENS = 4096


def default_checkpointing(batch_size: int, max_length: int) -> bool:
    return batch_size * max_length > GC_FROM_TOKENS


@dataclass
class LoraParams:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    target_modules: str = "all-linear"
    epochs: int = 5
    lr: float = 1e-3
    max_length: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 42
    checkpoint_every: int = 20  # optimizer steps
    warmup_ratio: float = 0.05
    # Recompute each layer's activations in the backward pass instead of keeping them all.
    # None: default_checkpointing(batch_size, max_length).
    gradient_checkpointing: bool | None = None

    @property
    def checkpointing(self) -> bool:
        if self.gradient_checkpointing is None:
            return default_checkpointing(self.batch_size, self.max_length)
        return self.gradient_checkpointing

    def validate(self) -> None:
        for name in ("r", "alpha", "epochs", "max_length", "batch_size", "grad_accum", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise TrainingError(f"{option(name)} must be positive, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise TrainingError(f"{option('lr')} must be in (0, 1), got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise TrainingError(f"{option('dropout')} must be in [0, 1), got {self.dropout}")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 where no loss is taken


@dataclass
class StepLog:
    step: int
    epoch: int
    loss: float
    lr: float
    tokens: int
    elapsed_s: float


Progress = Callable[[int, int, float], None]  # (step, total steps, loss)


def make_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Length-grouped batches: shuffle, sort within windows of 50 batches, shuffle the batches.

    Examples of similar length share a batch, so padding (wasted compute) stays small, while the
    seeded shuffles keep the order random but reproducible per epoch (resume depends on it).
    """
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    grouped: list[int] = []
    for s in range(0, len(order), window):
        grouped += sorted(order[s:s + window], key=lambda i: lengths[i])
    batches = [grouped[s:s + batch_size] for s in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@dataclass(frozen=True)
class Device:
    """Where LoRA trains and in which precision its forward pass runs."""

    name: str  # "cpu" | "cuda"
    autocast_bf16: bool  # master weights stay fp32; only the forward pass runs in bf16
    why: str


def choose_device(requested: str, cuda_available: bool, bf16_supported: bool) -> Device:
    """Pure choice of the training device, testable without a GPU.

    `auto` takes CUDA when torch sees it. bf16 autocast is used only where the GPU supports it
    (Ampere and later): fp16 autocast would need a loss scaler, and fp32 is always correct.
    CPU training stays fp32 — bf16 matmuls on CPUs without AMX/AVX512-BF16 are slower, and
    CPUs of one kind differ in that.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise TrainingError(f"train device '{requested}' is unknown", "use auto, cpu or cuda")
    if requested == "cpu" or (requested == "auto" and not cuda_available):
        return Device("cpu", False, "requested" if requested == "cpu" else "no CUDA device visible to torch")
    if not cuda_available:
        raise TrainingError("train device 'cuda' was requested but torch sees no CUDA device",
                            "install a CUDA build of torch, or set RAGFT_TRAIN_DEVICE=auto")
    if bf16_supported:
        return Device("cuda", True, "CUDA with bf16 support: bf16 autocast, fp32 master weights")
    return Device("cuda", False, "CUDA without bf16 support: fp32")


def detect_device(requested: str) -> Device:
    import torch

    cuda = torch.cuda.is_available()
    return choose_device(requested, cuda, cuda and torch.cuda.is_bf16_supported())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_lora(
    base_dir: Path,
    examples: list[Example],
    params: LoraParams,
    run_dir: Path,
    threads: int,
    resume: bool = False,
    progress: Progress | None = None,
    stop_after_steps: int | None = None,  # for interruption tests and dry runs
    device_request: str = "auto",
) -> dict[str, Any]:
    """Train a LoRA adapter on `examples`; returns the measurements of the run."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    params.validate()
    if not examples:
        raise TrainingError("no training examples", "choose a recipe the corpus has data for")
    torch.set_num_threads(threads)  # deliberate: torch's default may oversubscribe 2 cores
    dev = detect_device(device_request)
    device = dev.name
    torch.manual_seed(params.seed)
    random.seed(params.seed)
    model, pad_id = _lora_model(base_dir, params, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=0.0)
    lengths = [len(e.input_ids) for e in examples]
    batches_per_epoch = math.ceil(len(examples) / params.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / params.grad_accum)
    total_steps = steps_per_epoch * params.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(params.warmup_ratio * total_steps), total_steps)

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoint"
    log_path = run_dir / "loss.jsonl"
    step, epoch0, batch0, tokens, elapsed0 = (_restore(ckpt_dir, model, optimizer, scheduler, log_path) if resume
                                              else (0, 0, 0, 0, 0.0))
    if step == 0:
        log_path.unlink(missing_ok=True)

    model.train()
    started = time.perf_counter() - elapsed0
    for epoch in range(epoch0, params.epochs):
        batches = make_batches(lengths, params.batch_size, params.seed, epoch)
        start_batch = batch0 if epoch == epoch0 else 0
        accum_loss, accum_n = 0.0, 0
        for b in range(start_batch, len(batches)):
            batch = _collate([examples[i] for i in batches[b]], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = _backward(model, batch, dev, params, step, ckpt_dir)
            tokens += int(batch["attention_mask"].sum())
            accum_loss += float(loss.detach())
            accum_n += 1
            if accum_n == params.grad_accum or b == len(batches) - 1:
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                entry = StepLog(step, epoch, accum_loss / accum_n, scheduler.get_last_lr()[0], tokens,
                                time.perf_counter() - started)
                with log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(entry)) + "\n")
                accum_loss, accum_n = 0.0, 0
                if progress:
                    progress(step, total_steps, entry.loss)
                last = epoch == params.epochs - 1 and b == len(batches) - 1
                if step % params.checkpoint_every == 0 or last or step == stop_after_steps:
                    _checkpoint(ckpt_dir, model, optimizer, scheduler, step, epoch, b + 1, tokens,
                                time.perf_counter() - started, len(batches))
                if stop_after_steps is not None and step >= stop_after_steps and not last:
                    return {"status": "interrupted", "step": step}
    wall = time.perf_counter() - started
    adapter_dir = run_dir / "adapter"
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(str(adapter_dir))
    return {
        "status": "trained", "steps": step, "total_steps": total_steps, "examples": len(examples),
        "train_tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1) if wall else 0.0,
        "peak_rss_mb": round(peak_rss_mb(), 1), "gradient_checkpointing": params.checkpointing,
        "device": device, "bf16_autocast": dev.autocast_bf16, "threads": threads,
        "final_loss": _last_loss(log_path), "params": asdict(params),
    }


def _lora_model(base_dir: Path, params: LoraParams, device: str) -> tuple[Any, int]:
    """The base model with fresh LoRA adapters on `params.target_modules`, and its padding token id."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = model.to(device)
    if params.checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
                                             target_modules=params.target_modules, task_type="CAUSAL_LM"))
    return model, int(pad_id)


def _restore(ckpt_dir: Path, model: Any, optimizer: Any, scheduler: Any, log_path: Path) -> tuple[int, int, int, int, float]:
    """Continue from the last checkpoint (step, epoch, batch, tokens, elapsed s); from the start without one."""
    import torch
    from peft import set_peft_model_state_dict

    if not (ckpt_dir / "state.pt").is_file():
        return 0, 0, 0, 0, 0.0
    try:  # tensors and numbers only: a pickled object planted in the checkpoint is refused, never run
        state = torch.load(ckpt_dir / "state.pt", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TrainingError(f"the checkpoint {ckpt_dir / 'state.pt'} holds more than tensors and numbers; "
                            "ragft does not load it", f"delete {ckpt_dir} to train this run from the start") from exc
    set_peft_model_state_dict(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    _truncate_log(log_path, state["step"])
    return state["step"], state["epoch"], state["batch"], state["tokens"], state["elapsed_s"]


def _backward(model: Any, batch: dict[str, Any], dev: Device, params: LoraParams, step: int, ckpt_dir: Path) -> Any:
    """Forward and backward one micro-batch; a loss that is not finite or memory that runs out stops the run."""
    import torch

    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.autocast_bf16):
            loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at step {step + 1}",
                                f"lower {option('lr')} (now {params.lr}); checkpoints are kept in {ckpt_dir}")
        (loss / params.grad_accum).backward()
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        raise TrainingError(f"out of memory at step {step + 1}",
                            f"lower {option('batch_size')} or {option('max_length')}; "
                            f"checkpoints are kept in {ckpt_dir}") from exc
    return loss


def _checkpoint(ckpt_dir: Path, model: Any, optimizer: Any, scheduler: Any, step: int, epoch: int, batch: int,
                tokens: int, elapsed: float, n_batches: int) -> None:
    import torch
    from peft import get_peft_model_state_dict

    if batch >= n_batches:  # the epoch is done: resume at the start of the next one
        epoch, batch = epoch + 1, 0
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / "state.pt.tmp"
    torch.save({"adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step, "epoch": epoch,
                "batch": batch, "tokens": tokens, "elapsed_s": elapsed}, tmp)
    tmp.replace(ckpt_dir / "state.pt")  # atomic: a kill mid-write leaves the previous checkpoint


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _last_loss(path: Path) -> float | None:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line] if path.exists() else []
    return json.loads(lines[-1])["loss"] if lines else None


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Base weights + LoRA → plain safetensors + tokenizer (what Ollama imports)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return out_dir
