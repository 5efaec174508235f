"""Fine-tune: recipe and LoRA parameters, the leakage report before starting, then a background job
with a live loss chart; cancel, and resume from the last checkpoint."""

from __future__ import annotations

import streamlit as st

from eval import services
from pipelines import corpus as corpora
from pipelines import finetune_runs, models, serving
from pipelines import recipes as training_recipes
from pipelines.config import Settings
from pipelines.errors import RagftError
from pipelines.train import LoraParams
from ui import common, jobs

st.title("Fine-tune")
s = common.settings()
c = common.require_corpus(s)
server = serving.running_server(s)  # training ends with `ollama create`: the job would fail late without it
recipes_known = training_recipes.available_recipes(c)


@st.cache_data(show_spinner="Checking the training data against the eval questions…")
def _leakage(_s: Settings, data_dir: str, corpus_root: str, recipes: tuple[str, ...], qa_mtime: float) -> dict:
    # The guard the training job runs before it starts (synthetic pairs exist only once a teacher writes them).
    corpus = corpora.load(corpus_root, _s)
    items = training_recipes.build_items(corpus, training_recipes.preview_recipes(recipes), _s)
    return training_recipes.check_leakage(corpus, items).as_dict()


st.caption(f"corpus **{c.name}** · {len(c.train)} training questions · {len(c.eval)} eval questions held out")
job = jobs.latest(s, "finetune", subject=c.name)
running = bool(job and job.running)

default = [r for r in training_recipes.default_recipes(c, s) if r in recipes_known] or recipes_known[:1]
recipes = st.multiselect("Recipes", recipes_known, default=default, key="ft_recipes",
                         help="; ".join(f"{k}: {v}" for k, v in training_recipes.RECIPES.items()))
with st.expander("LoRA and training parameters", expanded=False):
    cols = st.columns(4)
    # the recipe's defaults (raft: 1 epoch, batch 4, 1024 tokens); a widget key per default value
    # so that switching recipe shows the new default instead of keeping the old number
    d = training_recipes.recipe_defaults(recipes)
    epochs = cols[0].number_input("epochs", 1, 50, d["epochs"], key=f"ft_epochs_{d['epochs']}")
    lr = cols[1].number_input("learning rate", 1e-6, 0.5, 1e-3, step=1e-4, format="%.0e", key="ft_lr")
    batch_size = cols[2].number_input("batch size", 1, 64, d["batch_size"], key=f"ft_batch_{d['batch_size']}")
    max_length = cols[3].number_input("max tokens per example", 32, 4096, d["max_length"],
                                      key=f"ft_maxlen_{d['max_length']}")
    cols = st.columns(4)
    r = cols[0].number_input("LoRA rank r", 1, 256, 32, key="ft_r")
    alpha = cols[1].number_input("LoRA alpha", 1, 512, 64, key="ft_alpha")
    dropout = cols[2].number_input("LoRA dropout", 0.0, 0.9, 0.05, key="ft_dropout")
    checkpoint_every = cols[3].number_input("checkpoint every (steps)", 1, 1000, 20, key="ft_ckpt")
cols = st.columns(2)
teacher = None
if any(r.startswith("synthetic") for r in recipes):
    choice = cols[0].selectbox("Teacher model (writes the synthetic pairs)", ["(the base model)"] + models.known_models(s),
                               index=0, key="ft_teacher", help="A bigger model writes better questions; the first run "
                               "prepares it. Its pairs are cached, so a repeated run asks it only for new chunks.")
    teacher = None if choice.startswith("(") else choice
mixable = [n for n, root in corpora.list_corpora(s).items() if n != c.name and (root / "qa" / "train.jsonl").is_file()]
mix_choice = cols[1].selectbox("Mix in reading examples from", ["(none)"] + mixable, index=0, key="ft_mix",
                               help="Another corpus's training questions, in the rag prompt, as a quarter of the set")
mix = None if mix_choice.startswith("(") else mix_choice
allow_leakage = st.checkbox("Train even if eval questions appear verbatim (the run records it)", key="ft_allow")

if not recipes:
    st.info("Choose at least one recipe.")
    st.stop()

st.subheader("Leakage report")
qa_mtime = max((p.stat().st_mtime for p in (c.root / "qa").glob("*.jsonl")), default=0.0)  # edited QA → checked again
try:
    report = _leakage(s, str(s.data_dir), str(c.root), tuple(recipes), qa_mtime)
except RagftError as exc:
    common.show_error(exc)
    st.stop()
