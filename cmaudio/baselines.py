"""Training-free baselines for vocoder reports: Griffin-Lim and PGHI inversion of a log-mel spectrogram.

Griffin-Lim (Griffin & Lim, "Signal estimation from modified short-time Fourier transform",
IEEE TASSP 1984) is the zero-training floor every neural vocoder should clear: it needs no data,
only the mel's own analysis. `griffinlim` inverts a log-mel of any `cmaudio.features` preset in
three steps, each in that preset's own convention:

1. undo the log and post-normalisation (stages 4-5 of the preset): ln m = (y - b) / a, with the
   affine map (a, b) of `features.convert`; values on a floor or clip bound come back as the bound;
2. mel amplitude -> linear STFT magnitude with the preset's own filterbank (librosa, the one
   `MelSpectrogram` uses): non-negative least squares min_{S >= 0} ||FB S - m||_2 per frame
   (``method="nnls"``, librosa.util.nnls) or the clamped pseudo-inverse max(pinv(FB) m, 0)
   (``method="pinv"``); then the magnitude stage is undone (sqrt(max(S^2 - eps, 0)) for the
   ``sqrt_add``/``sqrt_clamp`` magnitudes, times sqrt(sum w^2) for ``normalized`` presets);
3. fast Griffin-Lim (Perraudin, Balazs & Sondergaard, WASPAA 2013; momentum 0.99 as librosa's
   ``griffinlim``) for ``n_iter`` iterations from a seeded uniform random phase, with the preset's
   exact framing: its reflect/zero pre-pad (HiFi-GAN's (n_fft - hop)/2, center=False) or centred
   STFT, periodic Hann window of win_length zero-padded to n_fft, hop_length. The inverse STFT is
   the least-squares estimate of Griffin & Lim (eq. 6): windowed overlap-add divided by the summed
   squared window, then the padding is cut off.

The output has frames * hop_length samples (a vocoder's length for that mel), at the preset's
sample rate, clamped to [-1, 1] (what a 16-bit wav keeps).

`pghi` replaces step 3's random start by phase-gradient heap integration (Prusa, Balazs &
Sondergaard, "A Noniterative Method for Reconstruction of Phase From STFT Magnitude", IEEE/ACM
TASLP 2017), a non-iterative phase estimate (`pghi_phase`), optionally refined by ``gl_iters``
fast Griffin-Lim iterations started from it. For a Gaussian window exp(-pi t^2 / lambda) the STFT's
phase gradient is a function of its log-magnitude s = ln|X|; in the window-centred (time-invariant)
phase convention, with t in samples and w in cycles per sample:

    dphi/dt = 2 pi w + (1 / lambda) ds/dw,        dphi/dw = -lambda ds/dt.

The Hann window of L samples is approximated by the Gaussian with lambda = 0.25645 L^2. In frame
and bin units (hop a, n_fft M; centred differences of s, zero across DC and Nyquist) the phase steps
from frame to frame by 2 pi a k / M + (a M / lambda) ds/dk and from bin to bin by
-(lambda / (a M)) ds/dm. Heap integration starts from the largest coefficient and always extends
from the largest coefficient already given a phase to its four neighbours (trapezoidal rule), so
the phase is integrated along the ridges where the gradient estimate is reliable; coefficients below
``tol`` times the clip's maximum get a seeded uniform random phase (their energy is negligible). The
preset's STFT (torch.stft on the frame grid) measures phase from each frame's first sample, half a
window before the window's centre, so the integrated phase is shifted by pi k (a factor (-1)^k).

Imports only cmaudio.errors and cmaudio.features of the package (plus numpy, torch, librosa).
"""

from __future__ import annotations

import heapq
import math
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelPreset, PresetFraming, _affine, _mel_filterbank, _min_samples, get_preset

__all__ = ["GRIFFINLIM_ITERS", "GRIFFINLIM_MOMENTUM", "PGHI_GL_ITERS", "PGHI_HANN_LAMBDA", "mel_inverse_operator",
           "mel_to_magnitude", "griffinlim", "pghi", "pghi_phase"]

#: The iteration counts `cmaudio evaluate --baseline griffinlim` reports (rows griffinlim-32, -64).
GRIFFINLIM_ITERS = (32, 64)
#: Fast Griffin-Lim momentum (Perraudin et al. 2013; librosa.griffinlim's default).
GRIFFINLIM_MOMENTUM = 0.99
#: Fast Griffin-Lim iterations after PGHI that `cmaudio evaluate --baseline pghi` reports besides plain
#: PGHI (rows pghi, pghi-gl32).
PGHI_GL_ITERS = (0, 32)
#: Gaussian approximation of a Hann window of L samples: lambda = PGHI_HANN_LAMBDA * L^2 (samples^2),
#: as in Prusa et al. 2017 and LTFAT's pghi.
PGHI_HANN_LAMBDA = 0.25645
_METHODS = ("nnls", "pinv")


