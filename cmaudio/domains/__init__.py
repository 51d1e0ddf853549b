"""Training domains: what the objective-agnostic loop (cmaudio.train) needs from the data side.

- `base.Domain`: the interface (sigma_data, loader, prepare, validate, cond_channels,
  extra_model_info) and helpers shared by the implementations;
- `wave.WaveDomain`: waveform vocoders (x = audio crops, cond = their mel), validated through
  `cmaudio.vocoder.Vocoder`;
- `mel.MelDomain`: mel decoders (x = normalised log-mel crops, cond = frame-aligned features),
  validated through `cmaudio.mel.MelDecoder`.

The mel domain's data (the stand-in cond, normalisation statistics, (mel, cond) pairs, the seeded
segment dataset) live in `cmaudio.data.meldata`, below both `domains.mel` and the decoder facade
`cmaudio.mel`, which uses them too. Imports point one way: data.meldata <- cmaudio.mel (the facade)
<- domains.mel; no facade imports a domain, and the package itself imports only `base`.
"""

from cmaudio.domains.base import Domain

__all__ = ["Domain"]
