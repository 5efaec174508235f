"""Turn a stored run into numbers (summary.json), tables (answers.csv, scores.csv) and a
self-contained report.html (charts inlined as SVG, rendered offline by vl-convert)."""

from __future__ import annotations

import csv
import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval import costs as costs_mod
from eval import injection
from eval.forgetting import summarise_probe
from eval.judge import JUDGE_METRICS
from eval.recommend import Needs, recommend
from eval.scoring import PRIMARY
from eval.seeds import seed_spread, spread_lines
from eval.stats import agreement, bootstrap_ci, paired_compare
from eval.store import Store
from pipelines import files
from pipelines.arms import ARM_NAMES, ARMS, BASE, finetuned_arms, ordered, retrieval_arms
from pipelines.leakage import NOT_TAUGHT, TAUGHT

KEY_METRICS = ("contains", "token_f1", "exact_match", "semantic_similarity", "rouge_score", "chrf_score",
               "bleu_score", "non_llm_string_similarity", "retrieval_hit", *JUDGE_METRICS)


def summarise(store: Store, run_id: str, price_per_hour: float = 0.10, needs: Needs | None = None,
              one_off_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    run = store.run(run_id)
    arms = ordered(run["arms"])
    answers = store.answers(run_id)
    scores = store.scores(run_id)
    by = {(s["arm"], s["qid"], s["metric"]): s for s in scores}
    # paired statistics need the questions every arm answered
    qids = sorted(set.intersection(*[{a["qid"] for a in answers if a["arm"] == arm} for arm in arms])) if arms else []
    metrics: dict[str, dict[str, Any]] = {}
    for m in KEY_METRICS:
        for arm in arms:
            rows = [by.get((arm, q, m)) for q in qids]
            present = [r for r in rows if r is not None]
            if not present:
                continue
            values = [r["value"] for r in present if r["value"] is not None]
            est = asdict(bootstrap_ci(values, seed=run["config"].get("seed", 0)))
            if not values:  # every score of this metric failed: no mean to show (JSON has no NaN)
                est.update(mean=None, lo=None, hi=None)
            metrics.setdefault(m, {})[arm] = {**est, "failures": sum(1 for r in present if r["value"] is None),
                                              "scored": len(present)}
    paired = []
    primary = {arm: [by[(arm, q, PRIMARY)]["value"] or 0.0 for q in qids if (arm, q, PRIMARY) in by] for arm in arms}
    f1 = {arm: [by[(arm, q, "token_f1")]["value"] or 0.0 for q in qids if (arm, q, "token_f1") in by] for arm in arms}
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1:]]
    paired_objs = {}
    for a, b in pairs:
        for m, vals in ((PRIMARY, primary), ("token_f1", f1)):
            if len(vals[a]) != len(vals[b]) or not vals[a]:
                continue
            p = paired_compare(a, vals[a], b, vals[b], [v > 0 for v in vals[a]] if m == PRIMARY else None,
                               [v > 0 for v in vals[b]] if m == PRIMARY else None)
            if m == PRIMARY and a == BASE:
                paired_objs[b] = p
            paired.append({"a": a, "b": b, "metric": m, "diff": p.diff.mean, "lo": p.diff.lo, "hi": p.diff.hi,
                           "p_bootstrap": p.p_bootstrap, "p_mcnemar": p.p_mcnemar, "wins": p.wins, "losses": p.losses,
                           "ties": p.ties, "significant": p.significant})
    arm_costs = {}
    for arm in arms:
        arm_rows = [a for a in answers if a["arm"] == arm]
        arm_costs[arm] = costs_mod.arm_cost(arm, [r["total_ms"] for r in arm_rows], [r["ttft_ms"] for r in arm_rows],
                                            [r["tokens_per_s"] for r in arm_rows], price_per_hour,
                                            (one_off_seconds or {}).get(arm, 0.0))
    breaks = []
    for a, b in pairs:
        n = costs_mod.break_even(arm_costs[a], arm_costs[b])
        breaks.append({"a": a, "b": b, "answers": n})
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
    quality = {arm: bootstrap_ci(primary[arm]) for arm in arms}
    rec = recommend(quality, paired_objs, arm_costs, needs or Needs(), PRIMARY, primary)
    info = run["info"] or {}
    ft_info = info.get("finetune") or {}
    fact_split = _fact_split(ft_info.get("facts"), arms, qids, by, run["config"].get("seed", 0))
    if fact_split:
        rec.reasons.append(setting_line(fact_split))
    forgetting = summarise_probe(store.probes(run_id)) if finetuned_arms(arms) else None
    spread = seed_spread(store, run_id, paired)
    rec.reasons += [line for line in spread_lines(spread) if "could reverse" in line]
    leak = ft_info.get("leakage")
    return {
        "run_id": run_id, "corpus": run["corpus"], "arms": arms, "n_questions": len(qids), "status": run["status"],
        "config": run["config"], "metrics": metrics, "paired": paired, "judge": run["config"].get("judge"),
        "judge_failures": _judge_failures(scores), "judge_agreement": _judge_agreement(by, arms, qids, run["info"] or {}),
        "events": store.events(run_id), "injection": injection.scan(answers),
        "latency": {a: {"p50_ms": c.latency_p50_ms, "p95_ms": c.latency_p95_ms, "ttft_p50_ms": c.ttft_p50_ms,
                        "tokens_per_s": c.tokens_per_s,
                        "answers_per_min": 60 / c.seconds_per_answer if c.seconds_per_answer else None}
                    for a, c in arm_costs.items()},
        "costs": {a: asdict(c) for a, c in arm_costs.items()}, "price_per_hour": price_per_hour, "break_even": breaks,
        "error_attribution": attribution,
        "recommendation": asdict(rec), "finetune": ({k: v for k, v in ft_info.items() if k != "facts"} or None),
        "fact_split": fact_split, "forgetting": forgetting, "seed_spread": spread, "accept_loss": (needs or Needs()).accept_loss,
        "leakage": leak,
        "leakage_statement": (f"fine-tune {ft_info.get('run_id')}: leakage guard found {leak['verbatim']} verbatim, "
                              f"{leak['near_verbatim']} near-verbatim eval questions in its training data, and "
                              f"{leak['paraphrase']} eval questions with a paraphrase in training (paraphrase coverage)"
                              + (" — trained with --allow-leakage" if ft_info.get("allow_leakage") else "")
                              + (f"; {ft_info['mix']['examples']} reading examples mixed in from corpus "
                                 f"'{ft_info['mix']['corpus']}' (its training questions)" if ft_info.get("mix") else ""))
        if leak else "no fine-tuned arm in this run",
    }