def _as_mel(mel, p: MelPreset, who: str = "griffinlim", what: str = "log-mel", rows: Optional[int] = None) -> Tensor:
    """(B, rows, frames) float64 CPU tensor of a preset's log-mel (rows = n_mels) or other spectrogram, or
    DataError naming `who` (the caller) and `what`."""
    rows = p.n_mels if rows is None else rows
    if isinstance(mel, np.ndarray):
        if mel.dtype.kind != "f":
            raise DataError(f"{who} needs a float {what}, got an array of dtype {mel.dtype}")
        mel = torch.from_numpy(np.ascontiguousarray(mel))
    if not isinstance(mel, Tensor):
        raise DataError(f"{who} takes a numpy array or torch tensor {what}, got {type(mel).__name__}")
    if not mel.is_floating_point():
        raise DataError(f"{who} needs a float {what}, got a tensor of dtype {mel.dtype}")
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3 or mel.shape[1] != rows or mel.shape[2] < 1:
        raise DataError(
            f"{who} takes a {p.name!r} {what} of shape ({rows}, frames) or (B, {rows}, frames), "
            f"got {tuple(mel.shape)}"
        )
    mel = mel.detach().to("cpu", torch.float64)
    if not torch.isfinite(mel).all():
        raise DataError(f"{who}: the {what} contains NaN or inf values")
    return mel


def mel_to_magnitude(mel, preset: Union[str, MelPreset] = "hifigan", method: str = "nnls") -> Tensor:
    """Linear STFT magnitude |X| that a preset's log-mel came from (steps 1-2 of the module docstring).

    Args:
        mel: log-mel (n_mels, frames) or (B, n_mels, frames) in the preset's units (numpy or torch).
        preset: the mel's preset name or MelPreset.
        method: "nnls" (non-negative least squares, librosa.util.nnls) or "pinv" (pseudo-inverse,
            clamped at 0).

    Returns (B, n_fft // 2 + 1, frames) float64, >= 0, in the units of |torch.stft(x)| of a waveform
    x in [-1, 1] (unnormalised DFT; the preset's ``normalized`` scaling undone).
    """
    return _mel_to_magnitude(mel, get_preset(preset), method, "griffinlim")


def _mel_to_magnitude(mel, p: MelPreset, method: str, who: str) -> Tensor:
    if method not in _METHODS:
        raise ConfigError(f"mel inversion method must be one of {_METHODS}, got {method!r}")
    y = _as_mel(mel, p, who)
    a, b, _, _ = _affine(p)
    amp = torch.exp((y - b) / a).clamp_min(p.log_floor)  # mel amplitude m, (B, n_mels, frames)
    fb = _mel_filterbank(p)  # (n_mels, n_freq) float64
    if method == "pinv":
        mag = torch.from_numpy(np.linalg.pinv(fb)) @ amp
    else:
        import librosa

        flat = amp.permute(1, 0, 2).reshape(p.n_mels, -1).numpy()  # (n_mels, B * frames)
        sol = librosa.util.nnls(fb, flat)  # (n_freq, B * frames)
        mag = torch.from_numpy(np.asarray(sol, dtype=np.float64)).reshape(-1, y.shape[0], y.shape[2]).permute(1, 0, 2)
    mag = mag.clamp_min(0.0)
    if p.magnitude != "abs":  # sqrt(|X|^2 + eps) or sqrt(max(|X|^2, eps)) -> |X|
        mag = torch.sqrt(torch.clamp(mag.pow(2) - p.magnitude_eps, min=0.0))
    if p.normalized:  # the preset divided X by sqrt(sum w^2) (torchaudio normalized=True)
        mag = mag * math.sqrt(float(torch.hann_window(p.win_length, periodic=True, dtype=torch.float64).pow(2).sum()))
    return mag.contiguous()


