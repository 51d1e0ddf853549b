"""Evaluation reports: summary statistics, JSON, Markdown table, quality-vs-NFE plot, listening page.

Results structure (what an evaluation produces and `write_report` consumes; plain JSON types)::

    {
      "meta": {"model": "...", "dataset": "...", "device": "...", ...},  # free-form, shown as a list
      "settings": [                               # one entry per sampler configuration, in table order
        {
          "name": "cm-1step",                     # unique; used as column title and file-name stem
          "family": "cm",                         # optional; default: name up to the first "-"
          "nfe": 1,                               # network function evaluations per generated clip
          "rtf": 0.004,                           # optional real-time factor = compute s / audio s (lower better)
          "xrt": 250.0,                           # optional x-real-time = audio s / compute s (= 1 / rtf)
          "per_utterance": {"LJ001-0013": {"pesq": 3.9, "stoi": 0.97, ...}, ...},
          "audio": {"LJ001-0013": "audio/cm-1step/LJ001-0013.wav", ...},    # optional
        },
        ...
      ],
      "ground_truth": {"audio": {"LJ001-0013": "audio/ground_truth/LJ001-0013.wav", ...},   # optional
                       "per_utterance": {"LJ001-0013": {"pesq": 4.64, "dnsmos_ovrl": 3.2, ...}}},  # optional row
      "spectrograms": {"cm-1step": {"LJ001-0013": "spectrograms/cm-1step/LJ001-0013.png"},
                       "ground_truth": {...}},    # optional; write_report draws missing ones
    }

Every file path is relative to the report directory (POSIX separators); absolute paths are refused
so the directory stays self-contained and movable. Metric names and their meaning come from
`cmaudio.metrics` (``METRIC_NAMES``, ``HIGHER_IS_BETTER``, ``METRIC_DEFINITIONS``); other metric
names are carried through unannotated.

A setting whose family is ``griffinlim`` (cmaudio.baselines; NFE = iterations) is the training-free floor:
the table and page then say which metrics it fools (cmaudio.metrics.GRIFFINLIM_FOOLED) and, where model
settings are present too, on which metrics it scored at least as well as the best of them in this run.
Family ``pghi`` (phase-gradient heap integration, NFE 1 + Griffin-Lim iterations) is a training-free baseline
too: a row like any other, never counted as a model setting in those sentences.
Ground-truth scores (``ground_truth.per_utterance``, the recordings against themselves; DNSMOS is their
own quality) form the first table row.

`summarize` returns a copy with, per setting, ``"summary": {metric: {"mean", "ci95", "n"}}`` (ci95 is
the half-width of the 95 % Student-t interval over utterances, NaN for n = 1; NaN per-utterance values,
such as an F0 RMSE without voiced frames, are left out of n), and at the top level ``"metrics"`` (the
ordered metric list), ``"metric_definitions"`` and ``"higher_is_better"``.

`write_report(results, out_dir)` writes report.json, report.md, quality_vs_nfe.png, report.html and any
missing spectrogram PNGs (under spectrograms/), all atomically. In report.json NaN is written as null.
Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend switch).
"""

from __future__ import annotations

import copy
import html
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any, Mapping
from urllib.parse import quote, unquote, urlsplit

import numpy as np

from cmaudio.errors import DataError
from cmaudio.io import atomic_path, confined_path, write_text_atomic
from cmaudio.metrics import (
    GRIFFINLIM_FOOLED,
    HIGHER_IS_BETTER,
    METRIC_DEFINITIONS,
    METRIC_NAMES,
    _as_signal,
    mean_ci95,
)

__all__ = [
    "GROUND_TRUTH",
    "summarize",
    "write_json",
    "read_json",
    "markdown_table",
    "griffinlim_notes",
    "write_markdown",
    "plot_quality_vs_nfe",
    "write_html",
    "spectrogram_png",
    "comparison_png",
    "write_spectrograms",
    "write_report",
    "referenced_files",
]

GROUND_TRUTH = "ground_truth"  # key of the reference recordings in "spectrograms" and column title in HTML

