"""The app in a real browser: `streamlit run app.py` on 127.0.0.1, Chromium driven by Playwright, real Ollama.

Screenshots go to `artifacts/screenshots/` in the checkout (gitignored), or `$RAGFT_ARTIFACTS_DIR/screenshots/`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eval.runner import EvalConfig, run_eval
from eval.store import Store
from pipelines import corpus as corpora
from pipelines import procs, serving
from pipelines.config import Settings
from tests.conftest import SHARED_CACHE
from tests.helpers import make_corpus

pytestmark = [pytest.mark.ollama, pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[1]
# Read at import: the autouse fixture clears RAGFT_* from the environment of each test.
SHOTS = Path(os.environ.get("RAGFT_ARTIFACTS_DIR") or REPO / "artifacts").expanduser() / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WAIT_MS = 900_000  # hang protection for answers on 2 busy cores; never what a test checks
PNG = b"\x89PNG\r\n\x1a\n"
# Streamlit scrolls inside its own container, so a full-page screenshot is the viewport: make it tall.
VIEWPORT = {"width": 1600, "height": 2200}


@pytest.fixture(scope="module")
def app_url(demo_env: tuple[Settings, corpora.Corpus], ollama_server: serving.Server,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a free port of 127.0.0.1 over the demo data (index, fine-tune, one tiny evaluation run)."""
    s, c = demo_env
    live = s.model_copy(update={"ollama_host": ollama_server.url})
    with contextlib.closing(Store(s.runs_db)) as store:  # a run for the Report page: 3 questions × 4 arms
        run_eval(c, EvalConfig(["base", "rag", "ft", "ft_rag"], limit=3, seed=5), live, store, log=lambda _: None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGFT_") and k != "OLLAMA_HOST"}
    env.update(RAGFT_DATA_DIR=str(s.data_dir), RAGFT_CACHE_DIR=str(SHARED_CACHE), RAGFT_OLLAMA_HOST=ollama_server.url,
               RAGFT_CONFIG=str(tmp_path_factory.mktemp("no-config") / "ragft.toml"))
    port = procs.free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                                 "--server.port", str(port), "--server.headless", "true"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            assert proc.poll() is None, f"streamlit exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"streamlit never answered:\n{log.read_text()}"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=2).text.strip() == "ok"
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _shot(page: object, name: str) -> Path:
    """Screenshot the whole page and check what any screenshot must be: the page had no exception box, a PNG."""
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').inner_text()  # type: ignore[attr-defined]
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000, (path, len(data))
    return path


def _nav(page: object, link: str, heading: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=link).first.click()  # type: ignore[attr-defined]
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=WAIT_MS)  # type: ignore[attr-defined]


def test_compare_four_arms_in_the_browser(app_url: str, browser: object, demo_env: tuple[Settings, corpora.Corpus]) -> None:
    _, c = demo_env
    page = browser.new_page(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page.goto(app_url)
    page.get_by_role("heading", name="Status", exact=True).wait_for(timeout=WAIT_MS)
    page.get_by_text("healthy (version").first.wait_for(timeout=WAIT_MS)
    page.get_by_role("heading", name="Recent jobs").wait_for(timeout=WAIT_MS)  # the page's last section: drawn
    status = page.locator("[data-testid='stMain']").inner_text()
    assert "ollama server" in status and "served model" in status and "Corpora, indexes and fine-tuned models" in status
    _shot(page, "01-status.png")

    # The demo corpus, chosen in the sidebar's picker.
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="port-vellmar").click()
    _nav(page, "Corpus", "Corpus")
    page.get_by_text("chunks in the index").wait_for(timeout=WAIT_MS)
    page.get_by_role("tab", name="Import SQuAD").wait_for(timeout=WAIT_MS)
    text = page.locator("[data-testid='stMain']").inner_text()
    assert "port-vellmar" in text and "53" in text and "CC0-1.0" in text
    _shot(page, "02-corpus.png")

    _nav(page, "Compare", "Compare the four arms")
    qa = c.eval[1]
    page.get_by_text("Type a question").click()
    box = page.get_by_label("Your question")
    box.fill(qa.question)
    box.press("Enter")
    page.get_by_role("button", name="Ask the four arms").click()
    # Four answers, each with its timings; the rag arms with their passages.
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMarkdownContainer\"]')]"
                           ".filter(e => e.innerText.includes('tokens/s')).length === 4", timeout=WAIT_MS)
    for expander in page.locator("[data-testid='stExpander']").filter(has_text="retrieved passages").all():
        expander.locator("summary").click()
    main = page.locator("[data-testid='stMain']").inner_text()
    for arm in ("base", "rag", "ft", "ft_rag"):
        assert f"\n{arm}\n" in f"\n{main}\n", arm
    assert main.count("retrieved passages") == 2 and "Reference answer:" in main and qa.answers[0] in main
    assert any(doc in main for doc in qa.source_ids)  # the passage sources are shown
    assert main.count("token F1") == 4 and "error" not in main.lower()
    _shot(page, "03-compare.png")
    page.close()


def test_report_in_the_browser(app_url: str, browser: object) -> None:
    page = browser.new_page(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page.goto(f"{app_url}/report")
    page.get_by_text("Recommendation:").first.wait_for(timeout=WAIT_MS)
    page.get_by_role("button", name="report.html").wait_for(timeout=WAIT_MS)  # the page's last element: drawn
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, "
                           "[data-testid=\"stVegaLiteChart\"] svg').length >= 3", timeout=WAIT_MS)
    main = page.locator("[data-testid='stMain']").inner_text()
    for needle in ("Quality per arm", "Latency and cost", "Break-even", "Every question", "ft_rag", "report.html"):
        assert needle in main, needle
    _shot(page, "04-report.png")

    _nav(page, "History", "History")
    page.get_by_role("heading", name="Compare two runs").wait_for(timeout=WAIT_MS)
    _shot(page, "05-history.png")
    page.close()


def test_markdown_planted_in_a_corpus_is_shown_as_text_and_fetches_nothing(
        app_url: str, browser: object, demo_env: tuple[Settings, corpora.Corpus]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    fetched: list[str] = []

    class Pixel(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            fetched.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pixel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pixel = f"http://127.0.0.1:{server.server_address[1]}/pixel.png"
    s, _ = demo_env
    root = make_corpus(corpora.corpora_dir(s) / "planted", name="planted")
    description = f"Harbour notes ![tracker]({pixel}) [click]({pixel}?link) :red[alarm] <img src='{pixel}?html'>"
    (root / "corpus.toml").write_text(f'name = "planted"\ndescription = "{description}"\nsource = "tests"\n'
                                      'license = "CC0-1.0"\n', encoding="utf-8")
    try:
        page = browser.new_page(viewport=VIEWPORT)  # type: ignore[attr-defined]
        page.goto(f"{app_url}/corpus")
        page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name="planted").click()
        page.get_by_role("heading", name="planted").wait_for(timeout=WAIT_MS)
        page.get_by_text("chunks in the index").wait_for(timeout=WAIT_MS)
        main = page.locator("[data-testid='stMain']")
        shown = main.inner_text().replace("\u2060", "")  # the word joiners that keep URLs from becoming links
        assert f"![tracker]({pixel})" in shown and ":red[alarm]" in shown
        assert main.locator("img").count() == 0 and main.locator(f"a[href^='{pixel}']").count() == 0
        page.wait_for_timeout(1500)  # a fetch the page did start would have arrived by now
        assert fetched == []
        page.close()
    finally:
        server.shutdown()
