"""``offerstream experiment report ID``: a report of one experiment from any worker's results.

Writes ``OUT/results.json`` (the results endpoint's answer), ``OUT/series.json`` (the cumulative
results at evenly spaced times, from ``?until=``), ``OUT/report.md`` and two plots: per-arm rates
with their 95 % intervals (``rates.png``) and each arm's cumulative uplift against control with
its interval over time (``uplift.png``). Without matplotlib the report is written without plots and
says so in one line, as ``offerstream train`` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from offerstream.client import ApiClient

__all__ = ["write_experiment_report", "PLOTS_HINT"]

PLOTS_HINT = "pip install 'offerstream[train]'"
POINTS = 20


def _series(client: ApiClient, experiment_id: str, final: dict[str, Any]) -> list[dict[str, Any]]:
    period = final.get("period") or {}
    first, last = period.get("first_decision"), period.get("last_decision")
    if first is None or last is None:
        return []
    step = max(1, (last + 1 - first) // POINTS)
    cuts = sorted({min(last + 1, first + step * i) for i in range(1, POINTS + 1)})
    return [client.json("GET", f"/v1/experiments/{experiment_id}/results?until={cut}") for cut in cuts]


def _plots(out: Path, final: dict[str, Any], series: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, row in final["arms"].items() if row["rate"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    rates = [final["arms"][n]["rate"] for n in names]
    ax.bar(names, rates, color="#4C72B0")
    ax.set(ylabel="redemptions per impression", title=f"experiment {final['id']}: rate per arm")
    fig.tight_layout()
    fig.savefig(out / "rates.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        points = [(s["period"]["until"], s["arms"][name]["uplift"]) for s in series
                  if name in s["arms"] and s["arms"][name].get("uplift")]
        if not points:
            continue
        xs = [(t - points[0][0]) / 1000.0 for t, _ in points]
        diffs = [u["diff"] for _, u in points]
        lo = [u["ci95"][0] if u["ci95"][0] is not None else math.nan for _, u in points]
        hi = [u["ci95"][1] if u["ci95"][1] is not None else math.nan for _, u in points]
        ax.plot(xs, diffs, label=f"{name} vs {points[0][1]['vs']}")
        ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel="seconds since the first point", ylabel="uplift in rate (95 % interval)",
           title="cumulative uplift against control")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out / "uplift.png", dpi=110)
    plt.close(fig)
    return ["rates.png", "uplift.png"]


def _markdown(final: dict[str, Any], plots: list[str], note: str | None) -> str:
    lines = [f"# Experiment `{final['id']}`", "",
             "| arm | customers | decisions | impressions | clicks | redemptions | revenue | rate | uplift (95 % CI) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in final["arms"].items():
        rate = "-" if row["rate"] is None else f"{row['rate']:.4f}"
        up = row.get("uplift")
        ci = up and up["ci95"]
        uplift = (f"{up['diff']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}] vs {up['vs']}"
                  if up and ci[0] is not None and ci[1] is not None else "-")
        lines.append(f"| {name} | {row['customers']} | {row['decisions']} | {row['impressions']} | {row['clicks']} | "
                     f"{row['redemptions']} | {row['revenue']:.2f} | {rate} | {uplift} |")
    p_value = final["srm"]["p_value"]
    mismatch = p_value is not None and p_value < 0.001
    lines += ["", f"Sample-ratio check (chi-square over customers per arm): p = "
                  f"{'-' if p_value is None else f'{p_value:.4g}'}"
                  f"{' -- MISMATCH: check the assignment before reading the uplift' if mismatch else ''}.",
              f"Not eligible (no `personalize`): {final['not_eligible']} customers; "
              f"not measured (no `measurement`): {final.get('not_measured', 0)} decisions.", ""]
    lines += [f"![{p}]({p})" for p in plots]
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"


def write_experiment_report(client: ApiClient, experiment_id: str, out: Path) -> dict[str, Any]:
    """Fetch the results and the cumulative series; write the report to ``out``; return the results."""
    final = client.json("GET", f"/v1/experiments/{experiment_id}/results")
    series = _series(client, experiment_id, final)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(orjson.dumps(final, option=orjson.OPT_INDENT_2))
    (out / "series.json").write_bytes(orjson.dumps(series))
    note = None
    try:
        plots = _plots(out, final, series)
    except ImportError:
        plots, note = [], f"No plots: matplotlib is not installed ({PLOTS_HINT} adds them)."
        print(note)
    (out / "report.md").write_text(_markdown(final, plots, note))
    return final
