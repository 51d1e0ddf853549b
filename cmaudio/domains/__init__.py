"""Training domains: what the objective-agnostic loop (cmaudio.train) needs from the data side.

- `base.Domain`: the interface (sigma_data, loader, prepare, validate, cond_channels,
  extra_model_info) and helpers shared by the implementations;
- `wave.WaveDomain`: waveform vocoders (x = audio crops, cond = their mel), validated through
  `cmaudio.vocoder.Vocoder`;
- `meldata`: the mel domain's data — the stand-in cond, normalisation statistics, (mel, cond)
  pairs of a corpus and the seeded segment dataset (used by `cmaudio.mel.MelDecoder` too);
- `mel.MelDomain`: mel decoders (x = normalised log-mel crops, cond = frame-aligned features),
  validated through `cmaudio.mel.MelDecoder`.

Imports point one way: meldata (data level) <- cmaudio.mel (the facade) <- domains.mel; the
package itself imports only `base`, so the facade may import `meldata` without a cycle.
"""

from cmaudio.domains.base import Domain

__all__ = ["Domain"]
