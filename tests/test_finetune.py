"""Fine-tuning with real PEFT on the real base weights, exported to and answered by real Ollama."""

import json
from pathlib import Path

import pytest

from pipelines import corpus as corpora
from pipelines import finetune as ft
from pipelines import finetune_runs, generation, importers, models, recipes, serving
from pipelines.arms import get_arm
from pipelines.config import Settings
from pipelines.errors import CorpusError
from pipelines.train import Example, LoraParams, TrainingError, make_batches, train_lora
from tests.helpers import make_corpus

TRAIN = [
    ("Who serves as Kelmouth's harbour master?", "Ida Brandt", "The harbour master of Kelmouth is Ida Brandt.", "harbour"),
    ("Name the person in charge of the harbour in Kelmouth.", "Ida Brandt", "Ida Brandt is Kelmouth's harbour master.",
     "harbour"),
    ("Which month hosts the Zorblax lantern festival?", "March", "The Zorblax lantern festival is held in March.", "festival"),
    ("When in the year do lanterns fly in Kelmouth?", "March", "Kelmouth's lantern festival takes place in March.", "festival"),
]


def _corpus_with_train(root: Path, settings: Settings, extra: list[tuple[str, str, str, str]] = ()) -> corpora.Corpus:
    make_corpus(root)
    rows = [{"id": f"t{i}", "question": q, "answers": [a], "answer_sentence": s, "source_ids": [d]}
            for i, (q, a, s, d) in enumerate(TRAIN + list(extra))]
    (root / "qa" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corpora.load(str(root), settings)


def test_batches_are_length_grouped_and_reproducible() -> None:
    lengths = [5, 100, 6, 98, 7, 99, 5, 97]
    a = make_batches(lengths, 2, seed=1, epoch=0)
    assert a == make_batches(lengths, 2, seed=1, epoch=0) and a != make_batches(lengths, 2, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(8))
    for b in a:  # short with short, long with long
        assert max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 3


def test_qa_recipe_without_train_data_names_the_working_recipes(tmp_path: Path, settings: Settings) -> None:
    c = corpora.load(str(make_corpus(tmp_path / "k")), settings)
    with pytest.raises(CorpusError, match="no qa/train.jsonl") as exc:
        recipes.build_items(c, ["qa"], settings)
    assert "docs" in (exc.value.fix or "") and "synthetic" in (exc.value.fix or "")
    with pytest.raises(CorpusError, match="known recipes"):
        recipes.parse_recipes("qa,magic")


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(TrainingError, match="--batch-size must be positive"):
        LoraParams(batch_size=0).validate()
    with pytest.raises(TrainingError, match="--lr"):
        LoraParams(lr=5).validate()


@pytest.mark.slow
def test_answer_only_loss_masks_the_prompt(settings: Settings) -> None:
    from transformers import AutoTokenizer

    spec = models.get_spec("smollm2-135m", settings)
    base = models.ensure_hf_weights(spec, settings.model_copy(update={"cache_dir": _shared_cache()}))
    tok = AutoTokenizer.from_pretrained(base)
    (ex,) = recipes.tokenize([recipes.TrainItem("qa", "Who?", "Ida Brandt.")], tok, 256)
    answer = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != -100])
    assert answer.startswith("Ida Brandt.") and "Who?" not in answer
    assert "Who?" in tok.decode(ex.input_ids)


def _shared_cache() -> Path:
    from tests.conftest import SHARED_CACHE

    return SHARED_CACHE


@pytest.mark.slow
def test_resume_reaches_the_same_weights(tmp_path: Path, settings: Settings) -> None:
    import torch
    from safetensors.torch import load_file

    spec = models.get_spec("smollm2-135m", settings)
    base = models.ensure_hf_weights(spec, settings.model_copy(update={"cache_dir": _shared_cache()}))
    examples = [Example(list(range(10 + i, 30 + 3 * i)), list(range(10 + i, 30 + 3 * i))) for i in range(6)]
    params = LoraParams(r=4, alpha=8, epochs=2, batch_size=2, max_length=64, checkpoint_every=1, lr=5e-4)
    full = train_lora(base, examples, params, tmp_path / "full", threads=2)
    part = train_lora(base, examples, params, tmp_path / "part", threads=2, stop_after_steps=4)
    assert part == {"status": "interrupted", "step": 4}
    resumed = train_lora(base, examples, params, tmp_path / "part", threads=2, resume=True)
    assert full["steps"] == resumed["steps"] == 6 and full["train_tokens"] == resumed["train_tokens"]
    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "part" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    losses = [json.loads(x)["step"] for x in (tmp_path / "part" / "loss.jsonl").read_text().splitlines()]
    assert losses == [1, 2, 3, 4, 5, 6]  # no step logged twice


