"""Samplers: the teacher's ODE sampler, consistency one-step/multistep sampling, zero-shot editing.

All are pure functions: randomness comes from a `torch.Generator` (drawn on the CPU, then moved
to the model's device, so a seed gives the same audio on CPU and GPU); models are called as
``model(x, sigma, cond, mask=...)``. `indexed_noise` is the noise the facades use: a deterministic
function of (seed, draw, sample index), so what a sample sees depends neither on the batch it is in
nor on the signal's length or how it is cut.

| function              | algorithm                                                     |
|-----------------------|---------------------------------------------------------------|
| `ode_sample`          | EDM Alg. 1 (deterministic Heun, or Euler), sigma_max -> 0      |
| `consistency_sample`  | CM Alg. 1 (multistep consistency sampling)                     |
| `zero_shot_edit`      | CM Alg. 4 (zero-shot editing with a linear operator A and mask Omega) |
| `inpaint`             | Alg. 4 with A = identity, Omega = the time gap                 |
| `bandwidth_extension` | Alg. 4 with A = STFT, Omega = the bins above the known band   |

Shapes: x (B, C, T); cond (B, C_cond, T_cond) or None; sigmas are Python floats.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from cmaudio.errors import DataError
from cmaudio.param import KarrasParam
from cmaudio.solvers import get_solver


def randn(shape: Sequence[int], generator: Optional[torch.Generator], device, dtype=torch.float32) -> Tensor:
    """Standard normal noise drawn on the CPU from `generator`, then moved to `device`."""
    check_generator(generator)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)


NoiseSource = Union[None, torch.Generator, Callable[[int], Tensor]]

#: Samples (time steps) per block of `indexed_noise`: each block has its own seed.
NOISE_BLOCK = 1 << 15


def check_generator(generator, what: str = "generator") -> None:
    """None or a torch.Generator, else a one-line DataError naming `what` (an int seed, a numpy
    Generator, a string ... are refused rather than failing deep inside torch)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise DataError(f"{what} must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                        f"got {type(generator).__name__}")


def draw_seed(generator: Optional[torch.Generator]) -> int:
    """One seed in [0, 2^62) drawn from `generator` (None: torch's global RNG), on the generator's device:
    the only use `indexed_noise`'s callers make of a generator, so each call advances it by one draw."""
    check_generator(generator)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def _block_seed(seed: int, draw: int, block: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{draw}:{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2  # < 2^62: a valid manual_seed


def indexed_noise(seed: int, shape: Sequence[int], device) -> Callable[[int], Tensor]:
    """k -> z_k, standard normal noise of `shape` (B, C, T) whose value at (c, t) is a function of
    (seed, k, c, t) alone: the same for every item b of the batch, and the same for any T > t.

    Time is cut into blocks of NOISE_BLOCK samples; block j of draw k is randn(NOISE_BLOCK, C) in
    float64 (time-major) from a generator seeded by a hash of (seed, k, j), drawn on the CPU and moved
    to `device` as float32. So a batch gives each item the noise it gets alone, padding or a longer
    signal leaves the noise of the first t samples alone, and any cut of the signal (chunks, a future
    stream) can draw its own blocks.
    """
    B, C, T = (int(v) for v in shape)

    def z(k: int) -> Tensor:
        blocks = [torch.randn(NOISE_BLOCK, C, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(_block_seed(seed, k, j)))
                  for j in range(-(-T // NOISE_BLOCK))]
        one = torch.cat(blocks)[:T].T.to(device=device, dtype=torch.float32)  # (C, T)
        return one[None].expand(B, C, T)

    return z


def noise_fn(noise: NoiseSource, shape: Sequence[int], device) -> Callable[[int], Tensor]:
    """k -> the k-th standard normal draw of a sampler: from a torch.Generator (or the global RNG for
    None), drawn on the CPU then moved to `device`; or a caller's callable k -> (shape) tensor (e.g.
    per-item generators, as cmaudio.mel.MelDecoder uses, or `indexed_noise`)."""
    if callable(noise) and not isinstance(noise, torch.Generator):
        return lambda k: noise(k).to(device=device, dtype=torch.float32)
    check_generator(noise)
    return lambda k: randn(shape, noise, device)


def strictly_decreasing(sigmas: Sequence[float]) -> bool:
    """True for a non-empty, strictly decreasing list of noise levels (what every sampler needs)."""
    s = list(sigmas)
    return len(s) >= 1 and all(a > b for a, b in zip(s, s[1:]))


@torch.no_grad()
def ode_sample(
    denoiser,
    shape: Sequence[int],
    *,
    sigmas: Sequence[float],
    cond: Optional[Tensor] = None,
    solver: str = "heun",
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    x_init: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    to_zero: bool = True,
) -> Tensor:
    """Integrate the PF ODE from sigmas[0] down the decreasing list `sigmas` (EDM Alg. 1, no churn).

    x starts at sigmas[0] * z (or `x_init`, already at sigmas[0]). With to_zero=True a final
    step to sigma = 0 is appended (Euler, as EDM's last step). dtype=float64 runs the ODE in
    double precision (the network body still runs in float32).
    NFE: 2 per Heun step (1 for the last step to 0), 1 per Euler step; `ode_nfe` counts it.
    """
    device = device if device is not None else (cond.device if cond is not None else "cpu")
    step = get_solver(solver)
    if x_init is None:
        x = randn(shape, generator, device, dtype) * sigmas[0]
    else:
        x = x_init.to(device=device, dtype=dtype)
    levels = ode_levels(sigmas, to_zero)
    for s, s_next in zip(levels[:-1], levels[1:]):
        x = step(denoiser, x, s, s_next, cond, mask=mask)
        if mask is not None:
            x = x * mask
    return x


def ode_levels(sigmas: Sequence[float], to_zero: bool = True) -> list[float]:
    """The noise levels `ode_sample` visits: `sigmas`, then 0 when to_zero and sigmas[-1] > 0."""
    return list(sigmas) + ([0.0] if to_zero and sigmas[-1] > 0 else [])


def ode_nfe(sigmas: Sequence[float], *, solver: str = "heun", to_zero: bool = True) -> int:
    """Network evaluations of `ode_sample(sigmas=sigmas, solver=solver, to_zero=to_zero)`, counted.

    Runs the sampler itself on a (1, 1, 1) input with a counting identity denoiser, so the figure
    follows the solver's code rather than a formula: for `teacher_sigmas(param, k)` (k + 1 levels)
    with Heun and to_zero it is 2k + 1 (k Heun steps of 2 calls, then EDM's Euler step to 0).
    """
    calls = 0

    def counting(x: Tensor, sigma: Tensor, cond: Optional[Tensor] = None, **kw) -> Tensor:
        nonlocal calls
        calls += 1
        return x

    ode_sample(counting, (1, 1, 1), sigmas=sigmas, solver=solver, device="cpu", to_zero=to_zero)
    return calls


def teacher_sigmas(param: KarrasParam, steps: int) -> list[float]:
    """Decreasing Karras grid of `steps` + 1 noise levels from sigma_max to sigma_min (EDM eq. 5)."""
    return param.grid(steps + 1).flip(0).tolist()


@torch.no_grad()
def consistency_sample(
    model,
    shape: Sequence[int],
    *,
    sigmas: Sequence[float],
    cond: Optional[Tensor] = None,
    generator: NoiseSource = None,
    device=None,
    mask: Optional[Tensor] = None,
    x_init: Optional[Tensor] = None,
) -> Tensor:
    """Multistep consistency sampling (CM Alg. 1). One step when len(sigmas) == 1.

    x = f(sigmas[0] z_0, sigmas[0]) (or f(x_init, sigmas[0]): x_init is already at sigmas[0]);
    then for the k-th tau in sigmas[1:]:  x_tau = x + sqrt(tau^2 - eps^2) z_k,  x = f(x_tau, tau).
    generator: the noise source (`noise_fn`): a torch.Generator, None (global RNG) or a callable
    k -> z_k. sigmas must decrease and lie in (eps, sigma_max]. Returns (B, C, T) float32.
    NFE = len(sigmas).
    """
    if not strictly_decreasing(sigmas):
        raise ValueError(f"sigmas must be a non-empty strictly decreasing list, got {list(sigmas)}")
    device = device if device is not None else (cond.device if cond is not None else "cpu")
    z = noise_fn(generator, shape, device)
    eps = model.param.sigma_min
    x = z(0) * sigmas[0] if x_init is None else x_init
    if mask is not None:
        x = x * mask
    x = model(x, sigmas[0], cond, mask=mask)
    for k, tau in enumerate(sigmas[1:], start=1):
        x = x + math.sqrt(max(tau * tau - eps * eps, 0.0)) * z(k)
        if mask is not None:
            x = x * mask
        x = model(x, tau, cond, mask=mask)
    return x


@torch.no_grad()
def zero_shot_edit(
    model,
    y: Tensor,
    *,
    replace_known: Callable[[Tensor, Tensor], Tensor],
    sigmas: Sequence[float],
    cond: Optional[Tensor] = None,
    generator: NoiseSource = None,
) -> Tensor:
    """Zero-shot editing (CM Alg. 4).

    replace_known(x, y) must return A^{-1}[(A y) ⊙ (1 - Omega) + (A x) ⊙ Omega]: x with its
    known part (under the linear operator A) replaced by y's. Steps:
        y0 = replace_known(0, y);  x = replace_known(f(y0 + t1 z, t1), y)
        for t in sigmas[1:]: x = replace_known(f(x + sqrt(t^2 - eps^2) z, t), y)
    y: (B, C, T) the observation (its unknown part is ignored). Returns (B, C, T).
    """
    if not strictly_decreasing(sigmas):
        raise ValueError(f"sigmas must be a non-empty strictly decreasing list, got {list(sigmas)}")
    y = y.to(torch.float32)
    y0 = replace_known(torch.zeros_like(y), y)
    # Alg. 4 is Alg. 1 started from the known part y0 with the known part restored after each step
    return _multistep(model, sigmas, noise_fn(generator, y.shape, y.device), x0=y0, cond=cond,
                      after=lambda x: replace_known(x, y))


def _multistep(model, sigmas: Sequence[float], z: Callable[[int], Tensor], *, x0: Tensor, cond, after) -> Tensor:
    """x = after(f(x0 + sigmas[0] z_0, sigmas[0])); x = after(f(x + sqrt(tau^2 - eps^2) z_k, tau)) for the rest."""
    eps = model.param.sigma_min
    x = after(model(x0 + sigmas[0] * z(0), sigmas[0], cond))
    for k, tau in enumerate(sigmas[1:], start=1):
        x = after(model(x + math.sqrt(max(tau * tau - eps * eps, 0.0)) * z(k), tau, cond))
    return x


def inpaint(
    model,
    y: Tensor,
    known: Tensor,
    *,
    sigmas: Sequence[float],
    cond: Optional[Tensor] = None,
    generator: NoiseSource = None,
) -> Tensor:
    """Fill the samples where `known` is False (CM Alg. 4 with A = I, Omega = ~known).

    y (B, C, T); known (B, C, T) or (B, 1, T) bool. The known samples are returned unchanged
    (bit for bit); the gap holds the model's completion.
    """
    known = known.to(device=y.device, dtype=torch.bool).expand_as(y)

    def replace_known(x: Tensor, obs: Tensor) -> Tensor:
        return torch.where(known, obs, x)

    return zero_shot_edit(model, y, replace_known=replace_known, sigmas=sigmas, cond=cond, generator=generator)


def lowpass_bins(n_fft: int, sample_rate: int, cutoff_hz: float) -> int:
    """Number of rfft bins at or below `cutoff_hz` (bin k sits at k sample_rate / n_fft Hz)."""
    return int(math.floor(cutoff_hz * n_fft / sample_rate)) + 1


def bandwidth_extension(
    model,
    y: Tensor,
    *,
    sample_rate: int,
    cutoff_hz: float,
    sigmas: Sequence[float],
    cond: Optional[Tensor] = None,
    generator: NoiseSource = None,
    n_fft: int = 1024,
    hop_length: int = 256,
) -> Tensor:
    """Extend a band-limited recording (CM Alg. 4 with A = STFT, Omega = bins above `cutoff_hz`).

    y: (B, 1, T) waveform at the model's rate whose content above cutoff_hz is missing (e.g. an
    8 kHz recording upsampled to 22.05 kHz has cutoff 4 kHz). The STFT (Hann, n_fft, hop, centre
    padded) keeps y's bins up to the cutoff and the model's above it; the inverse STFT's overlap-
    add makes the result's low band equal y's up to the STFT's consistency error.
    """
    window = torch.hann_window(n_fft, device=y.device, dtype=torch.float32)
    k = lowpass_bins(n_fft, sample_rate, cutoff_hz)
    length = y.shape[-1]

    def stft(x: Tensor) -> Tensor:
        return torch.stft(x.reshape(-1, length), n_fft, hop_length, window=window, return_complex=True)

    def replace_known(x: Tensor, obs: Tensor) -> Tensor:
        X, Y = stft(x), stft(obs)
        band = torch.zeros(X.shape[-2], 1, dtype=torch.bool, device=x.device)
        band[:k] = True
        Z = torch.where(band, Y, X)
        out = torch.istft(Z, n_fft, hop_length, window=window, length=length)
        return out.reshape(x.shape)

    return zero_shot_edit(model, y, replace_known=replace_known, sigmas=sigmas, cond=cond, generator=generator)
