"""Shared plumbing of the training objectives.

- `SampleRNG`: per-sample randomness. When a batch carries `seeds` (B,) int64, every random
  draw of item b (noise, noise level index, cond dropout) comes from its own generator seeded by
  seeds[b], drawn on the CPU and moved to the data's device. A sample's randomness is then a
  function of its seed alone: the same on CPU and GPU, whatever the batch size or the number of
  processes it is split over (this is what makes 2-process DDP equal 1-process training), and
  exact on resume. Without seeds, the global torch RNG of the data's device is used, which is
  what a TTS stack calling an objective inside its own loop gets.
- `same_dropout`: runs a forward pass under a forked RNG seeded identically for the online and
  the target network, so both see the same dropout masks (CM sec. 5 / the reference code's
  behaviour) on CPU and CUDA alike.
- `Objective`: the interface the training loop knows. forward(x, cond, mask=..., seeds=...,
  step=...) -> (loss, logs) and after_step(step) after each optimizer step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch
from torch import Tensor, nn

from cmaudio.schedules import sample_lognormal_index, sample_uniform_index


class SampleRNG:
    """Random draws for a batch, per item when seeds are given.

    seeds: (B,) int64 tensor or None. device: where results live.
    """

    def __init__(self, seeds: Optional[Tensor], batch_size: int, device: torch.device) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.gens = None
        if seeds is not None:
            seeds = seeds.reshape(-1).tolist()
            if len(seeds) != batch_size:
                raise ValueError(f"got {len(seeds)} seeds for a batch of {batch_size}")
            self.gens = [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in seeds]

    def randn(self, *shape: int) -> Tensor:
        """Standard normal (B, *shape), float32."""
        if self.gens is None:
            return torch.randn(self.batch_size, *shape, device=self.device)
        out = torch.stack([torch.randn(tuple(shape), generator=g) for g in self.gens])
        return out.to(self.device)

    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) (B, *shape), float64 so that index sampling is exact."""
        if self.gens is None:
            return torch.rand(self.batch_size, *shape, device=self.device, dtype=torch.float64)
        out = torch.stack([torch.rand(tuple(shape), generator=g, dtype=torch.float64) for g in self.gens])
        return out.to(self.device)


@contextmanager
def forked_rng(seed: int, device: torch.device):
    """Run a block with the global RNG (CPU and the CUDA device) seeded by `seed`, then restore it."""
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def draw_dropout_seed() -> int:
    """A seed for `forked_rng`, drawn from the global CPU RNG (saved in checkpoints)."""
    return int(torch.randint(0, 2**62, (1,)).item())


def draw_pair(model, rng: "SampleRNG", x: Tensor, cond: Optional[Tensor], num_scales: int, *, index_sampling: str,
              p_mean: float, p_std: float, cond_dropout: float):
    """Draw, per item, the adjacent noise levels (sigma_n, sigma_{n+1}) of an N-point Karras grid,
    the noise z (B, C, T) and the cond-dropout choice (CM Alg. 2/3; iCT sec. 3.5 for 'lognormal').

    Returns (s_lo (B,), s_hi (B,), z, cond_drop (B,) bool or None). The draw order per item is
    fixed (index uniform, dropout uniform, noise), so a seed always gives the same draw.
    """
    p = model.param
    u_idx, u_drop = rng.rand(), rng.rand()
    z = rng.randn(*x.shape[1:])
    if index_sampling == "lognormal":
        n = sample_lognormal_index(p, num_scales, p_mean, p_std, u_idx)
    else:
        n = sample_uniform_index(num_scales, u_idx)
    grid = p.grid(num_scales, device=x.device)
    cond_drop = (u_drop < cond_dropout) if (cond_dropout > 0 and cond is not None) else None
    return grid[n].to(torch.float32), grid[n + 1].to(torch.float32), z, cond_drop


SIGMA_BUCKETS = (1e-3, 1e-2, 1e-1, 1.0)  # decade edges of sigma_{n+1} for the per-level loss logs


def sigma_bucket_logs(sigma: Tensor, per_item: Tensor, prefix: str = "loss_sigma") -> dict[str, Tensor]:
    """Mean of `per_item` (B,) within each decade of `sigma` (B,), keyed '<prefix>/<lo>-<hi>';
    only buckets that hold an item of this batch appear (the training loop averages over steps)."""
    edges = (0.0,) + SIGMA_BUCKETS + (float("inf"),)
    s, v = sigma.detach().float(), per_item.detach().float()
    out = {}
    for lo, hi in zip(edges, edges[1:]):
        sel = (s >= lo) & (s < hi)
        if bool(sel.any()):
            out[f"{prefix}/{lo:g}-{hi:g}"] = v[sel].mean()
    return out


