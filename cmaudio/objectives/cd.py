"""Consistency distillation (Song et al. 2023, Alg. 2; eq. 7).

For a teacher denoiser D_phi (any callable D(x, sigma, cond) -> E[x_0 | x]):

    n ~ U{1, ..., N-1} (or the iCT lognormal p(n)),  z ~ N(0, I)
    x_{n+1}   = x + sigma_{n+1} z
    x_hat_n   = one Heun (or Euler) step of the PF ODE from sigma_{n+1} to sigma_n with D_phi
    loss      = lambda(sigma_n) d( f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x_hat_n, sigma_n) )
    theta-    <- stopgrad(mu theta- + (1 - mu) theta)      (after each optimizer step)

The teacher and the target network never get gradients; online and target use the same
dropout masks and the same cond-dropout choice. sigma_{1..N} is the student's Karras grid,
which must lie inside the teacher's sigma range when the teacher declares one.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from cmaudio.objectives.base import Objective, SampleRNG, check_choices, consistency_loss, draw_pair
from cmaudio.param import append_dims
from cmaudio.schedules import ema_update
from cmaudio.solvers import get_solver


class CDObjective(Objective):
    """Consistency distillation. model: ConsistencyModel; teacher: frozen Denoiser-like module."""

    kind = "cd"

    def __init__(
        self,
        model,
        teacher: nn.Module,
        distance: nn.Module,
        *,
        num_scales: int = 18,
        solver: str = "heun",
        target_ema: float = 0.95,
        index_sampling: str = "uniform",
        weighting: str = "uniform",
        p_mean: float = -1.1,
        p_std: float = 2.0,
        cond_dropout: float = 0.0,
    ) -> None:
        super().__init__(model)
        check_choices(index_sampling=index_sampling, weighting=weighting)
        self.distance = distance
        self.num_scales = num_scales
        self.solver = get_solver(solver)
        self.target_ema = target_ema
        self.index_sampling, self.weighting = index_sampling, weighting
        self.p_mean, self.p_std = p_mean, p_std
        self.cond_dropout = cond_dropout
        self.target = copy.deepcopy(model)
        self.target.requires_grad_(False)
        teacher.requires_grad_(False)
        teacher.eval()
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never checkpointed
        p = model.param
        t_min, t_max = getattr(teacher, "sigma_min", None), getattr(teacher, "sigma_max", None)
        if t_min is not None and t_max is not None:
            if p.sigma_min < t_min * (1 - 1e-6) or p.sigma_max > t_max * (1 + 1e-6):
                raise ValueError(
                    f"the student's sigma range [{p.sigma_min}, {p.sigma_max}] must lie inside the teacher's "
                    f"[{t_min:.5g}, {t_max:.5g}]; set model.sigma_min/sigma_max accordingly"
                )
        if cond_dropout > 0 and getattr(teacher, "null_cond", None) is None:
            raise ValueError("cond_dropout with CD needs a teacher trained with cond_dropout (it has no null cond)")

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.teacher._apply(fn)  # follow .to(device)
        return self

    def forward(self, x: Tensor, cond: Optional[Tensor] = None, *, mask=None, seeds=None, step: int = 0):
        """x (B, C, T) clean data -> (scalar loss, logs)."""
        rng = SampleRNG(seeds, x.shape[0], x.device)
        N = self.num_scales
        s_lo, s_hi, z, cond_drop = draw_pair(self.model, rng, x, cond, N, index_sampling=self.index_sampling,
                                             p_mean=self.p_mean, p_std=self.p_std, cond_dropout=self.cond_dropout)
        x_hi = x + append_dims(s_hi, x.ndim) * z
        if mask is not None:
            x_hi = x_hi * mask
        with torch.no_grad():  # the teacher's ODE step from sigma_{n+1} to sigma_n
            x_lo = self.solver(self.teacher, x_hi, s_hi, s_lo, cond, mask=mask, cond_drop=cond_drop)
            if mask is not None:
                x_lo = x_lo * mask
        loss, parts = consistency_loss(self, self.target, x_hi, s_hi, x_lo, s_lo, cond, mask, cond_drop,
                                       self.weighting, x0=x)
        logs = {"loss": loss.detach(), "N": float(N), "mu": float(self.target_ema), "sigma_mean": s_hi.mean().detach(),
                **parts}
        return loss, logs

    def after_step(self, step: int) -> None:
        ema_update(self.target, self.model, self.target_ema)

    def target_state(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self.target.state_dict().items()}

    def load_target_state(self, state: dict[str, Tensor]) -> None:
        self.target.load_state_dict(state)
