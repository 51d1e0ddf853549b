"""The mel projection: pull a generated waveform's spectral envelope onto the mel it was generated from.

A vocoder is asked for audio whose mel is `m`; what a network makes has a mel m_hat that is close
but smoothed (a regression-trained generator is 1-3 dB quiet at 4-8 kHz and leaves a faint floor
in the pauses). The projection is a deterministic, training-free data-consistency step for that
constraint, in the spirit of the replace-the-known-part step of CM Alg. 4 (zero-shot editing), but
for a mel, which is a non-linear observation: it keeps the waveform's phase and corrects only its
magnitudes, band by band. One iteration, in the preset's own frame grid (features.PresetFraming):

    X = STFT(y)                                           (B, n_fft/2 + 1, F) complex
    g_m = clip(exp((m - mel(X)) / a), 1/G, G)             (B, n_mels, F): the amplitude ratio per mel
                                                          band (ln M = (y - b) / a undoes the preset's log)
    g_k = sum_m W[m, k] g_m                               (B, n_fft/2 + 1, F): each linear bin gets the mean
                                                          of its bands' ratios, weighted by the filterbank
                                                          (W = FB / column sums; bins no band covers take
                                                          the nearest covered bin's weights)
    y <- iSTFT(g_k X)                                     least-squares inverse (Griffin & Lim 1984, eq. 6)

G = 4 (12 dB) bounds one iteration's change. Because g_k X is not a consistent STFT, one iteration
lands near, not on, the target; K iterations (`iters`) converge towards it. Phase is never
replaced, so the coherent phase a network made is kept (unlike Griffin-Lim, which gets the
magnitudes right and the phase wrong). mel(X) is the log-mel of X itself
(MelSpectrogram.from_spectrum), so an iteration costs one STFT and one inverse: one Griffin-Lim
iteration.

Long signals are projected in chunks of `CHUNK_FRAMES` frames, each with `context_frames` frames of
context on both sides (every iteration reaches less than n_fft samples further, and the frames whose
window crosses a chunk's edge are wrong only in that context), so memory is bounded by the chunk, not
the input, and the result equals the unchunked projection to float rounding (tests/test_hostile31b.py).

Measured (egs/quality/README.md, the section on the projection): on the default model's validation
clips at 1 step, 8 iterations take log-mel L1 0.168 -> 0.104, PESQ-wb 2.88 -> 3.46, DNSMOS OVRL
2.58 -> 2.71, MR-STFT 1.17 -> 1.09.

Imports: config (the iteration bound), errors, features.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmaudio.config import MAX_PROJECTION_ITERS as MAX_ITERS
from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelSpectrogram, PresetFraming, _affine, _log_stage

__all__ = ["MAX_GAIN", "MAX_ITERS", "CHUNK_FRAMES", "check_iters", "context_frames", "min_frames", "band_weights",
           "mel_projection", "MelProjection"]

#: Largest amplitude ratio one iteration applies per band (and 1 / MAX_GAIN the smallest): 12 dB.
MAX_GAIN = 4.0

#: Frames per chunk of `mel_projection` (about 24 s at hop 256 and 22.05 kHz; a few tens of MB of spectrum).
CHUNK_FRAMES = 2048


def check_iters(iters, what: str = "projection") -> int:
    """`iters` as an int in [0, MAX_ITERS], or a ConfigError naming `what` (0 turns the projection off)."""
    if isinstance(iters, bool) or not isinstance(iters, int) or not 0 <= iters <= MAX_ITERS:
        raise ConfigError(f"{what} must be a whole number of iterations in [0, {MAX_ITERS}] (0 = off), got {iters!r}")
    return int(iters)


def min_frames(features: MelSpectrogram) -> int:
    """Fewest mel frames the projection takes: the preset's framing needs `features.min_samples` samples."""
    return -(-features.min_samples // features.hop_length)


def context_frames(features: MelSpectrogram, iters: int) -> int:
    """Frames of context a chunk needs on each side for its core to equal the unchunked projection.

    One iteration's output sample t depends on the frames whose windows cover t, which read samples
    less than n_fft from t; the frames whose window crosses the chunk's edge (reflect padding, missing
    neighbours in the envelope) spoil at most n_fft samples more. So K iterations need K n_fft + n_fft
    samples, rounded up to whole frames.
    """
    p = features.preset
    return -(-(check_iters(iters) + 1) * p.n_fft // p.hop_length) + 1


def band_weights(features: MelSpectrogram) -> Tensor:
    """W (n_mels, n_fft // 2 + 1) float32 on the CPU: column k holds the weights with which linear bin k
    averages the mel bands' gains. Columns sum to 1; a bin no band covers (below fmin, above fmax) copies
    the column of the nearest covered bin. Computed once per preset (cached; do not modify it)."""
    return _band_weights(features.preset.name)


@functools.lru_cache(maxsize=None)
def _band_weights(preset: str) -> Tensor:
    fb = MelSpectrogram(preset).mel_basis.double()
    cover = fb.sum(0)
    covered = (cover > 0).nonzero().flatten()
    if covered.numel() == 0:
        raise ConfigError(f"the {preset!r} filterbank covers no frequency bin")
    w = fb / torch.where(cover > 0, cover, torch.ones_like(cover))[None]
    idx = torch.arange(fb.shape[1])
    nearest = covered[(idx[:, None] - covered[None]).abs().argmin(1)]
    return w[:, nearest].to(torch.float32)


@torch.no_grad()
def mel_projection(audio: Tensor, mel: Tensor, features: MelSpectrogram, iters: int, *,
                   chunk: int = CHUNK_FRAMES) -> Tensor:
    """Project `audio` towards the waveforms whose mel is `mel` (module docstring), `iters` times.

    audio: (B, T) float, T = frames * hop (what a vocoder makes for `mel`); mel: (B, n_mels, frames)
    in `features`' preset (the vocoder's cond), frames >= `min_frames(features)`. Returns (B, T)
    float32, not clamped. iters == 0 returns audio unchanged (the same tensor). chunk: frames
    projected at once (plus `context_frames` on each side); memory is O(chunk), not O(frames).
    """
    iters = check_iters(iters)
    if iters == 0:
        return audio
    if audio.dim() != 2 or mel.dim() != 3 or mel.shape[0] != audio.shape[0] or mel.shape[1] != features.n_mels:
        raise DataError(f"mel_projection takes audio (B, T) and mel (B, {features.n_mels}, frames), "
                        f"got {tuple(audio.shape)} and {tuple(mel.shape)}")
    frames, hop = mel.shape[-1], features.hop_length
    if audio.shape[-1] != frames * hop:
        raise DataError(f"mel_projection: audio of {audio.shape[-1]} samples does not match {frames} frames "
                        f"of hop {hop}")
    if frames < min_frames(features):
        raise DataError(f"a mel of {frames} frame(s) is too short for the {features.preset.name!r} mel projection: "
                        f"it needs at least {min_frames(features)} (or turn the projection off)")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"mel_projection: chunk must be a positive number of frames, got {chunk!r}")
    if frames <= chunk:
        return _project(audio, mel, features, iters)
    ctx = context_frames(features, iters)
    out = torch.empty(audio.shape, dtype=torch.float32, device=audio.device)
    for a in range(0, frames, chunk):
        b = min(a + chunk, frames)
        lo, hi = max(a - ctx, 0), min(b + ctx, frames)
        part = _project(audio[:, lo * hop: hi * hop], mel[..., lo:hi], features, iters)
        out[:, a * hop: b * hop] = part[:, (a - lo) * hop: (b - lo) * hop]
    return out


def _project(audio: Tensor, mel: Tensor, features: MelSpectrogram, iters: int) -> Tensor:
    """`mel_projection` on one piece, all at once: audio (B, frames * hop), mel (B, n_mels, frames)."""
    frames = mel.shape[-1]
    a = _affine(features.preset)[0]  # ln M = (y - b) / a
    w = band_weights(features).to(audio.device)
    framing = PresetFraming(features.preset, frames, torch.float32)
    target = mel.to(audio.device, torch.float32)
    y = audio.to(torch.float32)
    length = y.shape[-1]
    spec = framing.analysis(y)
    for i in range(iters):
        have = features.from_spectrum(spec)  # = features(y): the same frame grid and window
        gain = torch.exp((target - have) / a).clamp(1.0 / MAX_GAIN, MAX_GAIN)  # (B, n_mels, F)
        y = framing.synthesis(spec * torch.einsum("mk,bmf->bkf", w, gain), length)
        if i + 1 < iters:
            spec = framing.analysis(y)
    return y


class MelProjection(nn.Module):
    """`mel_projection` in real arithmetic, as a module that traces to ONNX (`cmaudio export --onnx`
    writes it as projection.onnx beside the network, for runtimes that want the audio `cmaudio vocode`
    makes).

    The same iteration as the module docstring's, with the preset's STFT as a strided convolution with
    fixed DFT bases (rows w[n] cos(2 pi k n / N) and -w[n] sin(2 pi k n / N), after the preset's
    pre-pad / centring) and its least-squares inverse as the transposed convolution with the inverse
    real DFT's bases times the window, divided by the squared-window envelope: no complex tensors, no
    FFT. Equal to `mel_projection` to float32 rounding (tests/test_projection.py); slower than it on
    the CPU in PyTorch (a DFT by matrix product), so `Vocoder.decode` keeps the FFT version.

    forward(audio (B, T) float32, mel (B, n_mels, frames)) -> (B, T) with T = frames * hop (not checked
    here: the vocoder's output always is). iters: 1 ... MAX_ITERS (0 is no module: nothing to run).
    """

    def __init__(self, features: MelSpectrogram, iters: int) -> None:
        super().__init__()
        self.iters = check_iters(iters)
        if self.iters == 0:
            raise ConfigError("MelProjection needs at least one iteration (0 = no projection: skip the module)")
        p = self.p = features.preset
        n = p.n_fft
        k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
        t = torch.arange(n, dtype=torch.float64)[None]
        w = PresetFraming(p, 1, torch.float64).window[None]  # (1, n_fft): Hann of win_length, centred
        ang = 2.0 * math.pi * k * t / n
        c = torch.full_like(k, 2.0)  # inverse real DFT: DC (and Nyquist for even n) once, the rest twice
        c[0] = 1.0
        if n % 2 == 0:
            c[-1] = 1.0
        self.register_buffer("analysis", torch.cat([w * torch.cos(ang), -w * torch.sin(ang)])[:, None].float(),
                             persistent=False)  # (2K, 1, n_fft)
        self.register_buffer("synthesis", (torch.cat([c * torch.cos(ang), -c * torch.sin(ang)]) * w / n)[:, None]
                             .float(), persistent=False)  # (2K, 1, n_fft)
        self.register_buffer("window_sq", w.pow(2)[None].float(), persistent=False)  # (1, 1, n_fft)
        self.register_buffer("mel_basis", features.mel_basis.float().clone(), persistent=False)  # (n_mels, K)
        self.register_buffer("weights_t", band_weights(features).t().contiguous(), persistent=False)  # (K, n_mels)
        self.a = _affine(p)[0]
        self.offset = p.pre_pad + (n // 2 if p.center else 0)

    def _analysis(self, y: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        """(B, T) -> (re, im), each (B, K, frames): PresetFraming.analysis without complex numbers."""
        p = self.p
        x = y[:, None]
        if p.pre_pad:
            x = F.pad(x, (p.pre_pad, p.pre_pad), mode=p.pad_mode)
        if p.center:
            x = F.pad(x, (p.n_fft // 2, p.n_fft // 2), mode=p.pad_mode)
        spec = F.conv1d(x, self.analysis, stride=p.hop_length)[..., :frames]
        return spec.chunk(2, dim=1)

    def _log_mel(self, re: Tensor, im: Tensor) -> Tensor:
        """MelSpectrogram.from_spectrum on (re, im): (B, n_mels, frames)."""
        p = self.p
        if p.normalized:
            re, im = re / math.sqrt(p.win_length * 0.375), im / math.sqrt(p.win_length * 0.375)
        power = re * re + im * im
        if p.magnitude == "abs":
            mag = torch.sqrt(power)
        elif p.magnitude == "sqrt_add":
            mag = torch.sqrt(power + p.magnitude_eps)
        else:
            mag = torch.sqrt(torch.clamp(power, min=p.magnitude_eps))
        return _log_stage(torch.matmul(self.mel_basis, mag), p)

    def forward(self, audio: Tensor, mel: Tensor) -> Tensor:
        frames, length = mel.shape[-1], audio.shape[-1]
        hop = self.p.hop_length
        env = F.conv_transpose1d(torch.ones_like(mel[:1, :1]), self.window_sq, stride=hop)
        env = torch.where(env > 1e-11, env, torch.ones_like(env))
        y = audio.float()
        for _ in range(self.iters):
            re, im = self._analysis(y, frames)
            gain = torch.exp((mel - self._log_mel(re, im)) / self.a).clamp(1.0 / MAX_GAIN, MAX_GAIN)
            g = torch.matmul(self.weights_t, gain)  # (B, K, frames)
            ola = F.conv_transpose1d(torch.cat([re * g, im * g], dim=1), self.synthesis, stride=hop) / env
            y = ola[:, 0, self.offset: self.offset + length]
        return y
