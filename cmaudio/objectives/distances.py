"""Distances d(x, y) for consistency objectives, per batch item.

Every distance maps x, y of shape (B, C, T) (and an optional (B, 1, T) validity mask) to a
(B,) tensor, so objectives can weight items by lambda(sigma) before averaging.

| name           | definition (per item)                                                   | source |
|----------------|--------------------------------------------------------------------------|--------|
| `l2`           | mean over valid elements of (x - y)^2                                    | CM sec. 3 |
| `l1`           | mean over valid elements of abs(x - y)                                   | CM sec. 3 |
| `pseudo_huber` | sqrt(sum (x - y)^2 + c^2) - c, c = c_scale * 0.00054 sqrt(dim)           | iCT sec. 3.3 |
| `mrstft`       | auraloss MultiResolutionSTFTLoss (spectral convergence + log magnitude)  | replaces LPIPS |
| `mel_l1`       | mean abs difference of the log-mels of x and y (the model's own features)| HiFi-GAN's mel loss |
| `phase`        | anti-wrapped phase, group-delay and inst.-frequency errors, |Y|-weighted  | APNet (Ai & Ling 2023) eqs. 7-9 |
| `proj`         | sum (x - P(x))^2 / sum P(x)^2, P(x) = x projected onto y's mel, no gradient through P | cmaudio (projection target) |

For `pseudo_huber`, dim is the number of valid elements of the item. iCT chose 0.00054 sqrt(d)
for images in [-1, 1] (sigma_data = 0.5); `c_scale` lets an objective scale c with its data
(cmaudio passes sigma_data / 0.5), so the quadratic-to-linear transition sits at the same
relative error. `mrstft` and `mel_l1` are for waveforms (C = 1) of equal length (masks are not
supported); `mel_l1` needs the mel module (B, T) -> (B, n_mels, frames) passed in by the caller.
`phase` is for waveforms too (y is the reference whose magnitudes weight the bins). `proj` needs the
caller's projector ``project(x (B, T), y (B, T)) -> (B, T)`` (build.py passes K iterations of
cmaudio.projection.mel_projection of x onto mel(y)): it teaches the network to emit, in one pass, the
waveform that K projection iterations would make of its own output, phase included (the iterations move
the phase the way Griffin-Lim does, from the network's start).

`CombinedDistance({name: weight})` is their weighted sum. Imports nothing else of cmaudio.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

ICT_HUBER_CONSTANT = 0.00054


def _masked(diff: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(diff with invalid positions zeroed, number of valid elements per item (B,))."""
    if mask is None:
        n = torch.full((diff.shape[0],), diff[0].numel(), device=diff.device, dtype=diff.dtype)
        return diff, n
    m = mask.to(diff.dtype).expand_as(diff)
    return diff * m, m.flatten(1).sum(1)


def _refuse_padding(name: str, mask: Optional[Tensor]) -> None:
    """The whole-signal distances (STFT-, mel- and projection-based) cannot mask: refuse a padded batch."""
    if mask is not None and not bool(mask.all()):
        raise ValueError(f"the {name} distance does not support padded batches; use l2/l1/pseudo_huber")


class L2(nn.Module):
    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        d, n = _masked(x - y, mask)
        return d.pow(2).flatten(1).sum(1) / n.clamp_min(1)


class L1(nn.Module):
    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        d, n = _masked(x - y, mask)
        return d.abs().flatten(1).sum(1) / n.clamp_min(1)


class PseudoHuber(nn.Module):
    """sqrt(||x - y||_2^2 + c^2) - c (iCT eq. 9). c given, or c_scale * 0.00054 sqrt(dim)."""

    def __init__(self, c: Optional[float] = None, c_scale: float = 1.0) -> None:
        super().__init__()
        self.c = c
        self.c_scale = c_scale

    def constant(self, dim: Tensor) -> Tensor:
        if self.c is not None:
            return torch.full_like(dim, self.c)
        return self.c_scale * ICT_HUBER_CONSTANT * torch.sqrt(dim)

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        d, n = _masked(x - y, mask)
        c = self.constant(n)
        return torch.sqrt(d.pow(2).flatten(1).sum(1) + c * c) - c