def consistency_loss(objective: "Objective", target_net, x_hi: Tensor, s_hi: Tensor, x_lo: Tensor, s_lo: Tensor,
                     cond: Optional[Tensor], mask: Optional[Tensor], cond_drop: Optional[Tensor], weighting: str,
                     x0: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The CD/CT loss and its logs.

    consistency term: lambda(sigma_n) d(f_theta(x_{n+1}, sigma_{n+1}), f_theta-(x_n, sigma_n)) (CM eq. 7
    and 10), with the same dropout masks for the online and the target network and no gradient
    through the target; lambda = 1 ('uniform') or 1/(sigma_{n+1} - sigma_n) ('ict').

    extras (objective.recon, objective.consistency_weight, objective.adversarial): loss = w_c * consistency
    + recon(f_theta(x_{n+1}), x0) + adversarial(f_theta(x_{n+1}), x0): a reconstruction of the clean crop x0 from
    the same online output (WaveFM's auxiliary loss, CTM's DSM-like term) and HiFi-GAN's LSGAN + feature
    matching terms (objectives.adversarial). With recon and adversarial None and w_c = 1 (the defaults) the loss
    is exactly the paper's, and with w_c = 0 the target network is not even run. Returns (scalar loss, logs: the terms and the
    per-item loss by decade of sigma_{n+1}, see sigma_bucket_logs).
    """
    w_c = float(getattr(objective, "consistency_weight", 1.0))
    recon = getattr(objective, "recon", None)
    seed = draw_dropout_seed()
    with forked_rng(seed, x_hi.device):
        online = objective.online(x_hi, s_hi, cond, mask=mask, cond_drop=cond_drop)
    per_item = torch.zeros_like(s_hi)
    logs: dict[str, Tensor] = {}
    if w_c > 0:
        with torch.no_grad(), forked_rng(seed, x_hi.device):
            target = target_net(x_lo, s_lo, cond, mask=mask, cond_drop=cond_drop)
        weight = 1.0 / (s_hi - s_lo) if weighting == "ict" else torch.ones_like(s_hi)
        cons = weight * objective.distance(online, target.detach(), mask)
        per_item = cons if w_c == 1.0 else w_c * cons
        logs["consistency"] = cons.detach().mean()
    if recon is not None:
        if x0 is None:
            raise ValueError("a reconstruction term needs the clean data x0")
        rec = recon(online, x0, mask)
        per_item = per_item + rec
        logs["recon"] = rec.detach().mean()
    adversarial = getattr(objective, "adversarial", None)
    if adversarial is not None:
        if x0 is None:
            raise ValueError("an adversarial term needs the clean data x0")
        adv, adv_logs = adversarial.generator(online, x0, mask)
        per_item = per_item + adv
        logs.update(adv_logs)
    logs.update(sigma_bucket_logs(s_hi, per_item))
    return per_item.mean(), logs


def check_choices(*, index_sampling: str, weighting: str) -> None:
    """Refuse misspelt options instead of silently falling back to the uniform default."""
    if index_sampling not in ("uniform", "lognormal"):
        raise ValueError(f"index_sampling must be 'uniform' or 'lognormal', got {index_sampling!r}")
    if weighting not in ("uniform", "ict"):
        raise ValueError(f"weighting must be 'uniform' or 'ict', got {weighting!r}")


def masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Per-item mean over all but the batch dim; with a (B, 1, T) mask, over valid positions only."""
    if mask is None:
        return x.flatten(1).mean(1)
    m = mask.expand_as(x).to(x.dtype)
    return (x * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


class Objective(nn.Module):
    """Interface of a training objective.

    `model` is the trainable network wrapper (Denoiser or ConsistencyModel). `online` is what
    the gradient-carrying forward pass calls; the training loop may replace it with a
    DistributedDataParallel wrapper of `model`. Frozen helpers (teacher) are not submodules,
    so `state_dict()` of an objective holds only the model, for CD/CT the target network, and
    with the adversarial extra its discriminator (`adversarial.disc`, trained by the loop's own
    optimizer from `adversarial.discriminator_loss()` after each step).
    """

    kind = "base"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.set_online(model)
        self.consistency_weight = 1.0  # CD/CT: weight of the consistency term (see consistency_loss)
        self.recon: Optional[nn.Module] = None  # CD/CT: reconstruction distance against the clean data
        # CD/CT: objectives.adversarial.AdversarialTerm (its discriminator is trained by the loop's second optimizer)
        self.adversarial: Optional[nn.Module] = None

    def set_extras(self, *, recon: Optional[nn.Module] = None, consistency_weight: float = 1.0,
                   adversarial: Optional[nn.Module] = None) -> None:
        """CD/CT extras beside the consistency term (off by default: the paper's loss)."""
        if not (consistency_weight >= 0):
            raise ValueError(f"consistency_weight must be >= 0, got {consistency_weight}")
        if consistency_weight == 0 and recon is None and adversarial is None:
            raise ValueError("consistency_weight 0 without a reconstruction or adversarial term leaves nothing to train")
        self.consistency_weight = float(consistency_weight)
        self.recon = recon
        self.adversarial = adversarial

    def set_online(self, module: nn.Module) -> None:
        """Use `module` (e.g. DDP(model)) for the gradient-carrying call; not registered as a submodule."""
        object.__setattr__(self, "online", module)

    def forward(
        self,
        x: Tensor,
        cond: Optional[Tensor] = None,
        *,
        mask: Optional[Tensor] = None,
        seeds: Optional[Tensor] = None,
        step: int = 0,
    ) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover - interface
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after each optimizer step with the number of steps done (target EMA updates)."""

    def target_state(self) -> dict[str, Tensor]:
        """Tensors besides the model that a checkpoint must keep (the target network)."""
        return {}

    def load_target_state(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError("this objective keeps no target state")

    def train(self, mode: bool = True):
        super().train(mode)
        return self
