"""Objective quality metrics for generated speech: reference and estimate in, floats out.

Every metric takes ``ref`` (the ground truth) and ``est`` (the generated signal) as 1-D float
waveforms (numpy arrays or torch tensors, any float dtype, nominally in [-1, 1]) at the sample rate
``sr`` in Hz. Both are trimmed to the shorter length (copy-synthesis is time-aligned; no DTW).
Empty, non-finite (NaN/inf), non-float or multi-channel input raises `cmaudio.errors.DataError`.
Where a metric works at a fixed rate, both signals are resampled with soxr (``soxr_hq``) first.

========================  =====================================================  =========  =======
name                      definition (see `METRIC_DEFINITIONS` for the full text)  perfect    better
========================  =====================================================  =========  =======
``pesq``                  ITU-T P.862.2 wide-band PESQ (MOS-LQO) at 16 kHz          4.64      higher
``stoi``                  STOI (Taal et al. 2011), ``pystoi``, extended=False       1.0       higher
``mrstft``                auraloss MultiResolutionSTFTLoss, default resolutions     0         lower
``logmel_l1``             mean |logmel(ref) - logmel(est)|, hifigan preset          0         lower
``mcd``                   mel-cepstral distortion in dB, 24 mel-cepstra, 1:1 frames 0         lower
``f0_rmse_cents``         pYIN F0 RMSE in cents over frames voiced in both          0         lower
``vuv_error``             fraction of frames whose pYIN voicing decision differs    0         lower
``visqol``                ViSQOL v3 speech mode MOS-LQO at 16 kHz (lattice mapper)  ~4.5      higher
``nmos``                  Distill-MOS naturalness of ``est`` alone (16 kHz)         n/a       higher
``dnsmos_ovrl``           DNSMOS P.835 overall quality of ``est`` alone (16 kHz)    n/a       higher
``dnsmos_sig``            DNSMOS P.835 speech-signal quality of ``est`` alone       n/a       higher
``periodicity_rmse``      CREPE periodicity RMSE (CARGAN), 16 kHz, full model       0         lower
``vuv_f1``                CREPE voiced/unvoiced F1 (CARGAN), ref voicing = truth    1         higher
========================  =====================================================  =========  =======

ViSQOL and the last six need the optional ``eval`` extra (``pip install 'cmaudio[eval]'``:
``visqol-python[lattice]``, ``distillmos``, ``speechmos`` with ``onnxruntime``, ``torchcrepe``; pesq and pystoi
come with it too). A missing package
raises `MissingPackageError` (a CmaudioError, one line naming the extra) before anything is computed
(`require`). Their models ship inside the wheels: nothing is downloaded.

Griffin-Lim (cmaudio.baselines) fools some of these metrics: it reproduces the mel magnitude but its
phase is incoherent, so PESQ, STOI, ViSQOL (and log-mel L1, which only sees the mel magnitude) rank it
near neural vocoders, while MR-STFT, Distill-MOS, DNSMOS and CREPE periodicity do not (`GRIFFINLIM_FOOLED`).
Distill-MOS (``nmos``) is the one that separates vocoders by naturalness: it orders published vocoders
(HiFi-GAN, WaveGlow, WaveGrad) as their papers' listening tests do, where DNSMOS squeezes them together.

`compute_all` computes any subset by name, each metric once, and reuses analyses of the reference
kept in a caller's ``ref_cache`` dict (pYIN and CREPE of the recording are computed once per utterance
however many systems are scored against it); `mean_ci95` gives a mean and the half-width of its
95 % Student-t confidence interval. `METRIC_DEFINITIONS` holds the exact definitions as text, so
reports print the same words this module implements.

Imports only cmaudio.errors at module level; cmaudio.features is imported lazily by `logmel_l1`, and
every metric package lazily by its metric.
"""

from __future__ import annotations

import hashlib
import math
import types
import warnings
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

import numpy as np

from cmaudio.errors import CmaudioError, ConfigError, DataError

__all__ = [
    "METRIC_NAMES",
    "HIGHER_IS_BETTER",
    "PERFECT_SCORE",
    "METRIC_DEFINITIONS",
    "MRSTFT_RESOLUTIONS",
    "MCD_SAMPLE_RATE",
    "F0_SAMPLE_RATE",
    "F0_FMIN",
    "F0_FMAX",
    "pesq_wb",
    "stoi",
    "mrstft",
    "logmel_l1",
    "mcd",
    "f0_metrics",
    "visqol",
    "nmos",
    "dnsmos",
    "periodicity_metrics",
    "MissingPackageError",
    "METRIC_PACKAGES",
    "GRIFFINLIM_FOOLED",
    "require",
    "compute_all",
    "mean_ci95",
]