def _fact_split(facts: dict[str, str] | None, arms: list[str], qids: list[str],
                by: dict[tuple[str, str, str], dict[str, Any]], seed: int) -> dict[str, Any] | None:
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


def fact_split_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The split table: each arm on taught and not-taught eval facts (CLI, app and report.html)."""
    split = summary.get("fact_split")
    if not split:
        return []
    head = {c: f"{'taught' if c == TAUGHT else 'not taught'} (n={split['n'][c]})" for c in (TAUGHT, NOT_TAUGHT)}
    return [{"arm": arm, **{head[c]: fmt_estimate(per[c]) if c in per else "–" for c in (TAUGHT, NOT_TAUGHT)}}
            for arm, per in split["arms"].items()]


def forgetting_lines(summary: dict[str, Any]) -> list[str]:
    f = summary.get("forgetting")
    return [v["statement"] for v in f.values()] if f else []


def seed_lines(summary: dict[str, Any]) -> list[str]:
    return spread_lines(summary.get("seed_spread"))


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


def _judge_agreement(by: dict[tuple[str, str, str], dict[str, Any]], arms: list[str], qids: list[str],
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


def agreement_line(a: dict[str, Any]) -> str:
    """One sentence for the CLI, the app and report.html."""
    kappa = "undefined (one label throughout)" if a["kappa"] is None else f"{a['kappa']:.2f}"
    agree = "n/a" if a["agreement"] is None else f"{a['agreement']:.0%}"
    speed = f"; {a['seconds_per_verdict']:.1f} s per verdict" if a.get("seconds_per_verdict") else ""
    return (f"judge vs reference-contained on {a['n']} answers (answer accuracy ≥ {a['threshold']:g} = correct): "
            f"agreement {agree}, Cohen's κ {kappa}; judge says correct {a['judge_correct']}, contains "
            f"{a['contains_correct']}; {a['failed']} of {a['verdicts']} verdicts failed ({a['failure_rate']:.0%}){speed}")


def _judge_failures(scores: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per judge metric: how many verdicts failed, by reason (NaN, parse error, timeout…)."""
    out: dict[str, dict[str, int]] = {}
    for s in scores:
        if s["metric"] in JUDGE_METRICS and s["value"] is None:
            reason = (s["error"] or "unknown").split(":")[0]
            per = out.setdefault(s["metric"], {})
            per[reason] = per.get(reason, 0) + 1
    return out


