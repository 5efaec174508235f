"""Small builders shared by tests: a 3-document corpus with known answers, tiny PDFs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from eval.records import NewAnswer
from eval.runner import answer_row
from pipelines.arms import Answer
from pipelines.corpus import QA
from pipelines.generation import Generation

DOCS = {
    "festival.md": "# Festival\n\nThe Zorblax lantern festival takes place every March in Kelmouth. "
                   "Lanterns are launched from the old pier at dusk.",
    "harbour.txt": "Kelmouth harbour rules. The harbour master of Kelmouth is Ida Brandt. "
                   "Boats longer than 12 metres need a mooring permit.",
    "library.html": "<html><head><title>x</title><script>var a=1;</script></head><body><h1>Library</h1>"
                    "<p>The Kelmouth public library opens at 9:30 on weekdays.</p></body></html>",
}


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`ragft ARGS` in-process through cli.main(), the console script itself, so its translation of
    domain errors (message, fix, exit 1) is what is tested; stdout and stderr together, 1000 columns
    wide (rich folds long lines at the 80 it assumes without a terminal)."""
    import cli

    out = io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = ["ragft", *args]
    os.environ.update({"COLUMNS": "1000", **(env or {})})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return code, out.getvalue()


def make_corpus(root: Path, name: str = "kelmouth", qa: list[dict] | None = None) -> Path:
    (root / "docs").mkdir(parents=True)
    for fname, text in DOCS.items():
        (root / "docs" / fname).write_text(text, encoding="utf-8")
    (root / "corpus.toml").write_text(f'name = "{name}"\ndescription = "test"\nsource = "tests"\nlicense = "CC0-1.0"\n')
    rows = qa if qa is not None else [
        {"id": "q1", "question": "Who is the harbour master of Kelmouth?", "answers": ["Ida Brandt"], "source_ids": ["harbour"]},
        {"id": "q2", "question": "In which month is the lantern festival?", "answers": ["March"], "source_ids": ["festival"]},
        {"id": "q3", "question": "When does the library open on weekdays?", "answers": ["9:30"], "source_ids": ["library"]},
    ]
    (root / "qa").mkdir()
    (root / "qa" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def text_pdf(text: str) -> bytes:
    """A minimal one-page PDF whose text pypdf can extract (offsets computed, not guessed)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted_pdf() -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf("secret plans"))))
    writer.encrypt(user_password="hunter2", owner_password="hunter2")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


class _JsonHandler(BaseHTTPRequestHandler):
    """A loopback test endpoint: JSON replies, quiet, and a client that gave up is not an error."""

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serving(handler_cls: type[_JsonHandler], **attrs: object) -> Iterator[tuple[str, type[_JsonHandler]]]:
    """A fresh subclass of `handler_cls` (its own `seen` list) served on 127.0.0.1: its /v1 URL and the class."""
    handler = type("Handler", (handler_cls,), {"seen": [], **attrs})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()


class JudgeEndpoint(_JsonHandler):
    """An OpenAI-compatible chat endpoint that answers with `reply` after `delay` seconds."""

    reply = "not json {"
    delay = 0.0
    status = 200  # anything else: an error whose text echoes the request's Authorization header
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        time.sleep(self.delay)
        if self.status != 200:
            return self._send(self.status, json.dumps({"error": {
                "message": f"invalid credentials: {self.headers.get('Authorization')}",
                "type": "invalid_request_error"}}).encode())
        self._send(200, json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": self.reply}}],
                                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode())


@contextmanager
def fake_judge_endpoint() -> Iterator[tuple[str, type[JudgeEndpoint]]]:
    """A local OpenAI-compatible endpoint (URL, handler class: set `reply`/`delay`, read `seen`)."""
    with _serving(JudgeEndpoint) as (url, handler):
        yield url, handler


def answer(arm: str, qid: str, text: str, *, retrieval_ms: float = 1.0, total_ms: float = 100.0, ttft_ms: float = 10.0,
           prompt_tokens: int = 5, output_tokens: int = 4, eval_ms: float = 40.0) -> NewAnswer:
    """A stored answer as the runner writes it (`runner.answer_row`), with timings chosen by the test."""
    gen = Generation(text=text, model="m", ttft_ms=ttft_ms, total_ms=total_ms - retrieval_ms, load_ms=0.0,
                     prompt_tokens=prompt_tokens, prompt_ms=1.0, output_tokens=output_tokens, eval_ms=eval_ms,
                     done_reason="stop")
    question = f"question {qid}"
    return answer_row(arm, QA(qid, question, [], []), Answer(arm, question, text, "m", gen, [], retrieval_ms))


class Gateway(_JsonHandler):
    """A hosted endpoint's front door on loopback, in front of a real Ollama's /v1: it checks a bearer
    key (401 with the header echoed back otherwise, as some servers do), answers 429 with Retry-After
    to the first `rate_limit` requests, and holds each request `delay` seconds before forwarding it."""

    upstream = ""  # Ollama's base URL
    key = "sk-gateway-test-key"
    rate_limit = 0
    retry_after = "1"
    delay = 0.0
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        import urllib.request

        cls = type(self)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        auth = self.headers.get("Authorization")
        cls.seen.append({"path": self.path, "auth": auth, "at": time.monotonic()})
        if auth != f"Bearer {cls.key}":
            return self._send(401, json.dumps({"error": {"message": f"invalid key in {auth}", "type": "auth"}}).encode())
        if cls.rate_limit > 0:
            cls.rate_limit -= 1
            return self._send(429, b'{"error": {"message": "slow down", "type": "rate_limit"}}',
                              {"Retry-After": cls.retry_after})
        time.sleep(cls.delay)
        request = urllib.request.Request(cls.upstream + self.path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as upstream:
            self._send(upstream.status, upstream.read(), {"Content-Type": upstream.headers["Content-Type"]})


@contextmanager
def gateway(upstream: str) -> Iterator[tuple[str, type[Gateway]]]:
    """A Gateway in front of the Ollama at `upstream`: its /v1 URL, and the handler class to configure and read."""
    with _serving(Gateway, upstream=upstream) as (url, handler):
        yield url, handler