# --- fixed analysis settings (read-only constants, not state) -------------------------------------
PESQ_SAMPLE_RATE = 16000
#: auraloss.freq.MultiResolutionSTFTLoss defaults: (fft_size, hop_size, win_length) in samples.
MRSTFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
LOGMEL_SAMPLE_RATE = 22050  # the hifigan preset's rate (docs/design.md section 3)
MCD_SAMPLE_RATE = 22050
MCD_N_FFT = 1024
MCD_HOP = 256
MCD_N_MELS = 80
MCD_ORDER = 24  # c_1 .. c_24; c_0 (frame energy) excluded
MCD_LOG_FLOOR = 1e-10  # mel power floor before ln
F0_SAMPLE_RATE = 16000
F0_FMIN = 65.0  # Hz, about C2: below typical low male speech
F0_FMAX = 520.0  # Hz, three octaves above F0_FMIN (about C5): covers female/child speech excursions
F0_FRAME_LENGTH = 1024  # samples at 16 kHz = 64 ms
F0_HOP = 256  # samples at 16 kHz = 16 ms
VISQOL_SAMPLE_RATE = 16000  # ViSQOL v3 speech mode works at 16 kHz
DNSMOS_SAMPLE_RATE = 16000
NMOS_SAMPLE_RATE = 16000  # Distill-MOS takes 16 kHz mono
CREPE_SAMPLE_RATE = 16000  # torchcrepe.SAMPLE_RATE
CREPE_MODEL = "full"  # CARGAN and BigVGAN use the full-capacity CREPE
CREPE_HOP = 185  # samples at 16 kHz: CARGAN's int(256 * 16000 / 22050), one 22.05 kHz mel hop (11.6 ms)
CREPE_PAD = (1024 - CREPE_HOP) // 2  # CARGAN's reflect pad (NUM_FFT - hop) // 2 = 419 samples each side
CREPE_FMIN = 50.0  # Hz (CARGAN FMIN)
CREPE_FMAX = 550.0  # Hz (CARGAN FMAX)
CREPE_SILENCE_DB = -60.0  # torchcrepe.threshold.Silence default: A-weighted loudness below this -> periodicity 0

METRIC_NAMES = (
    "pesq", "stoi", "visqol", "mrstft", "logmel_l1", "mcd", "f0_rmse_cents", "vuv_error",
    "nmos", "dnsmos_ovrl", "dnsmos_sig", "periodicity_rmse", "vuv_f1",
)

HIGHER_IS_BETTER: Mapping[str, bool] = types.MappingProxyType(
    {
        "pesq": True,
        "stoi": True,
        "mrstft": False,
        "logmel_l1": False,
        "mcd": False,
        "f0_rmse_cents": False,
        "vuv_error": False,
        "visqol": True,
        "nmos": True,
        "dnsmos_ovrl": True,
        "dnsmos_sig": True,
        "periodicity_rmse": False,
        "vuv_f1": True,
    }
)

#: What identical signals score. Distill-MOS and DNSMOS have no entry: it rates ``est`` alone (no reference), so a
#: recording scores what its own quality is (about 3.2 OVRL for LJSpeech). ViSQOL has none either: its
#: lattice mapper gives identical speech about 4.5 (4.51-4.55 on the embedded clips), not 5.
PERFECT_SCORE: Mapping[str, float] = types.MappingProxyType(
    {
        "pesq": 4.64,  # wide-band P.862.2 mapping saturates at 4.64 (4.6439 measured)
        "stoi": 1.0,
        "mrstft": 0.0,
        "logmel_l1": 0.0,
        "mcd": 0.0,
        "f0_rmse_cents": 0.0,
        "vuv_error": 0.0,
        "periodicity_rmse": 0.0,
        "vuv_f1": 1.0,
    }
)

#: metric -> (module to import, what provides it). All of them come with ``pip install 'cmaudio[eval]'``.
METRIC_PACKAGES: Mapping[str, tuple[tuple[str, str], ...]] = types.MappingProxyType(
    {
        "pesq": (("pesq", "pesq"),),
        "stoi": (("pystoi", "pystoi"),),
        "visqol": (("visqol", "visqol-python"), ("ai_edge_litert", "visqol-python[lattice]")),
        "nmos": (("distillmos", "distillmos"),),
        "dnsmos_ovrl": (("speechmos", "speechmos"), ("onnxruntime", "onnxruntime")),
        "dnsmos_sig": (("speechmos", "speechmos"), ("onnxruntime", "onnxruntime")),
        "periodicity_rmse": (("torchcrepe", "torchcrepe"),),
        "vuv_f1": (("torchcrepe", "torchcrepe"),),
    }
)

#: Does Griffin-Lim (no training, incoherent phase) score near neural vocoders on this metric? True:
#: the metric is fooled (it sees magnitudes, or intelligibility, which GL keeps); False: it is not
#: (phase coherence, naturalness, periodicity). None: not established. Issue 13 measured it on held-out
#: LJSpeech (GL-64: PESQ
#: 3.36, STOI 0.93, log-mel L1 0.245 vs HiFi-GAN V1 2.89-3.65, 0.93-0.95, 0.30-0.37; but MR-STFT 2.01
#: vs 1.14-1.18 and DNSMOS OVRL 2.80 vs 3.12). On the embedded held-out clips LJ001-0011/0017/0027
#: (`cmaudio evaluate --baseline griffinlim`, hifigan mels): GL-64 PESQ 3.37, STOI 0.97, ViSQOL 4.45
#: (recordings 4.54), log-mel L1 0.117; MR-STFT 1.88, DNSMOS OVRL 2.87 (recordings 3.38), periodicity
#: RMSE 0.15, V/UV F1 0.955 (recordings 0 and 1), MCD 6.9 dB.
GRIFFINLIM_FOOLED: Mapping[str, bool | None] = types.MappingProxyType(
    {
        "pesq": True,
        "stoi": True,
        "visqol": True,
        "logmel_l1": True,
        "mcd": None,  # full-band (0-11025 Hz) cepstra: GL of an 8 kHz-band mel invents the top band (6.9 dB measured)
        "mrstft": False,
        "nmos": False,  # GL-64 3.36 vs HiFi-GAN V1 4.22 and the recordings 4.37 (issue 30, 10 held-out clips)
        "dnsmos_ovrl": False,
        "dnsmos_sig": False,
        "periodicity_rmse": False,
        "vuv_f1": False,
        "f0_rmse_cents": None,
        "vuv_error": None,
    }
)

