"""Turn a stored run into numbers (summary.json), tables (answers.csv, scores.csv) and a
self-contained report.html (charts inlined as SVG, rendered offline by vl-convert)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from eval import costs as costs_mod
from eval import hosted, injection, views
from eval.forgetting import summarise_probe
from eval.judge import JUDGE_METRICS
from eval.recommend import Needs, recommend
from eval.records import AnswerRow, ArmMetric, BreakEven, PairedRow, Recommendation, StoredScore, Summary
from eval.scoring import PRIMARY
from eval.seeds import seed_spread, spread_lines
from eval.stats import Paired, agreement, bootstrap_ci, paired_compare
from eval.store import Store
from pipelines import files
from pipelines.arms import ARM_NAMES, ARMS, BASE, finetuned_arms, local_arms, ordered, retrieval_arms
from pipelines.errors import cli_option
from pipelines.leakage import NOT_TAUGHT, TAUGHT

KEY_METRICS = ("contains", "token_f1", "exact_match", "semantic_similarity", "rouge_score", "chrf_score",
               "bleu_score", "non_llm_string_similarity", "retrieval_hit", *JUDGE_METRICS)


def summarise(store: Store, run_id: str, price_per_hour: float = 0.10, needs: Needs | None = None,
              one_off_seconds: dict[str, float] | None = None) -> Summary:
    run = store.run(run_id)
    arms = ordered(run["arms"])
    answers = store.answers(run_id)
    scores = store.scores(run_id)
    by = {(s["arm"], s["qid"], s["metric"]): s for s in scores}
    # paired statistics need the questions every arm answered
    qids = sorted(set.intersection(*[{a["qid"] for a in answers if a["arm"] == arm} for arm in arms])) if arms else []
    metrics = _metrics(by, arms, qids, run["config"].get("seed", 0))
    primary = {arm: [by[(arm, q, PRIMARY)]["value"] or 0.0 for q in qids if (arm, q, PRIMARY) in by] for arm in arms}
    f1 = {arm: [by[(arm, q, "token_f1")]["value"] or 0.0 for q in qids if (arm, q, "token_f1") in by] for arm in arms}
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
    paired, paired_objs = _paired(pairs, primary, f1)
    arm_costs = {}
    prices = run["config"].get("reference")
    for arm in arms:
        arm_rows = [a for a in answers if a["arm"] == arm]
        if ARMS[arm].hosted and prices:
            arm_costs[arm] = hosted.hosted_cost(arm, arm_rows, prices)
            continue
        arm_costs[arm] = costs_mod.arm_cost(arm, [r["total_ms"] for r in arm_rows], [r["ttft_ms"] for r in arm_rows],
                                            [r["tokens_per_s"] for r in arm_rows], price_per_hour,
                                            (one_off_seconds or {}).get(arm, 0.0))
    breaks = [BreakEven(a=a, b=b, answers=costs_mod.break_even(arm_costs[a], arm_costs[b])) for a, b in pairs]
    quality = {arm: bootstrap_ci(primary[arm]) for arm in arms}
    # ragft recommends among the local arms; the hosted reference is measured against the pick.
    local = local_arms(arms)
    rec = recommend({a: quality[a] for a in local}, {a: p for a, p in paired_objs.items() if a in local}, arm_costs,
                    needs or Needs(), PRIMARY, {a: primary[a] for a in local})
    events = store.events(run_id)
    reference = hosted.reference_summary(arms, primary, quality, arm_costs, rec.arm, price_per_hour, prices or {},
                                         sum(1 for e in events if e["kind"] == "rate_limited")) if prices else None
    if reference:
        rec.reasons.append(hosted.reference_line(reference))
    info = run["info"] or {}
    ft_info = info.get("finetune") or {}
    fact_split = _fact_split(ft_info.get("facts"), arms, qids, by, run["config"].get("seed", 0))
    if fact_split:
        rec.reasons.append(setting_line(fact_split))
    forgetting = summarise_probe(store.probes(run_id)) if finetuned_arms(arms) else None
    spread = seed_spread(store, run_id, paired)
    rec.reasons += [line for line in spread_lines(spread) if "could reverse" in line]
    return {
        "run_id": run_id, "corpus": run["corpus"], "arms": arms, "n_questions": len(qids), "status": run["status"],
        "config": run["config"], "metrics": metrics, "paired": paired, "judge": run["config"].get("judge"),
        "judge_failures": _judge_failures(scores), "judge_agreement": _judge_agreement(by, arms, qids, run["info"] or {}),
        "events": events, "injection": injection.scan(answers),
        "answer_failures": hosted.answer_failures(answers), "reference": reference, "freshness": None,
        "latency": {a: {"p50_ms": c.latency_p50_ms, "p95_ms": c.latency_p95_ms, "ttft_p50_ms": c.ttft_p50_ms,
                        "tokens_per_s": c.tokens_per_s,
                        "answers_per_min": 60 / c.seconds_per_answer if c.seconds_per_answer else None}
                    for a, c in arm_costs.items()},
        "costs": {a: asdict(c) for a, c in arm_costs.items()}, "price_per_hour": price_per_hour, "break_even": breaks,
        "error_attribution": _attribution(arms, qids, by),
        "recommendation": cast(Recommendation, asdict(rec)), "finetune": ({k: v for k, v in ft_info.items() if k != "facts"} or None),
        "fact_split": fact_split, "forgetting": forgetting, "seed_spread": spread, "accept_loss": (needs or Needs()).accept_loss,
        "leakage": ft_info.get("leakage"),
        "leakage_statement": _leakage_statement(ft_info),
    }


Rows = dict[tuple[str, str, str], StoredScore]  # (arm, qid, metric) → stored score


def _metrics(by: Rows, arms: list[str], qids: list[str], seed: int) -> dict[str, dict[str, ArmMetric]]:
    """Every key metric per arm: bootstrap mean and CI over the questions all arms answered, failures counted."""
    metrics: dict[str, dict[str, Any]] = {}
    for m in KEY_METRICS:
        for arm in arms:
            present = [r for r in (by.get((arm, q, m)) for q in qids) if r is not None]
            if not present:
                continue
            values = [r["value"] for r in present if r["value"] is not None]
            est = asdict(bootstrap_ci(values, seed=seed))
            if not values:  # every score of this metric failed: no mean to show (JSON has no NaN)
                est.update(mean=None, lo=None, hi=None)
            metrics.setdefault(m, {})[arm] = {**est, "failures": sum(1 for r in present if r["value"] is None),
                                              "scored": len(present)}
    return metrics


def _paired(pairs: list[tuple[str, str]], primary: dict[str, list[float]], f1: dict[str, list[float]]
            ) -> tuple[list[PairedRow], dict[str, Paired]]:
    """Paired bootstrap (and McNemar on the primary metric) for every pair of arms; the comparisons
    against base, which the recommendation reads, also as objects."""
    paired: list[PairedRow] = []
    against_base: dict[str, Paired] = {}
    for a, b in pairs:
        for m, vals in ((PRIMARY, primary), ("token_f1", f1)):
            if len(vals[a]) != len(vals[b]) or not vals[a]:
                continue
            p = paired_compare(a, vals[a], b, vals[b], [v > 0 for v in vals[a]] if m == PRIMARY else None,
                               [v > 0 for v in vals[b]] if m == PRIMARY else None)
            if m == PRIMARY and a == BASE:
                against_base[b] = p
            paired.append({"a": a, "b": b, "metric": m, "diff": p.diff.mean, "lo": p.diff.lo, "hi": p.diff.hi,
                           "p_bootstrap": p.p_bootstrap, "p_mcnemar": p.p_mcnemar, "wins": p.wins, "losses": p.losses,
                           "ties": p.ties, "significant": p.significant})
    return paired, against_base


def _attribution(arms: list[str], qids: list[str], by: Rows) -> dict[str, dict[str, int]]:
    """Why each retrieval arm's wrong answers were wrong: the passage was not retrieved, or it was and the model missed."""
    attribution = {}
    for arm in retrieval_arms(arms):
        c = {"correct": 0, "retrieval_miss": 0, "generation_error": 0}
        for q in qids:
            ok, hit = by.get((arm, q, PRIMARY)), by.get((arm, q, "retrieval_hit"))
            if ok and ok["value"]:
                c["correct"] += 1
            elif hit and not hit["value"]:
                c["retrieval_miss"] += 1
            else:
                c["generation_error"] += 1
        attribution[arm] = c
    return attribution


