"""Collect the quality ladder: one table and one plot from the contenders' held-out reports.

    python egs/quality/table.py EXP_DIR            # writes EXP_DIR/ladder.md, ladder.json, ladder.png

Reads EXP_DIR/<contender>/report/report.json (written by `cmaudio evaluate` or
egs/quality/vocos_peer.py --evaluate) and, for the curve, the metrics.jsonl of each training run
under EXP_DIR/<contender>/run*/ (val/1step_logmel_l1 and val/1step_mrstft against val/minutes,
on the held-out validation clips; val/1step_nmos, Distill-MOS, where the run logged it). The recordings'
own scores (the reports' ground-truth row; Distill-MOS and DNSMOS are their quality) are a row of their own,
taken once from the first report that has them. Budgets are read from EXP_DIR/<contender>/budget.txt. Reports of
run.sh --more (EXP_DIR/<contender>/report_more/report.json) make a second table, EXP_DIR/ladder_more.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [  # (metric key, header, format)
    ("nmos", "Distill-MOS", "{:.2f}"),
    ("pesq", "PESQ-wb", "{:.2f}"),
    ("stoi", "STOI", "{:.3f}"),
    ("visqol", "ViSQOL", "{:.2f}"),
    ("logmel_l1", "log-mel L1", "{:.3f}"),
    ("mrstft", "MR-STFT", "{:.3f}"),
    ("mcd", "MCD", "{:.2f}"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "{:.2f}"),
    ("periodicity_rmse", "periodicity", "{:.3f}"),
    ("vuv_f1", "V/UV F1", "{:.3f}"),
]


def _budget(d: Path) -> str:
    f = d / "budget.txt"
    return f.read_text().strip() if f.is_file() else ""


def collect(exp: Path, report: str = "report") -> list[dict]:
    """One row per contender and setting from EXP/<contender>/<report>/report.json: means and intervals."""
    rows = []
    for rep in sorted(exp.glob(f"*/{report}/report.json")):
        contender = rep.parent.parent.name
        res = json.loads(rep.read_text())
        gt = (res.get("ground_truth") or {}).get("summary") or {}
        if gt and not any(r["contender"] == "recordings" for r in rows):
            rows.append({"contender": "recordings", "setting": "ground truth", "budget": "",
                         "n": max((v.get("n", 0) for v in gt.values()), default=0), "xrt": None,
                         **{m: (gt[m]["mean"], gt[m]["ci95"]) for m in gt}})
        for s in res["settings"]:
            if contender == "gl" and not s["name"].startswith("griffinlim"):
                continue  # the gl report carries a model row only to fix the held-out split
            rows.append({"contender": contender, "setting": s["name"], "budget": _budget(rep.parent.parent),
                         "n": max((v.get("n", 0) for v in s["summary"].values()), default=0),
                         "xrt": s.get("xrt"),
                         **{m: (s["summary"][m]["mean"], s["summary"][m]["ci95"]) for m in s["summary"]}})
    return rows


def markdown(rows: list[dict]) -> str:
    present = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    head = "| contender | setting | budget | " + " | ".join(h for _, h, _ in present) + " |"
    lines = [head, "|" + "---|" * (3 + len(present))]
    for r in rows:
        cells = []
        for key, _, fmt in present:
            if key in r and r[key][0] is not None and r[key][0] == r[key][0]:
                m, ci = r[key]
                cells.append(fmt.format(m) + (f" ± {fmt.format(ci)}" if ci == ci and ci else ""))
            else:
                cells.append("")
        lines.append(f"| {r['contender']} | {r['setting']} | {r['budget']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves(exp: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """contender -> [(minutes, val log-mel L1, val MR-STFT, val Distill-MOS or NaN)] over its training run(s), the
    teacher's minutes
    first for CD (runs are read in name order and their minutes chained)."""
    out = {}
    for d in sorted(p for p in exp.iterdir() if p.is_dir()):
        pts, offset = [], 0.0
        for run in sorted(d.glob("run*")):
            last = 0.0
            f = run / "metrics.jsonl"
            if not f.is_file():
                continue
            for line in f.read_text().splitlines():
                row = json.loads(line)
                if "val/minutes" in row and "val/1step_logmel_l1" in row:
                    last = row["val/minutes"]
                    pts.append((offset + last, row["val/1step_logmel_l1"], row.get("val/1step_mrstft", float("nan")),
                                row.get("val/1step_nmos", float("nan"))))
                elif "val/minutes" in row:  # a teacher: its minutes count, its scores are not the student's
                    last = row["val/minutes"]
            offset += last
        if pts:
            out[d.name] = pts
    return out


def plot(curv: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, pts in curv.items():
        t = [p[0] for p in pts]
        for k, ax in enumerate(axes, start=1):
            ax.plot(t, [p[k] if len(p) > k else float("nan") for p in pts], marker="o", label=name)
    for ax, title in zip(axes, ["validation 1-step log-mel L1", "validation 1-step MR-STFT",
                                "validation 1-step Distill-MOS"]):
        ax.set_xlabel("training minutes (wall clock)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python egs/quality/table.py EXP_DIR", file=sys.stderr)
        return 2
    exp = Path(argv[0])
    rows = collect(exp)
    (exp / "ladder.md").write_text(markdown(rows))
    more = collect(exp, "report_more")  # run.sh --more: the same models on another corpus's clips
    if more:
        (exp / "ladder_more.md").write_text(markdown(more))
    c = curves(exp)
    (exp / "ladder.json").write_text(json.dumps({"rows": rows, "more_rows": more, "curves": c}, indent=1))
    if c:
        plot(c, exp / "ladder.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
