"""Parameterization, grids, schedules: values against formulas computed independently."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.param import KarrasParam
from cmaudio.schedules import (
    ct_num_scales,
    ct_target_ema,
    ema_update,
    ict_num_scales,
    lognormal_index_probs,
    sample_lognormal_index,
    sample_uniform_index,
)

P = KarrasParam(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0)


class Wild(nn.Module):
    """A network returning large arbitrary values: the boundary must not depend on it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(123.456))

    def forward(self, x, c_noise, cond, mask=None):
        return self.w * torch.sin(1e3 * x) + 1e4 * c_noise[:, None, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_condition_is_exact(dtype):
    for sd, eps in [(0.5, 0.002), (0.087, 0.0002), (1.3, 0.01)]:
        p = KarrasParam(sigma_min=eps, sigma_max=2.0, sigma_data=sd)
        m = ConsistencyModel(Wild(), p)
        x = torch.randn(3, 1, 257, dtype=dtype) * 5
        out = m(x, torch.full((3,), eps, dtype=dtype))
        assert torch.equal(out, x)
        assert out.dtype == dtype
        # and away from the boundary the network does matter
        assert not torch.allclose(m(x, 0.5), x)


def test_grid_matches_formula_float64():
    for n in (2, 3, 18, 151, 1281):
        g = P.grid(n).numpy()
        i = np.arange(1, n + 1, dtype=np.float64)
        eps, T, rho = 0.002, 80.0, 7.0
        ref = (eps ** (1 / rho) + (i - 1) / (n - 1) * (T ** (1 / rho) - eps ** (1 / rho))) ** rho
        assert np.max(np.abs(g - ref) / ref) < 1e-12
        assert g[0] == eps and g[-1] == T and np.all(np.diff(g) > 0)
        # grid_at agrees with grid elementwise
        idx = torch.arange(n)
        assert torch.allclose(P.grid_at(idx, n), P.grid(n), rtol=1e-12, atol=0)


def test_scalings_match_formulas_float64():
    s = torch.tensor([0.002, 0.01, 0.3, 1.0, 7.5, 80.0], dtype=torch.float64)
    sd, eps = 0.5, 0.002
    c_skip, c_out, c_in = P.consistency_scalings(s)
    sn = s.numpy()
    np.testing.assert_allclose(c_skip.numpy(), sd**2 / ((sn - eps) ** 2 + sd**2), rtol=1e-12)
    np.testing.assert_allclose(c_out.numpy(), sd * (sn - eps) / np.sqrt(sd**2 + sn**2), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(c_in.numpy(), 1 / np.sqrt(sn**2 + sd**2), rtol=1e-12)
    d_skip, d_out, d_in = P.denoiser_scalings(s)
    np.testing.assert_allclose(d_skip.numpy(), sd**2 / (sn**2 + sd**2), rtol=1e-12)
    np.testing.assert_allclose(d_out.numpy(), sn * sd / np.sqrt(sn**2 + sd**2), rtol=1e-12)
    np.testing.assert_allclose(P.c_noise(s).numpy(), 0.25 * np.log(sn), rtol=1e-12)
    np.testing.assert_allclose(P.dsm_weight(s).numpy(), (sn**2 + sd**2) / (sn * sd) ** 2, rtol=1e-12)


def test_denoiser_wraps_network_with_edm_scalings():
    class Lin(nn.Module):
        def forward(self, x, c_noise, cond, mask=None):
            return 2.0 * x + c_noise[:, None, None]

    d = Denoiser(Lin(), P)
    x = torch.randn(2, 1, 8, dtype=torch.float64)
    s = torch.tensor([0.1, 3.0], dtype=torch.float64)
    c_skip, c_out, c_in = (c[:, None, None] for c in P.denoiser_scalings(s))
    ref = c_skip * x + c_out * (2.0 * c_in * x + 0.25 * torch.log(s)[:, None, None])
    assert torch.allclose(d(x, s), ref, rtol=1e-6)


def test_ct_curriculum_hand_values():
    # CM paper settings: s0 = 2, s1 = 150, mu0 = 0.9, K = 800k
    K = 800_000
    assert ct_num_scales(0, K, 2, 150) == 2
    assert ct_num_scales(K, K, 2, 150) == 151
    # k = K/2: sqrt(0.5 (151^2 - 4) + 4) = sqrt(11402.5) = 106.782...; ceil(105.78) + 1 = 107
    assert ct_num_scales(K // 2, K, 2, 150) == 107
    # k = K/4: sqrt(0.25*22797 + 4) = sqrt(5703.25) = 75.52; ceil(74.52) + 1 = 76
    assert ct_num_scales(K // 4, K, 2, 150) == 76
    assert ct_target_ema(0, K, 2, 150, 0.9) == pytest.approx(math.exp(2 * math.log(0.9) / 2))  # 0.9
    assert ct_target_ema(K // 2, K, 2, 150, 0.9) == pytest.approx(math.exp(2 * math.log(0.9) / 107))
    assert ct_target_ema(K, K, 2, 150, 0.9) == pytest.approx(0.9 ** (2 / 151))


def test_ict_curriculum_hand_values():
    # iCT: s0 = 10, s1 = 1280, K = 400k -> K' = floor(400000 / (log2(128) + 1)) = 50000
    K = 400_000
    assert ict_num_scales(0, K) == 11
    assert ict_num_scales(49_999, K) == 11
    assert ict_num_scales(50_000, K) == 21
    assert ict_num_scales(100_000, K) == 41
    assert ict_num_scales(349_999, K) == 641
    assert ict_num_scales(350_000, K) == 1281
    assert ict_num_scales(K, K) == 1281


def test_index_samplers():
    u = torch.linspace(0, 1 - 1e-12, 10001, dtype=torch.float64)
    n = sample_uniform_index(11, u)
    assert n.min() == 0 and n.max() == 9
    counts = torch.bincount(n, minlength=10).double()
    assert (counts.max() - counts.min()) <= 2
    # lognormal: the empirical histogram follows p(n) from the erf formula
    probs = lognormal_index_probs(P, 41, -1.1, 2.0)
    g = P.grid(41).numpy()
    from scipy.special import erf

    ref = erf((np.log(g[1:]) + 1.1) / (math.sqrt(2) * 2.0)) - erf((np.log(g[:-1]) + 1.1) / (math.sqrt(2) * 2.0))
    np.testing.assert_allclose(probs.numpy(), ref / ref.sum(), rtol=1e-10)
    n = sample_lognormal_index(P, 41, -1.1, 2.0, torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    hist = torch.bincount(n, minlength=40).double() / n.numel()
    assert torch.allclose(hist, probs, atol=3e-3)


def test_ema_update():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)
    ema_update(a, b, 0.0)
    assert torch.equal(a.weight, b.weight)
