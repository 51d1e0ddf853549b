"""A frame-rate network with an iSTFT head: the consistency model's F for waveforms.

Sample-rate convolutions (the wave U-Net, DiffWave) spend most of their compute and most of
their training steps learning what an STFT already gives. Vocos (Siuzdak 2023), iSTFTNet
(Kaneko et al. 2022) and RFWave (Liu et al. 2024) instead work at the mel's frame rate and let
an inverse STFT make the samples. FrameNet does the same inside the consistency
parameterization f(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond) (CM appendix C), so
the boundary f(x, eps) == x stays exact whatever F is:

    c_in x (B, 1, T) -> zero-pad to F*hop -> STFT (Hann, n_fft, hop, 'same' framing: frame i is
        centred on sample i*hop + hop/2, like the hifigan mel) -> [Re, Im] / sqrt(sum w^2)
        (B, F, n_fft + 2), time-major                            -> linear -> dim
    cond (B, n_mels, F') -> fit to F frames -> conv (k=7)       -> dim        (summed)
    -> `layers` ConvNeXt blocks at the frame rate: depthwise conv (k=7) -> per-frame LayerNorm
       modulated by the noise embedding (AdaLN: h (1 + scale) + shift) -> Linear(dim, mult*dim)
       -> GELU -> dropout -> Linear(mult*dim, dim) -> layer scale -> residual
    -> LayerNorm -> Linear(dim, 2 (n_fft + 2)) (zero-initialised, so F == 0 at init) -> a residual
       spectrum R and a complex mask M; the output spectrum is R + M X, X the input's STFT (a mask is
       how a frame-rate net denoises at low sigma, where F must carry x's own detail)
       (B, F, n_fft + 2) -> iSTFT ('same' framing, overlap-add normalised by the
       squared-window envelope) -> (B, 1, F*hop) -> crop to T. Both transforms run as FFTs, or, while
       exporting to ONNX, as convolutions with fixed real DFT bases (the pair reconstructs exactly and the
       two implementations agree, tests/test_extras.py).
    Features are time-major (B, F, C) between the transforms, as in Vocos: the 1x1 convolutions (stored as
    Conv1d, the checkpoint layout) run as matrix products over the last dimension and LayerNorm needs no
    transposes; only the depthwise and cond convolutions see (B, C, F).

Griffin-Lim prior (prior_iters = K > 0; docs/design.md sec. 2.16): the net also inverts its mel cond,
|G| = max(P exp((y - b) / a), 0) with the preset's pseudo-inverse filterbank P, runs K iterations of fast
Griffin-Lim (momentum 0.99) from zero phase in its own framing, and takes the resulting waveform's
spectrum G (times prior_gain = 1 / sigma_data, i.e. in F's units) as a second input stream; the head
adds (1 + M_g) G to its output spectrum, so F starts as the Griffin-Lim waveform (not silence) and
learns what Griffin-Lim gets wrong (coherent phase). The prior depends on the mel only, so the
consistency parameterization and its boundary are untouched.

The head predicts the complex spectrum directly (RFWave's choice): a zero-initialised linear
map keeps F == 0 at init, which a magnitude/phase head (exp, cos/sin) cannot.

Masks (cmaudio.nets contract): frame i of an item is valid when it starts inside the item
(i < ceil(valid / hop)); the input is zeroed at invalid samples, features at invalid frames
are zeroed before every time-mixing convolution, invalid frames get a zero spectrum, and the
overlap-add envelope is built from valid frames only. An item in a padded batch then gives,
on its valid samples, what it gives when run alone.

Presets (`FRAMENET_PRESETS`; speed in `cmaudio bench`):

    size   dim  layers  mult  n_fft   params (80 mels; counted with nets.count_parameters)
    tiny    32     2     2    1024     0.16 M (tests)
    small  384     8     3    1024    12.0 M
    base   512     8     3    1024    19.0 M (Vocos's width and depth; the STFT input, mask head
                                              and AdaLN layers add to Vocos's 13.5 M)
The shipped default model uses dim 256 x 6 blocks (5.2 M; recipes/default_vocoder.yaml).

Shapes: x (B, 1, T) float; c_noise (B,) float; cond (B, C_cond, T_cond) or None, T_cond about
T / hop (cropped or right-padded by repeating the last frame); mask (B, 1, T) or None.
Output (B, 1, T) float in the dtype of x.

This module imports only cmaudio.errors, cmaudio.features (overlap_add) and cmaudio.nets.layers.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmaudio.errors import ConfigError
from cmaudio.features import overlap_add
from cmaudio.nets.layers import NoiseEmbedding, fit_length

FRAMENET_PRESETS: dict[str, dict] = {
    "tiny": {"dim": 32, "layers": 2, "mult": 2, "n_fft": 1024},
    "small": {"dim": 384, "layers": 8, "mult": 3, "n_fft": 1024},
    "base": {"dim": 512, "layers": 8, "mult": 3, "n_fft": 1024},
}


def _exporting() -> bool:
    """True while torch.onnx traces the net (then the DFT-convolution STFT is used)."""
    return bool(torch.onnx.is_in_onnx_export())


def _layer_norm(h: Tensor, channels: int, eps: float = 1e-6) -> Tensor:
    """Per-frame LayerNorm over the last dimension (`channels`) of time-major (B, F, C), no affine, computed in
    float32 (`channels` is passed as a constant so an ONNX trace does not read it from the shape)."""
    return F.layer_norm(h.float(), (channels,), eps=eps).to(h.dtype)


def _pointwise(conv: nn.Conv1d, h: Tensor) -> Tensor:
    """A 1x1 Conv1d applied to time-major h (B, F, C_in) as a linear map -> (B, F, C_out).

    The weights stay stored as Conv1d (out, in, 1), the checkpoint layout; on the CPU a matrix product over
    the last dimension is about 1.5x faster than the convolution over (B, C, F)."""
    return F.linear(h, conv.weight[:, :, 0], conv.bias)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block at the frame rate with AdaLN noise conditioning (Vocos sec. 3, DiT's adaLN).

    Works time-major, h (B, F, dim), as Vocos does: only the depthwise convolution sees (B, dim, F)."""

    def __init__(self, dim: int, mult: int, emb_dim: int, layer_scale: float, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.ada = nn.Linear(emb_dim, 2 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.pw1 = nn.Conv1d(dim, mult * dim, 1)  # applied by _pointwise (a linear map)
        self.pw2 = nn.Conv1d(mult * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim, 1), float(layer_scale)))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor, fmask: Optional[Tensor]) -> Tensor:
        """h (B, F, dim), emb (B, emb_dim), fmask (B, F, 1) or None -> (B, F, dim), zero at invalid frames."""
        scale, shift = self.ada(emb).to(h.dtype)[:, None, :].chunk(2, dim=-1)
        y = self.dwconv(h.transpose(1, 2)).transpose(1, 2)
        y = _layer_norm(y, self.dim) * (1 + scale) + shift
        y = _pointwise(self.pw2, self.dropout(F.gelu(_pointwise(self.pw1, y))))
        h = h + self.gamma[:, 0].to(h.dtype) * y
        return h if fmask is None else h * fmask


