"""Compare: one question, the four arms' answers side by side, streamed as they are generated,
with their timings, the passages the rag arms read, and scores when the reference is known."""

from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from eval import services
from pipelines import corpus as corpora
from pipelines.arms import ARMS, LOCAL_ARMS
from pipelines.errors import RagftError
from ui import common

st.title("Compare the four arms")
s = common.settings()
c = common.require_corpus(s)
server = common.require_server(s)

mode = st.radio("Question", ["Pick one from the eval set", "Type a question"], horizontal=True, key="cmp_mode",
                disabled=not c.eval, index=0 if c.eval else 1)
if mode == "Pick one from the eval set" and c.eval:
    by_id = {q.id: q for q in c.eval}
    picked = st.selectbox("Eval question", list(by_id), format_func=lambda i: f"{i} · {by_id[i].question}", key="cmp_pick")
    question = by_id[picked].question if picked else ""
else:
    question = st.text_input("Your question", key="cmp_question", max_chars=s.max_question_chars,
                             placeholder="e.g. How much does a seasonal mooring permit cost?")
ask = st.button("Ask the four arms", key="cmp_ask", type="primary", disabled=not question.strip())


def show_result(res: dict) -> None:
    """One arm's finished answer: text, timings, scores against the reference, passages."""
    if "error" in res:
        st.info(common.md(res["error"]) + (f"\n\n**Fix:** {common.md(res['fix'])}" if res.get("fix") else ""))
        return
    st.text(res["text"] or "(empty answer)")  # as written: model output is never rendered as markdown or links
    g = res["generation"]
    tps = f"{res['tokens_per_s']:.0f}" if res["tokens_per_s"] else "-"
    st.markdown(f"latency **{g['total_ms'] + res['retrieval_ms']:.0f} ms** · first token **{g['ttft_ms']:.0f} ms** · "
                f"**{tps}** tokens/s")
    st.caption(f"model `{res['model']}` · {g['output_tokens']} tokens"
               + (f" · retrieval {res['retrieval_ms']:.0f} ms" if res["passages"] else ""))
    if res.get("scores"):
        sc = res["scores"]
        verdict = (":green[:material/check_circle:] contains the reference" if sc["contains"]
                   else ":red[:material/cancel:] does not contain the reference")
        st.markdown(f"{verdict} · exact match {sc['exact_match']:.0f} · token F1 {sc['token_f1']:.2f}")
    if res["passages"]:
        with st.expander(f"{len(res['passages'])} retrieved passages"):
            for i, p in enumerate(res["passages"], 1):
                st.markdown(f"**\\[{i}\\] {common.md(p['source'])}** · {common.md(p['id'])} · score {p['score']:.3f}")
                st.text(p["text"])


if ask:
    qa = corpora.find_question(c, question)  # a typed question may still be one whose answer is known
    results: dict[str, dict] = {}
    st.session_state["cmp_last"] = {"question": question, "reference": qa.answers if qa else None,
                                    "sources": qa.source_ids if qa else None, "results": results}

last = st.session_state.get("cmp_last")
if not last:
    st.stop()
st.markdown(f"**Q:** {common.md(last['question'])}")
if last["reference"]:
    st.markdown(f"**Reference answer:** {common.md(' | '.join(last['reference']))} · "
                f"sources: {common.md(', '.join(last['sources']))}")
else:
    st.caption("No reference answer known for this question: no scores.")
columns = st.columns(4)
for name, col in zip(LOCAL_ARMS, columns, strict=True):
    with col:
        st.subheader(name)
        if name in last["results"]:
            show_result(last["results"][name])
            continue
        # Arms answer one after another: they share one Ollama server, and timings stay their own.
        try:
            box = st.empty()
            streamed: list[str] = []

            def on_token(token: str, box=box, streamed=streamed) -> None:
                streamed.append(token)
                box.text("".join(streamed) + " ▌")

            with st.spinner("retrieving…" if ARMS[name].uses_retrieval else "thinking…"):
                asked = services.ask(last["question"], name, s, c, server, on_token, last["reference"])
            box.empty()
            answer = asked.answer
            res = {"text": answer.text, "model": answer.model, "generation": asdict(answer.generation),
                   "tokens_per_s": answer.generation.tokens_per_s, "retrieval_ms": answer.retrieval_ms,
                   "passages": [asdict(p) for p in answer.passages], "scores": asked.scores}
        except RagftError as exc:  # e.g. no fine-tuned model, no index: the arm says how to get it
            res = {"error": exc.message_for(common.app_option), "fix": exc.fix_for(common.app_option)}
        last["results"][name] = res
        show_result(res)
