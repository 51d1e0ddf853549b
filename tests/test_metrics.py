"""Tests for cmaudio.metrics: perfect scores, monotone degradation on real speech, exact definitions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cmaudio import metrics as M
from cmaudio.errors import CmaudioError, ConfigError, DataError

WAV = Path(__file__).resolve().parents[1] / "egs/mini/data/ljspeech_mini/wavs/LJ001-0013.wav"
SNRS_DB = (40, 30, 20, 10)  # decreasing SNR: every metric must get strictly worse along this list


@pytest.fixture(scope="module")
def speech():
    y, sr = sf.read(str(WAV), dtype="float32")
    assert sr == 22050 and y.ndim == 1
    return y[: 3 * sr].astype(np.float64), sr


@pytest.fixture(scope="module")
def noisy(speech):
    """{snr_db: speech + white noise at that SNR}, fixed seed."""
    y, _ = speech
    noise = np.random.default_rng(1234).standard_normal(y.shape[0])
    noise /= np.sqrt(np.mean(noise**2))
    p = np.mean(y**2)
    return {snr: y + noise * math.sqrt(p / 10 ** (snr / 10)) for snr in SNRS_DB}


def _metric_fn(name):
    return {"pesq": M.pesq_wb, "stoi": M.stoi, "mrstft": M.mrstft, "logmel_l1": M.logmel_l1, "mcd": M.mcd}[name]


# --- perfect scores ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, tol", [("pesq", 0.01), ("stoi", 1e-6), ("mrstft", 1e-6), ("logmel_l1", 1e-6), ("mcd", 1e-9)]
)
def test_identical_signals_score_perfect(speech, name, tol):
    y, sr = speech
    value = _metric_fn(name)(y, y.copy(), sr)
    assert abs(value - M.PERFECT_SCORE[name]) <= tol, (name, value)


def test_identical_signals_perfect_f0(speech):
    y, sr = speech
    out = M.f0_metrics(y, y.copy(), sr)
    assert out == {"f0_rmse_cents": 0.0, "vuv_error": 0.0}


CLASSIC = ("pesq", "stoi", "mrstft", "logmel_l1", "mcd", "f0_rmse_cents", "vuv_error")


def test_compute_all_names_and_perfect(speech):
    y, sr = speech
    names = list(CLASSIC)
    out = M.compute_all(y, y, sr, metrics=names)
    assert list(out) == names
    for n in names:
        assert abs(out[n] - M.PERFECT_SCORE[n]) <= (0.01 if n == "pesq" else 1e-6), (n, out[n])
    assert set(M.HIGHER_IS_BETTER) == set(M.METRIC_NAMES) == set(M.METRIC_DEFINITIONS)
    assert set(M.GRIFFINLIM_FOOLED) == set(M.METRIC_NAMES)
    assert set(M.PERFECT_SCORE) == set(M.METRIC_NAMES) - {"visqol", "nmos", "dnsmos_ovrl", "dnsmos_sig"}
    assert M.HIGHER_IS_BETTER["pesq"] and M.HIGHER_IS_BETTER["stoi"] and not M.HIGHER_IS_BETTER["mcd"]


def test_compute_all_unknown_metric():
    with pytest.raises(ConfigError, match="unknown metric"):
        M.compute_all(np.zeros(4000), np.zeros(4000), 16000, metrics=["pesq", "lpips"])


def test_trims_to_shorter_length(speech):
    y, sr = speech
    assert M.mcd(y, y[:-1000], sr) == 0.0
    assert M.mrstft(y[:-777], y, sr) == pytest.approx(0.0, abs=1e-6)


def test_pesq_at_native_16k(speech):
    import librosa

    y, sr = speech
    y16 = librosa.resample(y, orig_sr=sr, target_sr=16000)
    assert M.pesq_wb(y16, y16, 16000) == pytest.approx(4.64, abs=0.01)


# --- monotone degradation with noise --------------------------------------------------------------
@pytest.mark.parametrize("name", ["pesq", "stoi", "mrstft", "logmel_l1", "mcd"])
def test_metrics_worsen_monotonically_with_noise(speech, noisy, name):
    y, sr = speech
    fn = _metric_fn(name)
    values = [fn(y, noisy[snr], sr) for snr in SNRS_DB]
    sign = 1.0 if M.HIGHER_IS_BETTER[name] else -1.0
    goodness = [sign * v for v in values]
    assert all(a > b for a, b in zip(goodness, goodness[1:])), (name, dict(zip(SNRS_DB, values)))
    assert sign * M.PERFECT_SCORE[name] > goodness[0], (name, values)


def test_vuv_error_grows_at_low_snr(speech, noisy):
    y, sr = speech
    clean = M.f0_metrics(y, noisy[40], sr)
    bad = M.f0_metrics(y, y + 4.0 * (noisy[10] - y), sr)  # about -2 dB SNR
    assert 0.0 <= clean["vuv_error"] < bad["vuv_error"] <= 1.0


# --- F0: exact cents on a pitch-shifted sine ------------------------------------------------------
@pytest.mark.parametrize("cents", [-70.0, 30.0, 100.0, 250.0])
def test_f0_rmse_in_cents_on_shifted_sine(cents):
    sr, f = 22050, 150.0
    t = np.arange(int(1.2 * sr)) / sr
    ref = 0.5 * np.sin(2 * np.pi * f * t)
    est = 0.5 * np.sin(2 * np.pi * f * 2 ** (cents / 1200) * t)
    out = M.f0_metrics(ref, est, sr)
    # pYIN reports F0 on a 10-cent grid (0.1-semitone bins), so allow a few cents.
    assert out["f0_rmse_cents"] == pytest.approx(abs(cents), abs=5.0)
    assert out["vuv_error"] == 0.0


def test_f0_rmse_nan_without_voiced_frames():
    rng = np.random.default_rng(0)
    sr = 16000
    a, b = 0.1 * rng.standard_normal(sr), 0.1 * rng.standard_normal(sr)
    out = M.f0_metrics(a, b, sr)
    assert math.isnan(out["f0_rmse_cents"])
    assert 0.0 <= out["vuv_error"] <= 1.0


# --- MCD: the documented definition --------------------------------------------------------------
def test_mcd_matches_written_definition(speech, noisy):
    """Recompute MCD with an explicit cosine sum (not a DCT routine) from the docstring's formula."""
    import librosa

    y, sr = speech  # already 22050 Hz

    def cep(x):
        p = librosa.feature.melspectrogram(
            y=x, sr=22050, n_fft=1024, hop_length=256, win_length=1024, window="hann", center=True,
            pad_mode="constant", power=2.0, n_mels=80, fmin=0.0, fmax=11025.0,
        )
        half_ln = 0.5 * np.log(np.maximum(p, 1e-10))  # ln amplitude, (80, frames)
        m = np.arange(80)
        basis = np.cos(np.pi * np.arange(1, 25)[:, None] * (m[None, :] + 0.5) / 80)  # (24, 80)
        return basis @ half_ln / 80.0

    diff = cep(y) - cep(noisy[20])
    expected = np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=0)))
    assert M.mcd(y, noisy[20], sr) == pytest.approx(expected, rel=1e-9)