class FrameNet(nn.Module):
    """Frame-rate ConvNeXt with an STFT input and an iSTFT head (waveform domain only).

    Args:
        in_channels: must be 1 (mono waveforms).
        cond_channels: n_mels of the conditioning mel, or None (unconditional).
        hop: samples per frame (the mel's hop).
        dim, layers, mult: ConvNeXt width, depth and MLP expansion.
        n_fft: STFT size (Hann window of n_fft samples); n_fft - hop must be even.
        dropout: dropout inside the blocks' MLP.
    """

    domain = "wave"

    def __init__(self, *, in_channels: int = 1, cond_channels: Optional[int], hop: int = 256, dim: int = 384,
                 layers: int = 8, mult: int = 3, n_fft: int = 1024, dropout: float = 0.0, prior_iters: int = 0,
                 mel_inverse: Optional[Tensor] = None, mel_affine: tuple[float, float] = (1.0, 0.0),
                 prior_gain: float = 1.0) -> None:
        super().__init__()
        if in_channels != 1:
            raise ConfigError(f"framenet takes mono waveforms (in_channels 1), got {in_channels}")
        if n_fft < hop or (n_fft - hop) % 2:
            raise ConfigError(f"framenet n_fft ({n_fft}) must be >= the hop ({hop}) with n_fft - hop even")
        self.in_channels, self.cond_channels = in_channels, cond_channels
        self.hop, self.cond_hop, self.n_fft = int(hop), int(hop), int(n_fft)
        self.dim, self.num_layers = dim, layers
        bins = n_fft // 2 + 1
        window = torch.hann_window(n_fft, periodic=True, device="cpu")  # cpu: buildable on the meta device too
        self.register_buffer("window", window, persistent=False)
        self.spec_scale = 1.0 / math.sqrt(float((window**2).sum()))  # unit-variance noise -> unit-variance bins
        # Griffin-Lim prior (off when prior_iters == 0): see _prior
        self.prior_iters = int(prior_iters)
        if self.prior_iters < 0:
            raise ConfigError(f"framenet prior_iters must be >= 0, got {prior_iters}")
        if self.prior_iters:
            if not cond_channels or mel_inverse is None:
                raise ConfigError("the framenet Griffin-Lim prior needs a mel cond and its inverse filterbank")
            if tuple(mel_inverse.shape) != (bins, cond_channels):
                raise ConfigError(f"framenet mel_inverse must be ({bins}, {cond_channels}) for n_fft {n_fft}, "
                                  f"got {tuple(mel_inverse.shape)}")
            # stored transposed (n_mels, bins): the prior maps time-major mels (B, F, n_mels) to magnitudes
            self.register_buffer("mel_inverse_t", mel_inverse.detach().to(torch.float32).T.contiguous(),
                                 persistent=False)
        self.mel_affine = (float(mel_affine[0]), float(mel_affine[1]))
        self.prior_gain = float(prior_gain)
        streams = 2 if self.prior_iters else 1  # spectra in: X (and G)
        self.in_proj = nn.Conv1d(2 * bins * streams, dim, 1)
        self.cond_proj = nn.Conv1d(cond_channels, dim, 7, padding=3) if cond_channels else None
        emb_dim = 4 * min(dim, 128)
        self.noise_emb = NoiseEmbedding(emb_dim, freq_dim=min(dim, 128))
        self.blocks = nn.ModuleList(
            [ConvNeXtBlock(dim, mult, emb_dim, layer_scale=1.0 / layers, dropout=dropout) for _ in range(layers)]
        )
        # head: [Re; Im] of a residual spectrum R and of a complex mask M on the input spectrum X, so
        # F's spectrum = R + M X. The mask is what lets F cancel (part of) the noise in c_in x at low
        # and mid sigma, where f = c_skip x + c_out F needs F to carry x's own detail (a Wiener-like
        # gain per bin); at sigma_max X is noise and the net learns M ~ 0 and R = the audio.
        self.head = nn.Conv1d(dim, 2 * bins * (1 + streams), 1)  # R, M (and the prior's mask M_g)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_preset(cls, name: str, *, in_channels: int, cond_channels: Optional[int], hop: int = 256,
                    **overrides) -> "FrameNet":
        if name not in FRAMENET_PRESETS:
            raise ConfigError(f"unknown framenet size {name!r}; valid: {', '.join(FRAMENET_PRESETS)}")
        kw = dict(FRAMENET_PRESETS[name])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(in_channels=in_channels, cond_channels=cond_channels, hop=hop, **kw)

    def receptive_field(self) -> int:
        """One-sided receptive field in samples (upper bound): analysis window, 3 frames per
        depthwise conv (and the cond conv), synthesis window."""
        frames = 3 * (len(self.blocks) + 1)
        # each Griffin-Lim iteration (an iSTFT then an STFT) reaches n_fft - hop samples further
        return frames * self.hop + self.n_fft + self.prior_iters * (self.n_fft - self.hop)

    # ------------------------------------------------------------------------------ STFT
    # Spectra are time-major pairs (re, im), each (B, F, n_fft/2+1): no complex tensors outside the FFT
    # calls, so the same code traces to ONNX. Two equal implementations: the FFT (rfft of strided frames /
    # irfft and a reshape-sum overlap-add; fast, used in training and inference) and real-valued strided
    # convolutions with fixed DFT bases (what an ONNX export traces). Analysis rows w[n] cos(2 pi k n / N)
    # and -w[n] sin(2 pi k n / N); synthesis is the inverse real DFT of each frame times the window,
    # overlap-added and divided by the squared-window envelope (computed once per forward, `_envelope_inv`).
    def _pad(self) -> int:
        return (self.n_fft - self.hop) // 2

    def _bases(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        N = self.n_fft
        bins = N // 2 + 1
        n = torch.arange(N, dtype=torch.float64, device=device)
        k = torch.arange(bins, dtype=torch.float64, device=device)
        ang = 2 * math.pi * k[:, None] * n[None, :] / N  # (bins, N)
        w = self.window.to(device=device, dtype=torch.float64)
        analysis = torch.cat([torch.cos(ang), -torch.sin(ang)], 0) * w  # (2 bins, N)
        # inverse real DFT: x[n] = (1/N) sum_k c_k (Re X_k cos - Im X_k sin), c_0 = c_{N/2} = 1, else 2
        c = torch.full((bins,), 2.0, dtype=torch.float64, device=device)
        c[0] = 1.0
        if N % 2 == 0:
            c[-1] = 1.0
        synthesis = torch.cat([c[:, None] * torch.cos(ang), -c[:, None] * torch.sin(ang)], 0) * w / N
        return analysis.to(dtype)[:, None, :], synthesis.to(dtype)[:, None, :]

    def _stft(self, x: Tensor, *, dft: Optional[bool] = None) -> tuple[Tensor, Tensor]:
        """(B, F*hop) -> (re, im), each (B, F, n_fft/2+1): the Hann-windowed DFT of each frame, 'same' framing
        with zero padding (frame i covers samples i*hop - pad ... i*hop - pad + n_fft).
        dft: use the DFT-basis convolution (default: only while exporting to ONNX; else the FFT)."""
        p = self._pad()
        bins = self.n_fft // 2 + 1
        xp = F.pad(x, (p, p))
        if dft if dft is not None else _exporting():
            analysis, _ = self._bases(x.dtype, x.device)
            z = F.conv1d(xp[:, None], analysis, stride=self.hop).transpose(1, 2)  # (B, F, 2 bins)
            return z[..., :bins], z[..., bins:]
        z = torch.fft.rfft(xp.unfold(-1, self.n_fft, self.hop) * self.window.to(x.dtype), dim=-1)
        return z.real, z.imag

    def _envelope_inv(self, fmask: Optional[Tensor], like: Tensor, *, dft: Optional[bool] = None) -> Tensor:
        """1 / the squared-window overlap-add envelope of the valid frames -> (B or 1, F*hop), for `_istft`.

        fmask (B, F, 1) or None (all F frames valid); like: any (B, F, ...) tensor giving F, dtype and device."""
        w2 = (self.window**2).to(device=like.device, dtype=like.dtype)
        if dft if dft is not None else _exporting():
            ones = torch.ones_like(like[..., :1]).transpose(1, 2)  # (B, 1, F), shaped by the input (dynamic trace)
            if fmask is not None:
                ones = ones * fmask.transpose(1, 2).to(like.dtype)
            env = F.conv_transpose1d(ones, w2[None, None, :], stride=self.hop)[:, 0]
        else:
            valid = like.new_ones(1, like.shape[1], 1) if fmask is None else fmask.to(like.dtype)
            env = overlap_add(valid * w2, self.hop)
        p = self._pad()
        if p:
            env = env[:, p:-p]
        return 1.0 / env.clamp_min(1e-8)

    def _istft(self, spec: tuple[Tensor, Tensor], env_inv: Tensor, *, dft: Optional[bool] = None) -> Tensor:
        """(re, im), each (B, F, n_fft/2+1) -> (B, F*hop): windowed overlap-add of the inverse DFTs times
        env_inv (`_envelope_inv`, built with the same frame mask). The inverse of `_stft` on the valid span."""
        re, im = spec
        if dft if dft is not None else _exporting():
            _, synthesis = self._bases(re.dtype, re.device)
            y = F.conv_transpose1d(torch.cat([re, im], -1).transpose(1, 2), synthesis, stride=self.hop)[:, 0]
        else:
            frames = torch.fft.irfft(torch.complex(re, im), n=self.n_fft, dim=-1)
            y = overlap_add(frames * self.window.to(frames.dtype), self.hop)
        p = self._pad()
        if p:
            y = y[:, p:-p]
        return y * env_inv

    # ------------------------------------------------------------------------------ prior
    def _prior(self, cond: Tensor, fmask: Optional[Tensor],
               env_inv: Optional[Tensor] = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The Griffin-Lim prior of a mel cond (B, n_mels, F) fitted to the frames
        -> (g (B, F*hop), G = (re, im) each (B, F, bins)); fmask (B, F, 1) or None; env_inv from `_envelope_inv`
        (built here when None).

        |X| = max(P exp((y - b) / a), 0) (P: the preset's pseudo-inverse filterbank, baselines.mel_inverse_operator),
        then `prior_iters` iterations of fast Griffin-Lim (Griffin & Lim 1984; Perraudin et al. 2013, momentum
        0.99) from zero phase, in this net's own STFT framing; g is the waveform and G = STFT(g) its
        (consistent) spectrum, both in audio units. Zero phase keeps the prior shift-invariant (a chunk of a
        long mel gets the prior of the whole away from its edges) and deterministic. Computed in float32.
        """
        a, b = self.mel_affine
        c = cond.float()
        mag = torch.relu(torch.matmul(torch.exp((c - b) / a).transpose(1, 2),
                                      self.mel_inverse_t.to(c.device, c.dtype)))  # (B, F, bins)
        if fmask is not None:
            mag = mag * fmask.float()
        if env_inv is None:
            env_inv = self._envelope_inv(fmask, mag)
        env_inv = env_inv.to(mag.dtype)
        # samples of the valid frames only: an item in a padded batch then gets the prior it gets alone
        smask = None if fmask is None else fmask[:, :, 0].float().repeat_interleave(self.hop, dim=-1)
        beta = 0.99 / 1.99
        ar, ai = torch.ones_like(mag), torch.zeros_like(mag)  # unit phasors: zero phase
        pr, pi = torch.zeros_like(mag), torch.zeros_like(mag)
        for _ in range(self.prior_iters):
            y = self._istft((mag * ar, mag * ai), env_inv)
            rr, ri = self._stft(y if smask is None else y * smask)
            ar, ai = rr - beta * pr, ri - beta * pi
            pr, pi = rr, ri
            norm = torch.sqrt(ar * ar + ai * ai + 1e-16)
            ar, ai = ar / norm, ai / norm
        g = self._istft((mag * ar, mag * ai), env_inv)
        if smask is not None:
            g = g * smask
        return g, self._stft(g)

    # ------------------------------------------------------------------------------ forward
    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        if (cond is None) != (self.cond_channels is None):
            raise ValueError("cond must be given exactly when the net was built with cond_channels")
        B, _, T = x.shape
        exporting = _exporting()  # traced for ONNX: T = frames * hop and cond has the frames (export_onnx)
        nF = -(-T // self.hop)
        Tp = nF * self.hop
        fmask = None  # (B, F, 1): time-major like every feature below
        if mask is not None:
            x = x * mask.to(x.dtype)
            valid = mask[:, 0].to(torch.float32).sum(-1)  # masks are a prefix of valid samples
            frames_valid = torch.ceil(valid / self.hop)
            fmask = (torch.arange(nF, device=x.device)[None, :] < frames_valid[:, None]).to(x.dtype)[:, :, None]
        xs = x[:, 0] if exporting else F.pad(x[:, 0], (0, Tp - T))
        xs = xs.float() if xs.dtype not in (torch.float32, torch.float64) else xs
        xr, xi = self._stft(xs)  # (B, F, bins) each, in units of x
        env_inv = self._envelope_inv(fmask, xr)
        feats = [xr * self.spec_scale, xi * self.spec_scale]
        c = None
        if self.cond_proj is not None:
            c = cond if exporting else fit_length(cond, nF)
        gr = gi = None
        if self.prior_iters:
            _, (gr, gi) = self._prior(c, fmask, env_inv)
            gr, gi = gr * self.prior_gain, gi * self.prior_gain  # in units of x / sigma_data, like F
            feats += [gr * self.spec_scale, gi * self.spec_scale]
        h = _pointwise(self.in_proj, torch.cat(feats, dim=-1).to(x.dtype))  # (B, F, dim)
        if c is not None:
            c = c.to(x.dtype)
            if fmask is not None:
                c = c * fmask.transpose(1, 2)
            h = h + self.cond_proj(c).transpose(1, 2)
        if fmask is not None:
            h = h * fmask
        emb = self.noise_emb(c_noise if exporting or c_noise.numel() != 1 else c_noise.reshape(-1).expand(B))
        for blk in self.blocks:
            h = blk(h, emb, fmask)
        out = _pointwise(self.head, _layer_norm(h, self.dim))  # (B, F, 2 bins (1 + streams))
        out = out.float() if out.dtype not in (torch.float32, torch.float64) else out
        bins = self.n_fft // 2 + 1
        xr, xi = xr.to(out.dtype), xi.to(out.dtype)
        mr, mi = out[..., 2 * bins:3 * bins], out[..., 3 * bins:4 * bins]
        re = out[..., :bins] + mr * xr - mi * xi  # R + M X
        im = out[..., bins:2 * bins] + mr * xi + mi * xr
        if gr is not None:  # + (1 + M_g) G: at init F = iSTFT(G) = the prior
            gr, gi = gr.to(out.dtype), gi.to(out.dtype)
            nr, ni = 1 + out[..., 4 * bins:5 * bins], out[..., 5 * bins:]
            re = re + nr * gr - ni * gi
            im = im + nr * gi + ni * gr
        if fmask is not None:
            re, im = re * fmask.to(out.dtype), im * fmask.to(out.dtype)
        y = self._istft((re, im), env_inv.to(out.dtype))
        if not exporting:
            y = y[:, :T]
        y = y[:, None].to(x.dtype)
        if mask is not None:
            y = y * mask.to(y.dtype)
        return y
