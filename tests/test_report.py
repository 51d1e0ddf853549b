"""Tests for cmaudio.report: a full report from a small synthetic results structure."""

from __future__ import annotations

import copy
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from cmaudio import report as R
from cmaudio.errors import DataError
from cmaudio.io import write_wav_atomic
from cmaudio.metrics import METRIC_DEFINITIONS

SR = 16000
UTTS = ("utt-a", "utt b")  # a space exercises URL quoting in the HTML
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sine(freq: float, seconds: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)


def make_results(tmp_path: Path) -> dict:
    """Two settings x two utterances, audio written into tmp_path (the report directory)."""
    gt_audio, audio = {}, {"cm-1step": {}, "cm-2step": {}}
    for k, utt in enumerate(UTTS):
        f = 220.0 * (1 + k)
        rel = f"audio/ground_truth/{utt}.wav"
        write_wav_atomic(tmp_path / rel, _sine(f), SR)
        gt_audio[utt] = rel
        for j, name in enumerate(audio):
            rel = f"audio/{name}/{utt}.wav"
            write_wav_atomic(tmp_path / rel, _sine(f * (1 + 0.01 * (j + 1))), SR)
            audio[name][utt] = rel
    per = {
        "cm-1step": {"utt-a": {"pesq": 3.0, "stoi": 0.90, "mcd": 5.0, "f0_rmse_cents": 20.0},
                     "utt b": {"pesq": 3.4, "stoi": 0.94, "mcd": 4.0, "f0_rmse_cents": float("nan")}},
        "cm-2step": {"utt-a": {"pesq": 3.5, "stoi": 0.95, "mcd": 3.0, "f0_rmse_cents": 10.0},
                     "utt b": {"pesq": 3.9, "stoi": 0.97, "mcd": 2.5, "f0_rmse_cents": 14.0}},
    }
    return {
        "meta": {"model": "toy", "dataset": "sines"},
        "settings": [
            {"name": name, "nfe": j + 1, "rtf": 0.01 * (j + 1), "xrt": 100.0 / (j + 1),
             "per_utterance": per[name], "audio": audio[name]}
            for j, name in enumerate(audio)
        ],
        "ground_truth": {"audio": gt_audio},
    }


@pytest.fixture
def results(tmp_path):
    return make_results(tmp_path)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _assert_valid_png(path: Path) -> None:
    import matplotlib.image

    w, h = _png_size(path)
    assert w > 50 and h > 50
    img = matplotlib.image.imread(str(path))  # decodes every chunk: catches a truncated file
    assert img.shape[:2] == (h, w)
    assert np.ptp(img[..., :3]) > 0.1  # not a blank image


def test_summarize_means_ci_and_no_mutation(results):
    before = copy.deepcopy(results)
    s = R.summarize(results)
    assert json.dumps(results, sort_keys=True) == json.dumps(before, sort_keys=True)  # input untouched
    assert s["metrics"] == ["pesq", "stoi", "mcd", "f0_rmse_cents"]  # canonical order
    one = s["settings"][0]["summary"]
    assert one["pesq"]["mean"] == pytest.approx(3.2)
    # n = 2: half-width = t_{0.975,1} * s / sqrt(2) = 12.7062 * 0.28284 / 1.41421
    assert one["pesq"]["ci95"] == pytest.approx(12.7062 * 0.2 , rel=1e-4)
    assert one["f0_rmse_cents"] == {"mean": 20.0, "ci95": pytest.approx(float("nan"), nan_ok=True), "n": 1}
    assert s["settings"][0]["family"] == "cm"
    assert s["metric_definitions"]["mcd"] == METRIC_DEFINITIONS["mcd"]
    assert s["higher_is_better"] == {"pesq": True, "stoi": True, "mcd": False, "f0_rmse_cents": False}


