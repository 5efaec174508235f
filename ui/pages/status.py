"""Status: Ollama, models, corpora, indexes and fine-tunes — and one button per missing piece."""

from __future__ import annotations

import streamlit as st

from eval import services
from pipelines import doctor, finetune_runs, serving
from pipelines.config import Settings
from pipelines.errors import RagftError
from ui import common, jobs

st.title("Status")
s = common.settings()


@st.cache_data(ttl=30, show_spinner="Checking Ollama, models and disk…")
def _checks(_s: Settings, data_dir: str, model: str, jobs_seen: tuple) -> list[dict]:
    # `ollama --version` and the first torch import are not free: checked at most every 30 s, when a
    # setup job changes state, or on Refresh.
    return [vars(c) for c in doctor.run_checks(_s)]


if st.button("Refresh", key="status_refresh"):
    _checks.clear()
fix_jobs = {kind: jobs.latest(s, kind) for kind in ("setup", "serve")}
checks = {c["name"]: c for c in _checks(s, str(s.data_dir), s.model, tuple((j.id, j.status) for j in fix_jobs.values() if j))}
server = serving.running_server(s)
if server is not None:  # live, not cached: the server may have started or stopped since the checks
    checks["ollama server"].update(ok=True, detail=f"{server.url} healthy (version {server.version})", fix="")

st.subheader("Ollama")
for c in checks.values():  # Material icons ship with Streamlit; an emoji font may not be installed
    mark = ":green[:material/check_circle:]" if c["ok"] else ":red[:material/cancel:]"
    st.markdown(f"{mark} **{common.md(c['name'])}** — {common.md(c['detail'])}"
                + (f" · **fix:** {common.md(c['fix'])}" if c["fix"] else ""))

# One fix per missing piece. `ragft setup` covers the binary, the server and the base model;
# when only the server is down, starting it is enough.
setup_needed = [n for n in ("ollama binary", "base weights", "served model") if n in checks and not checks[n]["ok"]]
if setup_needed:
    if st.button(f"Fix {', '.join(setup_needed)}: run `ragft setup`", key="status_setup", type="primary"):
        common.start_job(s, "setup", services.SetupSpec())
elif server is None and st.button("Start the Ollama server (`ragft serve start`)", key="status_serve", type="primary"):
    common.start_job(s, "serve", services.ServeSpec())
for kind, job in fix_jobs.items():
    # a running fix, or one that did not work while the piece is still missing (its log says why)
    if job is not None and (job.running or ((setup_needed or server is None) and job.status != jobs.DONE)):
        common.job_panel(s, job, key=f"status_{kind.replace(' ', '_')}")

st.subheader("Base models")
try:
    st.dataframe(doctor.model_rows(s, server), hide_index=True, width="stretch")
except RagftError as exc:
    common.show_error(exc)

st.subheader("Corpora, indexes and fine-tuned models")
rows = doctor.corpus_rows(s, server)
st.dataframe([{k: v for k, v in r.items() if k != "path"} for r in rows], hide_index=True, width="stretch")
for r in rows:
    name = str(r["corpus"])
    if r.get("docs") and r.get("index chunks") is None:
        running = jobs.latest(s, "index", subject=name)
        if st.button(f"Build the index of {name} (`ragft index {name}`)", key=f"status_index_{name}",
                     disabled=bool(running and running.running)):
            common.start_job(s, "index", [name])
        common.job_panel(s, jobs.latest(s, "index", subject=name), key=f"status_index_job_{name}")
    if r.get("train") and r.get("fine-tuned model") is None:
        common.link("finetune", f"{name} has no fine-tuned model yet: fine-tune it", ":material/tune:")

st.subheader("Fine-tune runs")
runs = finetune_runs.list_runs(s)
if runs:
    st.dataframe([{"run": r["run_id"], "corpus": r.get("corpus"), "status": r.get("status"),
                   "recipes": ",".join(r.get("recipes", [])), "model": r.get("ollama_model", "-"),
                   "steps": (r.get("training") or {}).get("steps", "-")} for r in runs], hide_index=True, width="stretch")
else:
    st.caption("none yet")

st.subheader("Recent jobs")
recent = jobs.list_jobs(s, limit=10)
if recent:
    st.dataframe([{"job": j.id, "command": j.command, "status": j.status, "started": common.when(j.started),
                   "finished": common.when(j.finished), "exit code": j.exit_code, "log": str(j.log_path)} for j in recent],
                 hide_index=True, width="stretch")
else:
    st.caption("none yet")
