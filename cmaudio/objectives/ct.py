"""Consistency training from data alone: CT (Song et al. 2023, Alg. 3) and iCT (Song & Dhariwal 2023).

    n ~ U{1..N(k)-1} (CT) or p(n) ∝ erf-differences of a lognormal (iCT sec. 3.5),  z ~ N(0, I)
    x_n = x + sigma_n z,   x_{n+1} = x + sigma_{n+1} z        (the SAME z: CM eq. 10)
    loss = lambda(sigma_n) d( f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x_n, sigma_n) )

| variant | N(k)                         | target theta-                      | lambda               | default d     |
|---------|------------------------------|------------------------------------|----------------------|---------------|
| `ct`    | CM app. C, ceil-sqrt curriculum | EMA with mu(k) = exp(s0 ln mu0 / N(k)) | 1                 | (recipe)      |
| `ict`   | iCT eq. 6, doubling curriculum  | stopgrad(theta) (no EMA)            | 1/(sigma_{n+1}-sigma_n) | pseudo-Huber |

Online and target share dropout masks and cond-dropout choices; the target never gets gradients.
For iCT the target is the online network itself evaluated under no_grad.
"""

from __future__ import annotations

import copy
from typing import Optional

from torch import Tensor, nn

from cmaudio.objectives.base import Objective, SampleRNG, check_choices, consistency_loss, draw_pair
from cmaudio.param import append_dims
from cmaudio.schedules import ct_num_scales, ct_target_ema, ema_update, ict_num_scales


class CTObjective(Objective):
    """Consistency training (variant 'ct') or improved consistency training (variant 'ict')."""

    def __init__(
        self,
        model,
        distance: nn.Module,
        *,
        variant: str = "ict",
        total_steps: int = 100_000,
        s0: int = 10,
        s1: int = 1280,
        mu0: float = 0.9,
        index_sampling: Optional[str] = None,
        weighting: Optional[str] = None,
        p_mean: float = -1.1,
        p_std: float = 2.0,
        cond_dropout: float = 0.0,
    ) -> None:
        super().__init__(model)
        if variant not in ("ct", "ict"):
            raise ValueError(f"variant must be 'ct' or 'ict', got {variant!r}")
        # the paper's choices per variant unless given: CT uniform n and lambda = 1, iCT lognormal and 1/dsigma
        index_sampling = index_sampling or ("lognormal" if variant == "ict" else "uniform")
        weighting = weighting or ("ict" if variant == "ict" else "uniform")
        check_choices(index_sampling=index_sampling, weighting=weighting)
        self.kind = variant
        self.distance = distance
        self.total_steps = max(int(total_steps), 1)
        self.s0, self.s1, self.mu0 = s0, s1, mu0
        self.index_sampling, self.weighting = index_sampling, weighting
        self.p_mean, self.p_std = p_mean, p_std
        self.cond_dropout = cond_dropout
        if variant == "ct":
            self.target = copy.deepcopy(model)
            self.target.requires_grad_(False)
        else:
            self.target = None

    # ------------------------------------------------------------------ curricula
    def num_scales(self, step: int) -> int:
        if self.kind == "ct":
            return ct_num_scales(step, self.total_steps, self.s0, self.s1)
        return ict_num_scales(step, self.total_steps, self.s0, self.s1)

    def target_rate(self, step: int) -> float:
        """mu(k) for CT; 0 for iCT (theta- = stopgrad(theta))."""
        if self.kind == "ct":
            return ct_target_ema(step, self.total_steps, self.s0, self.s1, self.mu0)
        return 0.0

    # ------------------------------------------------------------------ loss
    def forward(self, x: Tensor, cond: Optional[Tensor] = None, *, mask=None, seeds=None, step: int = 0):
        """x (B, C, T) clean data -> (scalar loss, logs); step = k, optimizer steps done so far."""
        rng = SampleRNG(seeds, x.shape[0], x.device)
        N = self.num_scales(step)
        s_lo, s_hi, z, cond_drop = draw_pair(self.model, rng, x, cond, N, index_sampling=self.index_sampling,
                                             p_mean=self.p_mean, p_std=self.p_std, cond_dropout=self.cond_dropout)
        x_hi = x + append_dims(s_hi, x.ndim) * z  # the SAME z at both levels (CM eq. 10)
        x_lo = x + append_dims(s_lo, x.ndim) * z
        if mask is not None:
            x_hi, x_lo = x_hi * mask, x_lo * mask
        target_net = self.target if self.target is not None else self.model
        loss, parts = consistency_loss(self, target_net, x_hi, s_hi, x_lo, s_lo, cond, mask, cond_drop,
                                       self.weighting, x0=x)
        logs = {
            "loss": loss.detach(),
            "N": float(N),
            "mu": float(self.target_rate(step)),
            "sigma_mean": s_hi.mean().detach(),
            **parts,
        }
        return loss, logs

    def after_step(self, step: int) -> None:
        if self.target is not None:
            # the rate that belongs to the step just taken (k = step - 1)
            ema_update(self.target, self.model, self.target_rate(max(step - 1, 0)))

    def target_state(self) -> dict[str, Tensor]:
        if self.target is None:
            return {}
        return {k: v.detach() for k, v in self.target.state_dict().items()}

    def load_target_state(self, state: dict[str, Tensor]) -> None:
        if self.target is None:
            if state:
                raise ValueError("iCT keeps no target network, but the checkpoint has one")
            return
        self.target.load_state_dict(state)
