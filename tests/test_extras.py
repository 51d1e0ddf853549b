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
from cmaudio.objectives.distances import MelL1, PhaseDistance
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


def test_phase_distance_analytic_cases():
    """APNet's anti-wrapped phase terms on signals whose phase errors are known in closed form."""
    d = PhaseDistance(1024, 256)
    g = torch.Generator().manual_seed(0)
    y = 0.1 * torch.randn(2, 1, 8192, generator=g)
    assert float(d(y, y).abs().max()) < 1e-6
    # a sign flip turns every phase by pi and leaves every difference of phases alone
    ip, gd, iaf = d.components(-y, y)
    torch.testing.assert_close(ip, torch.full((2,), math.pi), atol=1e-4, rtol=0)
    assert float(gd.max()) < 1e-4 and float(iaf.max()) < 1e-4
    # a gain changes no phase
    assert float(d(3.0 * y, y).max()) < 1e-5
    # a pure tone delayed by k samples turns every bin by omega * k, wrapped (53 samples at 440 Hz:
    # 6.645 rad, i.e. 0.362): IP; the delay changes neither the phase advance per frame (IAF) nor the
    # phase steps between the tone's bins (GD). 32768 samples keep the reflect-padded edge frames to 3%.
    t = torch.arange(32768, dtype=torch.float64)
    w, k = 2 * math.pi * 440 / 22050, 53
    tone = torch.sin(w * t).float()[None, None]
    late = torch.sin(w * (t - k)).float()[None, None]
    ip, gd, iaf = d.components(late, tone)
    assert abs(float(ip) - (w * k - 2 * math.pi)) < 0.03
    assert float(gd) < 0.01 and float(iaf) < 0.01
    # an independent noise: IP averages pi/2 (uniform phase error), and the sum stays inside [0, 3 pi]
    z = 0.1 * torch.randn(2, 1, 8192, generator=g)
    ip, gd, iaf = d.components(z, y)
    torch.testing.assert_close(ip, torch.full((2,), math.pi / 2), atol=0.05, rtol=0)
    assert bool(((ip + gd + iaf) < 3 * math.pi).all())