METRIC_LABELS = {
    "pesq": "PESQ-WB",
    "stoi": "STOI",
    "mrstft": "MR-STFT",
    "logmel_l1": "log-mel L1",
    "mcd": "MCD (dB)",
    "f0_rmse_cents": "F0 RMSE (cents)",
    "vuv_error": "V/UV error",
    "visqol": "ViSQOL",
    "nmos": "Distill-MOS",
    "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_sig": "DNSMOS SIG",
    "periodicity_rmse": "periodicity RMSE",
    "vuv_f1": "V/UV F1",
}

GRIFFINLIM_FAMILY = "griffinlim"
#: Families of training-free baselines (cmaudio.baselines): never counted as model settings.
BASELINE_FAMILIES = (GRIFFINLIM_FAMILY, "pghi")

RTF_DEFINITION = (
    "RTF = compute seconds / generated audio seconds (lower is better); xRT = 1 / RTF, "
    "how many times faster than real time."
)

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
PLOT_NAME = "quality_vs_nfe.png"
HTML_NAME = "report.html"
REPORT_FILES = (JSON_NAME, MARKDOWN_NAME, PLOT_NAME, HTML_NAME)  # what write_report writes besides audio/ and spectrograms/


# --- structure -----------------------------------------------------------------------------------
def _check_relpath(path: Any, where: str) -> str:
    if not isinstance(path, (str, PurePosixPath, Path)) or str(path) == "":
        raise DataError(f"{where}: expected a relative file path string, got {path!r}")
    text = str(path).replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:/", text) or urlsplit(text).scheme:
        raise DataError(f"{where}: {text!r} is not relative; copy the file into the report directory and give its relative path")
    bad = [part for part in text.split("/") if part == ".." or "\x00" in part]
    if bad:
        raise DataError(f"{where}: {text!r} leads outside the report directory or holds an unusable name "
                        f"({bad[0]!r}); give a path inside it")
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _validate_scores(per: Any, where: str) -> None:
    if not isinstance(per, Mapping):
        raise DataError(f"{where}: 'per_utterance' must map utterance id -> {{metric: value}}")
    for utt, values in per.items():
        if not isinstance(values, Mapping):
            raise DataError(f"{where}, utterance {utt!r}: metrics must be a dict")
        for metric, value in values.items():
            if value is not None and not _is_number(value):
                raise DataError(f"{where}, utterance {utt!r}: {metric} = {value!r} is not a number")


def _validate(results: Mapping) -> None:
    if not isinstance(results, Mapping):
        raise DataError(f"results must be a dict, got {type(results).__name__}")
    settings = results.get("settings")
    if not isinstance(settings, list) or not settings:
        raise DataError("results['settings'] must be a non-empty list of setting dicts")
    seen: set[str] = set()
    for i, s in enumerate(settings):
        if not isinstance(s, Mapping):
            raise DataError(f"results['settings'][{i}] must be a dict")
        name = s.get("name")
        if not isinstance(name, str) or not name or name == GROUND_TRUTH:
            raise DataError(f"results['settings'][{i}]['name'] must be a non-empty string other than {GROUND_TRUTH!r}")
        if name in seen:
            raise DataError(f"setting name {name!r} appears twice; names must be unique")
        seen.add(name)
        nfe = s.get("nfe")
        if not _is_number(nfe) or int(nfe) != nfe or nfe < 1:
            raise DataError(f"setting {name!r}: 'nfe' must be a positive integer, got {nfe!r}")
        for key in ("rtf", "xrt"):
            if s.get(key) is not None and not _is_number(s[key]):
                raise DataError(f"setting {name!r}: {key!r} must be a number or null, got {s[key]!r}")
        _validate_scores(s.get("per_utterance", {}), f"setting {name!r}")
        audio = s.get("audio", {})
        if not isinstance(audio, Mapping):
            raise DataError(f"setting {name!r}: 'audio' must map utterance id -> relative wav path")
        for utt, path in audio.items():
            _check_relpath(path, f"setting {name!r}, audio {utt!r}")
    gt = results.get("ground_truth", {}) or {}
    if not isinstance(gt, Mapping) or not isinstance(gt.get("audio", {}), Mapping):
        raise DataError("results['ground_truth'] must be {'audio': {utterance id: relative wav path}}")
    for utt, path in gt.get("audio", {}).items():
        _check_relpath(path, f"ground truth audio {utt!r}")
    _validate_scores(gt.get("per_utterance", {}), "ground truth")
    specs = results.get("spectrograms", {}) or {}
    if not isinstance(specs, Mapping):
        raise DataError("results['spectrograms'] must map setting name -> {utterance id: relative png path}")
    for key, table in specs.items():
        if key != GROUND_TRUTH and key not in seen:
            raise DataError(f"results['spectrograms'] names {key!r}, which is neither a setting nor {GROUND_TRUTH!r}")
        if not isinstance(table, Mapping):
            raise DataError(f"results['spectrograms'][{key!r}] must map utterance id -> relative png path")
        for utt, path in table.items():
            _check_relpath(path, f"spectrogram {key!r}/{utt!r}")