METRIC_DEFINITIONS: Mapping[str, str] = types.MappingProxyType(
    {
        "pesq": (
            "Wide-band PESQ (ITU-T P.862.2, `pesq` package, mode 'wb') on both signals resampled to 16 kHz "
            "(soxr_hq); range 1.04-4.64, identical signals give 4.64."
        ),
        "stoi": (
            "STOI (Taal et al. 2011; `pystoi`, extended=False) at the input sample rate (pystoi resamples "
            "to 10 kHz internally); range 0-1, identical signals give 1."
        ),
        "mrstft": (
            "auraloss.freq.MultiResolutionSTFTLoss with its defaults (Yamamoto et al. 2020): mean over "
            "three resolutions (n_fft, hop, win) = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240) "
            "samples, Hann window, at the input sample rate, of spectral convergence "
            "||S_ref - S_est||_F / ||S_ref||_F plus mean |ln S_ref - ln S_est|, S = sqrt(max(|STFT|^2, 1e-8))."
        ),
        "logmel_l1": (
            "Mean over mel bins and frames of |M_ref - M_est|, M = cmaudio.features.MelSpectrogram('hifigan') "
            "(22050 Hz, n_fft 1024, hop 256, 80 Slaney mels 0-8000 Hz, ln(clamp(|X|, 1e-5))), both signals "
            "resampled to 22050 Hz first."
        ),
        "mcd": (
            "Mel-cepstral distortion in dB: MCD = mean_t (10 / ln 10) * sqrt(2 * sum_{d=1}^{24} (c_d(t) - c'_d(t))^2), "
            "frames aligned 1:1 (no DTW, no silence removal). c_d = (1/M) sum_{m=0}^{M-1} (1/2) ln(max(P_m, 1e-10)) "
            "cos(pi d (m + 1/2) / M), M = 80: the real-cepstrum (cosine-series) coefficients of the log-amplitude "
            "mel spectrum, i.e. the orthonormal DCT-II of ln P divided by 2 sqrt(2M); P = Slaney mel power "
            "spectrum (librosa: n_fft 1024, hop 256, Hann window 1024, center=True with zero padding, 80 mels, "
            "fmin 0, fmax sr/2) of the signal resampled to 22050 Hz; c_0 (energy) excluded, D = 24. An "
            "approximation of SPTK mel-cepstra (no all-pass warping), so close to but not identical with "
            "pysptk-based MCD."
        ),
        "f0_rmse_cents": (
            "F0 RMSE in cents: sqrt(mean (1200 log2(f0_est / f0_ref))^2) over frames voiced in both signals; "
            "F0 and voicing from librosa.pyin (fmin 65 Hz, fmax 520 Hz, 0.1-semitone pitch bins) on both "
            "signals resampled to 16 kHz, frame 1024 samples (64 ms), hop 256 samples (16 ms), center=True. "
            "NaN when no frame is voiced in both."
        ),
        "vuv_error": (
            "Voiced/unvoiced error: fraction of pYIN frames (same analysis as f0_rmse_cents) whose voicing "
            "decision differs between the reference and the estimate; range 0-1."
        ),
        "visqol": (
            "ViSQOL v3 speech mode (Chinen et al. 2020; `visqol-python`, a Python port of google/visqol v3.3 "
            "matching its conformance tests) with the deep-lattice mapper (the C++ default, "
            "use_lattice_model=True), both signals resampled to 16 kHz (soxr_hq), global alignment on; "
            "MOS-LQO 1-5, identical speech gives about 4.5 (the lattice mapper's ceiling), not 5."
        ),
        "nmos": (
            "Distill-MOS (Stahl & Gamper, 'Distillation and Pruning for Scalable Self-Supervised Representation-Based "
            "Speech Quality Assessment', ICASSP 2025; `distillmos` package, model variant 7, weights in its wheel): "
            "non-intrusive naturalness/quality MOS of the estimate alone, resampled to 16 kHz (soxr_hq); the model "
            "normalises each 7.68 s segment to unit peak (level-invariant), pads shorter clips with zeros and "
            "averages segments hopped by at most 1 s over longer ones; 1-5, higher is better."
        ),
        "dnsmos_ovrl": (
            "DNSMOS P.835 OVRL (Reddy et al. 2022; `speechmos` package, the DNS Challenge sig_bak_ovr.onnx "
            "model with its polynomial calibration): non-intrusive, on the estimate alone resampled to 16 kHz "
            "(soxr_hq) and clipped to [-1, 1]; mean over 9.01 s windows hopped by 1 s (shorter clips are "
            "tiled to 9.01 s); 1-5, higher is better."
        ),
        "dnsmos_sig": (
            "DNSMOS P.835 SIG (speech-signal quality) from the same DNSMOS pass as dnsmos_ovrl; 1-5, higher is better."
        ),
        "periodicity_rmse": (
            "CREPE periodicity RMSE as in CARGAN (Morrison et al. 2022) and BigVGAN: torchcrepe 'full' model on "
            "both signals resampled to 16 kHz (soxr_hq), reflect-padded 419 samples, hop 185 samples (11.6 ms), "
            "fmin 50 Hz, fmax 550 Hz, Viterbi decoding, periodicity set to 0 where the A-weighted loudness is "
            "below -60 dB (torchcrepe.threshold.Silence); sqrt(mean_t (p_ref(t) - p_est(t))^2) over all frames "
            "of the utterance; 0-1, 0 for identical signals."
        ),
        "vuv_f1": (
            "CREPE voiced/unvoiced F1 as in CARGAN: frames voiced where torchcrepe.threshold.Hysteresis keeps a "
            "pitch (same analysis as periodicity_rmse); F1 = 2PR / (P + R) of the estimate's voicing against the "
            "reference's per utterance (CARGAN pools frames over the test set); 1 for identical signals, NaN "
            "when neither signal has a voiced frame."
        ),
    }
)


