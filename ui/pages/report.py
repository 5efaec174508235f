"""Report: one stored run — recommendation with its reasons, quality with CIs, latency and cost,
break-even, every question; the same numbers and files as `ragft report`."""

from __future__ import annotations

import contextlib
from typing import Any

import streamlit as st

from eval import freshness, services, views
from eval.recommend import Needs
from eval.report import chart_specs, write_outputs
from eval.store import Store
from pipelines.arms import LOCAL_ARMS
from pipelines.config import Settings
from ui import common, jobs

st.title("Report")
s = common.settings()
with common.open_store(s) as store:
    runs = {r["run_id"]: r for r in reversed(store.runs())}  # newest first
if not runs:
    st.info("No evaluation run yet. **Fix:** start one on the **Evaluate** page (or `ragft eval CORPUS`).")
    common.link("evaluate", "Go to Evaluate", ":material/science:")
    st.stop()

if st.session_state.get("report_run") not in runs:  # e.g. the Evaluate page names the run it just finished
    st.session_state["report_run"] = next((i for i, r in runs.items() if r["status"] == "done"), next(iter(runs)))
run_id = st.selectbox("Run", list(runs), key="report_run", format_func=lambda i: (
    f"{i} · {runs[i]['corpus']} · {','.join(runs[i]['arms'])} · {runs[i]['n_answers']} answers · {runs[i]['status']}"
    f" · {common.when(runs[i]['created'])}"))
run = runs[run_id]

with st.expander("Price and needs (change the costs and the recommendation)"):
    cols = st.columns(3)
    price = cols[0].number_input("price per machine-hour", 0.0, 100.0, 0.10, step=0.01, key="report_price")
    budget = cols[1].number_input("p95 latency budget, ms (0 = none)", 0, 600_000, 0, key="report_budget")
    accept = cols[2].number_input("accepted loss vs the best arm, points", 0, 100, 5, key="report_accept_loss",
                                  help="A cheaper arm replaces the best one only when its paired 95% CI shows it "
                                       "loses at most this much of the primary metric.")
    cols = st.columns(3)
    needs = Needs(cols[0].checkbox("documents change often", key="report_docs_change"),
                  cols[1].checkbox("answers must cite sources", key="report_citations"),
                  float(budget) or None, cols[2].checkbox("must run offline / at the edge", key="report_offline"),
                  accept / 100)


@st.cache_data(show_spinner="Computing the statistics…", max_entries=16)
def _report(_s: Settings, data_dir: str, run_id: str, n_answers: int, n_scores: int, price: float,
            needs: tuple) -> tuple[dict[str, Any], list[dict], list[dict]]:
    # Keyed on the answer and score counts: a run still being answered is recomputed as it grows.
    with contextlib.closing(Store(_s.runs_db)) as store:
        return services.summary(run_id, _s, store, price, Needs(*needs)), store.answers(run_id), store.scores(run_id)


@st.cache_data(show_spinner="Writing report.html, answers.csv, scores.csv, summary.json…", max_entries=8)
def _files(_s: Settings, data_dir: str, run_id: str, n_answers: int, n_scores: int, price: float,
           needs: tuple) -> dict[str, bytes]:
    summary = _report(_s, data_dir, run_id, n_answers, n_scores, price, needs)[0]
    with contextlib.closing(Store(_s.runs_db)) as store:
        paths = write_outputs(store, run_id, summary, _s.data_dir.expanduser() / "reports" / run_id)
    return {name: path.read_bytes() for name, path in paths.items()}


with common.open_store(s) as store:
    answers_by_arm = {a: len(store.answered(run_id, a)) for a in run["arms"]}
    n_scores = len(store.scores(run_id))
if not all(answers_by_arm.values()):
    st.info(f"Run {run_id} has no answers yet for: {', '.join(a for a, n in answers_by_arm.items() if not n)}. "
            "**Fix:** let the evaluation go on (or resume it) on the **Evaluate** page.")
    st.stop()
key = (s, str(s.data_dir), run_id, run["n_answers"], n_scores, float(price), tuple(vars(needs).values()))
summary, answers, scores = _report(*key)
arms = summary["arms"]

st.caption(f"corpus **{common.md(summary['corpus'])}** · {summary['n_questions']} questions answered by every arm · arms "
           f"{', '.join(arms)} · status {summary['status']} · model {summary['config'].get('model')} "
           f"({summary['config'].get('quantization')})")
rec = summary["recommendation"]
box = st.warning if rec["choice"] in ("neither", "undecided") else st.success
box(f"**Recommendation: {rec['choice']}**\n\n" + "\n".join(f"- {common.md(r)}" for r in rec["reasons"]))
if rec["flips"]:
    st.markdown("**What would change it:**\n" + "\n".join(f"- {common.md(f)}" for f in rec["flips"]))