def _family(setting: Mapping) -> str:
    family = setting.get("family")
    return str(family) if family else str(setting["name"]).split("-", 1)[0]


def _metric_order(names) -> list[str]:
    names = set(names)
    return [m for m in METRIC_NAMES if m in names] + sorted(names - set(METRIC_NAMES))


def _summary(per: Mapping, metrics: list[str]) -> dict:
    summary = {}
    for m in metrics:
        values = [v[m] for v in per.values() if m in v]
        values = [float("nan") if v is None else float(v) for v in values]
        finite = [v for v in values if not math.isnan(v)]
        if not values:
            continue
        mean, half = mean_ci95(values)
        summary[m] = {"mean": mean, "ci95": half, "n": len(finite)}
    return summary


def summarize(results: Mapping) -> dict:
    """Return a deep copy of `results` with per-setting means and 95 % intervals added.

    Adds ``setting["summary"][metric] = {"mean": float, "ci95": float, "n": int}`` (`mean_ci95` over the
    setting's utterances; None/NaN values skipped) and top-level ``"metrics"`` (ordered as
    cmaudio.metrics.METRIC_NAMES, unknown names after, sorted), ``"metric_definitions"``,
    ``"higher_is_better"``; ground-truth scores, if any, get ``ground_truth["summary"]`` likewise.
    The input is not modified. Raises DataError for a malformed structure.
    """
    _validate(results)
    out = copy.deepcopy(dict(results))
    out.setdefault("meta", {})
    out.setdefault("ground_truth", {"audio": {}})
    out["ground_truth"].setdefault("audio", {})
    out.setdefault("spectrograms", {})
    gt_per = out["ground_truth"].get("per_utterance") or {}
    metrics = _metric_order(
        {m for s in out["settings"] for v in s.get("per_utterance", {}).values() for m in v}
        | {m for v in gt_per.values() for m in v}
    )
    for s in out["settings"]:
        s.setdefault("per_utterance", {})
        s.setdefault("audio", {})
        s.setdefault("family", _family(s))
        s["summary"] = _summary(s["per_utterance"], metrics)
    if gt_per:
        out["ground_truth"]["summary"] = _summary(gt_per, metrics)
    out["metrics"] = metrics
    out["metric_definitions"] = {m: METRIC_DEFINITIONS[m] for m in metrics if m in METRIC_DEFINITIONS}
    out["higher_is_better"] = {m: HIGHER_IS_BETTER[m] for m in metrics if m in HIGHER_IS_BETTER}
    return out


def _summarized(results: Mapping) -> dict:
    if isinstance(results, Mapping) and "metrics" in results and all(
        isinstance(s, Mapping) and "summary" in s for s in results.get("settings", [])
    ):
        _validate(results)
        return dict(results)
    return summarize(results)