def fmt_estimate(v: dict[str, Any], digits: int = 3) -> str:
    """'mean [lo, hi]', or 'n/a' when every score failed."""
    if v.get("mean") is None:
        return "n/a"
    return f"{v['mean']:.{digits}f} [{v['lo']:.{digits}f}, {v['hi']:.{digits}f}]"


def write_outputs(store: Store, run_id: str, summary: dict[str, Any], out: Path) -> dict[str, Path]:
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


def index_line(summary: dict[str, Any]) -> str | None:
    """Which index the rag arms answered from (runs before this was recorded: None)."""
    ix = summary["config"].get("index")
    if not ix:
        return None
    return (f"index {ix['collection']} (documents {ix.get('content_hash') or 'not fingerprinted'}; {ix['mode']}, "
            f"top {ix['top_k']}, chunks {ix['chunk_size']}/{ix['chunk_overlap']})")


def _index_line(summary: dict[str, Any]) -> str:
    line = index_line(summary)
    return f" · {html.escape(line)}" if line else ""


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(…)` in a model's answer or a
    document) gets a leading apostrophe, which spreadsheets show as text; numbers are kept."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _csv(rows: list[dict[str, Any]], cols: list[str], fix: Any = None) -> str:
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


def charts(summary: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, str]:
    return {name: _svg(chart) for name, chart in chart_specs(summary, answers).items()}


def chart_specs(summary: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
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


def question_rows(arms: list[str], answers: list[dict[str, Any]], scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per question: id, question, and per arm its answer and whether it is correct (primary metric)."""
    ok = {(s["arm"], s["qid"]): s["value"] for s in scores if s["metric"] == PRIMARY}
    rows: dict[str, dict[str, Any]] = {}
    for a in answers:
        row = rows.setdefault(a["qid"], {"qid": a["qid"], "question": a["question"]})
        row[a["arm"]] = a["text"]
        row[f"{a['arm']} correct"] = None if ok.get((a["arm"], a["qid"])) is None else bool(ok[(a["arm"], a["qid"])])
    return [{k: r.get(k) for k in ["qid", "question", *arms, *(f"{a} correct" for a in arms)]}
            for _, r in sorted(rows.items())]


def _judge_html(summary: dict[str, Any]) -> str:
    e = html.escape
    j = summary.get("judge")
    if not j:
        return "<p>No LLM judge in this run: the judge metrics (answer accuracy, relevancy, faithfulness, context " \
               "precision and recall) were not computed.</p>"
    fails = summary.get("judge_failures") or {}
    rows = "".join(f"<li>{e(m)}: " + ", ".join(f"{n} × {e(r)}" for r, n in per.items()) + "</li>" for m, per in fails.items())
    agree = summary.get("judge_agreement")
    return (f"<p>judge <code>{e(j['model'])}</code> at {e(j['endpoint'])}</p>"
            + (f"<p class=fail>warning: {e(j['warning'])}</p>" if j.get("warning") else "")
            + (f"<p>{e(agreement_line(agree))}</p>" if agree else "")
            + (f"<p>Failed verdicts (counted in the quality table, never dropped):</p><ul>{rows}</ul>" if rows
               else "<p>Every judge verdict was parsed.</p>"))


def _fact_split_html(summary: dict[str, Any]) -> str:
    rows = fact_split_rows(summary)
    if not rows:
        return ""
    e = html.escape
    cols = list(rows[0])
    return ("<p>Each arm on the eval facts the fine-tune's training data states (a training example on the same "
            "subject gives the reference answer) and on the rest:</p><table><tr>"
            + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(r[c])}</td>" for c in cols) + "</tr>" for r in rows) + "</table>")


def _seeds_html(summary: dict[str, Any]) -> str:
    lines = seed_lines(summary)
    if not lines:
        return ("<p>One training seed evaluated on these questions: the spread over seeds is not measured (fine-tune "
                "again with another seed and evaluate the same questions to see it).</p>"
                if summary.get("finetune") else "<p>No fine-tuned arm in this run.</p>")
    return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def _forgetting_html(summary: dict[str, Any]) -> str:
    lines = forgetting_lines(summary)
    if not lines:
        return "<p>No fine-tuned arm in this run (or its probe was not answered): nothing to check.</p>"
    return ("<p>base and the fine-tuned model answered ragft's fixed probe (general questions closed book; invented "
            "facts with their passage in the rag prompt):</p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines)
            + "</ul>")


def _injection_html(summary: dict[str, Any]) -> str:
    e = html.escape
    inj = summary.get("injection") or {"passages": 0, "answers_quoting": []}
    if not inj["passages"]:
        return "<p>No retrieved passage reads like an instruction to the model.</p>"
    rows = "".join(f"<li class=fail>{e(f['arm'])} / {e(f['qid'])}: “{e(f['answer'])}” repeats “{e(f['quoted'])}”</li>"
                   for f in inj["answers_quoting"])
    return (f"<p>{inj['passages']} retrieved passage(s) read like instructions to the model, e.g. "
            + "; ".join(f"“{e(x)}”" for x in inj["examples"]) + ". Answers are text only: nothing in them is run. "
            + (f"Answers that quote such text:</p><ul>{rows}</ul>" if rows else "No answer quotes them.</p>"))


def _events_html(summary: dict[str, Any]) -> str:
    from datetime import datetime

    events = summary.get("events") or []
    if not events:
        return "<p>The run went through without interruptions, retries or server restarts.</p>"
    return "<ul>" + "".join(f"<li>{datetime.fromtimestamp(ev['at']).strftime('%Y-%m-%d %H:%M:%S')} "
                            f"<b>{html.escape(ev['kind'])}</b>: {html.escape(ev['detail'])}</li>" for ev in events) + "</ul>"


def render_html(summary: dict[str, Any], answers: list[dict[str, Any]], scores: list[dict[str, Any]]) -> str:
    e = html.escape
    ch = charts(summary, answers)
    arms = summary["arms"]
    rec = summary["recommendation"]
    metric_rows = "".join(
        f"<tr><td>{e(m)}</td>" + "".join(
            (f"<td>{per[a]['mean']:.3f} <small>[{per[a]['lo']:.3f}, {per[a]['hi']:.3f}]</small>"
             if per[a]["mean"] is not None else "<td>n/a")
            + (f" <b class=fail>{per[a]['failures']} failed</b>" if per[a]["failures"] else "") + "</td>"
            if a in per else "<td>–</td>" for a in arms) + "</tr>"
        for m, per in summary["metrics"].items())
    paired_rows = "".join(
        f"<tr><td>{e(p['b'])} − {e(p['a'])}</td><td>{e(p['metric'])}</td><td>{p['diff']:+.3f} "
        f"<small>[{p['lo']:+.3f}, {p['hi']:+.3f}]</small></td><td>{p['p_bootstrap']:.3f}</td>"
        f"<td>{'' if p['p_mcnemar'] is None else format(p['p_mcnemar'], '.3f')}</td>"
        f"<td>{p['wins']}/{p['losses']}/{p['ties']}</td><td>{'yes' if p['significant'] else 'no'}</td></tr>"
        for p in summary["paired"])
    lat_rows = "".join(
        f"<tr><td>{e(a)}</td><td>{v['p50_ms']:.0f}</td><td>{v['p95_ms']:.0f}</td><td>{v['ttft_p50_ms']:.0f}</td>"
        f"<td>{v['tokens_per_s']:.1f}</td><td>{(v['answers_per_min'] or 0):.1f}</td>"
        f"<td>{summary['costs'][a]['per_1k_answers']:.4f}</td><td>{summary['costs'][a]['one_off']:.4f}</td></tr>"
        for a, v in summary["latency"].items())
    be_rows = "".join(f"<li>{e(b['a'])} vs {e(b['b'])}: "
                      + (f"{b['answers']:,.0f} answers" if b["answers"] else "never (no per-answer saving)") + "</li>"
                      for b in summary["break_even"])
    by_q: dict[str, dict[str, Any]] = {}
    for a in answers:
        by_q.setdefault(a["qid"], {"question": a["question"]})[a["arm"]] = a["text"]
    ok = {(s["arm"], s["qid"]): s["value"] for s in scores if s["metric"] == PRIMARY}
    q_rows = "".join(
        f"<tr><td>{e(q)}</td><td>{e(v['question'])}</td>" + "".join(
            f"<td class={'ok' if ok.get((a, q)) else 'no'}>{e(str(v.get(a, '')))}</td>" for a in arms) + "</tr>"
        for q, v in sorted(by_q.items()))
    attribution = "".join(f"<li>{e(a)}: {c['correct']} correct, {c['retrieval_miss']} wrong after a retrieval miss, "
                          f"{c['generation_error']} wrong although a reference source was retrieved</li>"
                          for a, c in summary["error_attribution"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ragft report {e(summary['run_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}}.ok{{background:#e6f4ea}}.no{{background:#fdecea}}
.fail{{color:#b00}}.rec{{background:#eef3ff;padding:1em;border-radius:6px}}small{{color:#555}}</style></head><body>
<h1>ragft report — {e(summary['corpus'])}</h1>
<p>run <code>{e(summary['run_id'])}</code> · {summary['n_questions']} held-out questions · arms {', '.join(map(e, arms))} ·
model {e(str(summary['config'].get('model')))} ({e(str(summary['config'].get('quantization')))}) · decoding
{e(json.dumps(summary['config'].get('decoding')))}{_index_line(summary)}</p>
<div class="rec"><h2>Recommendation: {e(rec['choice'])}</h2><ul>{''.join(f'<li>{e(r)}</li>' for r in rec['reasons'])}</ul>
<p>What would change it:</p><ul>{''.join(f'<li>{e(f)}</li>' for f in rec['flips'])}</ul></div>
<h2>Leakage</h2><p>{e(summary['leakage_statement'])}</p>
{_fact_split_html(summary)}
<h2>Forgetting probe</h2>{_forgetting_html(summary)}
<h2>Training seeds</h2>{_seeds_html(summary)}
<h2>Judge</h2>{_judge_html(summary)}
<h2>Run record</h2>{_events_html(summary)}
<h2>Instructions planted in documents</h2>{_injection_html(summary)}
<h2>Quality per arm (mean with bootstrap 95% CI)</h2>{ch['quality']}
<table><tr><th>metric</th>{''.join(f'<th>{e(a)}</th>' for a in arms)}</tr>{metric_rows}</table>
<h2>Paired comparisons</h2><table><tr><th>difference</th><th>metric</th><th>mean [95% CI]</th><th>p (bootstrap)</th>
<th>p (McNemar)</th><th>wins/losses/ties</th><th>significant</th></tr>{paired_rows}</table>
<h2>Errors of the rag arms</h2><ul>{attribution or '<li>no rag arm in this run</li>'}</ul>
<h2>Latency and cost</h2>{ch['latency']}
<table><tr><th>arm</th><th>p50 ms</th><th>p95 ms</th><th>TTFT p50 ms</th><th>tokens/s</th><th>answers/min</th>
<th>cost / 1k answers</th><th>one-off cost</th></tr>{lat_rows}</table>
<p>Price: {summary['price_per_hour']} per machine-hour of measured compute. Break-even volumes:</p><ul>{be_rows}</ul>{ch['cost']}
<h2>Answers side by side</h2><table><tr><th>id</th><th>question</th>{''.join(f'<th>{e(a)}</th>' for a in arms)}</tr>{q_rows}</table>
</body></html>"""
