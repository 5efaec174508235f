"""The `ragft` command line: a thin client of pipelines/ and eval/."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table

from pipelines import doctor, models, serving
from pipelines.arms import ARM_NAMES, BASE
from pipelines.config import Settings, load_settings
from pipelines.errors import RagftError

if TYPE_CHECKING:  # the CLI imports eval lazily: `ragft --help` stays fast
    from eval.records import Summary

app = typer.Typer(help="Should you use RAG, a LoRA fine-tune, or both? Measured on your documents.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
serve_app = typer.Typer(help="Start, stop or inspect ragft's Ollama server.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
corpus_app = typer.Typer(help="List, import and add corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
console = Console()
err = Console(stderr=True)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Base model name (see `ragft models`).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Override RAGFT_DATA_DIR.")]


def _settings(model: str | None = None, data_dir: Path | None = None) -> Settings:
    return load_settings(model=model, data_dir=data_dir)


def main() -> None:
    """Console-script entry: domain errors become one clear message and exit code 1."""
    try:
        app()
    except RagftError as exc:
        err.print(f"[bold red]error:[/] {esc(exc.message)}")
        if exc.fix:
            err.print(f"[yellow]fix:[/] {esc(exc.fix)}")
        sys.exit(1)


def _say(message: object) -> None:
    """A progress line from the core: plain text (it may carry file names and document text)."""
    console.print(esc(str(message)))


def _warn(message: object) -> None:
    err.print(esc(str(message)))


def _listing(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table when it fits the terminal, else one block per row: ids and model names are never cut.

    Users copy run ids into --resume and model names into `ollama run`; a table squeezed into
    80 columns would fold or cut exactly those strings.
    """
    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*map(esc, row))
    if console.measure(table, options=console.options.update(width=100_000)).maximum <= console.width:
        console.print(table)
        return
    console.print(f"[bold]{esc(title)}[/]")
    width = max(len(c) for c in columns[1:])
    for first, *rest in rows:
        console.print(f"[bold]{esc(first)}[/]", soft_wrap=True)
        for col, value in zip(columns[1:], rest, strict=True):
            console.print(f"  {col:<{width}}  {esc(value)}", soft_wrap=True, highlight=False)


@app.command("doctor")
def doctor_cmd(model: ModelOpt = None, data_dir: DataDirOpt = None) -> None:
    """Check Ollama, the models, torch and disk; exit 1 when something needed is missing."""
    settings = _settings(model, data_dir)
    checks = doctor.run_checks(settings)
    table = Table(title="ragft doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]missing[/]", esc(c.detail), esc(c.fix))
    console.print(table)
    if any(c.required and not c.ok for c in checks):
        raise typer.Exit(1)


@app.command("setup")
def setup_cmd(model: ModelOpt = None, data_dir: DataDirOpt = None) -> None:
    """Get Ollama (found or built), start it on 127.0.0.1 and prepare the base model."""
    from eval import services

    done = services.setup(_settings(model, data_dir), _say)
    console.print(f"ollama: {done.binary.path} (version {done.binary.version}, from {done.binary.source})")
    console.print(f"server: {done.server.url} (version {done.server.version})")
    console.print(f"[green]ready:[/] base model [bold]{done.model}[/] ({esc(done.spec.description)}; "
                  f"license {esc(done.spec.license)})")


models_app = typer.Typer(help="List the base models, or add your own (a GGUF file or HF folder).")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models_main(ctx: typer.Context, data_dir: DataDirOpt = None) -> None:
    """List the base models ragft knows and which are prepared and served (`models add` adds yours)."""
    if ctx.invoked_subcommand is None:
        models_cmd(data_dir)