# --- JSON ----------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (Path, PurePosixPath)):
        return obj.as_posix()
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_json(results: Mapping, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the summarized results as strict JSON (NaN/inf -> null) to out_dir/report.json; return the path."""
    data = _jsonable(_summarized(results))
    path = Path(out_dir) / JSON_NAME
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n", overwrite=overwrite)
    return path


def read_json(path: str | Path) -> dict:
    """Read a report.json back (null stays None). Raises DataError if missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such report file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


# --- tables --------------------------------------------------------------------------------------
def _fmt_number(x: Any, digits: int | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    x = float(x)
    if digits is None:
        digits = 3 if abs(x) < 10 else 2 if abs(x) < 100 else 1
    return f"{x:.{digits}f}"


def _fmt_mean_ci(entry: Mapping | None) -> str:
    if not entry or entry.get("mean") is None or math.isnan(float(entry["mean"])):
        return "n/a"
    mean = float(entry["mean"])
    digits = 3 if abs(mean) < 10 else 2 if abs(mean) < 100 else 1
    ci = entry.get("ci95")
    if ci is None or math.isnan(float(ci)):
        return _fmt_number(mean, digits)
    return f"{_fmt_number(mean, digits)} ± {_fmt_number(ci, digits)}"


def _metric_header(metric: str) -> str:
    label = METRIC_LABELS.get(metric, metric)
    if metric in HIGHER_IS_BETTER:
        label += " ↑" if HIGHER_IS_BETTER[metric] else " ↓"
    return label


def _table_rows(res: Mapping) -> tuple[list[str], list[list[str]]]:
    header = ["setting", "NFE", "RTF", "xRT", "n"] + [_metric_header(m) for m in res["metrics"]]
    rows = []
    gt = res.get("ground_truth") or {}
    if gt.get("summary"):
        n = max((e.get("n", 0) for e in gt["summary"].values()), default=len(gt.get("per_utterance", {})))
        rows.append(["ground truth", "-", "-", "-", str(n)] + [_fmt_mean_ci(gt["summary"].get(m)) for m in res["metrics"]])
    for s in res["settings"]:
        n = max((e.get("n", 0) for e in s["summary"].values()), default=len(s.get("per_utterance", {})))
        cells = []
        for m in res["metrics"]:
            e = s["summary"].get(m)
            text = _fmt_mean_ci(e)
            if e and text != "n/a" and e.get("n", n) < n:
                text += f" (n={e['n']})"  # fewer utterances had a defined value (e.g. no voiced frames)
            cells.append(text)
        rows.append(
            [s["name"], str(int(s["nfe"])), _fmt_number(s.get("rtf"), 4), _fmt_number(s.get("xrt"), 1), str(n)]
            + cells
        )
    return header, rows


def _footnote_key(metric: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", metric.lower())


def _footnote_metrics(res: Mapping) -> list[str]:
    defs = res.get("metric_definitions", {})
    first = [m for m in ("mcd", "f0_rmse_cents", "vuv_error") if m in defs]
    return first + [m for m in res["metrics"] if m in defs and m not in first]


def _better_or_equal(metric: str, a: float, b: float) -> bool:
    return a >= b if HIGHER_IS_BETTER.get(metric, True) else a <= b


def griffinlim_notes(results: Mapping) -> list[str]:
    """Sentences about the Griffin-Lim rows (empty when the results have none).

    1. Which of the reported metrics Griffin-Lim is known to fool (cmaudio.metrics.GRIFFINLIM_FOOLED):
       it keeps the mel magnitude but not a coherent phase.
    2. When model settings are present too: the metrics on which the best Griffin-Lim row scored at
       least as well as the best model row in this run (means), and those on which it did not.
    """
    res = _summarized(results)
    gl = [s for s in res["settings"] if (s.get("family") or _family(s)) == GRIFFINLIM_FAMILY]
    if not gl:
        return []
    models = [s for s in res["settings"] if (s.get("family") or _family(s)) not in BASELINE_FAMILIES]
    label = lambda ms: ", ".join(METRIC_LABELS.get(m, m) for m in ms)  # noqa: E731
    fooled = [m for m in res["metrics"] if GRIFFINLIM_FOOLED.get(m) is True]
    honest = [m for m in res["metrics"] if GRIFFINLIM_FOOLED.get(m) is False]
    notes = []
    if fooled or honest:
        text = (f"Griffin-Lim ({', '.join(s['name'] for s in gl)}; NFE = iterations, no network, no training) is "
                "the training-free floor: it reproduces the mel magnitude with an incoherent phase.")
        if fooled:
            text += f" Metrics it fools (they rank it near neural vocoders): {label(fooled)}."
        if honest:
            text += (f" Metrics it does not fool (they expose its phase: buzz, smearing, lost periodicity): "
                     f"{label(honest)}.")
        notes.append(text)
    if models:
        wins, losses = [], []
        for m in res["metrics"]:
            def best(settings):
                vals = [float(s["summary"][m]["mean"]) for s in settings
                        if m in s["summary"] and s["summary"][m].get("mean") is not None
                        and not math.isnan(float(s["summary"][m]["mean"]))]
                if not vals:
                    return None
                return max(vals) if HIGHER_IS_BETTER.get(m, True) else min(vals)
            g, b = best(gl), best(models)
            if g is None or b is None:
                continue
            (wins if _better_or_equal(m, g, b) else losses).append(m)
        if wins:
            notes.append(f"In this run Griffin-Lim scored at least as well as the best model setting on {label(wins)}"
                         + (f", and worse on {label(losses)}." if losses else "."))
        elif losses:
            notes.append(f"In this run every model setting beat Griffin-Lim on every metric ({label(losses)}).")
    return notes


def markdown_table(results: Mapping) -> str:
    """The metrics table as GitHub Markdown: one row per setting, mean ± 95 % CI half-width per metric,
    followed by footnotes defining every metric (MCD and F0 first) and RTF."""
    res = _summarized(results)
    header, rows = _table_rows(res)
    defs = res.get("metric_definitions", {})
    for j, m in enumerate(res["metrics"]):
        if m in defs:
            header[5 + j] += f" [^{_footnote_key(m)}]"
    header[2] += " [^rtf]"

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    lines.append("")
    lines.append("Values are mean ± half-width of the 95 % Student-t confidence interval over n utterances.")
    lines.append("")
    for note in griffinlim_notes(res):
        lines.append(note)
        lines.append("")
    for m in _footnote_metrics(res):
        lines.append(f"[^{_footnote_key(m)}]: {METRIC_LABELS.get(m, m)}: {defs[m]}")
    lines.append(f"[^rtf]: {RTF_DEFINITION}")
    return "\n".join(lines) + "\n"


def write_markdown(results: Mapping, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write out_dir/report.md (meta list, metrics table with definitions as footnotes); return the path."""
    res = _summarized(results)
    parts = ["# Evaluation report", ""]
    for key, value in res.get("meta", {}).items():
        parts.append(f"- **{key}**: {value}")
    if res.get("meta"):
        parts.append("")
    parts.append(markdown_table(res))
    path = Path(out_dir) / MARKDOWN_NAME
    write_text_atomic(path, "\n".join(parts), overwrite=overwrite)
    return path


# --- figures -------------------------------------------------------------------------------------
def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: str | Path, overwrite: bool = False) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png", overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_quality_vs_nfe(results: Mapping, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write out_dir/quality_vs_nfe.png: one subplot per metric, x = NFE (log2 axis), y = mean with a
    95 % CI error bar, one line per model family (settings of a family joined in NFE order)."""
    res = _summarized(results)
    metrics = res["metrics"] or []
    ncols = max(1, min(4, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig = _new_figure(3.3 * ncols, 2.7 * nrows)
    families: dict[str, list[Mapping]] = {}
    for s in res["settings"]:
        families.setdefault(s.get("family") or _family(s), []).append(s)
    all_nfe = sorted({int(s["nfe"]) for s in res["settings"]})
    if not metrics:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no metrics", ha="center", va="center")
        ax.set_axis_off()
    for k, m in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for fam, members in families.items():
            members = sorted(members, key=lambda s: int(s["nfe"]))
            xs, ys, es, names = [], [], [], []
            for s in members:
                e = s["summary"].get(m)
                if not e or e.get("mean") is None or math.isnan(float(e["mean"])):
                    continue
                ci = e.get("ci95")
                xs.append(int(s["nfe"]))
                ys.append(float(e["mean"]))
                es.append(0.0 if ci is None or math.isnan(float(ci)) else float(ci))
                names.append(s["name"])
            if not xs:
                continue
            ax.errorbar(xs, ys, yerr=es, marker="o", markersize=4, capsize=3, linewidth=1.2, label=fam)
            for x, y, name in zip(xs, ys, names):
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        if len(all_nfe) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(all_nfe)
        ax.set_xticklabels([str(n) for n in all_nfe])
        ax.set_xlabel("NFE", fontsize=8)
        ax.set_title(_metric_header(m), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, title="family", title_fontsize=7)
    fig.tight_layout()
    return _save_png(fig, Path(out_dir) / PLOT_NAME, overwrite)


def _log_mel_db(audio: np.ndarray, sr: int, ref_power: float | None = None) -> tuple[np.ndarray, float]:
    import librosa

    n_fft = 1024
    if audio.shape[0] < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.shape[0]))
    power = librosa.feature.melspectrogram(
        y=audio.astype(np.float32), sr=sr, n_fft=n_fft, hop_length=256, n_mels=80, fmin=0.0, fmax=sr / 2
    )
    top = float(ref_power) if ref_power is not None else float(np.max(power))
    top = top if top > 0 else 1.0
    return librosa.power_to_db(power, ref=top, top_db=80.0), top


def _draw_mel(ax, db: np.ndarray, sr: int, title: str | None, vmin: float = -80.0, vmax: float = 0.0):
    duration = db.shape[1] * 256 / sr
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, extent=(0, duration, 0, db.shape[0]))
    ax.set_ylabel("mel bin", fontsize=7)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=8)
    return im


NARROWBAND_N_FFT = 2048  # 93 ms at 22.05 kHz: resolves the harmonics of speech (10.8 Hz bins)
NARROWBAND_HOP = 128
NARROWBAND_FMAX = 4000.0  # Hz: the band where harmonics are resolved and where Griffin-Lim-like phase blurs them


def _narrowband_db(audio: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """|STFT| in dB re the clip's peak (80 dB range), Hann window of NARROWBAND_N_FFT samples, hop
    NARROWBAND_HOP, bins 0..NARROWBAND_FMAX Hz -> ((bins, frames), highest frequency shown in Hz)."""
    n_fft = NARROWBAND_N_FFT
    if audio.shape[0] < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.shape[0]))
    frames = 1 + (audio.shape[0] - n_fft) // NARROWBAND_HOP
    idx = np.arange(n_fft)[None, :] + NARROWBAND_HOP * np.arange(frames)[:, None]
    mag = np.abs(np.fft.rfft(audio[idx] * np.hanning(n_fft + 1)[:-1], axis=1)).T  # (bins, frames)
    top_bin = min(mag.shape[0] - 1, int(NARROWBAND_FMAX * n_fft / sr))
    mag = mag[: top_bin + 1]
    peak = float(mag.max()) if mag.size and mag.max() > 0 else 1.0
    db = 20.0 * np.log10(np.maximum(mag / peak, 1e-4))
    return db, top_bin * sr / n_fft


def spectrogram_png(audio, sr: int, path: str | Path, title: str | None = None, *, overwrite: bool = False) -> Path:
    """Draw, side by side, an 80-band log-mel spectrogram (n_fft 1024, hop 256, fmax sr/2; dB re the
    clip's peak, 80 dB range) and a narrowband linear-frequency one (|STFT|, n_fft 2048, hop 128, 0-4 kHz,
    dB re its peak, 80 dB range) of a 1-D waveform to a small PNG at `path` (atomic). Returns the path.

    The mel view is what the mel projection forces to match; the narrowband view shows what it hides:
    whether the harmonics stay separate lines up to a few kHz (a natural phase) or blur (Griffin-Lim-like)."""
    x = _as_signal(audio, "audio")
    sr = int(sr)
    db, _ = _log_mel_db(x, sr)
    fig = _new_figure(9.0, 2.0)
    ax = fig.add_subplot(1, 2, 1)
    _draw_mel(ax, db, sr, title)
    ax.set_xlabel("time (s)", fontsize=7)
    nb, fmax = _narrowband_db(x, sr)
    ax2 = fig.add_subplot(1, 2, 2)
    duration = max(x.shape[0], NARROWBAND_N_FFT) / sr
    ax2.imshow(nb, origin="lower", aspect="auto", cmap="magma", vmin=-80.0, vmax=0.0,
               extent=(0, duration, 0, fmax / 1000.0), interpolation="nearest")
    ax2.set_ylabel("kHz (narrowband)", fontsize=7)
    ax2.set_xlabel("time (s)", fontsize=7)
    ax2.tick_params(labelsize=6)
    fig.tight_layout()
    return _save_png(fig, path, overwrite)


def comparison_png(ref, est, sr: int, path: str | Path, title: str | None = None, *,
                   overwrite: bool = False) -> Path:
    """Two log-mel spectrograms, ground truth above and generated below, on one dB scale (re the
    ground truth's peak) and a shared time axis; written atomically to `path`. Returns the path."""
    r = _as_signal(ref, "ref")
    e = _as_signal(est, "est")
    db_r, top = _log_mel_db(r, int(sr))
    db_e, _ = _log_mel_db(e, int(sr), ref_power=top)
    fig = _new_figure(6.0, 4.0)
    ax1 = fig.add_subplot(2, 1, 1)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
    _draw_mel(ax1, db_r, int(sr), "ground truth" if not title else f"{title}: ground truth")
    _draw_mel(ax2, db_e, int(sr), "generated")
    ax2.set_xlabel("time (s)", fontsize=7)
    fig.tight_layout()
    return _save_png(fig, path, overwrite)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")[:200] or "x"


def write_spectrograms(results: Mapping, out_dir: str | Path, *, overwrite: bool = False) -> dict:
    """Return a copy of `results` whose "spectrograms" covers every listed audio file, drawing the missing
    ones to out_dir/spectrograms/<setting>/<utt>.png. Raises DataError if a listed audio file is missing."""
    import soundfile as sf

    _validate(results)
    out_dir = Path(out_dir)
    res = copy.deepcopy(dict(results))
    specs = res.setdefault("spectrograms", {})
    sources = [(GROUND_TRUTH, (res.get("ground_truth") or {}).get("audio", {}))]
    sources += [(s["name"], s.get("audio", {})) for s in res["settings"]]
    for key, audio in sources:
        table = specs.setdefault(key, {})
        for utt, rel in audio.items():
            wav = out_dir / _check_relpath(rel, f"{key} audio {utt!r}")
            if not wav.is_file():
                raise DataError(f"{wav}: audio for {key!r}/{utt!r} is missing from the report directory")
            if utt in table:
                png = out_dir / _check_relpath(table[utt], f"spectrogram {key!r}/{utt!r}")
                if not png.is_file():
                    raise DataError(f"{png}: spectrogram for {key!r}/{utt!r} is missing; drop the entry to redraw it")
                continue
            try:
                data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
            except Exception as e:  # soundfile raises its own error types
                raise DataError(f"{wav}: not a readable audio file ({e})") from None
            rel_png = f"spectrograms/{_safe_name(key)}/{_safe_name(utt)}.png"
            taken = set(table.values())
            k = 1
            while rel_png in taken:  # two ids that sanitise alike ("a b", "a_b") get distinct files
                rel_png = f"spectrograms/{_safe_name(key)}/{_safe_name(utt)}-{k}.png"
                k += 1
            png = confined_path(out_dir, *rel_png.split("/"), what="spectrogram name")  # no symlinked subdir leads out
            spectrogram_png(data.mean(axis=1), sr, png, title=f"{key} / {utt}", overwrite=overwrite)
            table[utt] = rel_png
    return res


# --- HTML ----------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 0.9em; }
th { background: #f3f3f3; }
td.num { text-align: right; white-space: nowrap; }
.utt td { text-align: center; }
.utt img { width: 480px; display: block; margin-top: 4px; }
.scores { font-size: 0.75em; color: #555; text-align: left; }
.defs { font-size: 0.85em; max-width: 70em; }
"""


def _src(rel: str) -> str:
    return html.escape(quote(rel, safe="/._-~"), quote=True)


def _utterances(res: Mapping) -> list[str]:
    utts = set((res.get("ground_truth") or {}).get("audio", {}))
    for s in res["settings"]:
        utts |= set(s.get("audio", {})) | set(s.get("per_utterance", {}))
    return sorted(utts)


def write_html(results: Mapping, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write out_dir/report.html: a self-contained listening page (inline CSS, no scripts, no external
    resources). It shows meta, the metrics table, the quality-vs-NFE plot if present, the metric
    definitions, then one table per utterance: ground truth and every setting side by side, each with an
    <audio controls> player, its spectrograms (log-mel and narrowband, `spectrogram_png`) and its
    per-utterance scores. All src attributes are paths
    relative to the report directory. Returns the path."""
    res = _summarized(results)
    out_dir = Path(out_dir)
    esc = html.escape
    specs = res.get("spectrograms", {}) or {}
    p = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
         "<title>cmaudio evaluation report</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
         "<h1>Evaluation report</h1>"]
    if res.get("meta"):
        p.append("<ul>" + "".join(f"<li><b>{esc(str(k))}</b>: {esc(str(v))}</li>" for k, v in res["meta"].items()) + "</ul>")
    header, rows = _table_rows(res)
    p.append("<h2>Metrics</h2>")
    p.append("<p>mean ± half-width of the 95 % Student-t confidence interval over n utterances.</p>")
    p.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        p.append("<tr><td>" + esc(row[0]) + "</td>" + "".join(f'<td class="num">{esc(c)}</td>' for c in row[1:]) + "</tr>")
    p.append("</table>")
    for note in griffinlim_notes(res):
        p.append(f'<p class="note">{esc(note)}</p>')
    if (out_dir / PLOT_NAME).is_file():
        p.append(f'<img src="{_src(PLOT_NAME)}" alt="quality versus NFE" style="max-width:100%">')
    defs = res.get("metric_definitions", {})
    p.append('<h3>Definitions</h3><dl class="defs">')
    for m in _footnote_metrics(res):
        p.append(f"<dt>{esc(METRIC_LABELS.get(m, m))}</dt><dd>{esc(defs[m])}</dd>")
    p.append(f"<dt>RTF, xRT</dt><dd>{esc(RTF_DEFINITION)}</dd></dl>")

    p.append("<h2>Listening examples</h2>")
    gt = res.get("ground_truth") or {}
    columns = [(GROUND_TRUTH, "ground truth", gt.get("audio", {}), gt.get("per_utterance") or {})]
    columns += [(s["name"], f"{s['name']} (NFE {int(s['nfe'])})", s.get("audio", {}), s.get("per_utterance", {})) for s in res["settings"]]
    for utt in _utterances(res):
        p.append(f'<h3 id="{esc(_safe_name(utt))}">{esc(utt)}</h3>')
        p.append('<table class="utt"><tr>' + "".join(f"<th>{esc(title)}</th>" for _, title, _, _ in columns) + "</tr><tr>")
        for key, _, audio, per in columns:
            cell = []
            if utt in audio:
                cell.append(f'<audio controls preload="none" src="{_src(audio[utt])}"></audio>')
            spec = (specs.get(key) or {}).get(utt)
            if spec:
                cell.append(f'<img src="{_src(spec)}" alt="{esc(key)} {esc(utt)} log-mel and narrowband spectrograms" loading="lazy">')
            scores = per.get(utt)
            if scores:
                items = ", ".join(f"{METRIC_LABELS.get(m, m)} {_fmt_number(scores[m])}" for m in _metric_order(scores))
                cell.append(f'<div class="scores">{esc(items)}</div>')
            p.append("<td>" + ("".join(cell) or "&mdash;") + "</td>")
        p.append("</tr></table>")
    p += ["</body>", "</html>", ""]
    path = out_dir / HTML_NAME
    write_text_atomic(path, "\n".join(p), overwrite=overwrite)
    return path


class _RefCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)

    handle_startendtag = handle_starttag


def referenced_files(html_path: str | Path) -> list[Path]:
    """Local files referenced by src/href attributes of an HTML page, resolved against its directory.

    Skips URLs with a scheme (http:, data:, mailto:), protocol-relative URLs and pure #fragments;
    percent-escapes are decoded and query/fragment parts dropped. Order of first appearance, no
    duplicates. The paths are returned whether or not they exist (check with Path.exists()).
    """
    html_path = Path(html_path)
    parser = _RefCollector()
    parser.feed(html_path.read_text(encoding="utf-8"))
    parser.close()
    out: list[Path] = []
    for ref in parser.refs:
        parts = urlsplit(ref)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        path = (html_path.parent / unquote(parts.path)).resolve()
        if path not in out:
            out.append(path)
    return out


# --- everything ----------------------------------------------------------------------------------
def write_report(results: Mapping, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Summarize `results` and write the whole report into `out_dir` (which must already hold the audio
    files the results list). Draws missing spectrograms, then writes report.json, report.md,
    quality_vs_nfe.png and report.html, each atomically; a file already there is replaced only with `overwrite`
    (else DataError naming it).

    Returns {"json", "markdown", "plot", "html": Path, "spectrograms": [Path, ...]}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = summarize(write_spectrograms(results, out_dir, overwrite=overwrite))
    written = {
        "json": write_json(res, out_dir, overwrite=overwrite),
        "markdown": write_markdown(res, out_dir, overwrite=overwrite),
        "plot": plot_quality_vs_nfe(res, out_dir, overwrite=overwrite),
        "html": write_html(res, out_dir, overwrite=overwrite),
    }
    written["spectrograms"] = [out_dir / rel for table in res["spectrograms"].values() for rel in table.values()]
    return written