def test_mcd_ignores_gain_c0_excluded(speech):
    y, sr = speech
    # A gain shifts ln P equally in every band: only c_0 changes, which MCD excludes.
    assert M.mcd(y, 0.5 * y, sr) < 1e-6
    assert M.mcd(y, 0.5 * y, sr) < 0.01 * M.mcd(y, np.roll(y, 2000), sr)


def test_resampled_input_rate(speech):
    import librosa

    y, sr = speech
    y24 = librosa.resample(y, orig_sr=sr, target_sr=24000)
    assert M.mcd(y24, y24, 24000) == 0.0
    assert M.mcd(y24, 0.9 * y24 + 0.01 * np.sin(np.arange(y24.size)), 24000) > 0.1


# --- mean_ci95 -----------------------------------------------------------------------------------
def test_mean_ci95_known_values():
    # t_{0.975, 4} = 2.7764, s = sqrt(2.5): half-width = 2.7764 * 1.5811 / sqrt(5) = 1.9632
    mean, half = M.mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(1.96324, abs=1e-4)
    # n = 2: t_{0.975, 1} = 12.7062, s = sqrt(2): half-width = 12.7062 * sqrt(2) / sqrt(2)
    mean, half = M.mean_ci95(np.array([2.0, 4.0]))
    assert (mean, half) == (pytest.approx(3.0), pytest.approx(12.7062, abs=1e-3))
    mean, half = M.mean_ci95([7.5])
    assert mean == 7.5 and math.isnan(half)
    mean, half = M.mean_ci95([1.0, float("nan"), 3.0])  # NaN dropped: n = 2
    assert (mean, half) == (pytest.approx(2.0), pytest.approx(12.7062, abs=1e-3))
    assert M.mean_ci95([3.0, 3.0, 3.0]) == (3.0, 0.0)