@models_app.command("add")
def models_add_cmd(
    path: Annotated[Path, typer.Argument(help="A .gguf file or a Hugging Face model folder (safetensors + tokenizer).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name to use with --model, e.g. my-model.")],
    template: Annotated[str | None, typer.Option(
        help="Chat format when the model's own is not recognised: chatml, gemma, llama3 or phi3.")] = None,
    license: Annotated[str | None, typer.Option(help="The model's licence, shown in reports.")] = None,
    prepare: Annotated[bool, typer.Option(help="Convert and create it in Ollama now (else on first use).")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Register a model a team will deploy; it takes the built-in models' route (same quantisation, all four arms)."""
    from pipelines import local_models

    settings = _settings(None, data_dir)
    added = local_models.add_model(path, name, settings, template, license, builtin=tuple(models.REGISTRY))
    console.print(f"[green]added[/] {added.name}: {added.architecture} ({added.kind}, {added.template} chat format) "
                  f"from {added.path}")
    if prepare:
        server = serving.ensure_server(settings, _say)
        served = models.ensure_served(models.get_spec(name, settings), settings, server, _say)
        console.print(f"[green]ready:[/] {served}")
    console.print(f"use it with --model {name} (or RAGFT_MODEL={name})")


@models_app.command("list")
def models_cmd(data_dir: DataDirOpt = None) -> None:
    """List the base models ragft knows and which are prepared and served."""
    settings = _settings(None, data_dir)
    rows = [(str(r["model"]) + (" (default)" if r["default"] else ""), str(r["description"]),
             str(r.get("license", "")), "prepared" if r["prepared"] else "-", str(r["served as"]) if r["served"] else "-")
            for r in doctor.model_rows(settings, serving.running_server(settings))]
    _listing("base models", ("name", "description", "license", "weights", "served as"), rows)


@app.command("ask")
def ask_cmd(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    arm: Annotated[str, typer.Option("--arm", "-a", help=" | ".join(ARM_NAMES))] = BASE,
    corpus: Annotated[str | None, typer.Option("--corpus", "-c", help="Corpus for the rag arms.")] = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Answer one question with one arm, streaming it, then print the timings Ollama reports."""
    from eval import services

    result = services.ask(question, arm, _settings(model, data_dir), corpus,
                          on_token=lambda t: console.print(t, end="", markup=False, highlight=False), log=_warn).answer
    console.print()
    g = result.generation
    table = Table(show_header=False, title=f"arm {result.arm} · {result.model}")
    table.add_row("latency", f"{g.total_ms:.0f} ms")
    table.add_row("time to first token", f"{g.ttft_ms:.0f} ms")
    table.add_row("prompt tokens", f"{g.prompt_tokens} ({g.prompt_tokens_per_s:.0f} tok/s)")
    table.add_row("output tokens", f"{g.output_tokens}")
    table.add_row("decode speed", f"{g.tokens_per_s:.1f} tok/s")
    table.add_row("model load", f"{g.load_ms:.0f} ms")
    console.print(table)
    if result.passages:
        passages = Table(title=f"retrieved passages ({result.retrieval_ms:.0f} ms)")
        for col in ("#", "source", "score", "text"):
            passages.add_column(col, overflow="fold")
        for i, p in enumerate(result.passages, 1):
            passages.add_row(str(i), esc(p.id), f"{p.score:.3f}",
                              esc(p.text[:160].replace("\n", " ") + ("…" if len(p.text) > 160 else "")))
        console.print(passages)


@app.command("index")
def index_cmd(corpus: Annotated[str, typer.Argument(help="Corpus name or folder.")],
              rebuild: Annotated[bool, typer.Option(help="Move a damaged index store aside (kept, never deleted) and "
                                                          "build afresh.")] = False,
              data_dir: DataDirOpt = None) -> None:
    """Build or update a corpus's index (only new or changed documents are embedded)."""
    from rich.progress import Progress

    from eval import services

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("indexing", total=None)
        indexed = services.index(services.IndexSpec(corpus, rebuild), _settings(None, data_dir),
                                 lambda done, total, what: bar.update(task, completed=done, total=total, description=what))
    if indexed.moved_aside:
        err.print(f"the previous index store was moved to {indexed.moved_aside}")
    report = indexed.report
    for problem in report.problems:
        err.print(f"[yellow]warning:[/] {esc(problem)}")
    console.print(f"index [bold]{report.collection}[/]: {len(report.added)} added, {len(report.changed)} changed, "
                  f"{len(report.removed)} removed, {report.unchanged} unchanged docs; "
                  f"{report.chunks_embedded} chunks embedded, {report.chunks_total} in the index ({report.seconds:.1f} s)")


@app.command("finetune")
def finetune_cmd(
    corpus: Annotated[str, typer.Argument(help="Corpus name or folder.")],
    recipe: Annotated[str | None, typer.Option(
        help="Comma-separated: qa, raft, raft-quote, raft-self, raft-sdft, replay, docs, synthetic, synthetic-raft. "
             "Default: raft,replay when the corpus has training questions and an index, else qa.")] = None,
    teacher: Annotated[str | None, typer.Option(
        help="Model that writes the synthetic recipes' pairs (a ragft model such as qwen2.5-coder-1.5b, or a model "
             "on the Ollama server). Default: teacher_model from the config, else the base model.")] = None,
    mix: Annotated[str | None, typer.Option(
        help="Another corpus whose training questions are mixed in as reading examples (a quarter of the set).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training data. Default 5, 1 with raft.")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    r: Annotated[int, typer.Option(help="LoRA rank.")] = 32,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 64,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[str, typer.Option(help="'all-linear' or comma-separated module names.")] = "all-linear",
    batch_size: Annotated[int | None, typer.Option(help="Examples per batch. Default 8, 4 with raft.")] = None,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    max_length: Annotated[int | None, typer.Option(
        help="Tokens per example: documents are cut to it, a longer chat example is an error. Default 256, 1024 with raft.")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Optimizer steps between checkpoints.")] = 20,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        help="Recompute activations in the backward pass (less memory, more time). Default: on when batch size × "
             "max length exceeds 4096 tokens.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (data order, dropout, init).")] = 42,
    allow_leakage: Annotated[bool, typer.Option(help="Train even if eval questions appear verbatim.")] = False,
    resume: Annotated[str | None, typer.Option(help="Run id of an interrupted run to continue.")] = None,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """LoRA fine-tune the base model on a corpus, merge it and serve it from the same Ollama."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from eval import services
    from pipelines import recipes as training_recipes

    spec = services.FinetuneSpec(
        corpus, training_recipes.parse_recipes(recipe) if recipe else None, teacher, mix, epochs, lr, r, alpha, dropout,
        target_modules if target_modules == "all-linear" else target_modules.split(","), batch_size, grad_accum,
        max_length, checkpoint_every, gradient_checkpointing, seed, allow_leakage, resume)
    # Until the first optimizer step the bar says what is happening (leakage check, model load), not "step 0/None".
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("fine-tuning", total=None, loss="-", stage="preparing…")
        record = services.finetune(spec, _settings(model, data_dir), log=lambda m: bar.console.print(esc(str(m))),
                                   progress=lambda s, t, loss: bar.update(task, completed=s, total=t, loss=f"{loss:.3f}",
                                                                          stage=f"step {s}/{t}"),
                                   stage=lambda what: bar.update(task, stage=what))
    t = record.get("training", {})
    console.print(f"[green]done:[/] run {record['run_id']} → {record.get('ollama_model')}; {t.get('steps')} steps, "
                  f"{t.get('train_tokens')} tokens in {t.get('wall_s')} s ({t.get('tokens_per_s')} tok/s), "
                  f"peak RSS {t.get('peak_rss_mb')} MB, final loss {t.get('final_loss')}")


@app.command("finetune-runs")
def finetune_runs_cmd(data_dir: DataDirOpt = None) -> None:
    """List fine-tune runs with their status, leakage counts and measurements."""
    from pipelines import finetune_runs

    rows = []
    for r in finetune_runs.list_runs(_settings(None, data_dir)):
        lk, t = r.get("leakage", {}), r.get("training", {})
        rows.append((r["run_id"], r["status"], ",".join(r["recipes"]),
                     f"{lk.get('verbatim', '-')}/{lk.get('near_verbatim', '-')}/{lk.get('paraphrase', '-')}",
                     str(t.get("steps", "-")), str(t.get("tokens_per_s", "-")), str(r.get("ollama_model", "-"))))
    _listing("fine-tune runs", ("run id", "status", "recipes", "leakage (verbatim/near/paraphrase)", "steps", "tok/s",
                                "model"), rows)


@app.command("eval")
def eval_cmd(
    corpus: Annotated[str, typer.Argument(help="Corpus name or folder.")],
    arms: Annotated[str, typer.Option(
        help="Comma-separated arms: base, rag, ft, ft_rag; api and api_rag ask a hosted reference model closed book or "
             "with the rag prompt (RAGFT_REFERENCE_BASE_URL, _MODEL, _INPUT_PRICE, _OUTPUT_PRICE, _PRICES_DATE; key "
             "from RAGFT_REFERENCE_API_KEY).")] = "base,rag,ft,ft_rag",
    out: Annotated[Path, typer.Option(help="Folder for report.html, answers.csv, scores.csv, summary.json.")] = Path("ragft-report"),
    limit: Annotated[int | None, typer.Option(help="Evaluate a seeded sample of N questions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the question sample and the bootstrap.")] = 42,
    judge: Annotated[str | None, typer.Option(
        help="LLM judge: a ragft model (e.g. smollm2-135m) or a model on the Ollama server; with "
             "RAGFT_JUDGE_BASE_URL, a model of that OpenAI-compatible endpoint (key from RAGFT_JUDGE_API_KEY).")] = None,
    concurrency: Annotated[int, typer.Option(help="Questions answered at once against Ollama.")] = 1,
    price_per_hour: Annotated[float, typer.Option(help="Price of one machine-hour of compute.")] = 0.10,
    docs_change_often: Annotated[bool, typer.Option(help="Your documents change often.")] = False,
    need_citations: Annotated[bool, typer.Option(help="Answers must cite their sources.")] = False,
    latency_budget_ms: Annotated[float | None, typer.Option(help="p95 latency an answer must stay under.")] = None,
    offline: Annotated[bool, typer.Option(help="Must run offline / on the edge.")] = False,
    accept_loss: Annotated[float, typer.Option(min=0.0, max=100.0,
        help="Points of the primary metric a cheaper arm may lose against the best one (paired 95% CI).")] = 5.0,
    fail_under: Annotated[list[str] | None, typer.Option(help="METRIC=VALUE (or ARM:METRIC=VALUE): exit 1 below it.")] = None,
    rerun: Annotated[bool, typer.Option(help="Answer everything again instead of resuming (database backed up).")] = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run (or resume) the held-out questions through the arms, score them, write the report."""
    from rich.progress import Progress

    from eval import services

    spec = services.EvalSpec(corpus, [a.strip() for a in arms.split(",") if a.strip()], limit, seed, judge, concurrency,
                             rerun, str(out), price_per_hour, docs_change_often, need_citations, latency_budget_ms,
                             offline, accept_loss)
    gates = _parse_gates(fail_under or [])
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("evaluating", total=None)
        result = services.evaluate(spec, _settings(model, data_dir), _warn,
                                   lambda d, t, what: bar.update(task, completed=d, total=t, description=what))
    summary = result.summary
    _print_summary(summary)
    console.print(f"report: {result.outputs['report.html']}")
    failed = _check_gates(summary, gates)
    for line in failed:
        err.print(f"[red]fail-under:[/] {line}")
    if failed:
        raise typer.Exit(1)


def _parse_gates(specs: list[str]) -> list[tuple[str | None, str, float]]:
    gates = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        try:
            threshold = float(value)
        except ValueError:
            raise RagftError(f"--fail-under {spec!r} is not METRIC=VALUE", "e.g. --fail-under rag:contains=0.3") from None
        arm, _, metric = key.rpartition(":")
        if not sep or not metric:
            raise RagftError(f"--fail-under {spec!r} is not METRIC=VALUE", "e.g. --fail-under rag:contains=0.3")
        gates.append((arm or None, metric, threshold))
    return gates


def _check_gates(summary: Summary, gates: list[tuple[str | None, str, float]]) -> list[str]:
    failed = []
    for arm, metric, threshold in gates:
        per = summary["metrics"].get(metric)
        if per is None:
            failed.append(f"metric {metric!r} is not in this run (known: {', '.join(summary['metrics'])})")
            continue
        for a, v in per.items():
            if arm is not None and a != arm:
                continue
            if (mean := v["mean"]) is None:
                failed.append(f"{a} {metric} has no value (all {v['failures']} scores failed) — gate {threshold}")
            elif mean < threshold:
                failed.append(f"{a} {metric} {mean:.3f} < {threshold}")
    return failed


def _print_summary(summary: Summary) -> None:
    from eval import views

    arms = summary["arms"]
    table = Table(title=f"run {summary['run_id']} · {summary['n_questions']} questions (mean [95% CI])")
    table.add_column("metric", overflow="fold")
    for a in arms:
        table.add_column(a, overflow="fold")
    for row in views.quality_rows(summary):
        table.add_row(*row.values())
    lat = {r["arm"]: r for r in views.latency_rows(summary)}
    table.add_row("p50 / p95 latency ms", *[f"{lat[a]['p50 ms']} / {lat[a]['p95 ms']}" for a in arms])
    table.add_row("answers / min", *[lat[a]["answers/min"] for a in arms])
    table.add_row("cost / 1k answers", *[lat[a]["cost / 1k answers"] for a in arms])
    console.print(table)
    rec = summary["recommendation"]
    console.print(f"[bold]recommendation: {rec['choice']}[/]")
    for r in rec["reasons"]:
        console.print(f"  • {esc(r)}")
    console.print(f"  {esc(summary['leakage_statement'])}")
    if index := views.index_line(summary):
        console.print(f"  {esc(index)}")
    if rows := views.fact_split_rows(summary):
        split = Table(title="by fact: taught in the fine-tune's training data, or not")
        for c in rows[0]:
            split.add_column(c)
        for split_row in rows:
            split.add_row(*map(esc, map(str, split_row.values())))
        console.print(split)
    for line in views.forgetting_lines(summary):
        console.print(f"  forgetting probe: {esc(line)}")
    for line in views.seed_lines(summary):
        console.print(f"  training seeds: {esc(line)}")
    for line in views.reference_lines(summary) or views.answer_failure_lines(summary):
        console.print(f"  hosted reference: {esc(line)}")
    for f in (summary.get("injection") or {}).get("answers_quoting", []):
        err.print("[yellow]warning:[/] " + esc(f"{f['arm']}/{f['qid']} quotes a planted instruction: {f['quoted']!r}"))
    for ev in summary.get("events") or []:
        err.print(f"[yellow]{esc(ev['kind'])}:[/] {esc(ev['detail'])}")
    judge = summary.get("judge")
    if judge:
        console.print(esc(f"  judge: {judge['model']} at {judge['endpoint']}"))
        if judge.get("warning"):
            err.print(f"[yellow]warning:[/] {judge['warning']}")
        if agreement := summary.get("judge_agreement"):
            console.print(f"  {views.agreement_line(agreement)}")
        for line in views.judge_failure_lines(summary):
            err.print(f"[yellow]judge failures[/] {esc(line)}")


@app.command("runs")
def runs_cmd(data_dir: DataDirOpt = None) -> None:
    """List stored evaluation runs."""
    from datetime import datetime

    from eval.history import run_status
    from eval.store import Store

    settings = _settings(None, data_dir)
    rows = [(r["run_id"], r["corpus"], ",".join(r["arms"]), str(r["n_answers"]), run_status(settings, r),
             datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")) for r in Store(settings.runs_db).runs()]
    _listing("evaluation runs", ("run id", "corpus", "arms", "answers", "status", "created"), rows)


@app.command("report")
def report_cmd(run_id: Annotated[str, typer.Argument(help="Run id (see `ragft runs`).")],
               out: Annotated[Path, typer.Option(help="Output folder.")] = Path("ragft-report"),
               price_per_hour: Annotated[float, typer.Option(help="Price of one machine-hour.")] = 0.10,
               data_dir: DataDirOpt = None) -> None:
    """Write the report of a stored run again (no model is called)."""
    from eval import services

    result = services.report(run_id, _settings(None, data_dir), out, price_per_hour)
    _print_summary(result.summary)
    console.print(f"report: {result.outputs['report.html']}")


@app.command("compare")
def compare_cmd(run_a: Annotated[str, typer.Argument(help="First run id.")],
                run_b: Annotated[str, typer.Argument(help="Second run id.")], data_dir: DataDirOpt = None) -> None:
    """Compare two stored runs metric by metric, arm by arm."""
    from eval.report import compare_runs
    from eval.store import Store

    table = Table(title=f"{run_a} → {run_b}")
    for col in ("metric", "arm", run_a, run_b, "change"):
        table.add_column(col, overflow="fold")
    for r in compare_runs(Store(_settings(None, data_dir).runs_db), run_a, run_b):
        table.add_row(r["metric"], r["arm"], *("n/a" if v is None else f"{v:.3f}" for v in (r["a"], r["b"])),
                      "n/a" if r["change"] is None else f"{r['change']:+.3f}")
    console.print(table)


@app.command("freshness")
def freshness_cmd(
    corpus: Annotated[str, typer.Argument(help="Corpus name or folder (only read: the edits go into a copy).")],
    facts: Annotated[int, typer.Option(help="Eval facts to change (20 or more for a useful CI).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the facts chosen and their new values.")] = 42,
    arms: Annotated[str, typer.Option(help="Comma-separated arms to ask (api, api_rag too when configured).")]
        = "base,rag,ft,ft_rag",
    retrain: Annotated[bool, typer.Option(help="Also fine-tune on the edited documents and ask the ft arms again.")] = True,
    recipe: Annotated[str, typer.Option(help="Documents-only recipe of that fine-tune: synthetic, synthetic-raft, docs.")]
        = "synthetic",
    teacher: Annotated[str | None, typer.Option(help="Model that writes the synthetic pairs (default: the base model).")]
        = None,
    price_per_hour: Annotated[float, typer.Option(help="Price of one machine-hour of compute.")] = 0.10,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Change facts in a copy of the corpus: which arms follow the edit, and what catching up costs."""
    from eval import services, views

    spec = services.FreshnessSpec(corpus, facts, seed, [a.strip() for a in arms.split(",") if a.strip()], retrain,
                                  [r.strip() for r in recipe.split(",") if r.strip()], teacher, price_per_hour)
    result = services.freshness(spec, _settings(model, data_dir), _warn)
    rows = views.freshness_rows(result)
    table = Table(title=f"freshness test {result['id']} · {result['n_edits']} facts changed (share [95% CI])")
    for c in rows[0]:
        table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*map(esc, row.values()))
    console.print(table)
    for line in views.freshness_lines(result):
        console.print(f"  {esc(line)}")


@corpus_app.command("list")
def corpus_list(data_dir: DataDirOpt = None) -> None:
    """List bundled and imported corpora."""
    from pipelines import corpus as corpora

    settings = _settings(None, data_dir)
    table = Table(title="corpora")
    for col in ("name", "docs", "eval", "train", "license", "path"):
        table.add_column(col, overflow="fold")
    for name, path in corpora.list_corpora(settings).items():
        try:
            c = corpora.load(str(path), settings)
            table.add_row(esc(name), str(len(c.doc_paths)), str(len(c.eval)), str(len(c.train)), esc(c.license), esc(str(path)))
        except RagftError as exc:
            table.add_row(esc(name), "-", "-", "-", "-", f"[red]{esc(exc.message)}[/]")
    console.print(table)


@corpus_app.command("show")
def corpus_show(corpus: Annotated[str, typer.Argument(help="Corpus name or folder.")], data_dir: DataDirOpt = None) -> None:
    """Validate a corpus and show what it holds and what is wrong with it."""
    from pipelines import corpus as corpora

    c = corpora.load(corpus, _settings(None, data_dir))
    console.print(f"[bold]{esc(c.name)}[/] — {esc(c.description)}\nsource: {esc(c.source)}\nlicense: {esc(c.license)}\n"
                  f"{len(c.doc_paths)} docs, {len(c.eval)} eval questions, {len(c.train)} train questions")
    for problem in c.problems:
        err.print(f"[yellow]warning:[/] {esc(problem)}")


@corpus_app.command("import-squad")
def corpus_import_squad(
    file: Annotated[Path, typer.Argument(help="SQuAD v1.1 json file.")],
    name: Annotated[str, typer.Option(help="Name of the new corpus.")] = "squad",
    articles: Annotated[list[str] | None, typer.Option("--articles", help="Article titles to keep (repeatable).")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing corpus of that name.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Turn a SQuAD v1.1 json file into a corpus (paragraphs → docs, questions → eval/train)."""
    from pipelines import corpus as corpora
    from pipelines import importers

    settings = _settings(None, data_dir)
    path = importers.import_squad(file, settings, name, articles, replace)
    c = corpora.load(str(path), settings)
    console.print(f"imported [bold]{c.name}[/]: {len(c.doc_paths)} docs, {len(c.eval)} eval and {len(c.train)} "
                  f"train questions → {path}")


@corpus_app.command("add")
def corpus_add(
    folder: Annotated[Path, typer.Argument(help="A folder of md, txt, rst, html or pdf files.")],
    name: Annotated[str | None, typer.Option(help="Corpus name (default: the folder name).")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing corpus of that name.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Make a corpus of your own folder of documents (no QA set needed to index and ask)."""
    from pipelines import importers

    path, problems = importers.add_folder(folder, _settings(None, data_dir), name, replace)
    for problem in problems:
        err.print(f"[yellow]warning:[/] {esc(problem)}")
    console.print(f"added corpus at {path}; next: `ragft index {path.name}`")


@serve_app.command("start")
def serve_start(data_dir: DataDirOpt = None) -> None:
    """Start (or reuse) the Ollama server for this data dir."""
    from eval import services

    server = services.serve(_settings(None, data_dir), _say)
    console.print(f"{server.url} (version {server.version}, pid {server.pid or 'not ragft-owned'})")


@serve_app.command("stop")
def serve_stop(data_dir: DataDirOpt = None) -> None:
    """Stop the Ollama server ragft started for this data dir."""
    stopped = serving.stop_server(_settings(None, data_dir))
    console.print("stopped" if stopped else "no ragft-owned server was running")


@serve_app.command("status")
def serve_status(data_dir: DataDirOpt = None) -> None:
    """Say whether a server is up and where."""
    server = serving.running_server(_settings(None, data_dir))
    if not server:
        console.print("not running")
        raise typer.Exit(1)
    console.print(f"{server.url} (version {server.version}, pid {server.pid or 'not ragft-owned'})")


if __name__ == "__main__":
    main()