class MRSTFT(nn.Module):
    """auraloss multi-resolution STFT distance, per item (waveforms (B, 1, T))."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (512, 1024, 2048),
        hop_sizes: Sequence[int] = (128, 256, 512),
        win_lengths: Sequence[int] = (512, 1024, 2048),
    ) -> None:
        super().__init__()
        from auraloss.freq import MultiResolutionSTFTLoss

        if not (len(fft_sizes) == len(hop_sizes) == len(win_lengths)):
            raise ValueError("mrstft fft_sizes, hop_sizes and win_lengths must have equal lengths")
        self.loss = MultiResolutionSTFTLoss(
            fft_sizes=list(fft_sizes), hop_sizes=list(hop_sizes), win_lengths=list(win_lengths)
        )

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Per item exactly what auraloss gives for that item alone (y is the reference):
        mean over resolutions of ||Y - X||_F / ||Y||_F + mean |ln Y - ln X|, with
        magnitudes sqrt(max(re^2 + im^2, eps)) of a centred Hann STFT; batched in one STFT per
        resolution (auraloss itself reduces spectral convergence over the whole batch)."""
        _refuse_padding("mrstft", mask)
        B = x.shape[0]
        xf, yf = x.float().reshape(-1, x.shape[-1]), y.float().reshape(-1, y.shape[-1])  # STFTs in fp32
        total = torch.zeros(B, device=x.device)
        for f in self.loss.stft_losses:
            win = f.window.to(x.device)

            def mag(s: Tensor) -> Tensor:
                z = torch.stft(s, f.fft_size, f.hop_size, f.win_length, win, return_complex=True)
                return torch.sqrt(torch.clamp(z.real**2 + z.imag**2, min=f.eps)).reshape(B, -1)

            xm, ym = mag(xf), mag(yf)
            sc = torch.linalg.vector_norm(ym - xm, dim=1) / torch.linalg.vector_norm(ym, dim=1)
            logmag = (torch.log(ym) - torch.log(xm)).abs().mean(1)
            total = total + f.w_sc * sc + f.w_log_mag * logmag
        return total / len(self.loss.stft_losses)


class MelL1(nn.Module):
    """Per-item mean |mel(x) - mel(y)| over bins and frames, for waveforms (B, 1, T).

    `mel` maps (B, T) audio to (B, n_mels, frames) log-mels (e.g. cmaudio.features.MelSpectrogram,
    a log-mel in its preset's own units: ln for hifigan). Computed in float32. HiFi-GAN weights
    this term by 45 beside its adversarial losses; as a regression term alone a weight near 1 keeps
    it comparable to `mrstft`.
    """

    def __init__(self, mel: nn.Module) -> None:
        super().__init__()
        self.mel = mel

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        _refuse_padding("mel_l1", mask)
        B = x.shape[0]
        mx = self.mel(x.float().reshape(B, -1))
        my = self.mel(y.float().reshape(B, -1))
        return (mx - my).abs().flatten(1).mean(1)