class MissingPackageError(CmaudioError):
    """An optional metric package is not installed; the message names the extra to install."""


def require(metrics: Iterable[str]) -> None:
    """Raise MissingPackageError (one line) if a package that one of `metrics` needs cannot be imported.

    Checks every named metric first, so a long evaluation fails before it starts, not halfway.
    """
    import importlib.util

    missing: dict[str, list[str]] = {}
    for m in metrics:
        for module, package in METRIC_PACKAGES.get(m, ()):
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.setdefault(package, []).append(m)
    if missing:
        what = "; ".join(f"{pkg} (for {', '.join(dict.fromkeys(ms))})" for pkg, ms in missing.items())
        raise MissingPackageError(
            f"metric package(s) not installed: {what}; install the eval extra: pip install 'cmaudio[eval]'"
        )


# --- input handling ------------------------------------------------------------------------------
def _as_signal(x, name: str) -> np.ndarray:
    """Return `x` as a finite float64 1-D numpy array; raise DataError otherwise."""
    if x is None:
        raise DataError(f"{name}: got None; pass a 1-D float waveform")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        x = x.detach().cpu()
        if getattr(x, "is_floating_point", lambda: True)():
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise DataError(
            f"{name}: dtype {arr.dtype} is not floating point; convert PCM to float in [-1, 1] "
            "(e.g. x.astype(np.float32) / 32768)"
        )
    if arr.ndim != 1:
        squeezed = np.squeeze(arr)
        if squeezed.ndim != 1:
            raise DataError(f"{name}: expected a 1-D mono waveform, got shape {tuple(arr.shape)}")
        arr = squeezed
    if arr.size == 0:
        raise DataError(f"{name}: waveform is empty")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: waveform contains NaN or inf values")
    return arr.astype(np.float64, copy=False)


def _check_sr(sr) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer, float)) or sr <= 0 or int(sr) != sr:
        raise DataError(f"sample rate {sr!r} is not a positive integer number of Hz")
    return int(sr)


def _prepare(ref, est, sr) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate both signals and trim them to the shorter length."""
    sr = _check_sr(sr)
    r = _as_signal(ref, "ref")
    e = _as_signal(est, "est")
    n = min(r.shape[0], e.shape[0])
    return r[:n], e[:n], sr


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    import librosa

    return librosa.resample(x, orig_sr=sr, target_sr=target, res_type="soxr_hq")


# --- metrics -------------------------------------------------------------------------------------
def pesq_wb(ref, est, sr: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2) of `est` against `ref`.

    Both signals are resampled to 16 kHz (soxr_hq) and scored with the `pesq` package in mode 'wb'.
    Range 1.04..4.64 (MOS-LQO); identical signals give 4.64 (4.6439). Higher is better.
    PESQ needs at least 0.25 s and some speech activity in the reference; otherwise DataError.
    """
    import pesq as pesq_lib

    r, e, sr = _prepare(ref, est, sr)
    r16 = _resample(r, sr, PESQ_SAMPLE_RATE)
    e16 = _resample(e, sr, PESQ_SAMPLE_RATE)
    if not np.any(r16) or not np.any(e16):
        raise DataError("pesq: a signal is all zeros; PESQ needs speech in both signals")
    try:
        return float(pesq_lib.pesq(PESQ_SAMPLE_RATE, r16, e16, "wb"))
    except pesq_lib.PesqError as err:
        msg = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise DataError(f"pesq: {msg} (needs >= 0.25 s of audio containing speech)") from None


