"""The summary of a run as every front door shows it, formatted once: the CLI's tables, the app's
Report page and report.html all render these rows and lines (report.html adds only markup).
"""

from __future__ import annotations

from typing import Any

from eval import hosted
from eval.records import AnswerRow, StoredScore, Summary
from eval.scoring import PRIMARY
from eval.seeds import spread_lines
from pipelines.leakage import NOT_TAUGHT, TAUGHT

MISSING = "–"  # an arm that has no value for a metric


def fact_split_rows(summary: Summary) -> list[dict[str, str]]:
    """The split table: each arm on taught and not-taught eval facts (CLI, app and report.html)."""
    split = summary.get("fact_split")
    if not split:
        return []
    head = {c: f"{'taught' if c == TAUGHT else 'not taught'} (n={split['n'][c]})" for c in (TAUGHT, NOT_TAUGHT)}
    return [{"arm": arm, **{head[c]: fmt_estimate(per[c]) if c in per else "–" for c in (TAUGHT, NOT_TAUGHT)}}
            for arm, per in split["arms"].items()]


def forgetting_lines(summary: Summary) -> list[str]:
    f = summary.get("forgetting")
    return [v["statement"] for v in f.values()] if f else []


def seed_lines(summary: Summary) -> list[str]:
    return spread_lines(summary.get("seed_spread"))


def agreement_line(a: dict[str, Any]) -> str:
    """One sentence for the CLI, the app and report.html."""
    kappa = "undefined (one label throughout)" if a["kappa"] is None else f"{a['kappa']:.2f}"
    agree = "n/a" if a["agreement"] is None else f"{a['agreement']:.0%}"
    speed = f"; {a['seconds_per_verdict']:.1f} s per verdict" if a.get("seconds_per_verdict") else ""
    return (f"judge vs reference-contained on {a['n']} answers (answer accuracy ≥ {a['threshold']:g} = correct): "
            f"agreement {agree}, Cohen's κ {kappa}; judge says correct {a['judge_correct']}, contains "
            f"{a['contains_correct']}; {a['failed']} of {a['verdicts']} verdicts failed ({a['failure_rate']:.0%}){speed}")


def fmt_estimate(v: dict[str, Any], digits: int = 3) -> str:
    """'mean [lo, hi]', or 'n/a' when every score failed."""
    if v.get("mean") is None:
        return "n/a"
    return f"{v['mean']:.{digits}f} [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]"


def index_line(summary: Summary) -> str | None:
    """Which index the rag arms answered from (runs before this was recorded: None)."""
    ix = summary["config"].get("index")
    if not ix:
        return None
    return (f"index {ix['collection']} (documents {ix.get('content_hash') or 'not fingerprinted'}; {ix['mode']}, "
            f"top {ix['top_k']}, chunks {ix['chunk_size']}/{ix['chunk_overlap']})")


def question_rows(arms: list[str], answers: list[AnswerRow], scores: list[StoredScore]) -> list[dict[str, Any]]:
    """One row per question: id, question, and per arm its answer and whether it is correct (primary metric)."""
    ok = {(s["arm"], s["qid"]): s["value"] for s in scores if s["metric"] == PRIMARY}
    rows: dict[str, dict[str, Any]] = {}
    for a in answers:
        row = rows.setdefault(a["qid"], {"qid": a["qid"], "question": a["question"]})
        row[a["arm"]] = a["text"]
        row[f"{a['arm']} correct"] = None if ok.get((a["arm"], a["qid"])) is None else bool(ok[(a["arm"], a["qid"])])
    return [{k: r.get(k) for k in ["qid", "question", *arms, *(f"{a} correct" for a in arms)]}
            for _, r in sorted(rows.items())]


def quality_cells(summary: Summary) -> list[tuple[str, dict[str, dict[str, str] | None]]]:
    """Per metric, per arm: its mean, CI and failed scores as text (None: the arm has no such metric)."""
    out = []
    for m, per in summary["metrics"].items():
        cells: dict[str, dict[str, str] | None] = {}
        for a in summary["arms"]:
            v = per.get(a)
            cells[a] = None if v is None else {
                "mean": "n/a" if v["mean"] is None else f"{v['mean']:.3f}",
                "ci": "" if v["mean"] is None else f"[{v['lo']:.3f}, {v['hi']:.3f}]",
                "failed": f"{v['failures']} failed" if v["failures"] else ""}
        out.append((m, cells))
    return out


def cell_text(cell: dict[str, str] | None) -> str:
    if cell is None:
        return MISSING
    return " ".join(x for x in (cell["mean"], cell["ci"], f"({cell['failed']})" if cell["failed"] else "") if x)


def quality_rows(summary: Summary) -> list[dict[str, str]]:
    return [{"metric": m, **{a: cell_text(c) for a, c in cells.items()}} for m, cells in quality_cells(summary)]


def paired_rows(summary: Summary) -> list[dict[str, str]]:
    return [{"difference": f"{p['b']} − {p['a']}", "metric": p["metric"], "mean": f"{p['diff']:+.3f}",
             "95% CI": f"[{p['lo']:+.3f}, {p['hi']:+.3f}]", "p (bootstrap)": f"{p['p_bootstrap']:.3f}",
             "p (McNemar)": "" if p["p_mcnemar"] is None else f"{p['p_mcnemar']:.3f}",
             "wins/losses/ties": f"{p['wins']}/{p['losses']}/{p['ties']}", "significant": "yes" if p["significant"] else "no"}
            for p in summary["paired"]]