class PhaseDistance(nn.Module):
    """APNet's anti-wrapping phase losses (Ai & Ling 2023, eqs. 7-9), weighted by the reference's magnitude.

    With X = STFT(x), Y = STFT(y) (centred periodic Hann, `n_fft`, `hop`) and the anti-wrapping
    function f_AW(d) = |d - 2 pi round(d / 2 pi)| (the absolute phase error wrapped to [0, pi]):
        IP  = f_AW(angle X - angle Y)                                    per bin (instantaneous phase)
        GD  = f_AW(Delta_f angle X - Delta_f angle Y)   between adjacent bins (group delay)
        IAF = f_AW(Delta_t angle X - Delta_t angle Y)   between adjacent frames (inst. angular frequency)
    and the distance is IP + GD + IAF, each averaged over bins with weights |Y| (for GD and IAF the
    geometric mean of the two bins' |Y|) normalised to sum 1 per item. APNet averages uniformly; the
    weights leave out bins where the reference is silent and its phase is noise. Each term is in
    radians, in [0, pi] (an independent noise scores pi/2 on IP). The differences are taken as angles of
    products of unit phasors (angle(a conj b) = f_AW-wrapped angle a - angle b), with X's magnitude
    floored at `floor` x the item's largest |Y| so the gradient stays bounded where X is near zero.
    x, y: (B, 1, T) waveforms of equal length (masks not supported). Returns (B,).
    """

    def __init__(self, n_fft: int = 1024, hop: int = 256, floor: float = 1e-4) -> None:
        super().__init__()
        if n_fft < 4 or hop < 1 or not floor > 0:
            raise ValueError(f"phase distance needs n_fft >= 4, hop >= 1, floor > 0 (got {n_fft}, {hop}, {floor})")
        self.n_fft, self.hop, self.floor = int(n_fft), int(hop), float(floor)
        # built once and moved with the objective, not rebuilt every training step
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        ip, gd, iaf = self.components(x, y, mask)
        return ip + gd + iaf

    def components(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """(IP, GD, IAF), each (B,) in radians; `forward` is their sum."""
        _refuse_padding("phase", mask)
        B = x.shape[0]
        win = self.window.to(x.device)
        X = torch.stft(x.float().reshape(B, -1), self.n_fft, self.hop, window=win, return_complex=True)
        Y = torch.stft(y.float().reshape(B, -1), self.n_fft, self.hop, window=win, return_complex=True)
        ya = Y.abs()  # (B, bins, frames)
        top = ya.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        ux = X / torch.sqrt(X.real**2 + X.imag**2 + (self.floor * top) ** 2)  # |ux| <= 1, ~1 where X is audible
        uy = Y / ya.clamp_min(1e-12)  # the reference's unit phasors (no gradient flows into y's side)
        p = ux * uy.conj()  # angle p = angle X - angle Y, wrapped

        def term(d: Tensor, w: Tensor) -> Tensor:
            # f_AW of the phase difference, in [0, pi]; where d vanishes (silent bins: weight 0) atan2 is
            # evaluated at 1 instead, so its gradient (x, -y) / |d|^2 never meets 0 / 0
            ok = d.abs() > 1e-12
            d = torch.where(ok, d, torch.ones_like(d))
            err = torch.atan2(d.imag, d.real).abs()
            w = w.flatten(1) * ok.flatten(1)
            return (err.flatten(1) * w).sum(1) / w.sum(1).clamp_min(1e-12)

        ip = term(p, ya)
        gd = term(p[:, 1:] * p[:, :-1].conj(), torch.sqrt(ya[:, 1:] * ya[:, :-1]))
        iaf = term(p[..., 1:] * p[..., :-1].conj(), torch.sqrt(ya[..., 1:] * ya[..., :-1]))
        return ip, gd, iaf


class ProjectionTarget(nn.Module):
    """`proj`: per-item relative squared error of x against its own mel projection, sum (x - t)^2 / sum t^2 with
    t = project(x, y) computed without gradient (a fixed target, as the CM target network is), for waveforms
    (B, 1, T). 0 when x is already a fixed point of the projection; the ratio makes it level-free."""

    def __init__(self, project) -> None:
        super().__init__()
        self.project = project

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        _refuse_padding("proj", mask)
        B = x.shape[0]
        xf = x.float().reshape(B, -1)
        with torch.no_grad():
            t = self.project(xf.detach(), y.float().reshape(B, -1)).reshape(B, -1)
        return (xf - t).pow(2).sum(1) / t.pow(2).sum(1).clamp_min(1e-8)


class CombinedDistance(nn.Module):
    """Weighted sum of named distances: {"pseudo_huber": 1.0, "mrstft": 0.5} -> (B,)."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        total = None
        for name, term in self.terms.items():
            v = self.weights[name] * term(x, y, mask)
            total = v if total is None else total + v
        return total


def build_distance(
    weights: dict[str, float],
    *,
    huber_c: Optional[float] = None,
    huber_c_scale: float = 1.0,
    mrstft_fft_sizes: Sequence[int] = (512, 1024, 2048),
    mrstft_hop_sizes: Sequence[int] = (128, 256, 512),
    mrstft_win_lengths: Sequence[int] = (512, 1024, 2048),
    mel: Optional[nn.Module] = None,
    phase_n_fft: int = 1024,
    phase_hop: int = 256,
    project=None,
) -> CombinedDistance:
    """Build `CombinedDistance` from {name: weight}; names: l2, l1, pseudo_huber, mrstft, mel_l1
    (which needs `mel`, a (B, T) -> (B, n_mels, frames) log-mel module), phase (STFT of `phase_n_fft`,
    hop `phase_hop`: the features preset's), proj (which needs `project`, see ProjectionTarget). Zero weights
    drop the term."""
    terms: dict[str, nn.Module] = {}
    weights = {k: float(v) for k, v in weights.items() if v != 0}
    if not weights:
        raise ValueError("a distance needs at least one term with a non-zero weight")
    for name, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"distance weight for {name} must be finite and >= 0 (got {w})")
        if name == "l2":
            terms[name] = L2()
        elif name == "l1":
            terms[name] = L1()
        elif name == "pseudo_huber":
            terms[name] = PseudoHuber(c=huber_c, c_scale=huber_c_scale)
        elif name == "mrstft":
            terms[name] = MRSTFT(mrstft_fft_sizes, mrstft_hop_sizes, mrstft_win_lengths)
        elif name == "mel_l1":
            if mel is None:
                raise ValueError("the mel_l1 distance needs the model's mel module (waveform models only)")
            terms[name] = MelL1(mel)
        elif name == "phase":
            terms[name] = PhaseDistance(phase_n_fft, phase_hop)
        elif name == "proj":
            if project is None:
                raise ValueError("the proj distance needs a projector (waveform models with a mel cond only)")
            terms[name] = ProjectionTarget(project)
        else:
            raise ValueError(f"unknown distance {name!r}; valid: l2, l1, pseudo_huber, mrstft, mel_l1, phase, proj")
    return CombinedDistance(terms, weights)
