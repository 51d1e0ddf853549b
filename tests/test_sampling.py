"""Samplers: one-step/multistep consistency sampling and zero-shot editing (CM Alg. 1 and 4)."""

import math

import torch
from torch import nn

from cmaudio.models import ConsistencyModel
from cmaudio.param import KarrasParam
from cmaudio.sampling import bandwidth_extension, consistency_sample, inpaint, lowpass_bins

P = KarrasParam(sigma_min=0.0002, sigma_max=2.0, sigma_data=0.1)


class Smooth(nn.Module):
    """A fixed non-trivial network: a smoothing conv with a noise-level dependent gain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 9, padding=4)
        torch.nn.init.normal_(self.conv.weight, std=0.3)

    def forward(self, x, c_noise, cond, mask=None):
        return torch.tanh(self.conv(x)) * (1 + c_noise[:, None, None])


def model():
    torch.manual_seed(0)
    return ConsistencyModel(Smooth(), P)


def test_consistency_sample_is_seeded_and_counts_nfe():
    calls = []
    m = model()
    orig = m.forward

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    m.forward = counting
    a = consistency_sample(m, (2, 1, 256), sigmas=[2.0, 0.5, 0.1], generator=torch.Generator().manual_seed(3))
    assert len(calls) == 3
    b = consistency_sample(m, (2, 1, 256), sigmas=[2.0, 0.5, 0.1], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_inpainting_keeps_known_samples_exactly():
    m = model()
    y = torch.sin(torch.linspace(0, 60, 2048))[None, None] * 0.3
    known = torch.ones(1, 1, 2048, dtype=torch.bool)
    known[..., 700:1100] = False
    out = inpaint(m, y, known, sigmas=[2.0, 0.3, 0.05], generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[known], y[known])
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[~known], y[~known])  # the gap is the model's, not a copy


def test_bandwidth_extension_keeps_the_known_low_band():
    m = model()
    sr, n_fft, hop, cutoff = 22050, 1024, 256, 4000.0
    t = torch.arange(8192) / sr
    y = (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 1500 * t))[None, None]
    out = bandwidth_extension(m, y, sample_rate=sr, cutoff_hz=cutoff, sigmas=[2.0, 0.2],
                              generator=torch.Generator().manual_seed(0), n_fft=n_fft, hop_length=hop)
    w = torch.hann_window(n_fft)
    Y = torch.stft(y[0], n_fft, hop, window=w, return_complex=True)
    O = torch.stft(out[0], n_fft, hop, window=w, return_complex=True)
    k = lowpass_bins(n_fft, sr, cutoff)
    low_err = (O[:, :k] - Y[:, :k]).abs().max() / Y[:, :k].abs().max()
    assert low_err < 0.05, low_err
    high = O[:, k + 8 :].abs().mean()  # the model filled the missing band with something
    assert high > 1e-4 and torch.isfinite(out).all()