def test_phase_distance_gradient_finite_at_digital_silence():
    """Zero bins in the reference or the output (digital silence) must not make a NaN gradient."""
    d = PhaseDistance()
    g = torch.Generator().manual_seed(1)
    y = 0.1 * torch.randn(2, 1, 8192, generator=g)
    y[..., 2000:6000] = 0
    x = 0.1 * torch.randn(2, 1, 8192, generator=g)
    x[..., 3000:5000] = 0
    x.requires_grad_()
    d(x, y).sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().max()) > 0
    # the built distance and the config name agree
    built = build_distance({"phase": 2.0}, phase_n_fft=512, phase_hop=128)
    torch.testing.assert_close(built(x.detach(), y), 2.0 * PhaseDistance(512, 128)(x.detach(), y))
    with pytest.raises(ValueError, match="n_fft"):
        PhaseDistance(2, 1)


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
    spec = net._stft(x)
    env = net._envelope_inv(None, spec[0])
    y = net._istft(spec, env)
    # the DFT-convolution pair (what an ONNX export traces) equals the FFT pair
    for a, b in zip(net._stft(x, dft=True), spec):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(net._envelope_inv(None, spec[0], dft=True), env.expand(2, -1))
    torch.testing.assert_close(net._istft(spec, env, dft=True), y, atol=1e-5, rtol=0)
    # time-major (B, F, bins) pairs of torch.stft's spectrum
    ref = torch.stft(torch.nn.functional.pad(x, (384, 384)), 1024, HOP, 1024, torch.hann_window(1024), center=False,
                     return_complex=True).transpose(1, 2)
    torch.testing.assert_close(spec[0], ref.real, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(spec[1], ref.imag, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    # with a frame mask, the envelope follows the valid frames: a masked 7-frame item equals itself alone
    fmask = torch.zeros(1, 12, 1)
    fmask[:, :7] = 1
    re, im = net._stft(torch.nn.functional.pad(x[:1, : 7 * HOP], (0, 5 * HOP)))
    y_masked = net._istft((re * fmask, im * fmask), net._envelope_inv(fmask, re))[:, : 7 * HOP]
    spec7 = net._stft(x[:1, : 7 * HOP])
    y_alone = net._istft(spec7, net._envelope_inv(None, spec7[0]))
    torch.testing.assert_close(y_masked, y_alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_fft", [1024, 1000])
def test_overlap_add_equals_fold(n_fft):
    """The reshape-sum overlap-add every iSTFT uses (FrameNet's head, PresetFraming: Griffin-Lim, the mel
    projection) is F.fold's overlap-add, also when n_fft is not a multiple of the hop."""
    from cmaudio.features import overlap_add

    frames = torch.randn(2, 9, n_fft, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = torch.nn.functional.fold(frames.transpose(1, 2), (1, 8 * HOP + n_fft), (1, n_fft), stride=(1, HOP))
    torch.testing.assert_close(overlap_add(frames, HOP), ref.reshape(2, -1), atol=1e-12, rtol=0)


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


# ---------------------------------------------------------------------------------- the Griffin-Lim prior


def _clip_and_mel(seconds: float = 2.0):
    import soundfile as sf

    from pathlib import Path

    wav = Path(__file__).resolve().parents[1] / "egs/mini/data/ljspeech_mini/wavs/LJ001-0011.wav"
    a, sr = sf.read(str(wav), dtype="float32")
    assert sr == 22050
    a = torch.from_numpy(a[: int(seconds * sr) // HOP * HOP])
    return a, MelSpectrogram("hifigan")(a[None])


def _prior_model(iters: int = 8, sigma_data: float = 0.09, **model):
    from cmaudio.build import build_model
    from cmaudio.config import Config, replace

    cfg = replace(Config(), model={"net": "framenet", "size": "tiny", "frame_prior_iters": iters, "sigma_max": 1.6,
                                   **model})
    torch.manual_seed(0)
    return build_model(cfg, sigma_data, "consistency").eval(), cfg


def test_framenet_prior_is_griffin_lim_of_the_mel():
    """The untrained model with the prior at sigma_max, less its c_skip x, is the Griffin-Lim waveform of the
    mel: that of an independent fast Griffin-Lim (torch.stft/istft, zero initial phase, pinv magnitudes) and
    close to the clip (log-mel L1 < 0.25, where 8 iterations give ~0.15 on LJSpeech and silence gives > 3)."""
    from cmaudio.baselines import mel_inverse_operator

    model, cfg = _prior_model()
    a, mel = _clip_and_mel()
    s = torch.tensor([cfg.model.sigma_max])
    x = torch.randn(1, 1, a.numel(), generator=torch.Generator().manual_seed(0)) * s
    c_skip = model.param.consistency_scalings(s)[0]
    with torch.no_grad():
        y = (model(x, s, mel) - c_skip * x)[0, 0]
    # independent Griffin-Lim in the hifigan framing (reflect-free: zero pad (n_fft - hop) / 2, center False)
    P, la, lb = mel_inverse_operator("hifigan")
    mag = torch.relu(P.double() @ torch.exp((mel[0].double() - lb) / la))
    win, pad, n = torch.hann_window(1024, dtype=torch.float64), 384, a.numel()

    def istft(spec):  # least-squares overlap-add (Griffin & Lim eq. 6), frame by frame
        frames = torch.fft.irfft(spec, n=1024, dim=0) * win[:, None]
        y, env = torch.zeros(n + 2 * pad, dtype=torch.float64), torch.zeros(n + 2 * pad, dtype=torch.float64)
        for i in range(spec.shape[1]):
            y[i * HOP:i * HOP + 1024] += frames[:, i]
            env[i * HOP:i * HOP + 1024] += win**2
        return (y / env.clamp_min(1e-8))[pad:pad + n]

    def stft(y):
        return torch.stft(torch.nn.functional.pad(y, (pad, pad)), 1024, HOP, 1024, win, center=False,
                          return_complex=True)

    angles, prev = torch.ones_like(mag, dtype=torch.complex128), torch.zeros_like(mag, dtype=torch.complex128)
    for _ in range(8):
        rebuilt = stft(istft(mag * angles))
        angles, prev = rebuilt - 0.99 / 1.99 * prev, rebuilt
        angles = angles / (angles.abs() + 1e-8)
    ref = istft(mag * angles).float()
    # c_out(sigma_max) / sigma_data ~ 0.998 scales F's prior path; float32 vs float64 and the 1e-8 guards
    c_out = model.param.consistency_scalings(s)[1].item()
    torch.testing.assert_close(y, ref * c_out / 0.09, atol=2e-3, rtol=0)
    l1 = (MelSpectrogram("hifigan")(y[None]) - mel).abs().mean().item()
    assert 0.05 < l1 < 0.25, l1
    # the same net without the prior outputs silence at init
    plain, _ = _prior_model(iters=0)
    with torch.no_grad():
        assert torch.equal(plain(x, s, mel) - c_skip * x, torch.zeros_like(x))


def test_framenet_prior_exact_boundary_and_config_errors():
    from cmaudio.config import Config, ConfigError, replace

    model, cfg = _prior_model(iters=2)
    a, mel = _clip_and_mel(0.5)
    x = torch.randn(1, 1, a.numel())
    with torch.no_grad():
        assert torch.equal(model(x, cfg.model.sigma_min, mel), x)
    with pytest.raises(ConfigError, match="frame_prior_iters"):
        replace(Config(), model={"net": "unet1d", "frame_prior_iters": 4})
    with pytest.raises(ConfigError, match="frame_prior_iters"):
        replace(Config(), model={"net": "framenet", "frame_prior_iters": -1})
    with pytest.raises(ConfigError, match="n_fft"):
        _prior_model(iters=2, frame_n_fft=512)


def test_projection_target_distance():
    """proj: 0 at a fixed point (a recording against its own mel), the relative squared error against its
    projection otherwise, and no gradient through the target (d/dx = 2 (x - t) / sum t^2 exactly)."""
    from pathlib import Path

    import soundfile as sf

    from cmaudio.build import _projector
    from cmaudio.objectives.distances import ProjectionTarget

    wav = Path(__file__).resolve().parents[1] / "egs/mini/data/ljspeech_mini/wavs/LJ001-0013.wav"
    y = torch.from_numpy(sf.read(str(wav), dtype="float32")[0][: 2 * 8192]).reshape(2, 1, 8192)
    project = _projector("hifigan", 4)
    d = build_distance({"proj": 1.0}, project=project)
    assert d(y, y).abs().max() < 1e-8
    x = (0.5 * y + 0.01 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    t = project(x.detach().reshape(2, -1), y.reshape(2, -1))
    loss = d(x, y)
    ref = ((x.detach().reshape(2, -1) - t) ** 2).sum(1) / (t ** 2).sum(1)
    assert torch.allclose(loss, ref, rtol=1e-5) and (loss > 1e-3).all()
    loss.sum().backward()
    assert torch.allclose(x.grad.reshape(2, -1), 2 * (x.detach().reshape(2, -1) - t) / (t ** 2).sum(1, keepdim=True),
                          rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="projector"):
        build_distance({"proj": 1.0})
    with pytest.raises(ValueError, match="padded"):
        ProjectionTarget(project)(x, y, torch.zeros(2, 1, 8192))