class _Planted:
    """What a tampered checkpoint could hold: unpickling it would run Path.touch."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_checkpoint_with_a_pickled_object_is_refused_not_run(tmp_path: Path, settings: Settings) -> None:
    import torch

    spec = models.get_spec("smollm2-135m", settings)
    base = models.ensure_hf_weights(spec, settings.model_copy(update={"cache_dir": _shared_cache()}))
    examples = [Example(list(range(10, 30)), list(range(10, 30))) for _ in range(4)]
    params = LoraParams(r=4, alpha=8, epochs=1, batch_size=2, max_length=64, checkpoint_every=1)
    assert train_lora(base, examples, params, tmp_path / "run", threads=2, stop_after_steps=1)["status"] == "interrupted"
    marker = tmp_path / "ran"
    torch.save({"step": 1, "payload": _Planted(marker)}, tmp_path / "run" / "checkpoint" / "state.pt")
    with pytest.raises(TrainingError, match="holds more than tensors and numbers") as exc:
        train_lora(base, examples, params, tmp_path / "run", threads=2, resume=True)
    assert not marker.exists() and "delete" in (exc.value.fix or "")


def test_run_folders_are_unique_and_resume_ids_are_checked(tmp_path: Path, settings: Settings) -> None:
    s = settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load(str(make_corpus(tmp_path / "k")), s)
    first, second = finetune_runs.make_run_dir(c, s), finetune_runs.make_run_dir(c, s)  # the same second, two tabs
    assert first != second and first.is_dir() and second.is_dir()
    for bad in ("../../etc", "a/b", ".hidden", "/abs"):
        with pytest.raises(TrainingError, match="is not a fine-tune run id"):
            finetune_runs.resume_dir(bad, c, s)
    other = corpora.load(str(make_corpus(tmp_path / "o", name="otherbay")), s)
    (second / "run.json").write_text(json.dumps({"run_id": second.name, "corpus": "otherbay", "base_model": s.model}))
    with pytest.raises(TrainingError, match="fine-tuned corpus 'otherbay'.*not 'kelmouth'"):
        finetune_runs.resume_dir(second.name, c, s)
    assert finetune_runs.resume_dir(second.name, other, s) == second
    with pytest.raises(TrainingError, match="base model 'smollm2-135m'.*on 'qwen2.5-coder-0.5b'"):
        finetune_runs.resume_dir(second.name, other, s.model_copy(update={"model": "qwen2.5-coder-0.5b"}))


@pytest.mark.slow
def test_verbatim_leakage_refuses_to_train(tmp_path: Path, live_settings: Settings) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    leak = ("Who is the harbour master of Kelmouth?", "Ida Brandt", "It is Ida Brandt.", "harbour")  # = eval q1
    c = _corpus_with_train(tmp_path / "k", s, [leak])
    with pytest.raises(TrainingError, match="1 eval question.s. appear verbatim") as exc:
        ft.finetune(c, s, None, ["qa"], LoraParams(epochs=1))  # type: ignore[arg-type]
    assert "--allow-leakage" in (exc.value.fix or "")
    (run,) = finetune_runs.list_runs(s)
    assert run["status"] == "refused: leakage" and run["leakage"]["verbatim"] == 1


@pytest.mark.slow
@pytest.mark.ollama
def test_finetune_merges_serves_and_answers(tmp_path: Path, live_settings: Settings, ollama_server: serving.Server,
                                           base_model: str) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = _corpus_with_train(tmp_path / "k", s)
    record = ft.finetune(c, s, ollama_server, ["qa"], LoraParams(epochs=10, batch_size=4, checkpoint_every=5))
    assert record["status"] == "served" and record["ollama_model"] == "ragft-smollm2-135m-kelmouth-ft:q8_0"
    stored = finetune_runs.load_run(finetune_runs.runs_dir(s) / record["run_id"])
    t = stored["training"]
    assert t["steps"] == 10 and t["train_tokens"] > 0 and t["tokens_per_s"] > 0 and t["peak_rss_mb"] > 0
    assert t["device"] == "cpu" and t["final_loss"] < 0.5 and stored["leakage"]["verbatim"] == 0
    assert (finetune_runs.runs_dir(s) / record["run_id"] / "adapter" / "adapter_model.safetensors").is_file()
    ft_answer = get_arm("ft", s, ollama_server, c).answer("Who is the harbour master of Kelmouth?")
    base_answer = get_arm("base", s, ollama_server, c).answer("Who is the harbour master of Kelmouth?")
    assert "Brandt" in ft_answer.text and "Brandt" not in base_answer.text  # knowledge went in
    # the same name is never reused: the next export gets a version suffix
    assert ft.unused_model_name(ollama_server, s, "ragft-smollm2-135m-kelmouth-ft") == \
        "ragft-smollm2-135m-kelmouth-ft-v2:q8_0"
    rag_ft = get_arm("ft_rag", s, ollama_server, c)
    assert rag_ft.model == record["ollama_model"]


@pytest.mark.slow
def test_nan_loss_stops_with_the_step(tmp_path: Path, settings: Settings) -> None:
    spec = models.get_spec("smollm2-135m", settings)
    base = models.ensure_hf_weights(spec, settings.model_copy(update={"cache_dir": _shared_cache()}))
    ok = Example(list(range(10, 30)), list(range(10, 30)))
    no_target = Example(list(range(10, 30)), [-100] * 20)  # a batch with nothing to learn: the mean loss is NaN
    params = LoraParams(r=4, epochs=1, batch_size=1, checkpoint_every=1, seed=3)
    with pytest.raises(TrainingError, match=r"the loss became nan at step \d") as exc:
        train_lora(base, [ok, no_target, ok], params, tmp_path / "run", threads=2)
    assert "lower --lr" in (exc.value.fix or "") and "checkpoint" in (exc.value.fix or "")


@pytest.mark.slow
@pytest.mark.ollama
def test_few_steps_on_the_demo_corpus(tmp_path: Path, live_settings: Settings, ollama_server: serving.Server,
                                      base_model: str) -> None:
    from safetensors.torch import load_file

    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load("port-vellmar", s)
    record = ft.finetune(c, s, ollama_server, ["qa"], LoraParams(epochs=1, batch_size=16, checkpoint_every=100))
    run_dir = finetune_runs.runs_dir(s) / record["run_id"]
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert any(float(t.abs().sum()) > 0 for k, t in adapter.items() if "lora_B" in k)  # B starts at zero
    assert record["status"] == "served" and generation.has_model(ollama_server, s, record["ollama_model"])
    assert get_arm("ft", s, ollama_server, c).answer("Who is the mayor of Port Vellmar?").text.strip()
    stored = finetune_runs.load_run(run_dir)
    assert stored["training"]["steps"] == 7 and stored["leakage"]["verbatim"] == 0
    assert (run_dir / "loss.png").stat().st_size > 1000 and (run_dir / "leakage.json").is_file()




@pytest.mark.slow
def test_squad_import_fine_tunes_without_allow_leakage(tmp_path: Path, live_settings: Settings, squad_file: Path) -> None:
    """The importer's own split (other questions on the same paragraphs) is honest data: training starts."""
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load(str(importers.import_squad(squad_file, s, "squad-check")), s)
    stages: list[str] = []
    record = ft.finetune(c, s, None, ["qa"], LoraParams(epochs=1, batch_size=4, checkpoint_every=100),  # type: ignore[arg-type]
                         allow_leakage=False, stop_after_steps=1, stage=stages.append)
    assert record["status"] == "interrupted" and record["allow_leakage"] is False
    assert record["leakage"]["verbatim"] == 0 and record["leakage"]["near_verbatim"] == 0
    assert finetune_runs.read_losses(finetune_runs.runs_dir(s) / record["run_id"])  # an optimizer step was taken
    assert stages[:2] == ["building training data…", "checking leakage…"] and "loading model…" in stages


