"""ragft in the browser (Streamlit). UI only: everything goes through pipelines/ and eval/.

Run: `streamlit run app.py --server.address 127.0.0.1`
"""

from __future__ import annotations

import streamlit as st

from pipelines import doctor, serving
from pipelines.arms import ARM_NAMES, get_arm
from pipelines.config import load_settings
from pipelines.errors import RagftError

st.set_page_config(page_title="ragft", layout="wide")
st.title("ragft — RAG, fine-tune, or both?")


@st.cache_resource
def _settings():
    return load_settings()


settings = _settings()
with st.expander("Status", expanded=True):
    checks = doctor.run_checks(settings)
    st.table([{"check": c.name, "ok": "✅" if c.ok else "❌", "detail": c.detail, "fix": c.fix} for c in checks])

server = serving.running_server(settings)
if server is None:
    st.info("Ollama is not running. Fix: run `ragft setup` (or `make run`), then reload.")
    st.stop()

arm_name = st.selectbox("Arm", ARM_NAMES, index=0, key="ask_arm")
question = st.text_input("Question", key="ask_question")
if question:
    try:
        answer = get_arm(arm_name, settings, server).answer(question)
    except RagftError as exc:
        st.error(f"{exc.message}" + (f"\n\nFix: {exc.fix}" if exc.fix else ""))
        st.stop()
    st.write(answer.text)
    g = answer.generation
    st.caption(f"{g.total_ms:.0f} ms · first token {g.ttft_ms:.0f} ms · {g.output_tokens} tokens · {g.tokens_per_s:.1f} tok/s")