def latency_rows(summary: Summary) -> list[dict[str, str]]:
    return [{"arm": a, "p50 ms": f"{v['p50_ms']:.0f}", "p95 ms": f"{v['p95_ms']:.0f}", "TTFT p50 ms": f"{v['ttft_p50_ms']:.0f}",
             "tokens/s": f"{v['tokens_per_s']:.1f}", "answers/min": f"{(v['answers_per_min'] or 0):.1f}",
             "cost / 1k answers": f"{summary['costs'][a]['per_1k_answers']:.4f}",
             "one-off cost": f"{summary['costs'][a]['one_off']:.4f}"} for a, v in summary["latency"].items()]


def break_even_rows(summary: Summary) -> list[dict[str, str]]:
    return [{"arms": f"{b['a']} vs {b['b']}",
             "answers": f"{b['answers']:,.0f} answers" if b["answers"] else "never (no per-answer saving)"}
            for b in summary["break_even"]]


def judge_failure_lines(summary: Summary) -> list[str]:
    return [f"{m}: " + ", ".join(f"{n} × {r}" for r, n in per.items())
            for m, per in (summary.get("judge_failures") or {}).items()]


def attribution_lines(summary: Summary) -> list[str]:
    return [f"{a}: {c['correct']} correct, {c['retrieval_miss']} wrong after a retrieval miss, "
            f"{c['generation_error']} wrong although a reference source was retrieved"
            for a, c in summary["error_attribution"].items()]


def answer_failure_lines(summary: Summary) -> list[str]:
    """Answers that failed (a reference endpoint's timeout, 429, 5xx): counted, scored as empty answers."""
    n = summary["n_questions"]
    return [f"{arm}: {sum(per.values())} of {n} answers failed ("
            + ", ".join(f"{k}: {v}" for k, v in per.items()) + "); each is scored as an empty answer"
            for arm, per in (summary.get("answer_failures") or {}).items()]


def reference_lines(summary: Summary) -> list[str]:
    """The hosted reference: what it was, how it compares with the local pick, what it cost, how it failed."""
    ref = summary.get("reference")
    if not ref:
        return []
    pr = ref["prices"]
    lines = [f"endpoint {pr['endpoint']}, model {pr['model']}; prices set by the user: {pr['input_price_per_1m']:g} per "
             f"1M input tokens, {pr['output_price_per_1m']:g} per 1M output tokens, as of {pr['prices_date']}; local "
             f"arms priced at {summary['price_per_hour']:g} per machine-hour",
             hosted.reference_line(ref)]
    lines += answer_failure_lines(summary)
    if ref.get("rate_limited"):
        lines.append(f"{ref['rate_limited']} rate-limited requests (429) were waited out and asked again "
                     "(each is an event of the run)")
    return lines


def freshness_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """The freshness table: per arm (as is, and after a fine-tune on the edited documents) the share
    giving the new value, the old one, neither, and what catching up cost."""
    if not result:
        return []
    rows = []
    for r in result["arms"]:
        c = r["catch_up"]
        rows.append({"arm": r["arm"] if r["stage"] == "as is" else f"{r['arm']} (retrained)",
                     "follows the edit": fmt_estimate(r["follows"], 2), "still the old value": fmt_estimate(r["still_old"], 2),
                     "neither": f"{r['neither']} of {r['n']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
                     "catch-up": c["what"] if c else "none possible (answers from its weights)" if r["arm"] in ("base", "api")
                     else "none yet (still the old fine-tune)",
                     "catch-up cost": f"{c['cost']:.4f} ({c['seconds']:.0f} s)" if c else "–"})
    return rows


def freshness_lines(result: dict[str, Any] | None) -> list[str]:
    """What the freshness test measured, in words."""
    if not result:
        return []
    ix, tuned = result.get("index"), result.get("finetune")
    lines = [f"{result['n_edits']} facts of corpus '{result['corpus']}' edited in a copy (numbers swapped for others of "
             f"the same length, names for invented ones; seed {result['seed']}); the changed questions asked of every arm; "
             + ("the original corpus verified unchanged" if result.get("original_unchanged") else
                "warning: the original corpus changed during the test")]
    if ix:
        lines.append(f"re-index: {len(ix['changed_docs'])} edited documents, {ix['chunks_embedded']} chunks embedded "
                     f"again in {ix['seconds']:.1f} s (the other {ix['chunks_copied'] - ix['chunks_embedded']} kept)")
    if tuned:
        lines.append(f"fine-tune on the edited documents ({'+'.join(tuned['recipes'])}, teacher {tuned['teacher']}, "
                     f"{tuned['examples']} examples): {tuned['wall_s'] / 60:.1f} min from the first teacher call to the "
                     f"served model ({tuned['training_s']:.0f} s training), {tuned['wall_s'] * result['price_per_hour'] / 3600:.4f} "
                     f"at {result['price_per_hour']:g} per machine-hour"
                     + (" — at least: it was interrupted and continued, and the time before the interruption counts "
                        "only its training" if tuned.get("resumed") else ""))
    else:
        lines.append("no fine-tune on the edited documents in this test (the ft arms answer from the old fine-tune)")
    return lines