def stoi(ref, est, sr: int) -> float:
    """Short-time objective intelligibility (Taal et al. 2011) via `pystoi` (extended=False).

    Computed at `sr` (pystoi resamples to 10 kHz and removes silent frames internally).
    Range 0..1, identical signals give 1. Higher is better. Raises DataError when fewer than 30
    non-silent STOI frames (about 0.4 s of speech) remain, instead of pystoi's silent 1e-5.
    """
    from pystoi import stoi as _stoi

    r, e, sr = _prepare(ref, est, sr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(r, e, sr, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise DataError("stoi: too little non-silent audio (needs about 0.4 s of speech after silence removal)")
    return value


def mrstft(ref, est, sr: int) -> float:
    """Multi-resolution STFT distance: ``auraloss.freq.MultiResolutionSTFTLoss()`` with its defaults.

    Resolutions (n_fft, hop, win) in samples at the input rate `sr` (no resampling):
    (1024, 120, 600), (2048, 240, 1200), (512, 50, 240), Hann window (Yamamoto et al., Parallel WaveGAN,
    2020). Per resolution: spectral convergence ||S_ref - S_est||_F / ||S_ref||_F plus the mean absolute
    difference of ln magnitudes, S = sqrt(max(|STFT|^2, 1e-8)); the result is the mean over resolutions.
    0 for identical signals; lower is better. Needs at least 2048 samples (the largest window's pad).
    """
    import torch
    from auraloss.freq import MultiResolutionSTFTLoss

    r, e, sr = _prepare(ref, est, sr)
    if r.shape[0] <= max(fft for fft, _, _ in MRSTFT_RESOLUTIONS) // 2:
        raise DataError(f"mrstft: signals of {r.shape[0]} samples are too short; need more than 1024 samples")
    loss = MultiResolutionSTFTLoss(
        fft_sizes=[f for f, _, _ in MRSTFT_RESOLUTIONS],
        hop_sizes=[h for _, h, _ in MRSTFT_RESOLUTIONS],
        win_lengths=[w for _, _, w in MRSTFT_RESOLUTIONS],
    )
    with torch.no_grad():
        x = torch.from_numpy(e.astype(np.float32)).view(1, 1, -1)  # auraloss: forward(input, target)
        y = torch.from_numpy(r.astype(np.float32)).view(1, 1, -1)
        return float(loss(x, y))


def _preset_sample_rate(mel) -> int:
    for attr in ("sample_rate", "sr"):
        value = getattr(mel, attr, None)
        if isinstance(value, (int, np.integer)) and value > 0:
            return int(value)
    preset = getattr(mel, "preset", None) or getattr(mel, "config", None)
    for attr in ("sample_rate", "sr"):
        value = getattr(preset, attr, None)
        if isinstance(value, (int, np.integer)) and value > 0:
            return int(value)
    return LOGMEL_SAMPLE_RATE


def logmel_l1(ref, est, sr: int) -> float:
    """Mean absolute difference of hifigan-preset log-mel spectrograms.

    M = cmaudio.features.MelSpectrogram("hifigan") (22050 Hz, n_fft 1024, hop 256, win 1024, 80 Slaney
    mels 0-8000 Hz, reflect pad (n_fft-hop)/2, center=False, ln(clamp(|X|, 1e-5)); docs/design.md section 3).
    Both signals are resampled to the preset's rate (22050 Hz) when `sr` differs.
    Returns mean_{bins, frames} |M_ref - M_est| in nats of magnitude; 0 for identical signals, lower is better.
    """
    import torch

    r, e, sr = _prepare(ref, est, sr)
    from cmaudio.features import MelSpectrogram  # here, with torch: `import cmaudio.metrics` stays torch-free

    mel = MelSpectrogram("hifigan")
    target = _preset_sample_rate(mel)
    r = _resample(r, sr, target)
    e = _resample(e, sr, target)
    need = int(getattr(mel, "min_samples", 1024))
    if r.shape[0] < need:
        raise DataError(f"logmel_l1: signals of {r.shape[0]} samples at {target} Hz are too short; need >= {need}")
    with torch.no_grad():
        batch = torch.from_numpy(np.stack([r, e]).astype(np.float32))  # (2, T)
        m = mel(batch)
    return float((m[0] - m[1]).abs().mean())


def _mel_cepstrum(x: np.ndarray) -> np.ndarray:
    """(MCD_ORDER, frames) mel-cepstra c_1..c_D of a 22050 Hz signal (definition in `mcd`)."""
    import librosa
    import scipy.fft

    power = librosa.feature.melspectrogram(
        y=x,
        sr=MCD_SAMPLE_RATE,
        n_fft=MCD_N_FFT,
        hop_length=MCD_HOP,
        win_length=MCD_N_FFT,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=MCD_N_MELS,
        fmin=0.0,
        fmax=MCD_SAMPLE_RATE / 2,
        htk=False,
        norm="slaney",
    )
    log_power = np.log(np.maximum(power, MCD_LOG_FLOOR))  # (M, frames), natural log of power
    # Orthonormal DCT-II: Y_d = sqrt(2/M) sum_m ln P_m cos(pi d (m + 1/2) / M) for d >= 1. The cosine-series
    # (real cepstrum) coefficient of the log-AMPLITUDE spectrum ln|X| = (1/2) ln P is
    # c_d = (1/M) sum_m (1/2) ln P_m cos(...) = Y_d / (2 sqrt(2M)); this is the scale the MCD constant
    # (10 / ln 10) sqrt(2 sum ...) assumes (Kubichek 1993), so values land near SPTK-based MCD.
    ortho = scipy.fft.dct(log_power, type=2, norm="ortho", axis=0)
    return ortho[1 : MCD_ORDER + 1] / (2.0 * math.sqrt(2.0 * MCD_N_MELS))


def mcd(ref, est, sr: int) -> float:
    """Mel-cepstral distortion in dB (Kubichek 1993 form), frames aligned 1:1.

    Definition (exactly what is computed)::

        MCD = mean_t (10 / ln 10) * sqrt(2 * sum_{d=1}^{D} (c_d(t) - c'_d(t))^2),      D = 24
        c_d(t) = (1/M) sum_{m=0}^{M-1} (1/2) ln(max(P_m(t), 1e-10)) cos(pi d (m + 1/2) / M),   M = 80
               = DCT-II_ortho(ln P(t))[d] / (2 sqrt(2 M))

    i.e. c is the real cepstrum (cosine-series coefficients) of the log-amplitude mel spectrum, and
    P(t) is the Slaney-normalised mel power spectrum (librosa.feature.melspectrogram: power 2,
    n_fft 1024, hop 256, Hann window 1024, center=True with zero padding, 80 mels, fmin 0, fmax sr/2)
    of the signal resampled to 22050 Hz (soxr_hq). c_0 (energy) is excluded. Frames are paired 1:1
    (copy-synthesis is time-aligned: no DTW) and no silence is removed. 0 for identical signals;
    lower is better. The mel axis is sampled by a filterbank instead of SPTK's all-pass warping, so
    numbers are close to, not identical with, pysptk-based MCD.
    """
    r, e, sr = _prepare(ref, est, sr)
    r = _resample(r, sr, MCD_SAMPLE_RATE)
    e = _resample(e, sr, MCD_SAMPLE_RATE)
    cr, ce = _mel_cepstrum(r), _mel_cepstrum(e)
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum((cr - ce) ** 2, axis=0))
    return float(np.mean(per_frame))


def _pyin(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    f0, voiced, _ = librosa.pyin(
        x,
        fmin=F0_FMIN,
        fmax=F0_FMAX,
        sr=F0_SAMPLE_RATE,
        frame_length=F0_FRAME_LENGTH,
        hop_length=F0_HOP,
        center=True,
    )
    return f0, voiced.astype(bool)


def _reference_cache(ref_cache: dict | None, r: np.ndarray, sr: int) -> dict:
    """The caller's dict of analyses of reference `r` (validated by a fingerprint), or a throwaway dict.

    A dict last used for another signal (other samples, length or rate) is emptied first, so a
    stale analysis is never reused.
    """
    if ref_cache is None:
        return {}
    if not isinstance(ref_cache, dict):
        raise ConfigError(f"ref_cache must be a dict kept per reference utterance, got {type(ref_cache).__name__}")
    key = (int(sr), int(r.shape[0]), hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest())
    if ref_cache.get("_key") != key:
        ref_cache.clear()
        ref_cache["_key"] = key
    return ref_cache


def f0_metrics(ref, est, sr: int, ref_cache: dict | None = None) -> dict[str, float]:
    """F0 RMSE (cents) and voiced/unvoiced error from pYIN (Mauch & Dixon 2014) on both signals.

    Analysis: both signals resampled to 16 kHz; librosa.pyin with fmin 65 Hz, fmax 520 Hz (male and
    female speech), frame 1024 samples (64 ms), hop 256 (16 ms), center=True, 0.1-semitone pitch bins
    (so single-frame F0 values are quantised to 10 cents), default HMM settings.

    - f0_rmse_cents = sqrt(mean_{t in V} (1200 log2(f0_est(t) / f0_ref(t)))^2), V = frames voiced in
      both; NaN when V is empty.
    - vuv_error = fraction of frames whose voiced flag differs between ref and est, in [0, 1].

    Both 0 for identical signals; lower is better. Cost: about 0.07 s per second of audio per signal.
    `ref_cache` (a dict kept per reference utterance, see `compute_all`) keeps the reference's pYIN.
    """
    r, e, sr = _prepare(ref, est, sr)
    cache = _reference_cache(ref_cache, r, sr)
    same = np.array_equal(r, e)  # the ground-truth row: one analysis serves both
    e = _resample(e, sr, F0_SAMPLE_RATE)
    if e.shape[0] < F0_FRAME_LENGTH:
        raise DataError(f"f0: signals shorter than {F0_FRAME_LENGTH / F0_SAMPLE_RATE:.3f} s cannot be analysed")
    if "pyin" not in cache:
        cache["pyin"] = _pyin(e) if same else _pyin(_resample(r, sr, F0_SAMPLE_RATE))
    f_ref, v_ref = cache["pyin"]
    f_est, v_est = (f_ref, v_ref) if same else _pyin(e)
    n = min(f_ref.shape[0], f_est.shape[0])
    f_ref, v_ref, f_est, v_est = f_ref[:n], v_ref[:n], f_est[:n], v_est[:n]
    both = v_ref & v_est & np.isfinite(f_ref) & np.isfinite(f_est)
    if np.any(both):
        cents = 1200.0 * np.log2(f_est[both] / f_ref[both])
        rmse = float(np.sqrt(np.mean(cents**2)))
    else:
        rmse = float("nan")
    return {"f0_rmse_cents": rmse, "vuv_error": float(np.mean(v_ref != v_est))}


# --- optional metrics (the eval extra) -----------------------------------------------------------
@lru_cache(maxsize=1)
def _visqol_api():
    """One ViSQOL speech-mode instance (lattice mapper) per process; building it loads the TFLite model."""
    import logging

    from visqol import VisqolApi

    logging.getLogger("visqol").setLevel(logging.ERROR)  # per-call duration/rate warnings are not errors
    api = VisqolApi()
    api.create(mode="speech", use_lattice_model=True)
    return api


def visqol(ref, est, sr: int) -> float:
    """ViSQOL v3 speech-mode MOS-LQO (Chinen et al., "ViSQOL v3", QoMEX 2020) of `est` against `ref`.

    `visqol-python` (a Python port of google/visqol v3.3 that passes its conformance tests) in speech
    mode with the deep-lattice quality mapper (the C++ default; the ``[lattice]`` extra brings its
    TFLite runtime), on both signals resampled to 16 kHz (soxr_hq); 21 gammatone bands 50-8000 Hz,
    VAD patch selection, global alignment. Range 1..5 (about 4.5 for identical speech); higher is
    better. Needs about 0.5 s of speech; otherwise DataError. Cost: about 0.1 s per second of audio
    (the first call compiles kernels for a few seconds).
    """
    require(["visqol"])
    r, e, sr = _prepare(ref, est, sr)
    r16 = _resample(r, sr, VISQOL_SAMPLE_RATE)
    e16 = _resample(e, sr, VISQOL_SAMPLE_RATE)
    if not np.any(r16) or not np.any(e16):
        raise DataError("visqol: a signal is all zeros; ViSQOL needs speech in both signals")
    try:
        result = _visqol_api().measure_from_arrays(r16, e16, VISQOL_SAMPLE_RATE)
    except (ValueError, IndexError, RuntimeError, ZeroDivisionError) as err:
        raise DataError(f"visqol: {str(err).splitlines()[0] if str(err) else type(err).__name__} "
                        "(needs about 0.5 s of speech in both signals)") from None
    value = float(result.moslqo)
    if not math.isfinite(value):
        raise DataError("visqol: no score (too little speech for ViSQOL's patches; needs about 0.5 s)")
    return value


def dnsmos(est, sr: int) -> dict[str, float]:
    """DNSMOS P.835 (Reddy, Gopal & Cutler, ICASSP 2022) of `est` alone: {"dnsmos_ovrl", "dnsmos_sig"}.

    Non-intrusive (no reference): the DNS Challenge ``sig_bak_ovr.onnx`` model and its polynomial
    calibration, as shipped in the `speechmos` package (run with onnxruntime), on `est` resampled to
    16 kHz (soxr_hq) and clipped to [-1, 1]; the clip is scored in 9.01 s windows hopped by 1 s and
    averaged (a shorter clip is tiled to 9.01 s by the package). OVRL = overall quality, SIG =
    speech-signal quality, both MOS 1..5, higher is better (LJSpeech recordings score about 3.2 OVRL).
    Cost: about 1 s per 9 s window on one CPU core.
    """
    require(["dnsmos_ovrl"])
    x = _as_signal(est, "est")
    sr = _check_sr(sr)
    x16 = np.clip(_resample(x, sr, DNSMOS_SAMPLE_RATE), -1.0, 1.0).astype(np.float32)
    if x16.shape[0] < DNSMOS_SAMPLE_RATE // 4:
        raise DataError(f"dnsmos: {x16.shape[0] / DNSMOS_SAMPLE_RATE:.3f} s is too short; needs at least 0.25 s")
    if not np.any(x16):
        raise DataError("dnsmos: the signal is all zeros")
    from speechmos import dnsmos as _dnsmos

    out = _dnsmos.run(x16, DNSMOS_SAMPLE_RATE)
    return {"dnsmos_ovrl": float(out["ovrl_mos"]), "dnsmos_sig": float(out["sig_mos"])}


@lru_cache(maxsize=1)
def _distillmos_model():
    """The Distill-MOS network (CPU, eval mode), loaded once per process; its banner is kept off stdout."""
    import contextlib
    import io

    import distillmos

    with contextlib.redirect_stdout(io.StringIO()):
        model = distillmos.ConvTransformerSQAModel()
    return model.eval()


def nmos(est, sr: int) -> float:
    """Distill-MOS (Stahl & Gamper, ICASSP 2025) of `est` alone: a naturalness MOS in 1..5.

    Non-intrusive: a convolutional transformer distilled from an XLS-R speech-quality model, as shipped in
    the `distillmos` wheel (loaded by the package with ``torch.load(weights_only=True)``; nothing is
    downloaded), on `est` resampled to 16 kHz (soxr_hq). The model scales each 7.68 s (122880-sample)
    segment to unit peak, so the score does not depend on level; a shorter clip is zero-padded, a longer
    one averaged over segments hopped by at most 1 s. Deterministic (eval mode, no dropout). Unlike PESQ,
    MR-STFT or log-mel L1 it hears the phase: on 10 held-out LJSpeech clips the recordings score 4.37,
    HiFi-GAN V1 4.22, Griffin-Lim (64 iterations) 3.36. Cost: about 0.1 s per clip on one CPU core.
    An evaluation metric: never a training loss, never a selector on evaluation clips.
    """
    require(["nmos"])
    x = _as_signal(est, "est")
    sr = _check_sr(sr)
    x16 = _resample(x, sr, NMOS_SAMPLE_RATE).astype(np.float32)
    if x16.shape[0] < NMOS_SAMPLE_RATE // 4:
        raise DataError(f"nmos: {x16.shape[0] / NMOS_SAMPLE_RATE:.3f} s is too short; needs at least 0.25 s")
    if not np.any(x16):
        raise DataError("nmos: the signal is all zeros")
    import torch

    with torch.no_grad():
        score = _distillmos_model()(torch.from_numpy(x16)[None])
    return float(score.reshape(-1)[0])


def _crepe(x16: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray]:
    """CARGAN's CREPE analysis of a 16 kHz signal -> (periodicity (frames,) in [0, 1], voiced (frames,) bool)."""
    import torch
    import torch.nn.functional as F
    import torchcrepe

    audio = torch.from_numpy(x16.astype(np.float32))[None]  # (1, T)
    audio = F.pad(audio[None], (CREPE_PAD, CREPE_PAD), mode="reflect").squeeze(0)
    pitch, periodicity = torchcrepe.predict(
        audio, CREPE_SAMPLE_RATE, CREPE_HOP, CREPE_FMIN, CREPE_FMAX, model=model, return_periodicity=True,
        batch_size=1024, device="cpu", pad=False,
    )
    periodicity = torchcrepe.threshold.Silence(CREPE_SILENCE_DB)(
        periodicity, audio, CREPE_SAMPLE_RATE, hop_length=CREPE_HOP, pad=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-unvoiced clip
        voiced_pitch = torchcrepe.threshold.Hysteresis()(pitch, periodicity)
    return periodicity[0].double().numpy(), ~np.isnan(voiced_pitch[0].double().numpy())


def periodicity_metrics(ref, est, sr: int, model: str = CREPE_MODEL, ref_cache: dict | None = None) -> dict[str, float]:
    """CREPE periodicity RMSE and voiced/unvoiced F1 (Morrison et al., CARGAN, ICLR 2022; as in BigVGAN).

    Analysis (CARGAN's ``pitch.from_audio``): both signals resampled to 16 kHz (soxr_hq), reflect-padded
    by 419 samples each side, torchcrepe (Kim et al., CREPE, 2018; weights in its wheel) `model`
    ("full" as CARGAN, or "tiny"), hop 185 samples (11.6 ms, one 256-sample hop at 22.05 kHz),
    fmin 50 Hz, fmax 550 Hz, Viterbi decoding, no further padding; periodicity (network confidence at
    the decoded pitch, 0..1) set to 0 where the A-weighted loudness is below -60 dB; a frame is voiced
    where torchcrepe.threshold.Hysteresis keeps its pitch.

    - periodicity_rmse = sqrt(mean_t (p_ref(t) - p_est(t))^2) over all frames; 0..1, 0 for identical
      signals, lower is better.
    - vuv_f1 = 2 TP / (2 TP + FP + FN), the reference's voicing as truth; 1 for identical signals,
      higher is better; NaN when neither signal has a voiced frame.

    Per utterance (CARGAN pools the frames of a whole test set). Cost with "full": about 2 s of CPU
    per second of audio per signal; `ref_cache` (see `compute_all`) keeps the reference's analysis.
    """
    if model not in ("full", "tiny"):
        raise ConfigError(f"periodicity: CREPE model must be 'full' or 'tiny', got {model!r}")
    require(["periodicity_rmse"])
    r, e, sr = _prepare(ref, est, sr)
    cache = _reference_cache(ref_cache, r, sr)
    e16 = _resample(e, sr, CREPE_SAMPLE_RATE)
    if e16.shape[0] <= CREPE_PAD:
        raise DataError(f"periodicity: signals of {e16.shape[0]} samples at 16 kHz are too short; need > {CREPE_PAD}")
    key = ("crepe", model)
    same = np.array_equal(r, e)  # the ground-truth row: one analysis serves both
    if key not in cache:
        cache[key] = _crepe(e16 if same else _resample(r, sr, CREPE_SAMPLE_RATE), model)
    p_ref, v_ref = cache[key]
    p_est, v_est = (p_ref, v_ref) if same else _crepe(e16, model)
    n = min(p_ref.shape[0], p_est.shape[0])
    p_ref, v_ref, p_est, v_est = p_ref[:n], v_ref[:n], p_est[:n], v_est[:n]
    tp = int(np.sum(v_ref & v_est))
    fp = int(np.sum(~v_ref & v_est))
    fn = int(np.sum(v_ref & ~v_est))
    f1 = 2.0 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan")
    return {"periodicity_rmse": float(np.sqrt(np.mean((p_ref - p_est) ** 2))), "vuv_f1": float(f1)}


_GROUPS = {  # metrics computed together by one call
    "f0_rmse_cents": "f0", "vuv_error": "f0",
    "dnsmos_ovrl": "dnsmos", "dnsmos_sig": "dnsmos",
    "periodicity_rmse": "periodicity", "vuv_f1": "periodicity",
}


def compute_all(
    ref, est, sr: int, metrics: Sequence[str] | None = None, ref_cache: dict | None = None
) -> dict[str, float]:
    """Compute the named metrics (default: all of `METRIC_NAMES`) and return {name: value}.

    `metrics` may name any of `METRIC_NAMES`; metrics that come from one analysis are computed
    together, once (f0_rmse_cents + vuv_error: one pYIN pass; dnsmos_ovrl + dnsmos_sig: one DNSMOS
    pass; periodicity_rmse + vuv_f1: one CREPE pass). Order follows `METRIC_NAMES`.

    ref_cache: optional dict the caller keeps per reference utterance and passes with every estimate
    scored against it; the reference's pYIN and CREPE analyses are stored there and reused (a dict
    used with a different reference is emptied first). Unknown names raise ConfigError; missing
    optional packages raise MissingPackageError before anything runs; bad signals raise DataError.
    """
    if metrics is None:
        wanted = list(METRIC_NAMES)
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        unknown = [m for m in metrics if m not in METRIC_NAMES]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
        wanted = [m for m in METRIC_NAMES if m in set(metrics)]
    require(wanted)
    r, e, sr = _prepare(ref, est, sr)  # validate once, up front
    simple = {"pesq": pesq_wb, "stoi": stoi, "visqol": visqol, "mrstft": mrstft, "logmel_l1": logmel_l1, "mcd": mcd,
              "nmos": lambda _r, est, rate: nmos(est, rate)}
    grouped = {
        "f0": lambda: f0_metrics(r, e, sr, ref_cache=ref_cache),
        "dnsmos": lambda: dnsmos(e, sr),
        "periodicity": lambda: periodicity_metrics(r, e, sr, ref_cache=ref_cache),
    }
    out: dict[str, float] = {}
    done: dict[str, dict[str, float]] = {}
    for name in wanted:
        if name in simple:
            out[name] = simple[name](r, e, sr)
        else:
            group = _GROUPS[name]
            if group not in done:
                done[group] = grouped[group]()
            out[name] = done[group][name]
    return out


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of its two-sided 95 % confidence interval (Student t).

    half_width = t_{0.975, n-1} * s / sqrt(n), s = sample standard deviation (ddof=1), for n >= 2;
    NaN for n = 1. NaN entries (e.g. an F0 RMSE with no voiced frames) are dropped before counting;
    if none remain both results are NaN. An empty input or an inf raises DataError.
    """
    from scipy.stats import t as student_t

    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise DataError("mean_ci95: no values given")
    if np.any(np.isinf(arr)):
        raise DataError("mean_ci95: values contain inf")
    arr = arr[~np.isnan(arr)]
    n = arr.size
    if n == 0:
        return float("nan"), float("nan")
    mean = float(np.mean(arr))
    if n == 1:
        return mean, float("nan")
    sem = float(np.std(arr, ddof=1)) / math.sqrt(n)
    return mean, float(student_t.ppf(0.975, n - 1) * sem)
