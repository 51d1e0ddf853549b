"""Training-free baselines for vocoder reports: Griffin-Lim inversion of a log-mel spectrogram.

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

Imports only cmaudio.errors and cmaudio.features of the package (plus numpy, torch, librosa).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelPreset, PresetFraming, _affine, _mel_filterbank, _min_samples, get_preset

__all__ = ["GRIFFINLIM_ITERS", "GRIFFINLIM_MOMENTUM", "mel_inverse_operator", "mel_to_magnitude", "griffinlim"]

#: The iteration counts `cmaudio evaluate --baseline griffinlim` reports (rows griffinlim-32, -64).
GRIFFINLIM_ITERS = (32, 64)
#: Fast Griffin-Lim momentum (Perraudin et al. 2013; librosa.griffinlim's default).
GRIFFINLIM_MOMENTUM = 0.99
_METHODS = ("nnls", "pinv")


def _as_mel(mel, p: MelPreset) -> Tensor:
    """(B, n_mels, frames) float64 tensor of a preset's log-mel, or DataError."""
    if isinstance(mel, np.ndarray):
        if mel.dtype.kind != "f":
            raise DataError(f"griffinlim needs a float log-mel, got an array of dtype {mel.dtype}")
        mel = torch.from_numpy(np.ascontiguousarray(mel))
    if not isinstance(mel, Tensor):
        raise DataError(f"griffinlim takes a numpy array or torch tensor log-mel, got {type(mel).__name__}")
    if not mel.is_floating_point():
        raise DataError(f"griffinlim needs a float log-mel, got a tensor of dtype {mel.dtype}")
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3 or mel.shape[1] != p.n_mels or mel.shape[2] < 1:
        raise DataError(
            f"griffinlim takes a {p.name!r} log-mel of shape ({p.n_mels}, frames) or (B, {p.n_mels}, frames), "
            f"got {tuple(mel.shape)}"
        )
    mel = mel.detach().to("cpu", torch.float64)
    if not torch.isfinite(mel).all():
        raise DataError("griffinlim: the log-mel contains NaN or inf values")
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
    p = get_preset(preset)
    if method not in _METHODS:
        raise ConfigError(f"mel inversion method must be one of {_METHODS}, got {method!r}")
    y = _as_mel(mel, p)
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
    angles = torch.polar(torch.ones_like(mag), phase)
    rebuilt = torch.zeros_like(angles)
    beta = float(momentum) / (1.0 + float(momentum))
    for _ in range(int(n_iter)):
        previous = rebuilt
        y = framing.synthesis(mag * angles, length)
        rebuilt = framing.analysis(y)
        angles = rebuilt - beta * previous
        angles = angles / (angles.abs() + 1e-16)
    y = framing.synthesis(mag * angles, length)
    return y.clamp(-1.0, 1.0).to(torch.float32)
