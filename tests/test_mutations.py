"""Tests that fail when the mathematics is wrong (issue 16, "Tests that can fail").

Each test below was written against one plausible mistake, made one at a time in the package,
and was seen to fail under it (then the mistake was reverted):

1. lambda dropped in the consistency loss (weight always 1)    -> test_ict_weighting_scales_the_loss_by_one_over_dsigma
2. multistep re-noising with sqrt(tau^2), not sqrt(tau^2 - eps^2) -> test_multistep_renoises_to_tau_with_a_large_eps
3. the target network given another dropout mask than the online -> test_online_and_target_see_the_same_dropout_mask
4. pseudo-Huber's c from the last dimension only (C > 1)        -> test_pseudo_huber_c_counts_every_channel
5. CT's target EMA rate ignored (target copied every step)      -> test_ct_target_follows_the_ema_rate
6. zero-shot editing's first step fed y, not the known part of y -> test_inpainting_ignores_the_unknown_part_of_y
7. the wrapper casting x and sigma to the body's dtype          -> test_boundary_is_exact_under_a_bf16_body

Formulas are those of docs/design.md (CM = Song et al. 2023, iCT = Song & Dhariwal 2023).
Everything runs on the CPU in well under a second per test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.objectives import CDObjective, CTObjective, PseudoHuber, build_distance
from cmaudio.param import KarrasParam
from cmaudio.sampling import consistency_sample, inpaint


class Smooth(nn.Module):
    """A fixed non-trivial network (x_in, c_noise, cond, mask) -> (B, C, T); knows nothing of sigma."""

    def __init__(self, channels: int = 1, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv1d(channels, channels, 9, padding=4)
        nn.init.normal_(self.conv.weight, std=0.3, generator=g)
        nn.init.normal_(self.conv.bias, std=0.05, generator=g)

    def forward(self, x, c_noise, cond=None, mask=None):
        return torch.tanh(self.conv(x)) * (1 + c_noise[:, None, None])


class DropoutSpy(Smooth):
    """Smooth with dropout on its output; records (grad enabled?, keep mask) of every call.

    `calls` is a class attribute, so the deep copy CT and CD make for their target network
    records into the same list as the online network.
    """

    calls: list = []

    def forward(self, x, c_noise, cond=None, mask=None):
        keep = F.dropout(torch.ones_like(x), p=0.5, training=self.training)
        DropoutSpy.calls.append((torch.is_grad_enabled(), keep.detach().clone()))
        return super().forward(x, c_noise, cond) * keep


def clean_batch(b: int = 4, c: int = 1, t: int = 64, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(b, c, t, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# 1. lambda(sigma_n) = 1 / (sigma_{n+1} - sigma_n) (iCT sec. 3.4) reaches the loss
# ----------------------------------------------------------------------------------------------


def _two_point_objective(kind: str, weighting: str):
    """An objective whose grid has N = 2 points, so the only pair is (eps, T): lambda = 1/(T - eps)."""
    p = KarrasParam(sigma_min=0.05, sigma_max=0.3, sigma_data=0.1)
    model = ConsistencyModel(Smooth(), p).eval()
    dist = build_distance({"l2": 1.0})
    if kind == "ict":  # s0 = s1 = 1: N(k) = min(1 * 2^floor(k/K'), 1) + 1 = 2 for every k (iCT eq. 6)
        return CTObjective(model, dist, variant="ict", s0=1, s1=1, total_steps=10, weighting=weighting).eval(), p
    teacher = Denoiser(Smooth(seed=3), p).eval()
    return CDObjective(model, teacher, dist, num_scales=2, weighting=weighting).eval(), p


@pytest.mark.parametrize("kind", ["ict", "cd"])
def test_ict_weighting_scales_the_loss_by_one_over_dsigma(kind):
    x, seeds = clean_batch(), torch.arange(4)
    ict, p = _two_point_objective(kind, "ict")
    uniform, _ = _two_point_objective(kind, "uniform")
    with torch.no_grad():
        l_ict = float(ict(x, seeds=seeds, step=3)[0])
        l_uni = float(uniform(x, seeds=seeds, step=3)[0])
    assert l_uni > 0
    assert l_ict / l_uni == pytest.approx(1.0 / (p.sigma_max - p.sigma_min), rel=1e-5)  # = 4


# ----------------------------------------------------------------------------------------------
# 2. CM Alg. 1: x_tau = x + sqrt(tau^2 - eps^2) z
# ----------------------------------------------------------------------------------------------


class Recorder:
    """A stand-in consistency model: returns zeros and records (sigma, input) of every call."""

    def __init__(self, eps: float) -> None:
        self.param = KarrasParam(sigma_min=eps, sigma_max=2.0, sigma_data=0.5)
        self.inputs: list[tuple[float, torch.Tensor]] = []

    def __call__(self, x, sigma, cond=None, mask=None):
        self.inputs.append((float(sigma), x.detach().clone()))
        return torch.zeros_like(x)


def test_multistep_renoises_to_tau_with_a_large_eps():
    eps, tau = 0.5, 0.6  # sqrt(tau^2 - eps^2) = 0.332, far from tau = 0.6
    m = Recorder(eps)
    consistency_sample(m, (4, 1, 50_000), sigmas=[2.0, tau], generator=torch.Generator().manual_seed(0))
    (s0, x0), (s1, x1) = m.inputs
    assert (s0, s1) == (2.0, tau)
    assert float(x0.std()) == pytest.approx(2.0, rel=0.02)
    assert float(x1.std()) == pytest.approx(math.sqrt(tau**2 - eps**2), rel=0.02)  # f returned 0 before it

    # zero-shot editing re-noises the same way (CM Alg. 4); nothing known here
    m = Recorder(eps)
    y = torch.zeros(4, 1, 50_000)
    inpaint(m, y, torch.zeros_like(y, dtype=torch.bool), sigmas=[2.0, tau], generator=torch.Generator().manual_seed(0))
    assert float(m.inputs[1][1].std()) == pytest.approx(math.sqrt(tau**2 - eps**2), rel=0.02)


# ----------------------------------------------------------------------------------------------
# 3. online and target share dropout masks, through the real objectives
# ----------------------------------------------------------------------------------------------


def _spy_objectives():
    p = KarrasParam(sigma_min=0.002, sigma_max=1.0, sigma_data=0.1)
    dist = build_distance({"l2": 1.0})
    ict = CTObjective(ConsistencyModel(DropoutSpy(), p), dist, variant="ict", s0=10, s1=40, total_steps=10)
    ct = CTObjective(ConsistencyModel(DropoutSpy(), p), dist, variant="ct", s0=10, s1=40, total_steps=10)
    cd = CDObjective(ConsistencyModel(DropoutSpy(), p), Denoiser(Smooth(seed=3), p), dist, num_scales=10)
    return {"ict": ict, "ct": ct, "cd": cd}


@pytest.mark.parametrize("name", ["ict", "ct", "cd"])
def test_online_and_target_see_the_same_dropout_mask(name):
    obj = _spy_objectives()[name].train()
    masks = []
    for step in range(2):
        DropoutSpy.calls.clear()
        loss, _ = obj(clean_batch(), step=step)
        loss.backward()
        online = [m for grad, m in DropoutSpy.calls if grad]
        target = [m for grad, m in DropoutSpy.calls if not grad]
        assert len(online) == 1 and len(target) == 1, DropoutSpy.calls
        assert torch.equal(online[0], target[0])
        masks.append(online[0])
    assert 0 < float((masks[0] == 0).float().mean()) < 1  # dropout is active,
    assert not torch.equal(masks[0], masks[1])  # and its masks change from step to step


# ----------------------------------------------------------------------------------------------
# 4. pseudo-Huber c = 0.00054 sqrt(dim), dim = every valid element of the item (iCT sec. 3.3)
# ----------------------------------------------------------------------------------------------


def test_pseudo_huber_c_counts_every_channel():
    g = torch.Generator().manual_seed(2)
    B, C, T = 3, 80, 50  # a mel item: dim = C T = 4000, not T = 50
    x, y = torch.randn(B, C, T, generator=g), torch.randn(B, C, T, generator=g)
    x = y + 1e-3 * (x - y)  # small differences, where c matters most

    def ref(dim: int, d2: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        c = scale * 0.00054 * math.sqrt(dim)
        return torch.sqrt(d2 + c * c) - c

    d2 = ((x - y) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(PseudoHuber()(x, y), ref(C * T, d2))
    # with a (B, 1, T) mask: the valid frames of all channels
    mask = torch.zeros(B, 1, T)
    mask[..., :30] = 1
    d2m = ((x - y)[..., :30] ** 2).flatten(1).sum(1)
    torch.testing.assert_close(PseudoHuber()(x, y, mask), ref(C * 30, d2m))
    # as the objectives build it: c scaled by sigma_data / 0.5
    dist = build_distance({"pseudo_huber": 1.0}, huber_c_scale=0.2)
    torch.testing.assert_close(dist(x, y), ref(C * T, d2, 0.2))


# ----------------------------------------------------------------------------------------------
# 5. CT: theta- <- mu(k) theta- + (1 - mu(k)) theta, mu(k) = exp(s0 ln mu0 / N(k)) (CM app. C)
# ----------------------------------------------------------------------------------------------


def _set(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for q in module.parameters():
            q.fill_(value)


def test_ct_target_follows_the_ema_rate():
    p = KarrasParam(sigma_min=0.002, sigma_max=1.0, sigma_data=0.1)
    s0, s1, mu0, K = 2, 150, 0.9, 100
    obj = CTObjective(ConsistencyModel(Smooth(), p), build_distance({"l2": 1.0}), variant="ct", s0=s0, s1=s1,
                      mu0=mu0, total_steps=K)
    for k in (0, 40):  # after_step(k + 1) applies the rate of step k
        n_k = math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1
        mu = math.exp(s0 * math.log(mu0) / n_k)
        assert 0.5 < mu < 1
        _set(obj.target, 1.0)
        _set(obj.model, 0.0)
        obj.after_step(k + 1)
        for q in obj.target.parameters():
            torch.testing.assert_close(q, torch.full_like(q, mu))  # mu * 1 + (1 - mu) * 0

    # CD's target EMA: theta- <- mu theta- + (1 - mu) theta with mu = target_ema (CM Alg. 2)
    cd = CDObjective(ConsistencyModel(Smooth(), p), Denoiser(Smooth(seed=3), p), build_distance({"l2": 1.0}),
                     target_ema=0.95)
    _set(cd.target, 1.0)
    _set(cd.model, 0.0)
    cd.after_step(1)
    for q in cd.target.parameters():
        torch.testing.assert_close(q, torch.full_like(q, 0.95))


# ----------------------------------------------------------------------------------------------
# 6. CM Alg. 4: the first step starts from the known part of y, never from y's unknown part
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigmas", [[1.0], [1.0, 0.3]])
def test_inpainting_ignores_the_unknown_part_of_y(sigmas):
    p = KarrasParam(sigma_min=0.002, sigma_max=1.0, sigma_data=0.1)
    model = ConsistencyModel(Smooth(), p).eval()
    y = clean_batch(2, 1, 256)
    known = torch.ones(2, 1, 256, dtype=torch.bool)
    known[..., 100:160] = False
    y_other = y.clone()
    y_other[..., 100:160] = 3.0  # a non-zero unknown part: must not reach the model
    a = inpaint(model, y, known, sigmas=sigmas, generator=torch.Generator().manual_seed(5))
    b = inpaint(model, y_other, known, sigmas=sigmas, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(a[known], y[known])


# ----------------------------------------------------------------------------------------------
# 7. f(x, eps) == x bit for bit, also when the body runs under bf16 autocast
# ----------------------------------------------------------------------------------------------


def test_boundary_is_exact_under_a_bf16_body():
    p = KarrasParam(sigma_min=0.0002, sigma_max=2.0, sigma_data=0.087)
    model = ConsistencyModel(Smooth(channels=2), p).eval()
    model.body_dtype = torch.bfloat16  # what training with amp=bf16 sets
    x = torch.randn(3, 2, 128, generator=torch.Generator().manual_seed(4))  # not representable in bf16
    assert not torch.equal(x, x.to(torch.bfloat16).float())
    with torch.no_grad():
        for sigma in (p.sigma_min, torch.full((3,), p.sigma_min)):
            out = model(x, sigma)
            assert out.dtype == torch.float32 and torch.equal(out, x)
        away = model(x, 0.5)
    assert away.dtype == torch.float32 and not torch.equal(away, x)
    # the body did run in bf16 (so the test exercises the autocast path)
    seen = []
    handle = model.net.conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    with torch.no_grad():
        model(x, 0.5)
    handle.remove()
    assert seen == [torch.bfloat16]
