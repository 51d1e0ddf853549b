"""Paired comparison of two evaluated settings on the clips both were scored on.

    python egs/quality/paired.py REPORT_A.json:SETTING_A REPORT_B.json:SETTING_B [--metrics m1,m2]

REPORT is a report.json written by `cmaudio evaluate` (or a report directory holding one); SETTING is one
of its rows (e.g. ``cm-1step``, ``cm-2step``, ``griffinlim-64``) or ``ground_truth``, the recordings' own
scores (for the non-intrusive metrics, Distill-MOS ``nmos`` and DNSMOS: how far a vocoder is from the
recordings it copies, clip by clip). The two may come from one report (1 against
2 steps of one model) or from two reports of the same clips (two models). For each metric the script
prints both means, the mean per-clip difference d = B - A with its two-sided 95 % Student-t interval
(cmaudio.metrics.mean_ci95 over the per-clip differences), and on how many clips B is better (by the
metric's direction in the report's ``higher_is_better``; ties count for neither).

Why paired: the clips differ from each other far more than two vocoders differ on one clip, so the
interval of each setting's mean (what the ladder tables print) is wide while the interval of the
per-clip difference is narrow. Two settings whose means overlap within their own intervals can still
be told apart by the sign of d, and a "B is no worse than A" claim needs d's interval, not the means'.

Output: one markdown table on stdout. A missing file, setting or metric, or clips with nothing in
common, is a one-line error on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from cmaudio.errors import DataError
from cmaudio.metrics import mean_ci95


class UsageError(Exception):
    """A bad argument or report: printed as one line, exit 2."""


def load_setting(spec: str) -> tuple[str, dict[str, dict[str, float]], dict[str, bool]]:
    """`spec` = PATH:SETTING -> (spec as the label, per-utterance metrics {utt: {metric: value}}, higher_is_better)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"{spec!r}: expected REPORT.json:SETTING")
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise UsageError(f"{p}: no such report")
    try:
        rep = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{p}: not a readable report ({e.__class__.__name__})") from None
    if not isinstance(rep, dict) or not isinstance(rep.get("settings"), list):
        raise UsageError(f"{p}: not a cmaudio evaluate report (no settings)")
    names = [s.get("name") for s in rep["settings"] if isinstance(s, dict)]
    if name == "ground_truth" and isinstance(rep.get("ground_truth"), dict):
        return spec, rep["ground_truth"].get("per_utterance") or {}, rep.get("higher_is_better") or {}
    for s in rep["settings"]:
        if isinstance(s, dict) and s.get("name") == name:
            return spec, s.get("per_utterance") or {}, rep.get("higher_is_better") or {}
    raise UsageError(f"{p}: no setting {name!r} (has: {', '.join(map(str, names))})")


def compare(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], higher: dict[str, bool],
            metrics: list[str] | None = None) -> list[dict]:
    """Per metric over the utterances both settings have: means, d = B - A (mean, ci95), B-better count.

    Rows are dicts with keys metric, n, mean_a, mean_b, d, ci95, b_better (int), direction ('+' when
    higher is better, '-' otherwise). Utterances where either value is NaN are left out of that metric.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise UsageError("the two settings share no utterance")
    if metrics is None:
        metrics = [m for m in higher if all(m in a[u] and m in b[u] for u in common)]
    rows = []
    for m in metrics:
        if m not in higher:
            raise UsageError(f"metric {m!r} is not in the report (has: {', '.join(higher)})")
        pairs = [(a[u].get(m), b[u].get(m)) for u in common]
        pairs = [(x, y) for x, y in pairs
                 if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not math.isnan(x) and not math.isnan(y)]
        if not pairs:
            continue
        d = [y - x for x, y in pairs]
        mean_d, half = mean_ci95(d)
        sign = 1.0 if higher[m] else -1.0
        rows.append({"metric": m, "n": len(pairs), "mean_a": sum(x for x, _ in pairs) / len(pairs),
                     "mean_b": sum(y for _, y in pairs) / len(pairs), "d": mean_d, "ci95": half,
                     "b_better": sum(1 for v in d if sign * v > 0), "direction": "+" if higher[m] else "-"})
    return rows


def markdown(label_a: str, label_b: str, rows: list[dict]) -> str:
    lines = [f"A = {label_a}, B = {label_b}; d = B - A over the clips both have (95 % interval)", "",
             "| metric | n | A | B | d = B - A | B better on |", "|---|---|---|---|---|---|"]
    for r in rows:
        ci = "" if math.isnan(r["ci95"]) else f" ± {r['ci95']:.4f}"
        arrow = "↑" if r["direction"] == "+" else "↓"
        lines.append(f"| {r['metric']} {arrow} | {r['n']} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | "
                     f"{r['d']:+.4f}{ci} | {r['b_better']} of {r['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="REPORT_A.json:SETTING_A")
    ap.add_argument("b", help="REPORT_B.json:SETTING_B")
    ap.add_argument("--metrics", help="comma-separated metric names (default: every metric both have)")
    args = ap.parse_args(argv)
    try:
        label_a, a, higher = load_setting(args.a)
        label_b, b, higher_b = load_setting(args.b)
        metrics = args.metrics.split(",") if args.metrics else None
        rows = compare(a, b, {**higher_b, **higher}, metrics)
    except (UsageError, DataError) as e:
        print(f"paired.py: {e}", file=sys.stderr)
        return 2
    print(markdown(label_a, label_b, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