def _leakage_statement(ft_info: dict[str, Any]) -> str:
    leak = ft_info.get("leakage")
    if not leak:
        return "no fine-tuned arm in this run"
    return (f"fine-tune {ft_info.get('run_id')}: leakage guard found {leak['verbatim']} verbatim, "
            f"{leak['near_verbatim']} near-verbatim eval questions in its training data, and "
            f"{leak['paraphrase']} eval questions with a paraphrase in training (paraphrase coverage)"
            + (f" — trained with {cli_option('allow_leakage')}" if ft_info.get("allow_leakage") else "")
            + (f"; {ft_info['mix']['examples']} reading examples mixed in from corpus "
               f"'{ft_info['mix']['corpus']}' (its training questions)" if ft_info.get("mix") else ""))


def _fact_split(facts: dict[str, str] | None, arms: list[str], qids: list[str],
                by: Rows, seed: int) -> dict[str, Any] | None:
    """Each arm's primary metric on eval facts the fine-tune's training data taught and on the rest."""
    if not facts:
        return None
    cls = {q: facts.get(q, NOT_TAUGHT) for q in qids}
    out: dict[str, Any] = {"n": {c: sum(1 for k in cls.values() if k == c) for c in (TAUGHT, NOT_TAUGHT)}, "arms": {}}
    for arm in arms:
        for c in (TAUGHT, NOT_TAUGHT):
            vals = [by[(arm, q, PRIMARY)]["value"] or 0.0 for q in qids if cls[q] == c and (arm, q, PRIMARY) in by]
            if vals:
                out["arms"].setdefault(arm, {})[c] = asdict(bootstrap_ci(vals, seed=seed))
    return out


