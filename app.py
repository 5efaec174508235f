"""ragft in the browser (Streamlit). UI only: every page goes through pipelines/ and eval/, as the CLI does.

Run: `streamlit run app.py --server.address 127.0.0.1` (or `make run`).
"""

from __future__ import annotations

import streamlit as st

from ui import common

st.set_page_config(page_title="ragft", page_icon=":material/balance:", layout="wide")

pages = [
    st.Page(common.PAGES["status"], title="Status", icon=":material/monitor_heart:", default=True),
    st.Page(common.PAGES["corpus"], title="Corpus", icon=":material/library_books:"),
    st.Page(common.PAGES["finetune"], title="Fine-tune", icon=":material/tune:"),
    st.Page(common.PAGES["compare"], title="Compare", icon=":material/compare:"),
    st.Page(common.PAGES["evaluate"], title="Evaluate", icon=":material/science:"),
    st.Page(common.PAGES["report"], title="Report", icon=":material/bar_chart:"),
    st.Page(common.PAGES["history"], title="History", icon=":material/history:"),
]
page = st.navigation(pages)

settings = common.settings()
with st.sidebar:
    st.markdown("**ragft** — RAG, fine-tune, or both?")
    names = common.corpus_names(settings)
    # A page that created a corpus asks for it here: a widget's value cannot change once it is drawn.
    if (wanted := st.session_state.pop(common.NEXT_CORPUS_KEY, None)) in names:
        st.session_state[common.CORPUS_KEY] = wanted
    if names:
        if st.session_state.get(common.CORPUS_KEY) not in names:
            st.session_state[common.CORPUS_KEY] = common.corpus_name(settings)
        st.selectbox("Corpus", names, key=common.CORPUS_KEY, help="Used by the Corpus, Fine-tune, Compare and Evaluate pages.")
    model_names = common.model_names(settings)
    if st.session_state.get(common.MODEL_KEY) not in model_names:
        st.session_state[common.MODEL_KEY] = settings.model if settings.model in model_names else model_names[0]
    st.selectbox("Base model", model_names, key=common.MODEL_KEY,
                 help="The model of every arm (same weights, same quantisation). smollm2-135m is the fast one; "
                      "qwen2.5-coder-0.5b reads better and is about 2× slower. Add yours with `ragft models add`.")
    st.caption(f"data: `{settings.data_dir}`")

page.run()