def mel_inverse_operator(preset: Union[str, MelPreset], n_fft: Optional[int] = None) -> tuple[Tensor, float, float]:
    """The linear part of `mel_to_magnitude(..., method="pinv")` for a network that inverts mels itself
    (FrameNet's Griffin-Lim prior): |X| ~= max(P exp((y - b) / a), 0).

    Returns (P (n_fft // 2 + 1, n_mels) float32, a, b): P = pinv(filterbank) times the preset's
    ``normalized`` gain and, when the analysis window of `n_fft` samples differs from the preset's
    (win_length < n_fft), the ratio of the windows' sums, so that P gives magnitudes in the units of a
    periodic Hann window of n_fft samples. The ``sqrt_add`` eps (1e-9) is neglected; the log floor is
    the caller's (exp of a floored mel is the floor). n_fft must equal the preset's (its bins).
    """
    p = get_preset(preset)
    n_fft = int(n_fft or p.n_fft)
    if n_fft != p.n_fft:
        raise ConfigError(f"a mel inverse needs the preset's n_fft ({p.n_fft} for {p.name!r}), got {n_fft}")
    a, b, _, _ = _affine(p)
    P = np.linalg.pinv(_mel_filterbank(p))  # (n_freq, n_mels)
    gain = 1.0
    if p.normalized:
        gain *= math.sqrt(float(torch.hann_window(p.win_length, periodic=True, dtype=torch.float64).pow(2).sum()))
    if p.win_length != n_fft:
        gain *= float(torch.hann_window(n_fft, periodic=True, dtype=torch.float64).sum()) / float(
            torch.hann_window(p.win_length, periodic=True, dtype=torch.float64).sum())
    return torch.from_numpy(P * gain).to(torch.float32), float(a), float(b)