def test_mean_ci95_bad_input():
    with pytest.raises(DataError):
        M.mean_ci95([])
    with pytest.raises(DataError):
        M.mean_ci95([1.0, float("inf")])
    m, h = M.mean_ci95([float("nan")])
    assert math.isnan(m) and math.isnan(h)


# --- bad input -----------------------------------------------------------------------------------
GOOD = np.sin(np.arange(8000) / 10.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(0), "empty"),
        (np.where(np.arange(8000) == 5, np.nan, GOOD), "NaN"),
        (np.where(np.arange(8000) == 5, np.inf, GOOD), "NaN or inf"),
        (np.zeros((2, 4000)), "1-D"),
        ((GOOD * 1000).astype(np.int16), "floating point"),
        (None, "None"),
    ],
)
@pytest.mark.parametrize(
    "fn", [M.pesq_wb, M.stoi, M.mrstft, M.logmel_l1, M.mcd, M.f0_metrics, M.visqol, M.periodicity_metrics, M.compute_all]
)
def test_bad_input_raises_dataerror(fn, bad, match):
    with pytest.raises(DataError, match=match):
        fn(GOOD, bad, 16000)
    with pytest.raises(DataError, match=match):
        fn(bad, GOOD, 16000)


@pytest.mark.parametrize("sr", [0, -16000, 16000.5, "16000", True])
def test_bad_sample_rate(sr):
    with pytest.raises(DataError, match="sample rate"):
        M.mcd(GOOD, GOOD, sr)


def test_torch_input_and_too_short():
    import torch

    x = torch.from_numpy(GOOD.astype(np.float32))
    assert M.mcd(x, x.clone(), 16000) == 0.0
    with pytest.raises(DataError, match="pesq"):
        M.pesq_wb(GOOD[:1000], GOOD[:1000], 16000)
    with pytest.raises(DataError, match="stoi"):
        M.stoi(GOOD[:3000], GOOD[:3000], 16000)


def test_dnsmos_bad_input():
    for bad, match in [(np.zeros(0), "empty"), (np.full(8000, np.nan), "NaN"), (np.zeros(16000), "all zeros"),
                       (GOOD[:2000], "too short")]:
        with pytest.raises(DataError, match=match):
            M.dnsmos(bad, 16000)


# --- the eval extra: ViSQOL, DNSMOS, CREPE periodicity on known pairs ----------------------------
def test_visqol_identical_best_noise_worse(speech, noisy):
    y, sr = speech
    same = M.visqol(y, y.copy(), sr)
    at20 = M.visqol(y, noisy[20], sr)
    noise = M.visqol(y, noisy[10] - y, sr)  # the noise alone, no speech
    assert 4.3 <= same <= 5.0, same
    assert same > at20 + 1.0 and at20 > noise, (same, at20, noise)
    assert noise < 1.5, noise
    assert M.visqol(y, 0.5 * y, sr) == pytest.approx(same, abs=0.02)  # level-invariant (NSIM)


def test_dnsmos_recording_beats_noisy_and_noise(speech, noisy):
    y, sr = speech
    clean = M.dnsmos(y, sr)
    at10 = M.dnsmos(noisy[10], sr)
    noise = M.dnsmos(noisy[10] - y, sr)
    assert set(clean) == {"dnsmos_ovrl", "dnsmos_sig"}
    assert all(1.0 <= v <= 5.0 for d in (clean, at10, noise) for v in d.values()), (clean, at10, noise)
    assert clean["dnsmos_ovrl"] > at10["dnsmos_ovrl"] + 0.5 > noise["dnsmos_ovrl"] + 0.5, (clean, at10, noise)
    assert clean["dnsmos_sig"] > noise["dnsmos_sig"] + 1.0, (clean, noise)


def test_nmos_hears_noise_and_phase_not_level(speech, noisy):
    """Distill-MOS: the recording above noisy speech above noise; Griffin-Lim of the recording's own mel (the
    same magnitude, PESQ/log-mel L1 near a neural vocoder's) clearly below it; the level does not matter."""
    import torch

    from cmaudio.baselines import griffinlim
    from cmaudio.features import MelSpectrogram

    y, sr = speech
    clean, at10, noise = M.nmos(y, sr), M.nmos(noisy[10], sr), M.nmos(noisy[10] - y, sr)
    assert all(1.0 <= v <= 5.0 for v in (clean, at10, noise)), (clean, at10, noise)
    assert clean > at10 + 1.0 and at10 > noise, (clean, at10, noise)
    assert M.nmos(0.3 * y, sr) == pytest.approx(clean, abs=1e-3)  # the model scales each segment to unit peak
    gl = griffinlim(MelSpectrogram("hifigan")(torch.from_numpy(y).float()[None])[0], n_iter=64).reshape(-1)
    assert M.logmel_l1(y, gl.numpy(), sr) < 0.2  # the magnitude is right ...
    assert M.nmos(gl.numpy(), sr) < clean - 0.5  # ... and the naturalness metric still hears the phase
    assert M.compute_all(y, y, sr, metrics=["nmos"]) == {"nmos": pytest.approx(clean, abs=1e-6)}


