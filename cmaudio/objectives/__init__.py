"""Training objectives as plain loss modules: `loss, logs = objective(x, cond, mask=..., step=...)`.

- DSMObjective: EDM denoising score matching (the teacher).
- CDObjective: consistency distillation from a teacher denoiser.
- CTObjective: consistency training, variants 'ct' (Song et al. 2023) and 'ict' (Song & Dhariwal 2023).
- distances: l2, l1, pseudo_huber, mrstft, mel_l1, phase and weighted sums.
- adversarial: AdversarialTerm, the optional LSGAN + feature-matching extra of CD/CT (HiFi-GAN's losses).
"""

from cmaudio.objectives.adversarial import AdversarialTerm
from cmaudio.objectives.base import Objective, SampleRNG
from cmaudio.objectives.cd import CDObjective
from cmaudio.objectives.ct import CTObjective
from cmaudio.objectives.distances import L1, L2, MRSTFT, CombinedDistance, MelL1, PseudoHuber, build_distance
from cmaudio.objectives.dsm import DSMObjective

__all__ = [
    "AdversarialTerm",
    "Objective",
    "SampleRNG",
    "DSMObjective",
    "CDObjective",
    "CTObjective",
    "L1",
    "L2",
    "MRSTFT",
    "MelL1",
    "PseudoHuber",
    "CombinedDistance",
    "build_distance",
]
