"""The Vocoder facade: mel -> waveform with a consistency model (or a teacher), as users call it.

    voc = Vocoder.from_pretrained()               # the small default model shipped in the package
    audio = voc.decode(mel, steps=1)              # (B, frames * hop) in [-1, 1]
    audio = voc(wave)                             # copy-synthesis: decode(voc.mel(wave))

The vocoder is built from an inference spec (cmaudio.generator.InferenceSpec: kind, mel preset,
network and parameterization, default sigmas), never from training sections; a model directory
(cmaudio.checkpoint) gives one (`ModelDirInfo.spec`) and holds config.json and model.safetensors;
loading never unpickles. The vocoder owns its MelSpectrogram (features ship with the model), so
copy-synthesis is exact to the convention it was trained on.

Long input is generated in chunks (`chunk_seconds`): each network call sees its chunk plus a
context of at least the network's receptive field on both sides, and neighbouring chunks are
cross-faded over a few frames where both are exact, so chunked audio equals unchunked audio away
from the seams up to float rounding, at bounded memory.

Noise: each call draws one seed from its `generator` (advancing it by one draw) and the noise of
step k at sample t is a function of (seed, k, t) alone (`sampling.indexed_noise`): a batch gives
each item the audio decoding it alone gives with a generator in the same state, the noise of a
sample does not depend on the signal's length, padding, or how it is chunked, and a seed gives the
same audio on CPU and GPU.

After the last step, `projection` iterations of the mel projection (cmaudio.projection) pull the
output's spectral envelope onto the input mel, chunk by chunk like the network (with enough context
that the result equals the whole-signal projection); the model directory records how many (config
sampling.projection). It needs at least `projection.min_frames` frames (2 for hifigan, 3 for the
centred reflect-padded presets); shorter mels are refused unless the projection is off.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from cmaudio import checkpoint as ckpt
from cmaudio.build import build_for_weights, build_generator
from cmaudio.config import Config, replace
from cmaudio.errors import CheckpointError, DataError
from cmaudio.features import MelSpectrogram, can_convert, convert, get_preset
from cmaudio.generator import GeneratorDefaults, InferenceSpec, check_sigmas, check_steps
from cmaudio.projection import check_iters, mel_projection, min_frames
from cmaudio.sampling import (bandwidth_extension, check_generator, consistency_sample, draw_seed, indexed_noise,
                              inpaint, ode_nfe, ode_sample, teacher_sigmas)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "pretrained" / "default"


def receptive_field(net: nn.Module) -> int:
    """One-sided receptive field of a network in samples (conservative default if unknown)."""
    rf = getattr(net, "receptive_field", None)
    return int(math.ceil(rf())) if callable(rf) else 8192


class Chunked:
    """Call a model chunk by chunk along time, with receptive-field context and cross-fades.

    model(x (B, C, T), sigma, cond (B, C_cond, T / hop)) -> (B, C, T). Chunks are `chunk` frames
    (cores), each computed with `context` frames on both sides (>= receptive field / hop) and
    extended by `fade` frames into the next core, where the two are linearly cross-faded.
    """

    def __init__(self, model: nn.Module, *, hop: int, chunk: int, context: int, fade: int = 4) -> None:
        self.model, self.hop, self.chunk, self.context, self.fade = model, hop, chunk, context, fade
        self.param = model.param

    def __call__(self, x: Tensor, sigma, cond: Optional[Tensor] = None, **kw) -> Tensor:
        hop, F = self.hop, cond.shape[-1]
        out = torch.zeros_like(x, dtype=torch.float32)
        weight = torch.zeros(x.shape[-1], device=x.device)
        for a in range(0, F, self.chunk):
            b = min(a + self.chunk + self.fade, F)  # core plus the fade into the next core
            lo, hi = max(a - self.context, 0), min(b + self.context, F)
            y = self.model(x[..., lo * hop : hi * hop], sigma, cond[..., lo:hi], **kw)
            core = y[..., (a - lo) * hop : (b - lo) * hop]
            w = torch.ones(core.shape[-1], device=x.device)
            nf = min(self.fade * hop, core.shape[-1])
            if a > 0:  # fade in over the previous chunk's tail
                w[:nf] = torch.linspace(0, 1, nf + 2, device=x.device)[1:-1]
            if b < F:  # fade out over the next chunk's head
                w[-nf:] = torch.minimum(w[-nf:], torch.linspace(1, 0, nf + 2, device=x.device)[1:-1])
            out[..., a * hop : b * hop] += core * w
            weight[a * hop : b * hop] += w
        return out / weight.clamp_min(1e-12)


def mel_input(mel: Any) -> Tensor | np.ndarray:
    """The checks every user mel passes, whatever its layout or container -> a float Tensor or array.

    Tensors keep their device (bfloat16/float16 become float32); lists of equal-shape arrays or
    tensors are stacked. Refused, naming `mel`: complex, bool, object or string dtypes, ragged
    batches, empty input, a rank other than 2 or 3, NaN or inf.
    """
    if isinstance(mel, (list, tuple)) and mel and all(isinstance(m, (Tensor, np.ndarray)) for m in mel):
        shapes = {tuple(m.shape) for m in mel}
        if len(shapes) > 1:
            raise DataError(f"mel is a ragged batch (shapes {sorted(shapes)[:3]}); pad to one length or decode each")
        mel = torch.stack([torch.as_tensor(m) for m in mel]) if isinstance(mel[0], Tensor) else np.stack(mel)
    if isinstance(mel, Tensor):
        if mel.is_complex() or mel.dtype == torch.bool:
            raise DataError(f"mel has dtype {mel.dtype}, not a real number type; pass a float array")
        x = mel.detach()
        x = x.to(torch.float32) if (x.is_floating_point() and x.dtype != torch.float64) else x
        shape, ndim, size = tuple(x.shape), x.ndim, x.numel()
    else:
        try:
            x = np.asarray(mel)
        except (ValueError, TypeError):
            raise DataError("mel is a ragged batch or not an array (items of different lengths?); pad to one length "
                            "or decode each") from None
        if x.dtype == object:
            raise DataError("mel is a ragged batch or holds Python objects; pass one float array")
        if x.dtype.kind not in "fiu":
            raise DataError(f"mel has dtype {x.dtype}, not a real number type; pass a float array")
        shape, ndim, size = x.shape, x.ndim, x.size
    if size == 0:
        raise DataError(f"mel is empty (shape {shape})")
    if ndim not in (2, 3):
        raise DataError(f"mel must be 2-D (n_mels, frames) or 3-D (batch, n_mels, frames); got {ndim}-D shape {shape}")
    finite = bool(torch.isfinite(x).all()) if isinstance(x, Tensor) else bool(np.all(np.isfinite(x)))
    if not finite:
        raise DataError("mel holds NaN or inf values")
    return x


MEL_PLAUSIBLE_ABS = 1e3  # no log-mel convention (ln, log10, dB, normalised) reaches this magnitude


def implausible_mel(mel) -> Optional[str]:
    """A short warning when a mel's values are far outside every log-mel convention, else None.

    Such values (e.g. 1e30, or a linear-magnitude spectrogram) still vocode, to noise or silence.
    """
    a = mel.detach().abs() if isinstance(mel, Tensor) else torch.from_numpy(np.abs(np.asarray(mel, dtype=np.float64)))
    if a.numel() == 0:
        return None
    peak = float(a.max())
    if not math.isfinite(peak) or peak <= MEL_PLAUSIBLE_ABS:
        return None
    return (f"mel values reach {peak:.3g}, far outside any log-mel's range (|x| <= {MEL_PLAUSIBLE_ABS:g}); is it a "
            "linear or unnormalised spectrogram? the audio will be meaningless")


def loud_audio(audio, clips: bool) -> Optional[str]:
    """A short warning when copy-synthesis input peaks above full scale (|x| > 1), else None.

    Such audio (a float file) is not refused: with a preset that clips its input (`clips`, DiffWave's
    stack) the mel is of the clipped audio; otherwise the mel keeps the peaks, and the vocoded audio
    is clipped to [-1, 1] by decode's clamp (and by 16-bit files). Neither is silent.
    """
    a = audio.detach() if isinstance(audio, Tensor) else torch.as_tensor(np.asarray(audio))
    peak = float(a.abs().max()) if a.numel() else 0.0
    if not peak > 1.0:
        return None
    stage = "clipped to [-1, 1] before analysis, as the preset's stack does" if clips else \
        "the vocoded audio is clipped to [-1, 1]"
    return f"audio peaks at {peak:.3g}, above full scale: {stage}; scale it by {1 / peak:.3g} to keep its peaks"


class Vocoder(GeneratorDefaults, nn.Module):
    """Mel-conditioned waveform generator.

    Built from an inference spec (cmaudio.generator.InferenceSpec: kind, mel preset, network and
    parameterization, default sigmas), never from the training sections. Attributes: spec, sample_rate
    (Hz), hop_length (samples per frame), n_mels, preset (mel convention name), kind ('consistency' or
    'denoiser'), model (the parameterized network), config (the training Config the weights came from,
    when known: provenance, written back by save_pretrained, and the split rule `cmaudio evaluate` uses;
    else None), info (the model directory's `checkpoint.ModelDirInfo`, when loaded by from_pretrained).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InferenceSpec,
        *,
        config: Optional[Config] = None,
        chunk_seconds: float = 20.0,
    ) -> None:
        super().__init__()
        self._check_spec(model, spec, "wave")
        self.model = model
        self.spec = spec
        self.config = config
        self.features = MelSpectrogram(spec.preset)
        self.chunk_seconds = chunk_seconds
        self.info: Optional[ckpt.ModelDirInfo] = None
        self.model.eval()

    # ------------------------------------------------------------------ properties
    def nfe(self, steps: int) -> int:
        """Network evaluations of decode(steps), from the samplers: len(sigmas) for a consistency model
        (CM Alg. 1), `sampling.ode_nfe` (counted: 2 steps + 1 with Heun and the final step to 0) for a teacher."""
        if self.kind == "consistency":
            return len(self.sigmas_for(steps))
        return ode_nfe(teacher_sigmas(self.model.param, steps))

    @property
    def projection(self) -> int:
        """Mel-projection iterations `decode` applies after the last step (cmaudio.projection; 0 = off): the
        spec's, from the model directory or the recipe's sampling.projection; assigning replaces it."""
        return self.spec.projection

    @projection.setter
    def projection(self, iters: int) -> None:
        self.spec = dataclasses.replace(self.spec, projection=check_iters(iters))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model_dir: Optional[str | Path] = None, device: str | torch.device = "cpu") -> "Vocoder":
        """Load a model directory (None: the default model shipped inside the package)."""
        model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        if model_dir == DEFAULT_MODEL_DIR and not (model_dir / ckpt.CONFIG_FILE).is_file():
            raise CheckpointError(f"no default model is installed at {model_dir}; pass -m MODEL_DIR")
        info, weights = ckpt.load_model_dir(model_dir)
        spec = info.spec
        if spec.domain != "wave":
            raise CheckpointError(f"{model_dir} holds a mel decoder (model.domain = mel); load it with MelDecoder")
        model = build_for_weights(lambda: build_generator(spec), weights, f"{model_dir / ckpt.MODEL_FILE}")
        voc = cls(model, spec, config=info.config)
        voc.info = info
        return voc.to(device)

    def save_pretrained(self, model_dir: str | Path, extra: Optional[dict[str, Any]] = None, *,
                        overwrite: bool = False) -> None:
        """Write config.json + model.safetensors (this vocoder's current weights); files already there are
        replaced only with `overwrite`."""
        sigmas = {k: self.sigmas_for(k) for k in (1, 2, 3, 4)} if self.kind == "consistency" else {}
        config = self.config if self.config is not None else self.spec.to_config()
        if config.sampling.projection != self.projection:  # the current default wins over the training recipe's
            config = replace(config, sampling={"projection": self.projection})
        info = ckpt.ModelDirInfo(kind=self.kind, config=config, sigma_data=self.spec.sigma_data,
                                 domain_info=self.spec.domain_info, default_sigmas=sigmas, extra=extra or {})
        ckpt.save_model_dir(Path(model_dir), weights=self.model.state_dict(), info=info, overwrite=overwrite)

    # ------------------------------------------------------------------ features
    def mel(self, audio: Tensor | np.ndarray) -> Tensor:
        """Log-mel of audio (T,) or (B, T) at `sample_rate`, in this model's preset -> (B, n_mels, frames)."""
        a = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio, dtype=torch.float32)
        if self.features.preset.clip_audio:  # the stack clamps its input (DiffWave); the others see it as is
            a = a.clamp(-1.0, 1.0)
        return self.features.to(self.device)(a.to(self.device))

    def prepare_mel(self, mel: Tensor | np.ndarray, *, preset: Optional[str] = None, layout: str = "auto") -> Tensor:
        """Validate a user mel and bring it to (B, n_mels, frames) float32 in this model's convention.

        Accepts (n_mels, T), (T, n_mels), with or without a batch axis. layout: auto |
        mels-first | time-first. A mel in another preset's convention is converted when exact.
        """
        arr = mel_input(mel)
        arr = arr.cpu().numpy() if isinstance(arr, Tensor) else arr
        src = preset or self.preset
        n = get_preset(src).n_mels
        if src != self.preset and not can_convert(src, self.preset):
            convert(np.zeros((n, 1), dtype=np.float32), src, self.preset)  # raises with both conventions named
        a = arr if arr.ndim == 3 else arr[None]
        if layout == "mels-first":
            pass
        elif layout == "time-first":
            a = np.swapaxes(a, 1, 2)
        elif layout == "auto":
            if a.shape[1] == n and a.shape[2] == n:
                pass  # square: mels-first is the convention
            elif a.shape[2] == n and a.shape[1] != n:
                a = np.swapaxes(a, 1, 2)
        else:
            raise DataError(f"unknown layout {layout!r}; use auto, mels-first or time-first")
        if a.shape[1] != n:
            raise DataError(
                f"mel has shape {arr.shape} but the {src!r} convention has {n} mel bins; pass a {n}-bin mel "
                "(or --preset/--layout to say what it is)"
            )
        if src != self.preset:
            a = convert(a.astype(np.float64), src, self.preset)
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    # ------------------------------------------------------------------ generation
    def _chunk_frames(self) -> int:
        """Frames per chunk of the network and of the projection (`chunk_seconds`)."""
        return max(int(self.chunk_seconds * self.sample_rate / self.hop_length), 1)

    def _callable(self, frames: int) -> nn.Module | Chunked:
        chunk = self._chunk_frames()
        if frames <= chunk:
            return self.model
        context = -(-receptive_field(self.model.net) // self.hop_length) + 2
        return Chunked(self.model, hop=self.hop_length, chunk=chunk, context=context)

    @torch.no_grad()
    def decode(
        self,
        mel: Tensor | np.ndarray,
        steps: int = 1,
        sigmas: Optional[Sequence[float]] = None,
        generator: Optional[torch.Generator] = None,
        *,
        clamp: bool = True,
        projection: Optional[int] = None,
    ) -> Tensor:
        """mel (B, n_mels, frames) or (n_mels, frames) in this preset -> audio (B, frames * hop).

        steps: consistency steps (NFE = steps) or, for a teacher, Heun ODE steps. sigmas
        overrides the noise levels (decreasing). projection: mel-projection iterations after the last
        step (cmaudio.projection; None: this vocoder's `projection`; 0: off; with it on the mel needs
        at least `projection.min_frames` frames). Audio is clamped to [-1, 1] unless clamp=False.

        generator: a torch.Generator or None (torch's global RNG); one seed is drawn from it per call
        and the noise is a function of (that seed, step, sample index) alone: each item of a batch gets
        the audio decoding it alone gives from a generator in the same state, whatever the batch's
        other items, and the same generator state gives the same audio for any chunking.
        """
        check_generator(generator)
        iters = self.projection if projection is None else check_iters(projection)
        x = mel_input(mel)  # one set of checks for every layout, container and dtype
        m = x if (isinstance(x, Tensor) and x.ndim == 3 and x.shape[1] == self.n_mels) else self.prepare_mel(x)
        m = m.to(self.device, torch.float32)
        steps = check_steps(steps)
        p = self.model.param
        consistency = self.kind == "consistency"
        if sigmas is not None:
            sigmas = check_sigmas(sigmas, sigma_min=float(p.sigma_min), sigma_max=float(p.sigma_max) if consistency else None)
        B, _, F = m.shape
        if iters and F < min_frames(self.features):
            raise DataError(f"mel has {F} frame(s); the {self.preset!r} mel projection needs at least "
                            f"{min_frames(self.features)} (decode shorter mels with projection=0, --projection 0)")
        shape = (B, 1, F * self.hop_length)
        fn = self._callable(F)
        z = indexed_noise(draw_seed(generator), shape, self.device)
        if consistency:
            s = tuple(sigmas) if sigmas is not None else self.sigmas_for(steps)
            audio = consistency_sample(fn, shape, sigmas=s, cond=m, generator=z, device=self.device)
        else:
            s = list(sigmas) if sigmas is not None else teacher_sigmas(self.model.param, steps)
            audio = ode_sample(fn, shape, sigmas=s, cond=m, x_init=s[0] * z(0), device=self.device)
        audio = mel_projection(audio[:, 0], m, self.features, iters, chunk=self._chunk_frames())
        if not bool(torch.isfinite(audio).all()):  # never hand on NaN/inf (a WAV writer turns it into -32768)
            raise DataError("the network produced non-finite audio (NaN or inf) for this mel; the model's weights "
                            "or the input mel are broken")
        return audio.clamp(-1.0, 1.0) if clamp else audio

    def forward(self, audio: Tensor | np.ndarray, steps: int = 1, generator: Optional[torch.Generator] = None) -> Tensor:
        """Copy-synthesis: decode(mel(audio)). audio (T,) or (B, T) at sample_rate -> (B, frames * hop).

        Audio peaking above 1 (float input) gives a UserWarning (`loud_audio`): its peaks are clipped.
        """
        check_generator(generator)
        problem = loud_audio(audio, self.features.preset.clip_audio)
        if problem:
            warnings.warn(problem, stacklevel=2)
        return self.decode(self.mel(audio), steps=steps, generator=generator)

    # ------------------------------------------------------------------ editing
    def _edit_input(self, audio: Tensor, use_mel: bool) -> tuple[Tensor, Optional[Tensor]]:
        """audio (T,) -> (audio padded to whole frames (T',), its mel (1, n_mels, T'/hop) or None)."""
        if self.kind != "consistency":
            raise DataError("zero-shot editing needs a consistency model, not a teacher")
        a = torch.as_tensor(audio, dtype=torch.float32, device=self.device).reshape(-1)
        F = -(-a.shape[0] // self.hop_length)
        padded = torch.nn.functional.pad(a, (0, F * self.hop_length - a.shape[0]))
        if not use_mel:
            if getattr(self.model, "null_cond", None) is None:
                raise DataError("this model has no unconditional mode (trained without cond_dropout); edit with its mel")
            return padded, None
        cond = self.mel(padded)[..., :F]
        if cond.shape[-1] < F:  # presets whose frame rule gives one frame less
            cond = torch.nn.functional.pad(cond, (0, F - cond.shape[-1]), mode="replicate")
        return padded, cond

    @torch.no_grad()
    def inpaint(self, audio: Tensor, start: float, end: float, *, steps: int = 2, use_mel: bool = True,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Fill audio[start:end] (seconds) with the model (CM Alg. 4); the rest is kept bit for bit.

        audio: (T,) at sample_rate. With use_mel the mel of the whole utterance (gap included)
        conditions the model; otherwise the learned null cond does. Returns (T,).
        """
        check_generator(generator)
        T = torch.as_tensor(audio).reshape(-1).shape[0]
        s0, s1 = int(round(start * self.sample_rate)), int(round(end * self.sample_rate))
        if not 0 <= s0 < s1 <= T:
            raise DataError(f"gap {start}:{end} s is outside the recording (0:{T / self.sample_rate:.3f} s) or empty")
        padded, cond = self._edit_input(audio, use_mel)
        known = torch.ones_like(padded, dtype=torch.bool)
        known[s0:s1] = False
        z = indexed_noise(draw_seed(generator), (1, 1, padded.shape[0]), self.device)
        out = inpaint(self.model, padded[None, None], known[None, None], sigmas=self.sigmas_for(steps), cond=cond,
                      generator=z)
        return out[0, 0, :T]

    @torch.no_grad()
    def extend_bandwidth(self, audio: Tensor, source_rate: int, *, steps: int = 2, use_mel: bool = False,
                         generator: Optional[torch.Generator] = None) -> Tensor:
        """Extend audio recorded at `source_rate` (already resampled to sample_rate) above source_rate/2.

        The band below source_rate/2 is kept (in the STFT domain, CM Alg. 4). With use_mel=False
        the model runs unconditionally (needs a model trained with cond_dropout); with use_mel the
        band-limited recording's own mel conditions it. audio: (T,) -> (T,), not clamped (a float
        recording's peaks above 1 stay).
        """
        check_generator(generator)
        if source_rate >= self.sample_rate:
            raise DataError(f"the input is already at {source_rate} Hz >= the model's {self.sample_rate} Hz")
        T = torch.as_tensor(audio).reshape(-1).shape[0]
        padded, cond = self._edit_input(audio, use_mel)
        z = indexed_noise(draw_seed(generator), (1, 1, padded.shape[0]), self.device)
        out = bandwidth_extension(self.model, padded[None, None], sample_rate=self.sample_rate, cutoff_hz=source_rate / 2,
                                  sigmas=self.sigmas_for(steps), cond=cond, generator=z)
        return out[0, 0, :T]


__all__ = ["Vocoder", "Chunked", "DEFAULT_MODEL_DIR", "loud_audio"]