def test_nmos_bad_input():
    for bad, match in [(np.zeros(0), "empty"), (np.full(8000, np.nan), "NaN"), (np.zeros(16000), "all zeros"),
                       (GOOD[:2000], "too short")]:
        with pytest.raises(DataError, match=match):
            M.nmos(bad, 16000)


def test_periodicity_identical_perfect_noise_worse(speech, noisy):
    y, sr = speech
    same = M.periodicity_metrics(y, y.copy(), sr, model="tiny")
    assert same == {"periodicity_rmse": 0.0, "vuv_f1": 1.0}
    near = M.periodicity_metrics(y, noisy[40], sr, model="tiny")  # 40 dB SNR: near best
    assert near["periodicity_rmse"] < 0.05 and near["vuv_f1"] > 0.95, near
    at10 = M.periodicity_metrics(y, noisy[10], sr, model="tiny")
    noise = M.periodicity_metrics(y, noisy[10] - y, sr, model="tiny")
    assert 0.0 < at10["periodicity_rmse"] < noise["periodicity_rmse"], (at10, noise)
    assert noise["periodicity_rmse"] > 0.2 and noise["vuv_f1"] < 0.5 < at10["vuv_f1"] < 1.0, (at10, noise)
    with pytest.raises(ConfigError, match="full"):
        M.periodicity_metrics(y, y, sr, model="large")


def test_compute_all_reuses_reference_analyses(speech, noisy, monkeypatch):
    """Default CREPE ('full', as CARGAN) and pYIN run once on the reference however many estimates are scored."""
    y, sr = speech
    ref, est = y[: int(0.6 * sr)], noisy[20][: int(0.6 * sr)]
    calls = {"crepe": 0, "pyin": 0}
    real_crepe, real_pyin = M._crepe, M._pyin

    def crepe(x, model):
        calls["crepe"] += 1
        assert model == "full"
        return real_crepe(x, model)

    def pyin(x):
        calls["pyin"] += 1
        return real_pyin(x)

    monkeypatch.setattr(M, "_crepe", crepe)
    monkeypatch.setattr(M, "_pyin", pyin)
    names = ["periodicity_rmse", "vuv_f1", "f0_rmse_cents", "vuv_error"]
    cache: dict = {}
    same = M.compute_all(ref, ref.copy(), sr, metrics=names, ref_cache=cache)
    assert calls == {"crepe": 1, "pyin": 1}  # identical signals (the ground-truth row): one analysis each
    assert same == {"f0_rmse_cents": 0.0, "vuv_error": 0.0, "periodicity_rmse": 0.0, "vuv_f1": 1.0}
    worse = M.compute_all(ref, est, sr, metrics=names, ref_cache=cache)
    assert calls == {"crepe": 2, "pyin": 2}  # only the new estimate was analysed
    assert worse["periodicity_rmse"] > 0.0 and worse["vuv_f1"] <= 1.0
    M.compute_all(est, ref, sr, metrics=["vuv_error"], ref_cache=cache)  # another reference: the cache is renewed
    assert calls["pyin"] == 4 and ("crepe", "full") not in cache


def test_missing_package_is_one_line_naming_the_extra(speech, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torchcrepe", "ai_edge_litert", "distillmos") else real(name, *a))
    monkeypatch.setattr(M, "pesq_wb", lambda *a: pytest.fail("computed a metric before checking packages"))
    y, sr = speech
    with pytest.raises(M.MissingPackageError) as e:
        M.compute_all(y, y, sr, metrics=["pesq", "visqol", "nmos", "vuv_f1"])
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'cmaudio[eval]'" in msg
    assert "torchcrepe (for vuv_f1)" in msg and "visqol-python[lattice] (for visqol)" in msg
    assert "distillmos (for nmos)" in msg
    assert isinstance(e.value, CmaudioError)
    M.require(["pesq", "mrstft"])  # installed: no error