st.caption(common.md(summary["leakage_statement"]))
if index := views.index_line(summary):
    st.caption(common.md(index))
if split := views.fact_split_rows(summary):
    st.markdown("**By fact** — taught in the fine-tune's training data (a training example on the same subject gives "
                "the reference answer), or not")
    st.dataframe(split, hide_index=True)
for line in views.forgetting_lines(summary):
    (st.caption if line.startswith("the fine-tune kept") else st.warning)(f"Forgetting probe: {common.md(line)}")
for line in views.seed_lines(summary):
    (st.warning if "could reverse" in line else st.caption)(f"Training seeds: {common.md(line)}")
if ref_lines := views.reference_lines(summary):
    st.markdown("**Hosted reference** — another model on another endpoint, same questions, prompts and decoding, "
                "priced per token; never recommended in place of a local arm")
    for line in ref_lines:
        (st.warning if "failed" in line else st.caption)(common.md(line))

charts = chart_specs(summary, answers)
st.subheader("Quality per arm (mean with bootstrap 95% CI)")
st.altair_chart(charts["quality"])
st.dataframe(views.quality_rows(summary), hide_index=True, width="stretch")
with st.expander("Paired comparisons"):
    st.dataframe(views.paired_rows(summary), hide_index=True, width="stretch")

st.subheader("Latency and cost")
cols = st.columns(2)
cols[0].altair_chart(charts["latency"])
cols[1].altair_chart(charts["cost"])
st.dataframe(views.latency_rows(summary), hide_index=True, width="stretch")
st.markdown("**Break-even** (answers after which the arm with the larger one-off cost has paid it back)")
st.dataframe(views.break_even_rows(summary), hide_index=True)
if summary["error_attribution"]:
    st.markdown("**Errors of the rag arms**")
    st.dataframe([{"arm": a, **c} for a, c in summary["error_attribution"].items()], hide_index=True)
for ev in summary.get("events") or []:
    st.caption(f"{common.when(ev['at'])} · {common.md(ev['kind'])}: {common.md(ev['detail'])}")
if summary.get("judge"):
    st.caption(common.md(f"judge: {summary['judge']['model']} at {summary['judge']['endpoint']}"))
    if summary["judge"].get("warning"):
        st.warning(common.md(f"judge: {summary['judge']['warning']}"))
    if summary.get("judge_agreement"):
        st.caption(views.agreement_line(summary["judge_agreement"]))
    for line in views.judge_failure_lines(summary):
        st.warning(common.md(f"judge failures in {line}"))

injected = summary.get("injection") or {}
if injected.get("passages"):
    st.info(f"{injected['passages']} retrieved passage(s) read like instructions to the model, e.g. "
            + "; ".join(f"“{common.md(x)}”" for x in injected["examples"]) + ". Answers are text only: nothing in them is run.")
    for f in injected.get("answers_quoting", []):
        st.warning(common.md(f"{f['arm']} / {f['qid']} repeats a planted instruction: “{f['quoted']}”"))

st.subheader("Freshness: when a fact changes")
fresh = freshness.latest(summary["corpus"], s)
if fresh:
    for line in views.freshness_lines(fresh):
        st.caption(common.md(line))
    st.dataframe(views.freshness_rows(fresh), hide_index=True, width="stretch")
else:
    st.caption(f"No freshness test of corpus {common.md(summary['corpus'])} yet: it changes facts in a copy of the "
               "corpus (never in the corpus itself), re-indexes, asks every arm and measures what catching up costs.")
cols = st.columns(3)
n_facts = cols[0].number_input("facts to change", 1, 500, 20, key="fresh_facts")
retrain = cols[1].checkbox("also fine-tune on the edited documents", value=False, key="fresh_retrain",
                           help="Measures the fine-tune's catch-up cost (documents-only synthetic recipe: minutes).")
fresh_job = jobs.latest(s, "freshness", subject=summary["corpus"])
if cols[2].button("Run the freshness test", key="fresh_start", disabled=bool(fresh_job and fresh_job.running)):
    common.start_job(s, "freshness", services.FreshnessSpec(
        summary["corpus"], int(n_facts), arms=[a for a in arms if a in LOCAL_ARMS or a == "api_rag"],
        retrain=retrain, price_per_hour=float(price)))
common.job_panel(s, fresh_job, "fresh")

st.subheader("Every question")
st.dataframe(views.question_rows(arms, answers, scores), hide_index=True, width="stretch")

st.subheader("Download")
files = _files(*key)
cols = st.columns(4)
mimes = {"report.html": "text/html", "answers.csv": "text/csv", "scores.csv": "text/csv", "summary.json": "application/json"}
for col, (name, data) in zip(cols, files.items(), strict=False):
    col.download_button(name, data, file_name=f"{run_id}-{name}", mime=mimes.get(name), key=f"report_dl_{name}")
