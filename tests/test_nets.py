"""Tests of cmaudio.nets (UNet1d, DiffWave, registry) and cmaudio.diffwave_ref.

CPU only, tiny presets, seconds each. Weights are re-drawn at random before most checks so
that zero-initialised layers cannot hide a bug (F == 0 at init would pass anything).
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from cmaudio.errors import CheckpointError, ConfigError
from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.nets import DIFFWAVE_PRESETS, UNET_PRESETS, DiffWave, UNet1d, build_net, count_parameters, flops_per_second
from cmaudio.nets.layers import fit_length, split_hop
from cmaudio.param import KarrasParam

N_MELS = 12  # cond width of waveform nets in tests
MEL_BINS = 10  # x channels of mel-domain nets
MEL_COND = 6  # cond width of mel-domain nets
HOP = 256

CASES = [("unet1d", "wave"), ("unet1d", "mel"), ("framenet", "wave"), ("framenet_prior", "wave"), ("diffwave", "wave"),
         ("diffwave", "mel")]
PRIOR_GAIN = 2.0  # framenet_prior: FrameNet with its Griffin-Lim prior (3 iterations, a random non-negative inverse)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets gain nothing from threads, and on a shared 2-core box threads stall each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name: str, domain: str, *, cond: bool = True, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    in_ch = 1 if domain == "wave" else MEL_BINS
    cond_ch = (N_MELS if domain == "wave" else MEL_COND) if cond else None
    hop = HOP if domain == "wave" else None
    if name == "framenet_prior":
        name = "framenet"
        if cond:  # the prior inverts the mel cond; without one the case is the plain framenet
            inverse = torch.rand(513, N_MELS, generator=torch.Generator().manual_seed(2)) * 0.05
            kw.update(prior_iters=3, mel_inverse=inverse, mel_affine=(5.0, 0.0), prior_gain=PRIOR_GAIN)  # exp(cond / 5)
    return build_net(name, domain=domain, in_channels=in_ch, cond_channels=cond_ch, size="tiny", hop=hop, **kw)


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter (so zero-initialised layers are live), fan-in scaled."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.ndim >= 2 else 1
            std = 1.0 / math.sqrt(fan_in) if p.ndim >= 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def inputs(net: nn.Module, B: int, T: int, *, seed: int = 1, frames: int | None = None):
    """Random x (B, C, T), c_noise (B,), cond at the net's cond rate (T // hop frames for waveforms)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, net.in_channels, T, generator=g)
    c_noise = torch.randn(B, generator=g)
    cond = None
    if net.cond_channels:
        n = frames if frames is not None else (T // net.cond_hop if net.domain == "wave" else T)
        cond = torch.randn(B, net.cond_channels, n, generator=g)
    return x, c_noise, cond


def lengths(domain: str) -> list[int]:
    return [1000, 1537, 2048] if domain == "wave" else [7, 13, 20]


# ---------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name,domain", CASES)
@pytest.mark.parametrize("cond", [True, False])
def test_shapes_and_dtypes(name, domain, cond):
    net = randomize(make(name, domain, cond=cond)).eval()
    for B, T in zip([1, 3, 2], lengths(domain)):
        x, c, cnd = inputs(net, B, T)
        with torch.no_grad():
            out = net(x, c, cnd)
        assert out.shape == (B, net.in_channels, T)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert out.abs().max() > 0
    rng = np.random.default_rng(0)  # a few more random lengths and batch sizes
    hi = 3000 if domain == "wave" else 40
    for _ in range(3):
        B, T = int(rng.integers(1, 4)), int(rng.integers(hi // 4, hi))
        x, c, cnd = inputs(net, B, T, seed=T)
        if cnd is not None and cnd.shape[-1] == 0:
            cnd = torch.randn(B, net.cond_channels, 1)
        with torch.no_grad():
            assert net(x, c, cnd).shape == (B, net.in_channels, T)
    # a single noise level broadcasts over the batch
    x, c, cnd = inputs(net, 2, lengths(domain)[0])
    with torch.no_grad():
        a = net(x, c[:1], cnd)
        b = net(x, c[:1].expand(2), cnd)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,domain", CASES)
def test_float64_follows_the_input(name, domain):
    net = randomize(make(name, domain)).eval()
    x, c, cnd = inputs(net, 2, lengths(domain)[1])
    with torch.no_grad():
        ref = net(x, c, cnd)
        out = net.double()(x.double(), c.double(), cnd.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,domain", CASES)
def test_dropout_is_seeded(name, domain):
    net = randomize(make(name, domain, dropout=0.2)).train()
    x, c, cnd = inputs(net, 2, lengths(domain)[1])
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(net(x, c, cnd))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])  # dropout is active in training mode
    net.eval()
    assert torch.equal(net(x, c, cnd), net(x, c, cnd))


@pytest.mark.parametrize("name,domain", CASES)
def test_cond_must_match_construction(name, domain):
    net = make(name, domain)
    x, c, cnd = inputs(net, 1, lengths(domain)[0])
    with pytest.raises(ValueError):
        net(x, c, None)
    unc = make(name, domain, cond=False)
    with pytest.raises(ValueError):
        unc(x, c, torch.zeros(1, 3, 4))


@pytest.mark.parametrize("name,domain", CASES)
def test_zero_output_at_init(name, domain):
    """F == 0 at init (zero-initialised output layer); with FrameNet's prior, F == the prior waveform in F's units."""
    net = make(name, domain)
    x, c, cnd = inputs(net, 2, lengths(domain)[1])
    with torch.no_grad():
        out = net(x, c, cnd)
    if name != "framenet_prior":
        assert torch.equal(out, torch.zeros_like(x))
        return
    T = x.shape[-1]
    nF = -(-T // HOP)
    g, _ = net._prior(fit_length(cnd, nF), None)
    assert g.abs().max() > 1e-3  # a live prior
    torch.testing.assert_close(out[:, 0], PRIOR_GAIN * g[:, :T], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,domain", CASES)
def test_gradient_reaches_every_parameter(name, domain):
    net = randomize(make(name, domain))
    x, c, cnd = inputs(net, 2, lengths(domain)[1])
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    (net(x, c, cnd) * w).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("name,domain", CASES)
def test_deterministic(name, domain):
    a_net = randomize(make(name, domain, seed=3), seed=4).eval()
    b_net = randomize(make(name, domain, seed=3), seed=4).eval()
    x, c, cnd = inputs(a_net, 2, lengths(domain)[1])
    with torch.no_grad():
        a1, a2, b = a_net(x, c, cnd), a_net(x, c, cnd), b_net(x, c, cnd)
    assert torch.equal(a1, a2) and torch.equal(a1, b)
    # construction from the same seed gives the same weights
    m1, m2 = make(name, domain, seed=9), make(name, domain, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


@pytest.mark.parametrize("name,domain", CASES)
def test_consistency_boundary_condition_exact(name, domain):
    net = randomize(make(name, domain))
    param = KarrasParam(sigma_min=0.002, sigma_max=2.0, sigma_data=0.5)
    cm = ConsistencyModel(net, param, cond_channels=net.cond_channels, cond_hop=net.cond_hop, null_cond=True)
    x, _, cnd = inputs(net, 3, lengths(domain)[0])
    with torch.no_grad():
        assert torch.equal(cm(x, param.sigma_min, cnd), x)
        assert torch.equal(cm(x, param.sigma_min, None), x)  # the null cond path
        assert not torch.allclose(cm(x, 1.0, cnd), x)  # F is live: the check above is not vacuous


@pytest.mark.parametrize("name,domain", CASES)
def test_denoiser_wrapper_runs(name, domain):
    net = randomize(make(name, domain))
    den = Denoiser(net, KarrasParam(sigma_min=0.002, sigma_max=2.0, sigma_data=0.5),
                   cond_channels=net.cond_channels, cond_hop=net.cond_hop)
    x, _, cnd = inputs(net, 2, lengths(domain)[2])
    with torch.no_grad():
        out = den(x, torch.tensor([0.1, 1.5]), cnd)
    assert out.shape == x.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("name,domain", CASES)
def test_mask_padded_batch_equals_alone(name, domain):
    """Valid part of a padded, masked item == the item run alone; padding is zero and ignored."""
    net = randomize(make(name, domain)).eval()
    hop = net.cond_hop
    lens = [1000, 1536, 2100] if domain == "wave" else [5, 11, 14]
    Tmax = max(lens) + (300 if domain == "wave" else 3)
    g = torch.Generator().manual_seed(7)
    B = len(lens)
    x = torch.randn(B, net.in_channels, Tmax, generator=g) * 5  # garbage in the padding too
    n_frames = -(-Tmax // hop) if domain == "wave" else Tmax
    cond = torch.randn(B, net.cond_channels, n_frames, generator=g) * 5
    mask = torch.zeros(B, 1, Tmax)
    for b, L in enumerate(lens):
        mask[b, :, :L] = 1
    with torch.no_grad():
        out = net(x, torch.tensor([0.3, -1.0, 0.7]), cond, mask=mask)
        assert torch.equal(out * (1 - mask), torch.zeros_like(out))
        for b, L in enumerate(lens):
            n = -(-L // hop) if domain == "wave" else L
            alone = net(x[b:b + 1, :, :L], torch.tensor([[0.3, -1.0, 0.7][b]]), cond[b:b + 1, :, :n])
            torch.testing.assert_close(out[b:b + 1, :, :L], alone, atol=1e-5, rtol=0)
        # changing the padding changes nothing
        x2 = torch.where(mask.bool(), x, torch.randn(x.shape, generator=g))
        out2 = net(x2, torch.tensor([0.3, -1.0, 0.7]), cond, mask=mask)
    torch.testing.assert_close(out, out2, atol=1e-5, rtol=0)


def test_unet_mask_without_effect_when_all_valid():
    net = randomize(make("unet1d", "mel")).eval()
    x, c, cnd = inputs(net, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, c, cnd, mask=torch.ones(2, 1, 16)), net(x, c, cnd), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------- receptive field


@pytest.mark.parametrize("domain", ["wave", "mel"])
def test_unet_context_beyond_receptive_field_changes_nothing(domain):
    net = randomize(make("unet1d", domain)).eval()
    r, H = net.receptive_field(), net.hop
    assert r > 0
    # a segment [a, b) on the hop grid, with more than r of context on both sides in the long run
    a = -(-r // H) * H + H
    seg = 2 * a + 4 * H
    total = a + seg + a
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, net.in_channels, total, generator=g)
    fr = H if domain == "wave" else 1
    cond = torch.randn(1, net.cond_channels, total // fr, generator=g)
    c = torch.tensor([0.2])
    with torch.no_grad():
        long = net(x, c, cond)
        short = net(x[..., a:a + seg], c, cond[..., a // fr:(a + seg) // fr])
    centre = slice(r, seg - r)
    assert centre.stop - centre.start > 0
    torch.testing.assert_close(short[..., centre], long[..., a:a + seg][..., centre], atol=1e-5, rtol=0)
    # and the context does matter near the edges (the bound is not vacuous)
    assert not torch.allclose(short[..., :8], long[..., a:a + 8], atol=1e-4)


def test_unet_receptive_field_bounds_the_gradient():
    net = randomize(make("unet1d", "mel")).eval()
    r, T = net.receptive_field(), 4 * 64
    x = torch.randn(1, net.in_channels, T, requires_grad=True)
    cond = torch.randn(1, net.cond_channels, T, requires_grad=True)
    t0 = T // 2
    net(x, torch.tensor([0.0]), cond)[0, :, t0].sum().backward()
    touched = ((x.grad.abs().sum(1) + cond.grad.abs().sum(1))[0] > 0).nonzero().flatten()
    assert touched.min() >= t0 - r and touched.max() <= t0 + r
    assert touched.max() - touched.min() >= r // 2  # and the bound is not wildly loose


# ---------------------------------------------------------------------------------- presets/registry


def test_split_hop():
    assert split_hop(256, 4) == (4, 4, 4, 4)
    assert split_hop(240, 4) == (3, 4, 4, 5)
    assert split_hop(300, 4) == (3, 4, 5, 5)
    assert split_hop(512, 4) == (4, 4, 4, 8)
    assert split_hop(256, 2) == (16, 16)
    assert split_hop(300, 2) == (15, 20)


@pytest.mark.parametrize("hop,factors", [(256, None), (240, (2, 4, 5, 6)), (300, (3, 4, 5, 5)), (512, (4, 4, 4, 8)),
                                         (240, None), (300, None)])
def test_unet_other_hops(hop, factors):
    net = randomize(build_net("unet1d", domain="wave", in_channels=1, cond_channels=N_MELS, size="tiny", hop=hop,
                              factors=factors))
    assert math.prod(net.factors) == hop and net.cond_hop == hop
    T = 5 * hop + 17
    x, c, cnd = inputs(net, 2, T)
    assert cnd.shape[-1] == T // hop
    with torch.no_grad():
        assert net(x, c, cnd).shape == x.shape


@pytest.mark.parametrize("hop", [256, 300, 240])
def test_diffwave_other_hops(hop):
    net = randomize(build_net("diffwave", domain="wave", in_channels=1, cond_channels=N_MELS, size="tiny", hop=hop))
    assert math.prod(net.spectrogram_upsampler.factors) == hop
    T = 4 * hop
    x, c, cnd = inputs(net, 1, T)
    with torch.no_grad():
        assert net(x, c, cnd).shape == x.shape


def test_registry_errors():
    kw = dict(domain="wave", in_channels=1, cond_channels=N_MELS)
    with pytest.raises(ConfigError, match="unknown network"):
        build_net("wavenet", size="tiny", **kw)
    with pytest.raises(ConfigError, match="size"):
        build_net("unet1d", size="huge", **kw)
    with pytest.raises(ConfigError, match="size"):
        build_net("diffwave", size="huge", **kw)
    with pytest.raises(ConfigError, match="domain"):
        build_net("unet1d", size="tiny", domain="video", in_channels=1, cond_channels=None)
    with pytest.raises(ConfigError, match="colour"):
        build_net("unet1d", size="tiny", colour=3, **kw)
    with pytest.raises(ConfigError, match="hop"):
        build_net("unet1d", size="tiny", hop=256, factors=(4, 4, 4, 2), **kw)
    with pytest.raises(ConfigError, match="channels"):
        build_net("unet1d", size="tiny", factors=(16, 16), **kw)
    # keys of the other network and None values are ignored (a caller may pass every config field)
    net = build_net("unet1d", size="tiny", residual_layers=30, channels=None, **kw)
    assert isinstance(net, UNet1d)
    assert isinstance(build_net("diffwave", size="tiny", factors=(4, 4), **kw), DiffWave)


def test_preset_sizes():
    for domain, in_ch, cond_ch in [("wave", 1, 80), ("mel", 80, 192)]:
        n = {s: count_parameters(UNet1d.from_preset(s, domain=domain, in_channels=in_ch, cond_channels=cond_ch))
             for s in UNET_PRESETS[domain]}
        assert n["tiny"] <= 100_000, n
        assert n["small"] <= 2_000_000, n
        assert 5_000_000 <= n["base"] <= 15_000_000, n
    base = DiffWave.from_preset("base", domain="wave", in_channels=1, cond_channels=80)
    assert len(base.residual_layers) == 30 and base.residual_channels == 64 and base.dilation_cycle == 10
    assert DIFFWAVE_PRESETS["tiny"]["residual_layers"] < 10


def test_flops_per_second():
    net = make("unet1d", "wave")
    f1 = flops_per_second(net, sample_rate=22050, in_channels=1, cond_channels=N_MELS, hop=HOP)
    f2 = flops_per_second(net, sample_rate=44100, in_channels=1, cond_channels=N_MELS, hop=HOP)
    assert f1 > 0 and 1.9 < f2 / f1 < 2.1
    dw = make("diffwave", "wave")
    C, L = dw.residual_channels, len(dw.residual_layers)
    # lower bound: the dilated convs alone cost 2 * (2C * C * 3) FLOPs per sample per layer
    assert flops_per_second(dw, sample_rate=22050, in_channels=1, cond_channels=N_MELS, hop=HOP) > 22050 * L * 12 * C * C
    mel = make("unet1d", "mel")
    assert flops_per_second(mel, sample_rate=22050, in_channels=MEL_BINS, cond_channels=MEL_COND, hop=HOP) > 0


# ---------------------------------------------------------------------------------- reference DiffWave


def _reference(residual_layers=3, residual_channels=8, seed=0, schedule=None):
    dw_model = pytest.importorskip("diffwave.model")
    dw_params = pytest.importorskip("diffwave.params")
    params = dw_params.AttrDict(dw_params.params)
    params = dw_params.AttrDict(dict(params, residual_layers=residual_layers, residual_channels=residual_channels))
    if schedule is not None:
        params = dw_params.AttrDict(dict(params, noise_schedule=schedule))
    torch.manual_seed(seed)
    ref = dw_model.DiffWave(params)
    randomize(ref, seed=seed)
    return ref.eval(), params


def _save_like_learner(ref, params, path, *, step=7):
    """The reference learner's checkpoint layout (learner.state_dict()), params as an AttrDict."""
    opt = torch.optim.Adam(ref.parameters(), lr=2e-4)
    ref(torch.randn(1, 512), torch.randn(1, params.n_mels, 2), torch.tensor([1])).sum().backward()
    opt.step()
    opt.zero_grad()
    torch.save({
        "step": step,
        "model": {k: v.cpu() for k, v in ref.state_dict().items()},
        "optimizer": {k: v for k, v in opt.state_dict().items()},
        "params": params,
        "scaler": {},
    }, path)


def test_reference_checkpoint_equivalence(tmp_path):
    from cmaudio.diffwave_ref import VPDenoiser, load_diffwave_checkpoint

    ref, params = _reference()
    path = tmp_path / "weights-7.pt"
    _save_like_learner(ref, params, path)
    den = load_diffwave_checkpoint(path)
    assert isinstance(den, VPDenoiser) and den.mel_preset == "diffwave" and den.hop_length == 256
    assert set(den.net.state_dict()) == set(ref.state_dict())  # identical parameter names
    g = torch.Generator().manual_seed(3)
    audio = torch.randn(2, 3 * 256, generator=g)
    mel = torch.randn(2, params.n_mels, 3, generator=g)
    with torch.no_grad():
        t = torch.tensor([0, 37])
        torch.testing.assert_close(den.net(audio[:, None], t, mel), ref(audio, mel, t), atol=1e-5, rtol=0)
        for tf in (12.25, 48.9, 0.5):  # fractional steps: the reference's own table lerp
            t = torch.tensor([tf])
            expect = ref(audio, mel, t)
            assert not torch.allclose(expect, ref(audio, mel, torch.tensor([int(tf)])), atol=1e-4)
            torch.testing.assert_close(den.net(audio[:, None], t, mel), expect, atol=1e-5, rtol=0)


def test_vp_denoiser_matches_hand_formula(tmp_path):
    from cmaudio.diffwave_ref import load_diffwave_checkpoint

    ref, params = _reference(residual_layers=4, seed=1)
    path = tmp_path / "weights.pt"
    _save_like_learner(ref, params, path)
    den = load_diffwave_checkpoint(path)
    beta = np.asarray(params.noise_schedule, dtype=np.float64)
    ab = np.cumprod(1 - beta)
    grid = np.sqrt((1 - ab) / ab)
    assert den.sigma_min == pytest.approx(grid[0]) and den.sigma_max == pytest.approx(grid[-1])
    assert 0.0099 < den.sigma_min < 0.0101 and 1.55 < den.sigma_max < 1.65  # docs/design.md sec. 2.15: ~0.01 .. ~1.6
    sigmas = [grid[0], grid[7], grid[-1], np.sqrt(grid[20] * grid[21]), 0.05, 0.8, 1.2345]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 2 * 256, generator=g) * 0.5
    mel = torch.randn(1, params.n_mels, 2, generator=g)
    for s in sigmas:
        t = float(np.interp(np.log(s), np.log(grid), np.arange(len(grid))))  # linear in ln sigma
        with torch.no_grad():
            eps = ref(x[:, 0] / math.sqrt(1 + s * s), mel, torch.tensor([t], dtype=torch.float32))
            expect = x - s * eps
            got = den(x, torch.tensor([s]), mel)
        torch.testing.assert_close(got, expect, atol=1e-5, rtol=0)
    # a batch of sigmas equals the items one by one
    xb = torch.randn(3, 1, 512, generator=g)
    mb = torch.randn(3, params.n_mels, 2, generator=g)
    sb = torch.tensor([0.02, 0.3, 1.5])
    with torch.no_grad():
        batch = den(xb, sb, mb)
        for i in range(3):
            torch.testing.assert_close(batch[i:i + 1], den(xb[i:i + 1], sb[i:i + 1], mb[i:i + 1]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        den(xb, sb, None)


def test_sigma_to_t_on_and_between_grid_points(tmp_path):
    from cmaudio.diffwave_ref import VPDenoiser

    net = DiffWave(1, 4, residual_layers=2, residual_channels=4, embedding="steps", max_steps=50)
    den = VPDenoiser(net, np.linspace(1e-4, 0.05, 50))
    grid = torch.tensor(den.sigmas, dtype=torch.float64)
    torch.testing.assert_close(den.sigma_to_t(grid), torch.arange(50, dtype=torch.float64))
    mid = torch.sqrt(grid[:-1] * grid[1:])
    torch.testing.assert_close(den.sigma_to_t(mid), torch.arange(49, dtype=torch.float64) + 0.5)
    assert den.sigma_to_t(torch.tensor([1e-5, 10.0], dtype=torch.float64)).tolist() == [0.0, 49.0]


def test_learner_written_checkpoint_and_directory(tmp_path):
    learner_mod = pytest.importorskip("diffwave.learner")
    from cmaudio.diffwave_ref import load_diffwave_checkpoint

    ref, params = _reference(seed=2)
    opt = torch.optim.Adam(ref.parameters())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = learner_mod.DiffWaveLearner(str(tmp_path / "run"), ref, None, opt, params)
    learner.step = 3
    learner.save_to_checkpoint()
    den = load_diffwave_checkpoint(tmp_path / "run")  # the model dir: weights.pt -> weights-3.pt
    x = torch.randn(1, 512)
    mel = torch.randn(1, params.n_mels, 2)
    with torch.no_grad():
        torch.testing.assert_close(den.net(x[:, None], torch.tensor([5]), mel), ref(x, mel, torch.tensor([5])),
                                   atol=1e-5, rtol=0)


def test_bare_state_dict_and_numpy_params(tmp_path):
    from cmaudio.diffwave_ref import load_diffwave_checkpoint, read_reference_checkpoint

    ref, params = _reference(residual_layers=2, residual_channels=4)
    torch.save(ref.state_dict(), tmp_path / "bare.pt")
    sd, p = read_reference_checkpoint(tmp_path / "bare.pt")
    assert p["residual_layers"] == 2 and p["residual_channels"] == 4 and len(p["noise_schedule"]) == 50
    assert load_diffwave_checkpoint(tmp_path / "bare.pt").sigma_max == pytest.approx(1.6049, abs=1e-3)
    # params holding numpy arrays / scalars (older checkpoints) load without unpickling code
    sched = np.linspace(1e-4, 0.02, 20)
    ref2, params2 = _reference(residual_layers=2, residual_channels=4, schedule=sched)
    params2.learning_rate = np.float64(2e-4)
    _save_like_learner(ref2, params2, tmp_path / "np.pt")
    den = load_diffwave_checkpoint(tmp_path / "np.pt")
    assert den.num_steps == 20 and den.params["learning_rate"] == pytest.approx(2e-4)
    assert isinstance(den.params["noise_schedule"], list)


def test_bad_checkpoints_are_refused(tmp_path):
    from cmaudio.diffwave_ref import load_diffwave_checkpoint

    with pytest.raises(CheckpointError, match="not found"):
        load_diffwave_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError):
        load_diffwave_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a DiffWave"):
        load_diffwave_checkpoint(tmp_path / "other.pt")
    ref, params = _reference(residual_layers=2, residual_channels=4)
    torch.save({"model": ref.state_dict(), "params": dict(params, residual_layers=5)}, tmp_path / "liar.pt")
    with pytest.raises(CheckpointError, match="residual_layers"):
        load_diffwave_checkpoint(tmp_path / "liar.pt")


class _Evil:
    """Pickles as a call of os.system: loading it with a plain unpickler would run the command."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("fmt", ["raw_pickle", "torch_zip"])
def test_pickled_code_is_refused_and_never_run(tmp_path, fmt):
    from cmaudio.diffwave_ref import load_diffwave_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if fmt == "raw_pickle":  # written by hand with pickle: no tensors, just the payload
        with open(path, "wb") as f:
            pickle.dump({"step": 1, "model": {}, "params": _Evil(f"touch {marker}")}, f, protocol=2)
    else:  # a real-looking torch checkpoint that also carries the payload
        torch.save({"step": 1, "model": {"input_projection.weight": torch.zeros(1)},
                    "params": _Evil(f"touch {marker}")}, path)
    with pytest.raises(CheckpointError, match="refusing") as info:
        load_diffwave_checkpoint(path)
    assert "system" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