def setting_line(split: dict[str, Any]) -> str:
    """Which setting the verdict describes: facts the training data states, or facts it does not."""
    n_t, n_n = split["n"][TAUGHT], split["n"][NOT_TAUGHT]
    share = n_t / max(1, n_t + n_n)
    # The closed-book fine-tune shows what training taught: it has nothing else to answer from.
    name = next((a for a in finetuned_arms(split["arms"]) if not ARMS[a].uses_retrieval), None)
    ft = split["arms"][name] if name else {}

    def on(c: str) -> str:
        return f"{100 * ft[c]['mean']:.0f}%" if c in ft else "n/a"

    scores = f" ({name} scores {on(TAUGHT)} on taught facts, {on(NOT_TAUGHT)} on the rest)" if ft else ""
    if share >= 0.5:
        return (f"{n_t} of {n_t + n_n} eval facts ({100 * share:.0f}%) are stated in the fine-tune's training data: this "
                f"verdict describes the setting where your training data states the facts you will be asked about{scores}")
    return (f"only {n_t} of {n_t + n_n} eval facts ({100 * share:.0f}%) are stated in the fine-tune's training data: this "
            f"verdict describes questions about facts training did not teach{scores}")


def compare_runs(store: Store, run_a: str, run_b: str) -> list[dict[str, Any]]:
    """Metric × arm means of two stored runs and their change (None where a mean is missing)."""
    a, b = summarise(store, run_a), summarise(store, run_b)
    rows = []
    for m, per in a["metrics"].items():
        for arm, va in per.items():
            vb = b["metrics"].get(m, {}).get(arm)
            if vb is None:
                continue
            x, y = va["mean"], vb["mean"]
            rows.append({"metric": m, "arm": arm, "a": x, "b": y,
                         "change": None if x is None or y is None else y - x})
    return rows


