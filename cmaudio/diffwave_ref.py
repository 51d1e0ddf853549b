"""Reference DiffWave checkpoints (lmnt-com/diffwave) as EDM denoisers (teachers for CD).

A reference checkpoint is what its learner's ``save_to_checkpoint`` writes with ``torch.save``:
``{'step': int, 'model': state_dict, 'optimizer': ..., 'params': dict | AttrDict, 'scaler': ...}``
(older files pickle ``diffwave.params.AttrDict`` and may carry numpy arrays/scalars). It is read
with ``torch.load(weights_only=True)`` and an allowlist of exactly those non-tensor globals, so
loading never runs pickled code; anything else is a CheckpointError. A bare state_dict file
(``torch.save(model.state_dict())``) is accepted too; its architecture is read off the tensor
shapes and the rest of the parameters default to the reference's ``params.py`` (22.05 kHz,
80 mels, hop 256, beta = linspace(1e-4, 0.05, 50)).

The reference model is a VP epsilon-predictor on its training beta grid (Ho et al. 2020):
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, alpha_bar_t = prod_{s<=t} (1 - beta_s),
with 0-based steps t = 0..T-1. As an EDM denoiser (docs/design.md sec. 2.15; Karras et al. 2022 sec. 2
and Table 1, "VP"):

    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)           (the grid, increasing in t)
    x_ve = x_vp / sqrt(alpha_bar)   <=>   x_vp = x / sqrt(1 + sigma^2)
    t(sigma): fractional step, linear in ln(sigma) between neighbouring grid sigmas
    D(x, sigma) = x - sigma * eps_hat(x / sqrt(1 + sigma^2), t(sigma), mel)

so the probability-flow ODE dx/dsigma = (x - D)/sigma = eps_hat is the reference model's own.
On the default grid sigma runs from ~0.0100 (t = 0) to ~1.64 (t = 49).

Imports: errors, nets (DiffWave). No training code.
"""

from __future__ import annotations

import math
import pickle
import re
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from cmaudio.errors import CheckpointError
from cmaudio.nets.diffwave import DiffWave
from cmaudio.param import batch_sigma

# The reference's params.py (pip diffwave 0.1.7), used where a checkpoint does not say.
REFERENCE_DEFAULTS: dict[str, Any] = dict(
    sample_rate=22050,
    n_mels=80,
    n_fft=1024,
    hop_samples=256,
    residual_layers=30,
    residual_channels=64,
    dilation_cycle_length=10,
    unconditional=False,
    noise_schedule=np.linspace(1e-4, 0.05, 50).tolist(),
    inference_noise_schedule=[0.0001, 0.001, 0.01, 0.05, 0.2, 0.5],
)