counts = report["counts"]
cols = st.columns(4)
cols[0].metric("verbatim", counts["verbatim"], help="the same eval question (or it with its answer) in training: refused")
cols[1].metric("near-verbatim", counts["near_verbatim"], help="word 5-gram Jaccard ≥ 0.5 with a training question: warned")
cols[2].metric("paraphrase coverage", counts["paraphrase"], help="the same fact asked in other words (MiniLM cosine ≥ 0.75)")
cols[3].metric("not covered", counts["unrelated"])
if any(r.startswith("synthetic") for r in recipes):
    st.caption("The synthetic recipes' pairs are written by the teacher during the job; the job checks them too.")
for kind in ("verbatim", "near_verbatim", "paraphrase"):
    if report[kind]:
        with st.expander(f"{kind.replace('_', '-')} examples ({len(report[kind])})"):
            st.dataframe(report[kind], hide_index=True, width="stretch")
blocked = counts["verbatim"] > 0 and not allow_leakage
if blocked:
    st.warning("Eval questions appear verbatim in the training data: training would be refused. Remove them, or tick "
               "'Train even if…' above (the run and every report will say so).")

if server is None:
    st.info("Ollama is not running, and a fine-tune ends by serving its model there. **Fix:** start it on the **Status** "
            "page (it runs `ragft setup`), or run `ragft setup`, then reload.")
params = LoraParams(r=int(r), alpha=int(alpha), dropout=float(dropout), epochs=int(epochs), lr=float(lr),
                    max_length=int(max_length), batch_size=int(batch_size), checkpoint_every=int(checkpoint_every))
if st.button(f"Start fine-tuning {c.name}", key="ft_start", type="primary",
             disabled=running or blocked or server is None):
    try:
        params.validate()
    except RagftError as exc:
        common.show_error(exc)
    else:
        common.start_job(s, "finetune", services.FinetuneSpec(
            c.name, list(recipes), teacher, mix, params.epochs, params.lr, params.r, params.alpha, params.dropout,
            batch_size=params.batch_size, max_length=params.max_length, checkpoint_every=params.checkpoint_every,
            allow_leakage=allow_leakage))


def _run_of(j: jobs.Job) -> dict | None:
    # the run the job made (recorded by the job as soon as its folder exists), or the one it resumes
    run_id = j.produced or (j.args.get("resume") if isinstance(j.args, dict) else None)
    return {"run_id": run_id} if run_id else None


def training_progress(j: jobs.Job) -> tuple[float | None, str]:
    run = _run_of(j)
    if run is None:
        return None, "preparing: base weights, training data, leakage guard…"
    p = finetune_runs.training_progress(finetune_runs.runs_dir(s) / run["run_id"])
    if p["step"] and p["total_steps"]:
        loss = f" · loss {p['loss']:.3f}" if p["loss"] is not None else ""
        return p["step"] / p["total_steps"], f"run {p['run_id']} · {p['status']} · step {p['step']} of {p['total_steps']}{loss}"
    return None, f"run {p['run_id']} · {p['status']}"


common.job_panel(s, job, key="ft_job", progress=training_progress)
if job is not None and (run := _run_of(job)):
    loss_file = finetune_runs.runs_dir(s) / run["run_id"] / "loss.jsonl"
    if loss_file.is_file() and loss_file.stat().st_size:

        @st.fragment(run_every=3.0 if running else None)
        def loss_chart() -> None:
            st.altair_chart(finetune_runs.loss_chart(loss_file.parent), width="stretch")

        loss_chart()

st.subheader(f"Runs of {c.name}")
runs = [r for r in finetune_runs.list_runs(s) if r.get("corpus") == c.name]
if not runs:
    st.caption("none yet")
for rec in reversed(runs):
    p = finetune_runs.training_progress(finetune_runs.runs_dir(s) / rec["run_id"])
    lk = rec.get("leakage") or {}
    line = (f"`{rec['run_id']}` · **{rec.get('status')}** · {','.join(rec.get('recipes', []))} · step {p['step']}"
            f"/{p['total_steps'] or '?'} · leakage {lk.get('verbatim', '-')}/{lk.get('near_verbatim', '-')}/"
            f"{lk.get('paraphrase', '-')} · model {rec.get('ollama_model', '-')}")
    cols = st.columns([5, 1])
    cols[0].markdown(line)
    if p["resumable"] and not running and cols[1].button("Resume", key=f"ft_resume_{rec['run_id']}",
                                                         help="continue from its last checkpoint"):
        common.start_job(s, "finetune", services.FinetuneSpec(c.name, resume=rec["run_id"]))