JUDGE_THRESHOLD = 0.5  # answer accuracy at or above this counts as "correct" when compared with contains


def _judge_agreement(by: Rows, arms: list[str], qids: list[str],
                     info: dict[str, Any]) -> dict[str, Any] | None:
    """How far the judge can be trusted here: its answer accuracy against reference-contained, per answer.

    Reference-contained is mechanical and knows nothing of paraphrase, so disagreement is not
    all the judge's fault; but a judge that agrees with it no better than chance (κ ≈ 0) is not
    one to act on.
    """
    pairs = [(by[(arm, q, "answer_accuracy")], by.get((arm, q, PRIMARY))) for arm in arms for q in qids
             if (arm, q, "answer_accuracy") in by]
    if not pairs:
        return None
    both = [(j["value"] >= JUDGE_THRESHOLD, bool(c["value"])) for j, c in pairs
            if j["value"] is not None and c is not None and c["value"] is not None]
    agree = agreement([x for x, _ in both], [y for _, y in both])
    failed = sum(1 for j, _ in pairs if j["value"] is None)
    timing = (info.get("judge_timing") or {}).get("answer_accuracy")
    return {"metric": "answer_accuracy", "versus": PRIMARY, "threshold": JUDGE_THRESHOLD, "n": agree.n,
            "agreement": agree.agreement if agree.n else None, "kappa": agree.kappa,
            "judge_correct": agree.positive_a, "contains_correct": agree.positive_b,
            "verdicts": len(pairs), "failed": failed, "failure_rate": failed / len(pairs),
            "seconds_per_verdict": timing["seconds_per_verdict"] if timing else None,
            "timed_verdicts": timing["verdicts"] if timing else 0}


def _judge_failures(scores: list[StoredScore]) -> dict[str, dict[str, int]]:
    """Per judge metric: how many verdicts failed, by reason (NaN, parse error, timeout…)."""
    out: dict[str, dict[str, int]] = {}
    for s in scores:
        if s["metric"] in JUDGE_METRICS and s["value"] is None:
            reason = (s["error"] or "unknown").split(":")[0]
            per = out.setdefault(s["metric"], {})
            per[reason] = per.get(reason, 0) + 1
    return out


