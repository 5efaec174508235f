"""What every page shares: cached settings, the chosen corpus, gates, errors, and the job panel.

UI only. Everything a page does goes through pipelines/ and eval/, as the CLI does.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from eval.store import Store
from pipelines import corpus as corpora
from pipelines import serving
from pipelines.config import Settings, load_settings
from pipelines.corpus import Corpus
from pipelines.errors import RagftError
from ui import jobs

# Every ASCII punctuation mark may be backslash-escaped in Markdown, which renders it literally:
# text from documents, questions, answers, errors and corpus.toml never becomes an image (a remote
# fetch), a link, a heading or Streamlit's :color[]/$math$ directives.
_MARKDOWN_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
# GFM turns bare URLs and e-mail addresses in the *rendered* text into links, escapes or not; an
# invisible word joiner inside "http://", "www." and "@" keeps them text.
_AUTOLINK = re.compile(r"(?i)(https?)(?=://)|\b(www)(?=\.)|(@)")
WORD_JOINER = "\u2060"


def md(text: object) -> str:
    """Untrusted text for st.markdown/st.info/st.warning/st.caption: shown as written, never a link or image."""
    unlinked = _AUTOLINK.sub(lambda m: m.group(0) + WORD_JOINER, str(text))
    return _MARKDOWN_PUNCT.sub(r"\\\1", unlinked)


CORPUS_KEY = "app_corpus"  # the sidebar's corpus picker (app.py); pages read it
MODEL_KEY = "app_model"  # the sidebar's base-model picker (app.py): every arm, job and run of this session uses it
NEXT_CORPUS_KEY = "app_corpus_next"  # a page that creates a corpus asks the picker to switch to it
DEFAULT_CORPUS = "port-vellmar"
PAGES = {"status": "ui/pages/status.py", "corpus": "ui/pages/corpus.py", "finetune": "ui/pages/finetune.py",
         "compare": "ui/pages/compare.py", "evaluate": "ui/pages/evaluate.py", "report": "ui/pages/report.py",
         "history": "ui/pages/history.py"}


@st.cache_resource(show_spinner=False)
def _settings(env: tuple[tuple[str, str], ...], cwd: str) -> Settings:
    return load_settings()


def settings() -> Settings:
    """One settings object per environment (RAGFT_*, OLLAMA_HOST, working dir): a changed one is a new object."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("RAGFT_") or k == "OLLAMA_HOST"))
    try:
        s = _settings(env, os.getcwd())
        chosen = st.session_state.get(MODEL_KEY)
        return s.model_copy(update={"model": chosen}) if chosen and chosen != s.model else s
    except RagftError as exc:
        show_error(exc)
        st.stop()
        raise  # st.stop() does not return; this keeps type checkers sure of it


def model_names(s: Settings) -> list[str]:
    """Models the picker offers: built-in and added ones, `custom` only when it is configured."""
    from pipelines import models

    try:
        names = models.known_models(s)
    except RagftError:
        names = models.known_models()  # the Status page shows what is wrong with the added ones
    return [n for n in names if n != "custom" or (s.custom_ollama_model and s.custom_hf_dir)]


def link(page: str, label: str, icon: str | None = None) -> None:
    """A link to another page (plain text when this page runs on its own, outside the app's navigation)."""
    try:
        st.page_link(PAGES[page], label=label, icon=icon)
    except StreamlitPageNotFoundError:
        st.markdown(f"{icon or ''} {label} (the **{page.capitalize()}** page)")


# The field that sets each choice an error's fix names (the CLI spells the same choices as flags).
APP_OPTIONS = {
    "max_length": "“max tokens per example” (Fine-tune page, training options)",
    "lr": "“learning rate” (Fine-tune page, training options)",
    "batch_size": "“batch size” (Fine-tune page, training options)",
    "epochs": "“epochs” (Fine-tune page, training options)",
    "dropout": "“LoRA dropout” (Fine-tune page, training options)",
    "allow_leakage": "“Train even if eval questions appear verbatim” (Fine-tune page)",
    "name": "another “Corpus name”",
    "replace": "“Replace a corpus of that name”",
    "articles": "“Articles to keep”",
    "arms": "the “Arms” you choose",
    "corpus": "a corpus in the sidebar",
}


