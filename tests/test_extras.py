"""The CD/CT extras (reconstruction terms, consistency weight), the mel-L1 distance, the per-sigma
loss logs and FrameNet's STFT pair: with every extra off the objectives are the papers'."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import randomize

from cmaudio.features import MelSpectrogram
from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.nets import build_net
from cmaudio.objectives import CDObjective, CTObjective, build_distance
from cmaudio.objectives.base import consistency_loss, forked_rng, sigma_bucket_logs
from cmaudio.objectives.distances import MelL1
from cmaudio.param import KarrasParam, append_dims

HOP = 256
P = KarrasParam(sigma_min=2e-3, sigma_max=1.6, sigma_data=0.1)


def frame_model(seed: int = 0, dropout: float = 0.0) -> ConsistencyModel:
    torch.manual_seed(seed)
    net = build_net("framenet", domain="wave", in_channels=1, cond_channels=8, size="tiny", hop=HOP, dropout=dropout)
    return ConsistencyModel(randomize(net, seed), P, cond_channels=8, cond_hop=HOP)


def batch(B: int = 3, frames: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(B, 1, frames * HOP, generator=g)
    cond = torch.randn(B, 8, frames, generator=g)
    return x, cond, torch.arange(B, dtype=torch.int64) + 100


class Teacher(torch.nn.Module):
    """A fixed (random) denoiser standing in for a trained teacher."""

    sigma_min, sigma_max = 1e-3, 2.0

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        net = build_net("framenet", domain="wave", in_channels=1, cond_channels=8, size="tiny", hop=HOP)
        self.den = Denoiser(randomize(net, 5), P, cond_channels=8, cond_hop=HOP)

    def forward(self, x, sigma, cond=None, **kw):
        return self.den(x, sigma, cond, **kw)


def plain_ct_loss(obj: CTObjective, x, cond, seeds, step):
    """CM eq. 10 by hand from the objective's own draws: lambda d(f(x + s_hi z, s_hi), sg f(x + s_lo z, s_lo))."""
    from cmaudio.objectives.base import SampleRNG, draw_pair

    rng = SampleRNG(seeds, x.shape[0], x.device)
    s_lo, s_hi, z, _ = draw_pair(obj.model, rng, x, cond, obj.num_scales(step), index_sampling=obj.index_sampling,
                                 p_mean=obj.p_mean, p_std=obj.p_std, cond_dropout=0.0)
    on = obj.model(x + append_dims(s_hi, 3) * z, s_hi, cond)
    with torch.no_grad():
        tg = obj.model(x + append_dims(s_lo, 3) * z, s_lo, cond)
    lam = 1.0 / (s_hi - s_lo) if obj.weighting == "ict" else torch.ones_like(s_hi)
    return (lam * obj.distance(on, tg)).mean(), on, s_hi


def test_extras_off_is_the_papers_ict_loss():
    m = frame_model()
    obj = CTObjective(m, build_distance({"pseudo_huber": 1.0}), variant="ict", total_steps=100)
    x, cond, seeds = batch()
    torch.manual_seed(0)
    loss, logs = obj(x, cond, seeds=seeds, step=7)
    ref, _, _ = plain_ct_loss(obj, x, cond, seeds, 7)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    assert "recon" not in logs and float(logs["consistency"]) == pytest.approx(float(ref.detach()), rel=1e-6)


def test_reconstruction_term_is_added_to_the_same_online_output():
    m = frame_model()
    mel = MelSpectrogram("hifigan")
    obj = CTObjective(m, build_distance({"pseudo_huber": 1.0}), variant="ict", total_steps=100)
    recon = build_distance({"mrstft": 0.5, "mel_l1": 2.0}, mel=mel)
    obj.set_extras(recon=recon, consistency_weight=0.25)
    x, cond, seeds = batch()
    loss, logs = obj(x, cond, seeds=seeds, step=3)
    cons, online, _ = plain_ct_loss(obj, x, cond, seeds, 3)
    rec = recon(online, x).mean()
    torch.testing.assert_close(loss, 0.25 * cons + rec, rtol=1e-5, atol=0)
    assert float(logs["recon"]) == pytest.approx(float(rec), rel=1e-5)
    # and its gradient reaches the network
    loss.backward()
    assert m.net.head.weight.grad.abs().sum() > 0