def test_write_report_everything(results, tmp_path):
    paths = R.write_report(results, tmp_path)
    assert set(paths) >= {"json", "markdown", "plot", "html", "spectrograms"}

    # report.json: strict JSON (NaN -> null) that round-trips through write_json unchanged
    text = paths["json"].read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data == R.read_json(paths["json"])
    assert [s["name"] for s in data["settings"]] == ["cm-1step", "cm-2step"]
    assert data["settings"][0]["per_utterance"]["utt b"]["f0_rmse_cents"] is None
    assert data["settings"][1]["summary"]["mcd"]["mean"] == pytest.approx(2.75)
    assert data["settings"][0]["summary"]["f0_rmse_cents"]["ci95"] is None
    other = tmp_path / "again"
    R.write_json(data, other)
    assert (other / "report.json").read_text() == text

    # report.md: a row per setting with mean ± ci; the MCD and F0 definitions as footnotes
    md = paths["markdown"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| cm-")]
    assert [r.split("|")[1].strip() for r in rows] == ["cm-1step", "cm-2step"]
    assert "3.200 ± 2.541" in rows[0] and "| 1 |" in rows[0] and "| 2 |" in rows[1]
    assert "| 20.00 (n=1) |" in rows[0]  # F0 RMSE undefined for one utterance
    assert "[^mcd]: MCD (dB): " + METRIC_DEFINITIONS["mcd"] in md
    assert "[^f0-rmse-cents]: F0 RMSE (cents): " + METRIC_DEFINITIONS["f0_rmse_cents"] in md
    assert "(10 / ln 10) * sqrt(2 * sum_{d=1}^{24}" in md

    # plot: a valid PNG
    assert paths["plot"].name == "quality_vs_nfe.png"
    _assert_valid_png(paths["plot"])

    # spectrograms drawn for ground truth and both settings
    assert len(paths["spectrograms"]) == 3 * len(UTTS)
    for p in paths["spectrograms"]:
        _assert_valid_png(p)

    # report.html: every referenced file exists; audio, spectrograms and the plot are all referenced
    refs = R.referenced_files(paths["html"])
    assert refs and all(p.is_file() for p in refs), [p for p in refs if not p.is_file()]
    names = {p.relative_to(tmp_path.resolve()).as_posix() for p in refs}
    assert "audio/ground_truth/utt b.wav" in names and "quality_vs_nfe.png" in names
    assert sum(n.endswith(".wav") for n in names) == 3 * len(UTTS)
    assert sum(n.startswith("spectrograms/") for n in names) == 3 * len(UTTS)
    page = paths["html"].read_text()
    assert page.count("<audio controls") == 3 * len(UTTS)
    assert "http" not in page.lower().replace("<!doctype html>", "")  # self-contained

    # a missing file is caught
    victim = tmp_path / "audio" / "cm-2step" / "utt b.wav"
    victim.unlink()
    missing = [p for p in R.referenced_files(paths["html"]) if not p.exists()]
    assert missing == [victim.resolve()]


def test_report_refuses_missing_audio_and_absolute_paths(results, tmp_path):
    (tmp_path / results["settings"][1]["audio"]["utt-a"]).unlink()
    with pytest.raises(DataError, match="missing"):
        R.write_report(results, tmp_path)
    bad = copy.deepcopy(results)
    bad["settings"][0]["audio"]["utt-a"] = str((tmp_path / "x.wav").resolve())
    with pytest.raises(DataError, match="not relative"):
        R.summarize(bad)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r.pop("settings"), "settings"),
        (lambda r: r["settings"][1].update(name="cm-1step"), "twice"),
        (lambda r: r["settings"][0].update(nfe=0), "nfe"),
        (lambda r: r["settings"][0]["per_utterance"]["utt-a"].update(pesq="high"), "not a number"),
        (lambda r: r.update(spectrograms={"nope": {}}), "nope"),
    ],
)
def test_malformed_results(results, mutate, match):
    mutate(results)
    with pytest.raises(DataError, match=match):
        R.summarize(results)


def test_referenced_files_parsing(tmp_path):
    page = tmp_path / "p.html"
    page.write_text(
        '<html><body><a href="#top">x</a><img src="a%20b.png"/><audio controls src="d/c.wav?x=1"></audio>'
        '<a href="https://example.org/x.wav">e</a><img src="data:image/png;base64,AAAA">'
        '<link href="style.css"><img src="a%20b.png"></body></html>'
    )
    (tmp_path / "a b.png").write_bytes(b"x")
    refs = R.referenced_files(page)
    assert refs == [(tmp_path / "a b.png").resolve(), (tmp_path / "d/c.wav").resolve(), (tmp_path / "style.css").resolve()]
    assert [p.exists() for p in refs] == [True, False, False]