def app_option(name: str) -> str:
    return APP_OPTIONS.get(name, f"“{name.replace('_', ' ')}”")


def show_error(exc: RagftError) -> None:
    fix = exc.fix_for(app_option)
    st.error(md(exc.message_for(app_option)) + (f"\n\n**Fix:** {md(fix)}" if fix else ""))


def require_server(s: Settings) -> serving.Server:
    server = serving.running_server(s)
    if server is None:
        st.info("Ollama is not running. **Fix:** start it on the **Status** page (it runs `ragft setup`), "
                "or run `ragft setup` in a terminal, then reload.")
        link("status", "Go to Status")
        st.stop()
    return server  # type: ignore[return-value]


def corpus_names(s: Settings) -> list[str]:
    return list(corpora.list_corpora(s))


def corpus_name(s: Settings) -> str | None:
    """The corpus picked in the sidebar; the demo corpus (or the first one) when a page runs on its own."""
    names = corpus_names(s)
    chosen = st.session_state.get(CORPUS_KEY)
    if chosen in names:
        return str(chosen)
    return DEFAULT_CORPUS if DEFAULT_CORPUS in names else (names[0] if names else None)


def require_corpus(s: Settings) -> Corpus:
    name = corpus_name(s)
    if name is None:
        st.info("No corpus yet. **Fix:** add documents or import a SQuAD file on the **Corpus** page.")
        st.stop()
    try:
        return corpora.load(str(name), s)
    except RagftError as exc:
        show_error(exc)
        st.stop()
        raise


@contextlib.contextmanager
def open_store(s: Settings) -> Iterator[Store]:
    """The run store, closed after use (SQLite connections are cheap; one shared across sessions is not safe)."""
    try:
        store = Store(s.runs_db)
    except RagftError as exc:
        show_error(exc)
        st.stop()
        raise
    try:
        yield store
    finally:
        store.close()


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


Progress = Callable[[jobs.Job], tuple[float | None, str]]  # job → (fraction done or None, what)


def start_job(s: Settings, service: str, spec: Any) -> None:
    """Start (or find running) the core service with its spec as a job, then redraw the page so that its panel shows."""
    try:
        jobs.start_service(s, service, spec)
    except RagftError as exc:
        show_error(exc)
        return
    st.rerun()


def job_panel(s: Settings, job: jobs.Job | None, key: str, progress: Progress | None = None) -> None:
    """A job's status, progress and log, refreshed every 2 s while it runs, with a Cancel button."""
    if job is None:
        return

    @st.fragment(run_every=2.0 if job.running else None)
    def panel() -> None:
        current = jobs.get(s, job.id)
        with st.container(border=True):
            st.markdown(f"**Job {current.id}** `{current.command}` — **{current.status}** · started "
                        f"{when(current.started)}" + (f" · finished {when(current.finished)}" if current.finished else "")
                        + (f" · exit code {current.exit_code}" if current.exit_code not in (None, 0) else ""))
            if progress is not None:
                fraction, what = progress(current)
                if fraction is not None:
                    st.progress(min(max(fraction, 0.0), 1.0), text=what)
                elif what:
                    st.caption(what)
            with st.expander("log", expanded=current.status == jobs.FAILED):
                st.code(current.log_tail(30) or "(nothing yet)", language=None)
            if current.running and st.button("Cancel", key=f"{key}_cancel_{current.id}"):
                with st.spinner("stopping…"):
                    jobs.cancel(s, current.id)
                st.rerun()
        if job.running and not current.running:
            st.rerun()  # the whole page: it may now show what the job produced

    panel()
