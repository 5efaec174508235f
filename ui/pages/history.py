"""History: every stored evaluation run, and two of them compared metric by metric (as `ragft compare`)."""

from __future__ import annotations

import streamlit as st

from eval import history
from eval.report import compare_runs
from ui import common

st.title("History")
s = common.settings()
with common.open_store(s) as store:
    runs = list(reversed(store.runs()))  # newest first
if not runs:
    st.info("No evaluation run yet. **Fix:** start one on the **Evaluate** page (or `ragft eval CORPUS`).")
    st.stop()


st.dataframe([{"run": r["run_id"], "corpus": r["corpus"], "arms": ", ".join(r["arms"]), "answers": r["n_answers"],
               "status": history.run_status(s, r), "created": common.when(r["created"])} for r in runs],
             hide_index=True, width="stretch")

st.subheader("Compare two runs")
if len(runs) < 2:
    st.info("Only one run so far. **Fix:** run another evaluation (another seed, sample or corpus) to compare with.")
    st.stop()
ids = [r["run_id"] for r in runs]
cols = st.columns(2)
run_a = cols[0].selectbox("Run A", ids, index=1, key="hist_a")
run_b = cols[1].selectbox("Run B", ids, index=0, key="hist_b")
if run_a == run_b:
    st.info("Choose two different runs.")
    st.stop()
with st.spinner("Computing both summaries…"), common.open_store(s) as store:
    rows = compare_runs(store, run_a, run_b)
st.dataframe([{"metric": r["metric"], "arm": r["arm"], "A": r["a"], "B": r["b"], "change (B − A)": r["change"]}
              for r in rows], hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("A", "B", "change (B − A)")})