def griffinlim(
    mel,
    preset: Union[str, MelPreset] = "hifigan",
    *,
    n_iter: int = 64,
    method: str = "nnls",
    momentum: float = GRIFFINLIM_MOMENTUM,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Waveform from a log-mel by Griffin-Lim (Griffin & Lim 1984; fast variant, Perraudin et al. 2013).

    Args:
        mel: log-mel (n_mels, frames) or (B, n_mels, frames) in `preset`'s convention (numpy or torch),
            e.g. ``MelSpectrogram(preset)(audio)`` or a TTS model's output.
        preset: the mel's preset (name or MelPreset); its filterbank, STFT and framing are used.
        n_iter: Griffin-Lim iterations (>= 1; 32 and 64 are the report's rows).
        method: mel -> linear magnitude, "nnls" (default) or "pinv" (see `mel_to_magnitude`).
        momentum: fast Griffin-Lim momentum in [0, 1) (0 is the original 1984 algorithm).
        seed / generator: the initial random phase (uniform on [0, 2 pi)); a generator wins over seed.

    Returns (B, frames * hop_length) float32 waveform at the preset's sample rate, in [-1, 1]
    (clamped). Deterministic for a given seed. Cost: 2 * n_iter STFTs of the clip (about 0.1 s per
    second of audio at 64 iterations on one CPU core).
    """
    p = get_preset(preset)
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise ConfigError(f"griffinlim: n_iter must be a positive integer, got {n_iter!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ConfigError(f"griffinlim: momentum must be in [0, 1), got {momentum!r}")
    mag = mel_to_magnitude(mel, p, method)  # (B, n_freq, frames) float64
    batch, _, frames = mag.shape
    length = frames * p.hop_length
    framing = PresetFraming(p, frames, torch.float64)
    if length < _min_samples(p):
        raise DataError(f"griffinlim: {frames} frame(s) are too few for the {p.name!r} framing")
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    phase = torch.rand(mag.shape, generator=g, dtype=torch.float64) * (2.0 * math.pi)
    return _fast_griffinlim(mag, phase, framing, length, int(n_iter), float(momentum))


def _fast_griffinlim(mag: Tensor, phase: Tensor, framing: PresetFraming, length: int, n_iter: int,
                     momentum: float) -> Tensor:
    """(B, length) float32 waveform in [-1, 1] from |X| (B, n_freq, frames) and a starting phase (same shape,
    radians, the preset's STFT convention) after `n_iter` >= 0 fast Griffin-Lim iterations."""
    angles = torch.polar(torch.ones_like(mag), phase)
    rebuilt = torch.zeros_like(angles)
    beta = momentum / (1.0 + momentum)
    for _ in range(n_iter):
        previous = rebuilt
        y = framing.synthesis(mag * angles, length)
        rebuilt = framing.analysis(y)
        angles = rebuilt - beta * previous
        angles = angles / (angles.abs() + 1e-16)
    y = framing.synthesis(mag * angles, length)
    return y.clamp(-1.0, 1.0).to(torch.float32)


def _differences(s: Tensor, dim: int) -> Tensor:
    """Centred first differences of s along `dim` (one-sided at the two ends; zero for a single entry)."""
    n = s.shape[dim]
    d = torch.zeros_like(s)
    if n < 2:
        return d
    if n > 2:
        d.narrow(dim, 1, n - 2).copy_((s.narrow(dim, 2, n - 2) - s.narrow(dim, 0, n - 2)) / 2.0)
    d.narrow(dim, 0, 1).copy_(s.narrow(dim, 1, 1) - s.narrow(dim, 0, 1))
    d.narrow(dim, n - 1, 1).copy_(s.narrow(dim, n - 1, 1) - s.narrow(dim, n - 2, 1))
    return d


def _heap_integrate(logmag: np.ndarray, tstep: np.ndarray, fstep: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """Phase (n_freq, frames) float64 by heap integration (Prusa et al. 2017, Algorithm 1) of the per-frame
    steps `tstep` and per-bin steps `fstep` over the `significant` coefficients, largest `logmag` first;
    each new region (no significant neighbour left) starts at phase 0 from its largest coefficient.
    Other entries are 0 (the caller fills them)."""
    n_freq, frames = logmag.shape
    s, tg, fg = logmag.ravel().tolist(), tstep.ravel().tolist(), fstep.ravel().tolist()
    todo = significant.ravel().tolist()
    phase = [0.0] * (n_freq * frames)
    flat_sig = np.flatnonzero(significant.ravel())
    order = flat_sig[np.argsort(-logmag.ravel()[flat_sig], kind="stable")].tolist()
    push, pop = heapq.heappush, heapq.heappop
    last = frames - 1
    for start in order:
        if not todo[start]:
            continue
        todo[start] = False
        heap = [(-s[start], start)]
        while heap:
            i = pop(heap)[1]
            t = i % frames
            if t < last and todo[i + 1]:
                j = i + 1
                phase[j] = phase[i] + 0.5 * (tg[i] + tg[j])
                todo[j] = False
                push(heap, (-s[j], j))
            if t > 0 and todo[i - 1]:
                j = i - 1
                phase[j] = phase[i] - 0.5 * (tg[i] + tg[j])
                todo[j] = False
                push(heap, (-s[j], j))
            j = i + frames
            if j < len(todo) and todo[j]:
                phase[j] = phase[i] + 0.5 * (fg[i] + fg[j])
                todo[j] = False
                push(heap, (-s[j], j))
            j = i - frames
            if j >= 0 and todo[j]:
                phase[j] = phase[i] - 0.5 * (fg[i] + fg[j])
                todo[j] = False
                push(heap, (-s[j], j))
    return np.asarray(phase, dtype=np.float64).reshape(n_freq, frames)


def _check_tol(tol, who: str) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not 0.0 < float(tol) < 1.0:
        raise ConfigError(f"{who}: tol must be a number in (0, 1), got {tol!r}")
    return float(tol)


def pghi_phase(
    mag,
    preset: Union[str, MelPreset] = "hifigan",
    *,
    tol: float = 1e-5,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """STFT phase of a magnitude by phase-gradient heap integration (module docstring; Prusa et al. 2017).

    Args:
        mag: linear STFT magnitude |X| (n_fft // 2 + 1, frames) or (B, n_fft // 2 + 1, frames), >= 0
            (numpy or torch), on `preset`'s frame grid (hop_length, periodic Hann of win_length), e.g.
            `mel_to_magnitude`'s output or ``PresetFraming(preset, frames).analysis(y).abs()``.
        preset: the preset (name or MelPreset) whose STFT the magnitude is of.
        tol: relative threshold in (0, 1): coefficients below tol * (the clip's largest) are not
            integrated and get a uniform random phase; the log-magnitude is floored there too.
        seed / generator: that random phase; a generator wins over seed.

    Returns (B, n_fft // 2 + 1, frames) float64 CPU phase in radians (not wrapped) in the convention of
    `PresetFraming.analysis` (torch.stft: phase measured from each frame's first sample), so that
    ``PresetFraming.synthesis(mag * exp(i phase))`` is the PGHI waveform. Deterministic. Cost: a
    Python heap loop over the significant coefficients, about 0.3 s per 100k coefficients on one CPU
    core (a 4 s clip at 22.05 kHz, n_fft 1024, hop 256: 176k coefficients, 0.5-0.6 s).
    """
    p = get_preset(preset)
    tol = _check_tol(tol, "pghi_phase")
    n_freq = p.n_fft // 2 + 1
    m = _as_mel(mag, p, "pghi_phase", "STFT magnitude", rows=n_freq)
    if bool((m < 0).any()):
        raise DataError("pghi_phase: the STFT magnitude has negative values")
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    noise = torch.rand(m.shape, generator=g, dtype=torch.float64) * (2.0 * math.pi)
    lam = PGHI_HANN_LAMBDA * p.win_length ** 2  # Gaussian approximation of the Hann window, samples^2
    a, big_m = p.hop_length, p.n_fft
    peak = m.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    floor = torch.clamp(peak * tol, min=torch.finfo(torch.float64).tiny)
    s = torch.log(torch.maximum(m, floor))  # ln|X| floored at tol * max, (B, n_freq, frames)
    ds_dk = _differences(s, 1)
    ds_dk[:, 0] = 0.0  # |X| is even in frequency about DC and Nyquist
    ds_dk[:, -1] = 0.0
    ds_dm = _differences(s, 2)
    k = torch.arange(n_freq, dtype=torch.float64)[None, :, None]
    tstep = 2.0 * math.pi * a * k / big_m + (a * big_m / lam) * ds_dk  # phase step per frame (centred window)
    fstep = -(lam / (a * big_m)) * ds_dm  # phase step per bin
    significant = (m >= floor) & (peak > 0)
    phases = []
    for b in range(m.shape[0]):
        sig = significant[b].numpy()
        ph = torch.from_numpy(_heap_integrate(s[b].numpy(), tstep[b].numpy(), fstep[b].numpy(), sig))
        phases.append(torch.where(significant[b], ph, noise[b]))
    centred = torch.stack(phases)
    return centred + math.pi * k  # window-centred -> frame-start phase: X_frame = (-1)^k X_centred


def _pghi_waveform(mag: Tensor, p: MelPreset, *, tol: float, gl_iters: int, momentum: float,
                   generator: torch.Generator, who: str = "pghi") -> Tensor:
    """(B, frames * hop_length) float32 waveform in [-1, 1] from a linear STFT magnitude (B, n_freq, frames)
    on `p`'s frame grid: PGHI phase, then `gl_iters` fast Griffin-Lim iterations from it."""
    frames = int(mag.shape[-1])
    length = frames * p.hop_length
    if length < _min_samples(p):
        raise DataError(f"{who}: {frames} frame(s) are too few for the {p.name!r} framing")
    phase = pghi_phase(mag, p, tol=tol, generator=generator)
    m = _as_mel(mag, p, who, "STFT magnitude", rows=p.n_fft // 2 + 1)
    return _fast_griffinlim(m, phase, PresetFraming(p, frames, torch.float64), length, gl_iters, momentum)


def pghi(
    mel,
    preset: Union[str, MelPreset] = "hifigan",
    *,
    method: str = "pinv",
    tol: float = 1e-5,
    gl_iters: int = 0,
    momentum: float = GRIFFINLIM_MOMENTUM,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Waveform from a log-mel by phase-gradient heap integration (PGHI, Prusa et al. 2017), optionally
    refined by fast Griffin-Lim iterations started from the PGHI phase.

    Args:
        mel: log-mel (n_mels, frames) or (B, n_mels, frames) in `preset`'s convention (numpy or torch).
        preset: the mel's preset (name or MelPreset); its filterbank, STFT and framing are used.
        method: mel -> linear magnitude, "pinv" (default) or "nnls" (see `mel_to_magnitude`; on hifigan
            mels of speech librosa's NNLS stops at its clamped pseudo-inverse start, so the two agree
            and pinv is the cheaper).
        tol: relative magnitude threshold of the heap integration (see `pghi_phase`).
        gl_iters: fast Griffin-Lim iterations after PGHI (>= 0; 0 is plain PGHI).
        momentum: their momentum in [0, 1).
        seed / generator: the random phase of the coefficients below tol (a generator wins over seed).

    Returns (B, frames * hop_length) float32 waveform at the preset's sample rate, in [-1, 1]
    (clamped). Deterministic. Cost: `pghi_phase` (about 0.15 s per second of 22.05 kHz audio on one
    CPU core, a Python heap loop) plus 2 * gl_iters STFTs.
    """
    p = get_preset(preset)
    tol = _check_tol(tol, "pghi")
    if isinstance(gl_iters, bool) or not isinstance(gl_iters, (int, np.integer)) or gl_iters < 0:
        raise ConfigError(f"pghi: gl_iters must be a non-negative integer, got {gl_iters!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ConfigError(f"pghi: momentum must be in [0, 1), got {momentum!r}")
    mag = _mel_to_magnitude(mel, p, method, "pghi")
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    return _pghi_waveform(mag, p, tol=tol, gl_iters=int(gl_iters), momentum=float(momentum), generator=g)