def test_consistency_weight_zero_never_runs_the_target():
    m = frame_model()
    obj = CDObjective(m, Teacher(), build_distance({"l2": 1.0}), num_scales=8)
    obj.set_extras(recon=build_distance({"l1": 1.0}), consistency_weight=0.0)
    calls = []
    obj.target.register_forward_hook(lambda *a: calls.append(1))
    x, cond, seeds = batch()
    loss, logs = obj(x, cond, seeds=seeds)
    assert not calls and "consistency" not in logs
    # the loss is the reconstruction of x from f(x + s_hi z, s_hi) alone
    from cmaudio.objectives.base import SampleRNG, draw_pair

    s_lo, s_hi, z, _ = draw_pair(m, SampleRNG(seeds, 3, x.device), x, cond, 8, index_sampling="uniform",
                                 p_mean=-1.1, p_std=2.0, cond_dropout=0.0)
    ref = (m(x + append_dims(s_hi, 3) * z, s_hi, cond) - x).abs().flatten(1).mean(1).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="nothing to train"):
        obj.set_extras(recon=None, consistency_weight=0.0)


def test_mel_l1_distance():
    mel = MelSpectrogram("hifigan")
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, 1, 4096, generator=g)
    y = 0.1 * torch.randn(2, 1, 4096, generator=g)
    d = MelL1(mel)
    assert torch.equal(d(x, x), torch.zeros(2))
    ref = (mel(x[:, 0]) - mel(y[:, 0])).abs().mean(dim=(1, 2))
    torch.testing.assert_close(d(x, y), ref)
    # a 6 dB gain change moves every mel bin by ln 2 (where the log floor is not reached)
    torch.testing.assert_close(d(x, 2 * x), torch.full((2,), math.log(2.0)), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="mel module"):
        build_distance({"mel_l1": 1.0})


def test_sigma_bucket_logs():
    s = torch.tensor([5e-4, 0.05, 0.06, 1.2])
    v = torch.tensor([1.0, 2.0, 4.0, 8.0])
    logs = sigma_bucket_logs(s, v)
    assert {k: float(x) for k, x in logs.items()} == {"loss_sigma/0-0.001": 1.0, "loss_sigma/0.01-0.1": 3.0,
                                                     "loss_sigma/1-inf": 8.0}


def test_framenet_stft_pair_reconstructs_exactly():
    net = build_net("framenet", domain="wave", in_channels=1, cond_channels=None, size="tiny", hop=HOP)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12 * HOP, generator=g)
    y = net._istft(net._stft(x), None)
    # the DFT-convolution pair (what an ONNX export traces) equals the FFT pair
    torch.testing.assert_close(net._stft(x, dft=True), net._stft(x), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(net._istft(net._stft(x), None, dft=True), y, atol=1e-5, rtol=0)
    ref = torch.stft(torch.nn.functional.pad(x, (384, 384)), 1024, HOP, 1024, torch.hann_window(1024), center=False,
                     return_complex=True)
    torch.testing.assert_close(net._stft(x), torch.cat([ref.real, ref.imag], 1), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    # with a frame mask, the envelope follows the valid frames: a masked 7-frame item equals itself alone
    fmask = torch.zeros(1, 1, 12)
    fmask[..., :7] = 1
    spec = net._stft(torch.nn.functional.pad(x[:1, : 7 * HOP], (0, 5 * HOP)))
    y_masked = net._istft(spec * fmask, fmask)[:, : 7 * HOP]
    y_alone = net._istft(net._stft(x[:1, : 7 * HOP]), None)
    torch.testing.assert_close(y_masked, y_alone, atol=1e-5, rtol=0)


def test_consistency_loss_shares_dropout_masks_with_extras_on():
    """With dropout, the online and target calls see the same masks: at s_lo == s_hi and x_lo == x_hi the
    consistency term is exactly 0 even though dropout is active (and the reconstruction term is not)."""
    m = frame_model(dropout=0.5)
    m.train()
    obj = CTObjective(m, build_distance({"l2": 1.0}), variant="ict", total_steps=10)
    obj.set_extras(recon=build_distance({"l2": 1.0}), consistency_weight=1.0)
    x, cond, _ = batch()
    s = torch.full((3,), 0.3)
    xs = x + 0.3 * torch.randn_like(x)
    loss, logs = consistency_loss(obj, m, xs, s, xs, s, cond, None, None, "uniform", x0=x)
    assert float(logs["consistency"]) == 0.0 and float(logs["recon"]) > 0
    with forked_rng(1, x.device):
        a = m(xs, s, cond)
    with forked_rng(2, x.device):
        b = m(xs, s, cond)
    assert not torch.equal(a, b)  # dropout is live, so the zero above is not vacuous
