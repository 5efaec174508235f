"""Evaluate: a batch run (`ragft eval …`) as a background job, its progress read from the run store;
cancel, and resume by running the same command again (the runner continues where it stopped)."""

from __future__ import annotations

import streamlit as st

from eval import history, services
from pipelines.arms import ARM_NAMES, LOCAL_ARMS, Missing, kind
from ui import common, jobs

st.title("Evaluate")
s = common.settings()
c = common.require_corpus(s)
if not c.eval:
    st.info(f"Corpus **{c.name}** has no eval questions (qa/eval.jsonl), so there is nothing to score. **Fix:** add "
            "held-out questions, or import a SQuAD file on the **Corpus** page.")
    st.stop()
common.require_server(s)

arms = st.multiselect("Arms", list(ARM_NAMES), default=list(LOCAL_ARMS), key="eval_arms",
                      help="api and api_rag ask a hosted reference model (closed book / with the rag prompt), "
                           "priced per token: set RAGFT_REFERENCE_* before starting the app.")
cols = st.columns(3)
limit = cols[0].number_input(f"Questions (0 = all {len(c.eval)})", 0, len(c.eval), min(20, len(c.eval)), key="eval_limit",
                             help="A seeded sample of this many eval questions.")
seed = cols[1].number_input("Seed", 0, 2**31 - 1, 42, key="eval_seed", help="Seed of the sample and of the bootstrap.")
judge = cols[2].text_input("LLM judge (optional)", key="eval_judge", placeholder="e.g. smollm2-135m",
                           help="A ragft model or a model on the Ollama server (or, with RAGFT_JUDGE_BASE_URL, of that "
                                "endpoint): adds the ragas judge metrics.").strip()

# Each arm says what it lacks; arms lacking the same thing share one message.
FIX = {"finetune": "fine-tune it on the **Fine-tune** page", "index": "build it on the **Corpus** page",
       "reference": "set them in the environment (the key in RAGFT_REFERENCE_API_KEY) and restart the app"}
lacking: dict[tuple[str, str], list[str]] = {}
for r in (kind(a).ready(s, c) for a in arms):
    if isinstance(r, Missing):
        lacking.setdefault((r.what, r.step), []).append(r.arm)
missing = [f"{' and '.join(names)} need{'s' if len(names) == 1 else ''} {common.md(what)}. **Fix:** {FIX[step]}, or leave "
           f"{' and '.join(names)} out." for (what, step), names in lacking.items()]
for m in missing:
    st.info(m)

job = jobs.latest(s, "evaluate", subject=c.name)
running = bool(job and job.running)
spec = services.EvalSpec(c.name, list(arms), int(limit) or None, int(seed), judge or None)
if st.button("Start the evaluation", key="eval_start", type="primary", disabled=running or not arms or bool(missing),
             help="Runs the evaluation in the background (as `ragft eval`); the same settings again resume it."):
    common.start_job(s, "evaluate", spec)


def run_of(j: jobs.Job) -> dict | None:
    """The run the job answers: the job records its id before the first answer."""
    if j.produced is None:
        return None
    with common.open_store(s) as store:
        return next((r for r in store.runs() if r["run_id"] == j.produced), None)


def eval_progress(j: jobs.Job) -> tuple[float | None, str]:
    run = run_of(j)
    if run is None:
        return None, "starting: server, models, arms…"
    with common.open_store(s) as store:
        p = history.run_progress(store, s, run["run_id"])
    if p["answers"] < p["expected"]:
        return p["answers"] / p["expected"], f"run {p['run_id']}: {p['answers']} of {p['expected']} answers stored"
    if p["status"] != "done":
        return p["scored"] / max(1, p["answers"]), f"run {p['run_id']}: scoring, {p['scored']} of {p['answers']} answers scored"
    return 1.0, f"run {p['run_id']}: done"


common.job_panel(s, job, key="eval_job", progress=eval_progress)
if job is not None and not job.running:
    run = run_of(job)
    if job.status != jobs.DONE and st.button("Resume (run the same command again)", key="eval_resume",
                                             help="Answers already stored are kept; only the rest are answered."):
        common.start_job(s, "evaluate", services.spec_from("evaluate", job.args))
    if run is not None and run["status"] == "done":
        st.session_state["report_run"] = run["run_id"]
        common.link("report", f"Open the report of run {run['run_id']}", ":material/bar_chart:")