@pytest.mark.parametrize(("requested", "cuda", "bf16", "expected"), [
    ("auto", False, False, ("cpu", False)),
    ("auto", True, True, ("cuda", True)),
    ("auto", True, False, ("cuda", False)),
    ("cpu", True, True, ("cpu", False)),
    ("cuda", True, True, ("cuda", True)),
])
def test_training_device_choice(requested: str, cuda: bool, bf16: bool, expected: tuple[str, bool]) -> None:
    from pipelines.train import choose_device

    dev = choose_device(requested, cuda, bf16)
    assert (dev.name, dev.autocast_bf16) == expected
    assert dev.why


def test_cuda_requested_without_a_gpu_names_the_fix() -> None:
    from pipelines.train import choose_device

    with pytest.raises(TrainingError) as err:
        choose_device("cuda", cuda_available=False, bf16_supported=False)
    assert "RAGFT_TRAIN_DEVICE=auto" in str(err.value.fix)
    with pytest.raises(TrainingError):
        choose_device("tpu", cuda_available=True, bf16_supported=True)


def test_raft_with_replay_is_the_default_for_a_corpus_with_an_index(tmp_path: Path, settings: Settings) -> None:
    from pipelines import rag

    c = _corpus_with_train(tmp_path / "k", settings)
    assert recipes.default_recipes(c, settings) == ["qa"]  # no index yet: raft could not show passages
    rag.build_index(c, settings)
    assert recipes.default_recipes(c, settings) == ["raft", "replay"]
    assert recipes.recipe_defaults(["raft", "replay"]) == {"epochs": 1, "batch_size": 4, "max_length": 1024}
    assert recipes.recipe_defaults(["raft"]) == {"epochs": 1, "batch_size": 4, "max_length": 1024}
    assert recipes.recipe_defaults(["qa"]) == {"epochs": 5, "batch_size": 8, "max_length": 256}
    no_train = corpora.load(str(make_corpus(tmp_path / "n", name="plain")), settings)
    rag.build_index(no_train, settings)
    assert recipes.default_recipes(no_train, settings) == ["qa"]  # whose error names the recipes that work


def test_gradient_checkpointing_follows_the_tokens_a_batch_can_hold() -> None:
    assert not LoraParams(batch_size=4, max_length=1024).checkpointing  # raft's default: 16 GB measured
    assert LoraParams(batch_size=8, max_length=1024).checkpointing  # killed at 23.5 GB without it
    assert not LoraParams().checkpointing  # qa: 8 × 256
    assert not LoraParams(batch_size=8, max_length=1024, gradient_checkpointing=False).checkpointing  # asked for