def write_outputs(store: Store, run_id: str, summary: Summary, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {n: out / n for n in ("summary.json", "answers.csv", "scores.csv", "report.html")}
    files.write_atomic(paths["summary.json"], json.dumps(summary, indent=1, default=str))
    answers = store.answers(run_id)
    files.write_atomic(paths["answers.csv"], _csv(answers, ["arm", "qid", "question", "model", "text", "retrieval_ms", "ttft_ms",
                                                       "total_ms", "prompt_tokens", "output_tokens", "tokens_per_s"],
                                             lambda a: {**a, "passages": ""}))
    scores = store.scores(run_id)
    files.write_atomic(paths["scores.csv"], _csv(scores, ["arm", "qid", "metric", "value", "error"]))
    files.write_atomic(paths["report.html"], render_html(summary, answers, scores))
    return paths


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(…)` in a model's answer or a
    document) gets a leading apostrophe, which spreadsheets show as text; numbers are kept."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _csv(rows: Sequence[Mapping[str, Any]], cols: list[str], fix: Any = None) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in (fix(r) if fix else r).items()})
    return buf.getvalue()


# ---------------------------------------------------------------- HTML


def _svg(chart: Any) -> str:
    import vl_convert as vlc

    return str(vlc.vegalite_to_svg(chart.to_json()))


def charts(summary: Summary, answers: list[AnswerRow]) -> dict[str, str]:
    return {name: _svg(chart) for name, chart in chart_specs(summary, answers).items()}


def chart_specs(summary: Summary, answers: list[AnswerRow]) -> dict[str, Any]:
    """The report's Altair charts (quality with CIs, latency, cost vs volume), from the summary's numbers."""
    import altair as alt
    import pandas as pd

    rows = [{"metric": m, "arm": a, "mean": v["mean"], "lo": v["lo"], "hi": v["hi"]}
            for m, per in summary["metrics"].items() for a, v in per.items() if v["mean"] is not None]
    df = pd.DataFrame(rows)
    base = alt.Chart(df).encode(x=alt.X("arm:N", sort=list(ARM_NAMES), title=None), color=alt.Color("arm:N", legend=None))
    quality = alt.layer(base.mark_bar(), base.mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")).encode(
        y=alt.Y("mean:Q", title="mean (95% CI)")).properties(width=110, height=150).facet(
        facet=alt.Facet("metric:N", sort=list(KEY_METRICS)), columns=5)
    lat = pd.DataFrame([{"arm": a["arm"], "latency_ms": a["total_ms"]} for a in answers])
    latency = alt.Chart(lat).mark_boxplot().encode(x=alt.X("arm:N", sort=list(ARM_NAMES)), y=alt.Y("latency_ms:Q",
                                                   title="answer latency (ms)"), color=alt.Color("arm:N", legend=None)
                                                   ).properties(width=400, height=220)
    horizon = max([b["answers"] for b in summary["break_even"] if b["answers"]] + [10_000]) * 2
    cost_rows = []
    for a, c in summary["costs"].items():
        for n in (0, horizon / 4, horizon / 2, horizon):
            cost_rows.append({"arm": a, "answers": n, "total cost": c["one_off"] + c["per_1k_answers"] * n / 1000})
    cost = alt.Chart(pd.DataFrame(cost_rows)).mark_line(point=True).encode(
        x=alt.X("answers:Q", title="answers served"), y=alt.Y("total cost:Q", title=f"total cost at {summary['price_per_hour']}/h"),
        color="arm:N").properties(width=400, height=220)
    return {"quality": quality, "latency": latency, "cost": cost}


def render_html(summary: Summary, answers: list[AnswerRow], scores: list[StoredScore]) -> str:
    from datetime import datetime

    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("eval", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    ok = {(s["arm"], s["qid"]): s["value"] for s in scores if s["metric"] == PRIMARY}
    by_q: dict[str, dict[str, Any]] = {}
    for a in answers:
        by_q.setdefault(a["qid"], {"qid": a["qid"], "question": a["question"], "answers": {}})["answers"][a["arm"]] = a["text"]
    questions = [{**v, "ok": {arm: bool(ok.get((arm, q))) for arm in summary["arms"]}} for q, v in sorted(by_q.items())]
    agree = summary.get("judge_agreement")
    events = [{**ev, "at": datetime.fromtimestamp(ev["at"]).strftime("%Y-%m-%d %H:%M:%S")} for ev in summary.get("events") or []]
    return env.get_template("report.html").render(
        s=summary, arms=summary["arms"], rec=summary["recommendation"], charts=charts(summary, answers),
        decoding=json.dumps(summary["config"].get("decoding")), index_line=views.index_line(summary),
        split_rows=views.fact_split_rows(summary), forgetting=views.forgetting_lines(summary),
        seeds=views.seed_lines(summary), judge=summary.get("judge"), reference=views.reference_lines(summary),
        answer_failures=views.answer_failure_lines(summary), freshness_rows=views.freshness_rows(summary.get("freshness")),
        freshness=views.freshness_lines(summary.get("freshness")), judge_failures=views.judge_failure_lines(summary),
        agreement=views.agreement_line(agree) if agree else None, events=events,
        quality=views.quality_cells(summary), paired=views.paired_rows(summary), latency=views.latency_rows(summary),
        break_even=views.break_even_rows(summary), attribution=views.attribution_lines(summary),
        injection=summary.get("injection") or {"passages": 0, "answers_quoting": [], "examples": []},
        questions=questions)
