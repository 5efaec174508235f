"""Corpus: the chosen corpus, its index (built as a background job), documents and QA sets;
add your own documents or import a SQuAD file."""

from __future__ import annotations

import math

import streamlit as st

from eval import services
from pipelines import corpus as corpora
from pipelines import corpus_readers, importers, rag
from pipelines.errors import RagftError
from ui import common, jobs

st.title("Corpus")
s = common.settings()
name = common.corpus_name(s)
c = None
if name is not None:
    try:
        c = corpora.load(name, s)
    except RagftError as exc:
        common.show_error(exc)

# What an upload or import reported, kept across the rerun that switches the sidebar to the new corpus.
if result := st.session_state.pop("corpus_result", None):
    st.success(common.md(result["message"]))
    for problem in result["problems"]:
        st.warning(common.md(problem))

overview, documents, questions, upload, squad = st.tabs(["Overview", "Documents", "Questions", "Add documents",
                                                          "Import SQuAD"])

with overview:
    if c is None:
        st.info("No corpus chosen. **Fix:** add documents or import a SQuAD file in the tabs above.")
    else:
        st.subheader(c.name)
        st.markdown(common.md(c.description))
        st.caption(common.md(f"source: {c.source} · license: {c.license} · folder: {c.root}"))
        cols = st.columns(4)
        cols[0].metric("documents", len(c.doc_paths))
        cols[1].metric("eval questions", len(c.eval))
        cols[2].metric("train questions", len(c.train))
        record = rag.index_record(c, s)
        cols[3].metric("chunks in the index", record["chunks"] if record else "none")
        for problem in c.problems:
            st.warning(common.md(problem))

        job = jobs.latest(s, "index", subject=c.name)
        running = bool(job and job.running)
        label = "Update the index" if record else "Build the index"
        if st.button(f"{label} (`ragft index {c.name}`)", key="corpus_index", type="primary", disabled=running,
                     help="Only new or changed documents are embedded."):
            common.start_job(s, "index", services.IndexSpec(c.name))

        def index_progress(j: jobs.Job) -> tuple[float | None, str]:
            p = rag.index_progress(c, s)  # type: ignore[arg-type]
            if p is None or p["at"] < j.started:
                return None, "loading the documents and the embedding model…"
            if p["total"] == 0:
                return 1.0, "nothing to embed: every document is already in the index"
            return p["done"] / p["total"], f"{p['what']}: {p['done']} of {p['total']} new or changed documents"

        common.job_panel(s, job, key="corpus_index_job", progress=index_progress)

with documents:
    if c is not None:
        doc_id = st.selectbox("Document", sorted(c.doc_paths), key="corpus_doc")
        if doc_id:
            try:
                st.text(corpus_readers.read_document(c.doc_paths[doc_id], int(s.max_file_mb * 1e6)))
            except RagftError as exc:
                common.show_error(exc)

with questions:
    if c is not None:
        which = st.radio("Set", ["eval", "train"], horizontal=True, key="corpus_qa_set",
                         help="eval: held-out questions every arm is scored on; train: what the fine-tune may learn from")
        rows = c.eval if which == "eval" else c.train
        if rows:
            st.dataframe([{"id": q.id, "question": q.question, "answers": " | ".join(q.answers),
                           "sources": ", ".join(q.source_ids)} for q in rows], hide_index=True, width="stretch")
        else:
            st.info(f"No {which} questions in this corpus (qa/{which}.jsonl).")

with upload:
    st.write(f"Documents of type {', '.join(corpus_readers.DOC_SUFFIXES)}, up to {s.max_file_mb:g} MB each. Each file is "
             "checked; one that cannot be read is named and left out.")
    bundled = c is None or c.root.parent == corpora.BUNDLED_DIR
    target = st.text_input("Into the corpus", value="my-docs" if bundled else c.name, key="corpus_upload_name",  # type: ignore[union-attr]
                           help="A new name creates a corpus of your own; bundled corpora take no uploads.")
    files = st.file_uploader("Documents", type=[x.lstrip(".") for x in corpus_readers.DOC_SUFFIXES], accept_multiple_files=True,
                             key="corpus_upload_files", max_upload_size=max(1, math.ceil(s.max_file_mb)))
    if st.button("Add the documents", key="corpus_upload_add", disabled=not files or not target):
        try:
            path, added, problems = importers.add_uploads([(f.name, f.getvalue()) for f in files or []], s, target)
        except RagftError as exc:
            common.show_error(exc)
        else:
            if added:
                st.session_state["corpus_result"] = {
                    "message": f"added {len(added)} document(s) to {path.name}: {', '.join(added)}. Next: build its index.",
                    "problems": problems}
                st.session_state[common.NEXT_CORPUS_KEY] = path.name
                st.rerun()
            st.error("No document was added.")
            for problem in problems:
                st.warning(common.md(problem))

with squad:
    st.write("A SQuAD v1.1 json file: paragraphs become documents, questions are split into eval and train within "
             "each paragraph (as `ragft corpus import-squad`).")
    squad_file = st.file_uploader("SQuAD json", type=["json"], key="corpus_squad_file",
                                  max_upload_size=max(1, math.ceil(s.max_file_mb)))
    squad_name = st.text_input("Corpus name", value="squad", key="corpus_squad_name")
    articles = st.text_input("Articles to keep (comma-separated titles; empty = all)", key="corpus_squad_articles")
    replace = st.checkbox("Replace a corpus of that name", key="corpus_squad_replace")
    if st.button("Import", key="corpus_squad_import", disabled=squad_file is None or not squad_name):
        try:
            path = importers.import_squad_upload(squad_file.name, squad_file.getvalue(), s, squad_name,  # type: ignore[union-attr]
                                               [a.strip() for a in articles.split(",") if a.strip()] or None, replace)
            imported = corpora.load(str(path), s)
        except RagftError as exc:
            common.show_error(exc)
        else:
            st.session_state["corpus_result"] = {
                "message": f"imported {imported.name}: {len(imported.doc_paths)} docs, {len(imported.eval)} eval and "
                           f"{len(imported.train)} train questions. Next: build its index.", "problems": imported.problems}
            st.session_state[common.NEXT_CORPUS_KEY] = imported.name
            st.rerun()