def test_spectrogram_and_comparison_png(tmp_path):
    ref, est = _sine(300.0, 0.5), _sine(600.0, 0.45)
    p1 = R.spectrogram_png(ref, SR, tmp_path / "s.png", title="ref")
    p2 = R.comparison_png(ref, est, SR, tmp_path / "sub" / "c.png")
    w1, h1 = _png_size(p1)
    w2, h2 = _png_size(p2)
    assert h2 > h1  # two stacked panels
    assert w1 > w2  # the mel and the narrowband view side by side
    _assert_valid_png(p1)
    _assert_valid_png(p2)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries
    with pytest.raises(DataError):
        R.spectrogram_png(np.array([np.nan, 0.0]), SR, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_narrowband_view_resolves_harmonics():
    """The narrowband panel (n_fft 2048) separates the harmonics of a 200 Hz voice that an 80-band mel merges:
    each harmonic is a peak, the bins half-way between harmonics are far below it, nothing above 4 kHz."""
    t = np.arange(SR) / SR
    x = sum(np.sin(2 * np.pi * 200.0 * k * t) / k for k in range(1, 30))
    db, fmax = R._narrowband_db(x, SR)
    assert 3990.0 <= fmax <= 4000.0 and db.max() == pytest.approx(0.0)
    hz = np.arange(db.shape[0]) * SR / R.NARROWBAND_N_FFT
    for k in range(1, 19):  # harmonics up to 3.6 kHz
        on = db[np.argmin(abs(hz - 200.0 * k))].mean()
        off = db[np.argmin(abs(hz - 200.0 * k - 100.0))].mean()
        assert on > off + 30.0, (k, on, off)


def test_plot_single_nfe_and_missing_metric(results, tmp_path):
    for s in results["settings"]:
        s["nfe"] = 1
    results["settings"][1]["per_utterance"] = {}
    path = R.plot_quality_vs_nfe(results, tmp_path)
    _assert_valid_png(path)
    md = R.markdown_table(results)
    assert "| cm-2step | 1 |" in md and "n/a" in md
    assert not math.isnan(R.summarize(results)["settings"][0]["summary"]["pesq"]["mean"])


def test_ground_truth_row_and_griffinlim_notes(results, tmp_path):
    res = copy.deepcopy(results)
    res["ground_truth"]["per_utterance"] = {u: {"pesq": 4.64, "stoi": 1.0, "mcd": 0.0, "dnsmos_ovrl": 3.0 + k}
                                            for k, u in enumerate(UTTS)}
    res["settings"].append({"name": "griffinlim-64", "family": "griffinlim", "nfe": 64,
                            "per_utterance": {u: {"pesq": 3.8, "stoi": 0.99, "mcd": 6.0} for u in UTTS}})
    assert R.griffinlim_notes(results) == []  # no Griffin-Lim row, nothing said
    s = R.summarize(res)
    assert s["ground_truth"]["summary"]["dnsmos_ovrl"]["mean"] == pytest.approx(3.5)
    assert s["metrics"] == ["pesq", "stoi", "mcd", "f0_rmse_cents", "dnsmos_ovrl"]
    notes = R.griffinlim_notes(s)
    assert "Metrics it fools (they rank it near neural vocoders): PESQ-WB, STOI." in notes[0]
    assert "MCD" not in notes[0]  # not established either way
    assert "does not fool (they expose its phase: buzz, smearing, lost periodicity): DNSMOS OVRL." in notes[0]
    # best model: PESQ 3.7 (cm-2step) < 3.8, STOI 0.96 < 0.99; MCD 2.75 beats GL's 6.0
    assert notes[1] == "In this run Griffin-Lim scored at least as well as the best model setting on PESQ-WB, STOI, and worse on MCD (dB)."
    md = R.markdown_table(s)
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
    assert rows[0].startswith("| ground truth | - | - | - | 2 | 4.640 ± 0.000 |") and "3.500 ± 6.353" in rows[0]
    assert rows[-1].startswith("| griffinlim-64 | 64 |")
    assert notes[0] in md and notes[1] in md
    bad = copy.deepcopy(res)
    bad["ground_truth"]["per_utterance"]["utt-a"]["pesq"] = "high"
    with pytest.raises(DataError, match="ground truth"):
        R.summarize(bad)