def _safe_globals() -> list:
    """The non-tensor globals a reference checkpoint may name, mapped to harmless objects.

    ``diffwave.params.AttrDict`` (a dict subclass whose instance __dict__ is itself) is read as a
    collections.OrderedDict: torch's restricted unpickler fills only exact dict types, and an
    OrderedDict absorbs the AttrDict's BUILD (its __dict__ state) harmlessly. Its items are all
    that is kept.
    """
    try:
        from numpy._core import multiarray as ma  # numpy >= 2 (files written with 1.x say numpy.core)
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma

    allowed: list = [(OrderedDict, "diffwave.params.AttrDict"), (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(ma._reconstruct, f"{mod}._reconstruct"), (ma.scalar, f"{mod}.scalar")]
    # np.dtype(...) is rebuilt as an instance of its concrete class (e.g. numpy.dtypes.Float64DType),
    # whose BUILD (dtype.__setstate__) the unpickler only runs for allowlisted types.
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None:
        allowed += [(c, f"numpy.dtypes.{n}") for n in dir(dtypes) if isinstance(c := getattr(dtypes, n), type)]
    return allowed


def _plain(value: Any) -> Any:
    """AttrDict -> dict, numpy arrays/scalars -> lists/Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in dict.items(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL (\S+)", msg) or re.search(r"(unrecognized function \S+)", msg) \
            or re.search(r"(Can only \w+ [^,.]+)", msg)
        what = m.group(1) if m else msg.splitlines()[0][:120]
        raise CheckpointError(
            f"refusing to load {path}: it pickles {what}, which a DiffWave checkpoint never holds "
            "(only tensors, numbers, strings, lists, dicts, AttrDict and numpy arrays are read; no code runs)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"cannot read {path} as a DiffWave checkpoint: {first}") from None


def _factor_from_kernel(k: int) -> int:
    """Upsampling factor f of a transposed conv with kernel f + 2 (f // 2) (layers.resample_kernel)."""
    return k // 2 if k % 2 == 0 else (k + 1) // 2


def _architecture(sd: dict[str, Tensor], path: Path) -> dict[str, Any]:
    """Hyper-parameters read off the state_dict's tensor shapes."""
    need = ("input_projection.weight", "residual_layers.0.dilated_conv.weight", "output_projection.weight",
            "diffusion_embedding.projection1.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{path} is not a DiffWave checkpoint: its state_dict lacks {missing[0]!r}")
    layers = 0
    while f"residual_layers.{layers}.dilated_conv.weight" in sd:
        layers += 1
    arch: dict[str, Any] = dict(
        residual_channels=int(sd["input_projection.weight"].shape[0]),
        in_channels=int(sd["input_projection.weight"].shape[1]),
        residual_layers=layers,
    )
    cp = sd.get("residual_layers.0.conditioner_projection.weight")
    arch["unconditional"] = cp is None
    arch["n_mels"] = int(cp.shape[1]) if cp is not None else None
    factors = []
    while f"spectrogram_upsampler.conv{len(factors) + 1}.weight" in sd:
        factors.append(_factor_from_kernel(int(sd[f"spectrogram_upsampler.conv{len(factors) + 1}.weight"].shape[-1])))
    arch["upsample_factors"] = tuple(factors)
    return arch


def read_reference_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a reference DiffWave checkpoint without executing pickled code.

    Args:
        path: a ``weights-<step>.pt`` / ``weights.pt`` file of the reference learner, a model
            directory holding ``weights.pt``, or a bare ``state_dict`` file.

    Returns:
        (state_dict, params): the model's state_dict (CPU tensors) and a plain dict of its
        params (the checkpoint's, over REFERENCE_DEFAULTS; numpy values as lists/numbers), with
        residual_layers, residual_channels, n_mels and unconditional taken from the tensors.

    Raises:
        CheckpointError: missing/unreadable file, a pickled object outside the allowlist, not a
        DiffWave state_dict, or params that contradict the tensors.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "weights.pt"
    if not path.is_file():
        raise CheckpointError(f"DiffWave checkpoint not found: {path}")
    obj = _load(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        sd, ckpt_params = obj["model"], obj.get("params") or {}
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        sd, ckpt_params = obj, {}
    else:
        raise CheckpointError(f"{path} is not a DiffWave checkpoint: expected a dict with a 'model' state_dict, or a state_dict")
    if not isinstance(ckpt_params, dict):
        raise CheckpointError(f"{path}: 'params' must be a dict, got {type(ckpt_params).__name__}")
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):  # saved from DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: the 'model' state_dict holds non-tensor values")
    arch = _architecture(sd, path)
    given = _plain(dict(ckpt_params))
    params = {**REFERENCE_DEFAULTS, **given}
    for key in ("residual_layers", "residual_channels", "n_mels", "unconditional"):
        if key == "n_mels" and arch["n_mels"] is None:
            continue
        if given.get(key) is not None:
            same = bool(given[key]) == arch[key] if key == "unconditional" else given[key] == arch[key]
            if not same:
                raise CheckpointError(
                    f"{path}: params say {key}={given[key]!r} but the weights have {key}={arch[key]!r}; "
                    "the checkpoint is inconsistent"
                )
        params[key] = arch[key]
    params["in_channels"] = arch["in_channels"]
    params["upsample_factors"] = list(arch["upsample_factors"])
    if arch["upsample_factors"]:
        hop = math.prod(arch["upsample_factors"])
        if "hop_samples" in given and given["hop_samples"] != hop:
            raise CheckpointError(
                f"{path}: params say hop_samples={given['hop_samples']} but the spectrogram upsampler "
                f"multiplies by {hop}; the checkpoint is inconsistent"
            )
        params["hop_samples"] = hop
    try:
        sched = np.asarray(params["noise_schedule"], dtype=np.float64)
        int(params["hop_samples"]), int(params["sample_rate"]), int(params["dilation_cycle_length"])
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{path}: params noise_schedule, hop_samples, sample_rate or dilation_cycle_length have the wrong type"
        ) from None
    if sched.ndim != 1 or sched.size < 2 or not np.all((sched > 0) & (sched < 1)):
        raise CheckpointError(f"{path}: params.noise_schedule must be a list of at least 2 betas in (0, 1)")
    params["noise_schedule"] = sched.tolist()
    return sd, params


def reference_net(params: dict[str, Any]) -> DiffWave:
    """A cmaudio DiffWave with the reference's architecture and step embedding for `params`."""
    factors = tuple(params.get("upsample_factors") or ())
    cond = None if params.get("unconditional") else int(params["n_mels"])
    return DiffWave(
        int(params.get("in_channels", 1)),
        cond,
        residual_layers=int(params["residual_layers"]),
        residual_channels=int(params["residual_channels"]),
        dilation_cycle=int(params["dilation_cycle_length"]),
        upsample_factors=factors if (cond and factors) else None,
        hop=int(params["hop_samples"]) if not factors else None,
        domain="wave",
        embedding="steps",
        max_steps=len(params["noise_schedule"]),
    )


class VPDenoiser(nn.Module):
    """A reference-architecture (VP, epsilon-prediction) DiffWave as an EDM denoiser D(x, sigma).

    D(x, sigma) = x - sigma eps_hat(x / sqrt(1 + sigma^2), t(sigma), cond) (module docstring;
    docs/design.md sec. 2.15). Valid for sigma in [sigma_min, sigma_max] = [sigma_0, sigma_{T-1}] of the
    beta grid; outside it t(sigma) is clamped to the grid's end steps (the formula still uses the
    given sigma).

    Attributes: net (DiffWave, embedding="steps"), sigma_min, sigma_max (floats), sigmas (the
    grid, tuple of floats, increasing), hop_length, sample_rate, n_mels, params (plain dict),
    mel_preset = "diffwave" (the mel the reference was trained on: cmaudio.features preset),
    cond_channels/cond_hop (as on models.Denoiser; there is no null cond), body_dtype (autocast
    dtype for the network body, None = off).
    """

    mel_preset = "diffwave"

    def __init__(self, net: DiffWave, noise_schedule, *, hop_length: int = 256, sample_rate: int = 22050,
                 params: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        betas = np.asarray(noise_schedule, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 2 or not np.all((betas > 0) & (betas < 1)):
            raise ValueError("noise_schedule must hold at least 2 betas in (0, 1)")
        alpha_bar = np.cumprod(1.0 - betas)
        sig = np.sqrt((1.0 - alpha_bar) / alpha_bar)
        self.net = net
        self.betas = tuple(float(b) for b in betas)
        self.sigmas = tuple(float(s) for s in sig)
        self._log_sigmas = tuple(float(v) for v in np.log(sig))
        self.sigma_min = self.sigmas[0]
        self.sigma_max = self.sigmas[-1]
        self.hop_length = int(hop_length)
        self.sample_rate = int(sample_rate)
        self.cond_channels = net.cond_channels
        self.n_mels = net.cond_channels
        self.cond_hop = self.hop_length
        self.null_cond = None
        self.body_dtype: Optional[torch.dtype] = None
        self.params = dict(params or {})

    @property
    def num_steps(self) -> int:
        return len(self.sigmas)

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional 0-based step t(sigma), linear in ln(sigma) between grid points; float64, clamped to [0, T-1]."""
        grid = torch.tensor(self._log_sigmas, dtype=torch.float64, device=sigma.device)
        ls = torch.log(sigma.to(torch.float64)).clamp(grid[0], grid[-1])
        k = (torch.searchsorted(grid, ls, right=True) - 1).clamp(0, len(self._log_sigmas) - 2)
        lo, hi = grid[k], grid[k + 1]
        return k.to(torch.float64) + (ls - lo) / (hi - lo)


    def eps(self, x_vp: Tensor, t: Tensor, cond: Optional[Tensor] = None, *, mask: Optional[Tensor] = None) -> Tensor:
        """The reference network's epsilon prediction at (possibly fractional) step t (B,)."""
        dt = self.body_dtype
        ctx = torch.autocast(x_vp.device.type, dtype=dt) if dt is not None else nullcontext()
        with ctx:
            out = self.net(x_vp.to(torch.float32), t.to(torch.float32), cond, mask=mask)
        return out.to(x_vp.dtype)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Optional[Tensor] = None, *,
                mask: Optional[Tensor] = None, cond_drop: Optional[Tensor] = None) -> Tensor:
        """x (B, 1, T) VE-scaled audio, sigma (B,) or scalar, cond mel (B, n_mels, T/hop) -> D(x, sigma) (B, 1, T)."""
        if cond_drop is not None and bool(torch.as_tensor(cond_drop).any()):
            raise ValueError("the reference DiffWave has no null condition; cond_drop is not supported for it")
        if cond is None and self.cond_channels:
            raise ValueError("the reference DiffWave is conditional: pass its mel as cond")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        s = batch_sigma(sigma, x)
        t = self.sigma_to_t(s)
        sb = s.reshape(-1, *([1] * (x.ndim - 1)))
        if cond is not None and cond.dtype == torch.float64:
            cond = cond.float()
        eps = self.eps(x / torch.sqrt(1 + sb * sb), t, cond, mask=mask)
        out = x - sb * eps
        if mask is not None:
            out = out * mask.to(out.dtype)
        return out


def load_diffwave_checkpoint(path: str | Path) -> VPDenoiser:
    """Load a reference DiffWave checkpoint (lmnt-com/diffwave) as an EDM denoiser, in eval mode.

    See read_reference_checkpoint for what `path` may be. The returned VPDenoiser's sigma range
    [sigma_min, sigma_max] is that of the checkpoint's training beta grid. Raises CheckpointError.
    """
    sd, params = read_reference_checkpoint(path)
    net = reference_net(params)
    try:
        missing, unexpected = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatch
        first = str(e).strip().splitlines()[-1].strip()[:200]
        raise CheckpointError(f"{path}: the weights do not fit the DiffWave architecture ({first})") from None
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(f"{path}: the weights do not fit the DiffWave architecture ({what})")
    den = VPDenoiser(net, params["noise_schedule"], hop_length=int(params["hop_samples"]),
                     sample_rate=int(params["sample_rate"]), params=params)
    return den.eval()
