"""The optional adversarial extra of CD/CT/iCT: least-squares GAN + feature matching (HiFi-GAN sec. 2.3).

With a discriminator set D = {D_k} (cmaudio.nets.discriminators.MultiDiscriminator: each D_k maps a waveform
(B, 1, T) to (logits, feature maps)), g = f_theta(x_{n+1}, sigma_{n+1}) the online output and x the clean crop:

    generator, per item:      L_adv(g) = sum_k mean (1 - D_k(g))^2                      (HiFi-GAN eq. 2)
                              L_fm(g)  = sum_k sum_l mean |D_k^l(x) - D_k^l(g)|         (HiFi-GAN eq. 3)
    added to the loss as      w_adv L_adv + w_fm L_fm   (HiFi-GAN: w_fm = 2 beside a mel term of 45)
    discriminator, per batch: L_D = sum_k mean (1 - D_k(x))^2 + mean D_k(sg(g))^2        (HiFi-GAN eq. 1)

The generator terms are computed with D's parameters frozen for g (no gradient of the generator loss reaches
them: x's feature maps enter L_fm detached). sg(g) and D's logits of x (with their graph) are kept for every
micro-batch until the training loop's discriminator step, which thus uses the very outputs the generator
step was judged on (as HiFi-GAN's loop does) and runs x through D only once per step. PeriodWave-Turbo and CTM add such a
term to fine-tune few-step generators; here it is an extra beside the consistency term, off by default
(objective.adversarial = 0), and the objectives are the papers' when it is off.

This module imports nothing of cmaudio.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


def _item_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)


class AdversarialTerm(nn.Module):
    """Generator terms and the discriminator loss around a discriminator `disc`.

    disc(y (B, 1, T)) -> list of (logits (B, -1), [feature maps (B, ...)]). weight = w_adv > 0,
    feature_matching = w_fm >= 0. Inputs are waveforms (B, 1, T) of equal length (no padded batches).
    """

    def __init__(self, disc: nn.Module, *, weight: float, feature_matching: float = 0.0) -> None:
        super().__init__()
        if not weight > 0 or not feature_matching >= 0:
            raise ValueError(f"adversarial weight must be > 0 and feature matching >= 0 (got {weight}, {feature_matching})")
        self.disc = disc
        self.weight, self.feature_matching = float(weight), float(feature_matching)
        self._pending: list[tuple[Tensor, list[Tensor]]] = []

    def generator(self, fake: Tensor, real: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(w_adv L_adv + w_fm L_fm per item (B,), logs {'adv', 'fm'}); remembers sg(fake) and D(real) for the D step."""
        if mask is not None and not bool(mask.all()):
            raise ValueError("the adversarial term does not support padded batches")
        real_out = self.disc(real)  # with D's gradient: its logits are kept for the D step's real half
        params = list(self.disc.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            fake_out = self.disc(fake)
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
        adv = sum(_item_mean((1 - logits.float()) ** 2) for logits, _ in fake_out)
        fm = sum(_item_mean((fr.detach().float() - ff.float()).abs())
                 for (_, maps_r), (_, maps_f) in zip(real_out, fake_out) for fr, ff in zip(maps_r, maps_f))
        self._pending.append((fake.detach(), [logits for logits, _ in real_out]))
        total = self.weight * adv + (self.feature_matching * fm if self.feature_matching else 0.0)
        return total, {"adv": adv.detach().mean(), "fm": fm.detach().mean()}

    def discriminator_loss(self) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D averaged over the micro-batches remembered since the last call (which it forgets), and logs
        {'disc', 'disc_real', 'disc_fake'} (the mean logits). The real half reuses the logits the generator
        pass computed (D has not changed since), so x goes through D once per step. Raises when no generator
        step came before."""
        if not self._pending:
            raise RuntimeError("discriminator_loss needs a generator step first")
        pending, self._pending = self._pending, []
        total = torch.zeros(())
        real_logit, fake_logit = 0.0, 0.0
        for fake, real_logits in pending:
            fake_logits = [logits for logits, _ in self.disc(fake)]
            loss = sum(((1 - lr.float()) ** 2).mean() + (lf.float() ** 2).mean()
                       for lr, lf in zip(real_logits, fake_logits))
            total = total.to(loss.device) + loss / len(pending)
            real_logit += float(sum(lr.detach().float().mean() for lr in real_logits)) / len(real_logits) / len(pending)
            fake_logit += float(sum(lf.detach().float().mean() for lf in fake_logits)) / len(fake_logits) / len(pending)
        return total, {"disc": total.detach(), "disc_real": torch.tensor(real_logit), "disc_fake": torch.tensor(fake_logit)}

    def forget(self) -> None:
        """Drop the remembered pairs (the loop skipped a non-finite step)."""
        self._pending = []
