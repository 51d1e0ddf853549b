"""cmaudio: consistency models for audio (Song et al., ICML 2023) — one-step vocoders and mel decoders.

Public API:
    KarrasParam                      the EDM/consistency parameterization (sigma grid, scalings)
    Denoiser, ConsistencyModel       a network wrapped by the parameterization
    DSMObjective, CDObjective, CTObjective   training objectives as plain loss modules
    MelSpectrogram, PRESETS          the mel conventions of common TTS stacks
    Vocoder                          mel -> waveform (from_pretrained, decode, inpaint, bwe)
    MelDecoder                       frame-level features -> mel (for TTS stacks)
    InferenceSpec                    what Vocoder and MelDecoder are built from (no training sections)
    load_diffwave_checkpoint         a reference DiffWave checkpoint as an EDM denoiser
"""

__version__ = "0.1.0"

from cmaudio.diffwave_ref import load_diffwave_checkpoint
from cmaudio.features import PRESETS, MelSpectrogram
from cmaudio.generator import InferenceSpec
from cmaudio.mel import MelDecoder
from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.objectives import CDObjective, CTObjective, DSMObjective
from cmaudio.param import KarrasParam
from cmaudio.vocoder import Vocoder


__all__ = [
    "__version__",
    "KarrasParam",
    "Denoiser",
    "ConsistencyModel",
    "DSMObjective",
    "CDObjective",
    "CTObjective",
    "MelSpectrogram",
    "PRESETS",
    "Vocoder",
    "MelDecoder",
    "InferenceSpec",
    "load_diffwave_checkpoint",
]
