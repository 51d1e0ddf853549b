"""Speed benchmark: x-real-time, RTF, parameters, FLOPs and peak memory of cmaudio and its peers.

Every setting generates audio from a mel (vocoding: the mel is computed once beforehand and
is not timed) with random weights (speed does not depend on the weights), in one process,
with one thread setting, under ``torch.inference_mode``. A setting's time is the median wall
clock (``time.perf_counter``; ``torch.cuda.synchronize`` before and after each call on a GPU)
of `repeats` timed calls after max(`warmup`, 1) untimed ones (the first of them is the
memory probe).

Slow settings (run_bench ``slow_s``, default `SLOW_S` = 3 s): a setting whose call is
estimated above slow_s (the seconds per network evaluation of the same model and batch at its
previous step count, times its NFE) gets one timed call and no untimed one; one whose probe
call or first timed call is measured above it gets no further calls. Such a record has
slow=True, repeats=1 and a note; the table marks its call count "1*". With these the default
plan (every setting below) takes minutes on 2 CPU cores, where timing the 50-step DiffWave
settings ten times each took ~25; ``slow_s=None`` (CLI ``--full``) times everything.
Records are handed to ``on_record`` as each setting completes (the CLI prints its row then).

Settings (``name``):

- ``cmaudio-<size>``: a nets.UNet1d wave preset in models.ConsistencyModel, sampled with
  sampling.consistency_sample in k steps (NFE = k).
- ``cmaudio-framenet-<size>``: a nets.FrameNet preset (frame-rate ConvNeXt, iSTFT head) in
  models.ConsistencyModel, sampled the same way.
- ``cmaudio-default``: the vocoder shipped in the package (cmaudio/pretrained/default, what
  `cmaudio vocode` runs) with its own weights, options and default sigmas, sampled the same way.
- ``cmaudio-teacher``: nets.DiffWave (fourier embedding) in models.Denoiser, sampled with
  sampling.ode_sample, Euler, k steps (NFE = k).
- ``diffwave-reference``: the PyPI ``diffwave`` (0.1.7) DiffWave(params), 30 layers x 64
  channels, run with its predict() loop: the fast 6-step or the full 50-step schedule (NFE 6 / 50).
- ``vocos``: the PyPI ``vocos`` mel-24khz config (24 kHz, 100 mels), ``Vocos.decode(mel)`` (NFE 1).

cmaudio settings use 22.05 kHz audio, hop 256 and an 80-bin ``hifigan``-preset mel
(cmaudio.features.MelSpectrogram), KarrasParam(sigma_min=0.0002, sigma_max=2.0,
sigma_data=0.087). Consistency sampling uses ``param.default_sigmas(k)`` (CM Alg. 1,
NFE = k). The teacher integrates the PF ODE (EDM Alg. 1, Euler) over ``teacher_sigmas(param, k)``
(k + 1 levels, sigma_max -> sigma_min) without the extra step to 0, so NFE = k.

Record fields (one dict per setting; `RECORD_FIELDS`):

- name, model (architecture in words), sampler, steps (sampling steps), nfe (network
  evaluations per generation), device, dtype ("fp32" | "bf16"), batch, threads (torch intra-op
  threads), params (scalar parameters, nets.count_parameters).
- sample_rate (Hz, the model's own: 24000 for vocos), seconds (audio length of one batch item,
  from the output's length), time_s (median seconds per generation call of the whole batch),
  time_best_s (fastest call), repeats (timed calls), slow (True: a slow setting timed once).
- xrt = batch * seconds / time_s: seconds of audio generated per second of compute, counting
  every batch item ("x real time"); rtf = 1 / xrt (real-time factor); xrt_best likewise with
  time_best_s (less sensitive to other jobs on a shared machine).
- cpu_s: median process CPU time (time.process_time: all threads of the process, including
  threads spin-waiting in parallel regions) per call; xrt_cpu = batch * seconds / cpu_s. On a
  shared, loaded machine wall time mostly measures the wait for a core; with threads=1, xrt_cpu
  estimates the wall-clock xRT of an idle core. Host CPU only on a GPU (not a speed figure).
- peak_mem_mb: memory of the model's weights and buffers, the input mel and the peak working
  memory of one generation, in MiB; peak_mem_method says how it was measured:
  "cuda_max_allocated" (torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus
  memory_allocated before the model was built: tensors only, not the caching allocator's
  reserve); "cpu_tensor_peak" (CPU: bytes of the parameters, buffers and input plus the peak
  of tensor storages alive at once during the first untimed call, tracked op by op with a
  TorchDispatchMode; buffers a kernel allocates and frees inside itself, allocator slack and
  the interpreter are not counted). Process RSS is not used: malloc keeps freed memory of
  earlier settings and reuses it, so RSS deltas read ~0 for all but the first setting.
- flops_per_second: FLOPs of ONE network forward pass per second of audio
  (nets.flops_per_second, batch 1; multiply-add = 2); a generation costs nfe times that.
  None for peers.
- load_1m: the 1-minute load average right after the setting (os.getloadavg; None where
  unavailable), to judge contention on a shared machine.
- note: free text (what the setting is, why it was skipped). skipped: True for a note-only
  record (a peer that could not be imported or run); its measured fields are None.

bf16: cmaudio models run their network body under autocast (``model.body_dtype``, the
parameterization stays float32); peers run under ``torch.autocast(device_type, bfloat16)``.

Targets (`targets`): the 1-step ``cmaudio-small`` xRT (>= 20x on 2 CPU cores) and its speed-up
over ``diffwave-reference`` at 50 steps (>= 100x), when both are in the same run. Ratios
(`ratios`): every cmaudio 1-step setting's xRT over that of ``diffwave-reference`` at 50 steps
and of ``vocos``, in the same run (the only comparison that holds on a shared machine).

Imports: nets, models, param, sampling, features, errors, io, vocoder (the shipped default row). No typer.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import platform
import statistics
import time
import weakref
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cmaudio.errors import ConfigError
from cmaudio.features import MelSpectrogram
from cmaudio.io import write_text_atomic
from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.nets import DIFFWAVE_PRESETS, FRAMENET_PRESETS, UNET_PRESETS, build_net, count_parameters, flops_per_second
from cmaudio.param import KarrasParam
from cmaudio.projection import mel_projection
from cmaudio.sampling import consistency_sample, ode_sample, teacher_sigmas
from cmaudio.vocoder import DEFAULT_MODEL_DIR, Vocoder

__all__ = [
    "BENCH_PARAM",
    "RECORD_FIELDS",
    "SLOW_S",
    "format_header",
    "format_row",
    "format_summary",
    "format_table",
    "machine_description",
    "ratios",
    "run_bench",
    "targets",
    "write_json",
]

SAMPLE_RATE = 22050  # Hz, cmaudio settings and the reference DiffWave
HOP = 256  # samples per mel frame
N_MELS = 80
MEL_PRESET = "hifigan"
BENCH_PARAM = dict(sigma_min=0.0002, sigma_max=2.0, sigma_data=0.087)

VOCOS_SAMPLE_RATE = 24000
VOCOS_CONFIG = dict(
    feature_extractor=dict(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, padding="center"),
    backbone=dict(input_channels=100, dim=512, intermediate_dim=1536, num_layers=8),
    head=dict(dim=512, n_fft=1024, hop_length=256, padding="same"),
)
REFERENCE_SCHEDULES = {6: "fast", 50: "full"}  # diffwave predict(): fast_sampling=True / False

DTYPES = {"fp32": None, "bf16": torch.bfloat16}

RECORD_FIELDS = (
    "name", "model", "sampler", "steps", "nfe", "device", "dtype", "batch", "threads", "params",
    "sample_rate", "seconds", "time_s", "time_best_s", "repeats", "slow", "xrt", "rtf", "xrt_best",
    "cpu_s", "xrt_cpu",
    "peak_mem_mb", "peak_mem_method", "flops_per_second", "load_1m", "note", "skipped",
)

TARGET_SMALL_XRT = 20.0  # 1-step cmaudio-small, x real time on 2 CPU cores
TARGET_SPEEDUP = 100.0  # cmaudio-small 1 step over diffwave-reference 50 steps
SLOW_S = 3.0  # default run: a setting whose call is estimated or measured above this is timed once


# ----------------------------------------------------------------------------------------------
# machine and memory
# ----------------------------------------------------------------------------------------------


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _load_1m() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_description(device: str = "cpu", *, threads: Optional[int] = None) -> dict:
    """What the numbers were measured on.

    Returns {"cpu": model name from /proc/cpuinfo, "cpu_cores": os.cpu_count(), "cpus_available":
    CPUs this process may run on, "threads": torch intra-op threads (`threads` if given, else
    torch.get_num_threads()), "load_avg": (1, 5, 15 min) or None, "torch", "python", "platform",
    "device", "gpu": CUDA device name or None, "cuda": CUDA version or None}.
    """
    dev = torch.device(device)
    try:
        avail = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        avail = os.cpu_count()
    try:
        load = tuple(round(v, 2) for v in os.getloadavg())
    except (OSError, AttributeError):
        load = None
    gpu = None
    if dev.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(dev)
    return {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpus_available": avail,
        "threads": int(threads) if threads is not None else torch.get_num_threads(),
        "load_avg": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
    }


class _TensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages alive at once while the mode is active (CPU memory probe).

    Every aten op's output storages are counted when first seen and uncounted when the storage
    is freed (weakref.finalize on the storage object, which torch keeps alive as long as the
    storage itself). Buffers a kernel allocates and frees internally are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, ptr: int) -> None:
        n = self.live.pop(ptr, None)
        if n is not None:
            self.current -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                ptr, n = st.data_ptr(), st.nbytes()
                if n and ptr not in self.live:
                    self.live[ptr] = n
                    self.current += n
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(st, self._free, ptr)
        return out


def _resident_bytes(module: torch.nn.Module, *tensors: torch.Tensor) -> int:
    """Bytes of the distinct storages of a module's parameters and buffers and of `tensors`."""
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers(), *tensors]:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


class _MemProbe:
    """Peak memory of one setting: the model, its inputs and the peak working memory (MiB).

    cuda: torch.cuda.max_memory_allocated (reset before the timed calls) minus memory_allocated
    before the model was built ("cuda_max_allocated"). cpu: the bytes of the model's parameters
    and buffers and of the inputs, plus the peak of tensor storages alive at once during one
    untimed generation (`_TensorPeak`, "cpu_tensor_peak"); allocator slack, kernel workspaces
    and the interpreter are not counted. (Process RSS is not used: memory that malloc keeps
    after an earlier setting is reused without raising it, so its deltas read ~0.)
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.module: Optional[torch.nn.Module] = None  # set once the model is built
        self.cpu_peak = 0
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.method = "cuda_max_allocated"
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.method = "cpu_tensor_peak"
            self.base = 0

    def run(self, fn: Callable[[], torch.Tensor], inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """One untimed call of fn under the CPU probe (cuda: a plain call)."""
        if self.method == "cuda_max_allocated":
            return fn()
        tracker = _TensorPeak()
        with tracker:
            out = fn()
        resident = _resident_bytes(self.module, *inputs) if self.module is not None else 0
        self.cpu_peak = resident + tracker.peak
        return out

    def reset(self) -> None:
        if self.method == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        if self.method == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            peak = self.cpu_peak
        return round(max(peak, 0) / 2**20, 1)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_SLOW_NOTE = "; slow (a call above {slow_s:g} s): timed once, --full times it {repeats} times"

# the clocks (module attributes, so tests can replace them with fake ones)
_clock = time.perf_counter
_cpu_clock = time.process_time


def _record(**kw) -> dict:
    rec = {k: None for k in RECORD_FIELDS}
    rec["skipped"] = False
    rec.update(kw)
    return rec


def _skip_record(name: str, note: str, *, device: torch.device, dtype: str) -> dict:
    return _record(name=name, device=str(device), dtype=dtype, note=note, skipped=True)


class _Runner:
    """Shared state of one run_bench call: device, dtype, timing settings, the records.

    Per (setting name, batch) it keeps the seconds per network evaluation of the last timed
    setting and its peak memory, to estimate the next step count of the same model before it
    runs (`slow_s`, run_bench).
    """

    def __init__(self, device, dtype, repeats, warmup, progress, *, slow_s=None, on_record=None) -> None:
        self.device = device
        self.dtype = dtype
        self.repeats = repeats
        self.warmup = warmup
        self.progress = progress
        self.slow_s = slow_s
        self.on_record = on_record
        self.records: list[dict] = []
        self.per_nfe: dict[tuple, float] = {}
        self.peaks: dict[tuple, tuple[float, int]] = {}  # (name, batch) -> (peak MiB, steps it came from)

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)

    def add(self, rec: dict) -> None:
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        elif rec.get("skipped"):
            self.say(f"bench: {rec['name']}: {rec['note']}")
        else:
            self.say(
                f"bench: {rec['name']} steps={rec['steps']} nfe={rec['nfe']} batch={rec['batch']} "
                f"{rec['dtype']}: {rec['xrt']:.2f}x real time ({rec['time_s'] * 1000:.1f} ms)"
                + (" [slow: timed once]" if rec.get("slow") else "")
            )

    def _is_slow(self, seconds: Optional[float]) -> bool:
        return self.slow_s is not None and seconds is not None and seconds > self.slow_s

    def _time(self, fn, mem: _MemProbe, inputs, key: tuple, nfe: int, what: str):
        """(median wall s, best wall s, median CPU s, last output, slow, peak MiB, peak note).

        Normal: one untimed call under the memory probe, max(warmup, 1) - 1 more untimed calls,
        then `repeats` timed ones. Slow (slow_s set and a call estimated or measured above it):
        a single timed call. The estimate is the seconds per network evaluation of the same
        model and batch at its previous step count times this setting's NFE; when it is over
        slow_s the probe call is skipped too (on CPU the peak memory of that previous setting is
        reported: the working memory of one step does not grow with the step count).
        """
        per = self.per_nfe.get(key)
        est = per * nfe if per is not None else None
        peak_note = ""
        slow = self._is_slow(est) and (self.device.type == "cuda" or key in self.peaks)
        probed = not slow
        if slow:
            self.say(f"bench: {what}: about {est:.1f} s a call (> {self.slow_s:g} s): timed once "
                     f"(--full: {self.repeats} times)")
        else:
            t0 = _clock()
            out = mem.run(fn, inputs)
            t_probe = _clock() - t0
            if self._is_slow(t_probe):
                slow = True
                self.say(f"bench: {what}: first call took {t_probe:.1f} s (> {self.slow_s:g} s): timed once "
                         f"(--full: {self.repeats} times)")
            else:
                for _ in range(self.warmup - 1):
                    out = fn()
        mem.reset()
        times, cpu = [], []
        for _ in range(1 if slow else self.repeats):
            _sync(self.device)
            t0, c0 = _clock(), _cpu_clock()
            out = fn()
            _sync(self.device)
            times.append(_clock() - t0)
            cpu.append(_cpu_clock() - c0)
            if self._is_slow(times[0]):  # measured slow although not estimated so: stop here
                slow = True
                break
        if not probed and mem.method == "cpu_tensor_peak":
            peak, from_steps = self.peaks[key]
            peak_note = f"; peak memory of its {from_steps}-step setting (no probe call for a slow setting)"
        else:
            peak = mem.peak_mb()
        return statistics.median(times), min(times), statistics.median(cpu), out, slow, peak, peak_note

    def measure(self, fn, mem: _MemProbe, inputs: Sequence[torch.Tensor], *, batch: int, sample_rate: int,
                **fields) -> dict:
        key = (fields["name"], batch)
        what = f"{fields['name']} steps={fields['steps']} batch={batch}"
        t_med, t_best, t_cpu, out, slow, peak, peak_note = self._time(fn, mem, inputs, key, fields["nfe"], what)
        self.per_nfe[key] = t_med / fields["nfe"]
        if not peak_note:
            self.peaks[key] = (peak, fields["steps"])
        else:
            fields["note"] = (fields.get("note") or "") + peak_note
        if slow:
            fields["note"] = (fields.get("note") or "") + _SLOW_NOTE.format(slow_s=self.slow_s, repeats=self.repeats)
        seconds = out.shape[-1] / sample_rate
        xrt = batch * seconds / t_med
        n = 1 if slow else self.repeats
        rec = _record(
            device=str(self.device), dtype=self.dtype, batch=batch, threads=torch.get_num_threads(),
            sample_rate=sample_rate, seconds=seconds, time_s=t_med, time_best_s=t_best,
            repeats=n, slow=slow, xrt=xrt, rtf=1.0 / xrt, xrt_best=batch * seconds / t_best, cpu_s=t_cpu,
            xrt_cpu=batch * seconds / t_cpu if t_cpu > 0 else None,
            peak_mem_mb=peak, peak_mem_method=mem.method, load_1m=_load_1m(), **fields,
        )
        self.add(rec)
        return rec


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------


def _frames(seconds: float, sample_rate: int, hop: int, min_samples: int = 0) -> int:
    return max(1, round(seconds * sample_rate / hop), -(-min_samples // hop))


def _hifigan_mel(frames: int, batch: int, device: torch.device) -> torch.Tensor:
    """(batch, 80, frames) hifigan-preset log-mel of a fixed synthetic signal (not timed)."""
    mel_fn = MelSpectrogram(MEL_PRESET)
    T = frames * HOP
    g = torch.Generator().manual_seed(0)
    t = torch.arange(T, dtype=torch.float32) / SAMPLE_RATE
    audio = 0.3 * torch.sin(2 * math.pi * 220.0 * t) + 0.01 * torch.randn(T, generator=g)
    mel = mel_fn(audio[None])  # (1, 80, frames): center=False with the 384-sample pre-pad
    return mel.expand(batch, -1, -1).contiguous().to(device)


def _setup(run: "_Runner", net_name: str, wrapper, size: str, seconds: float):
    """Random-weight net of `size` in its wrapper on the run's device and dtype, with its memory
    probe, FLOPs per second of audio, parameter count and the frame count of `seconds`."""
    param = KarrasParam(**BENCH_PARAM)
    mem = _MemProbe(run.device)
    net = build_net(net_name, domain="wave", in_channels=1, cond_channels=N_MELS, size=size, hop=HOP).to(run.device)
    model = wrapper(net, param, cond_channels=N_MELS, cond_hop=HOP).to(run.device).eval()
    mem.module = model
    model.body_dtype = DTYPES[run.dtype]
    fps = flops_per_second(net, sample_rate=SAMPLE_RATE, in_channels=1, cond_channels=N_MELS, hop=HOP)
    frames = _frames(seconds, SAMPLE_RATE, HOP, MelSpectrogram(MEL_PRESET).min_samples)
    return param, mem, net, model, fps, count_parameters(model), frames


def _time_consistency(run: _Runner, cm, mem: _MemProbe, sigmas_for, batch_sizes, steps: Sequence[int],
                      frames: int, after=None, **fields) -> None:
    """Time `consistency_sample` of the ConsistencyModel `cm` for every batch size and step count
    (sigmas_for(k) -> its sigmas), then `after(audio (B, 1, T), mel)` when given (the mel projection of a
    shipped model), inside the timed call; `fields` go to the records (name, model, params, ...)."""
    for batch in batch_sizes:
        mel = _hifigan_mel(frames, batch, run.device)
        shape = (batch, 1, frames * HOP)
        for k in steps:
            sigmas = sigmas_for(k)
            g = torch.Generator().manual_seed(0)

            def fn(sigmas=sigmas, g=g, mel=mel, shape=shape):
                audio = consistency_sample(cm, shape, sigmas=sigmas, cond=mel, generator=g, device=run.device)
                return audio if after is None else after(audio, mel)

            run.measure(fn, mem, (mel,), batch=batch, sample_rate=SAMPLE_RATE, sampler="consistency (CM Alg. 1)",
                        steps=k, nfe=len(sigmas), **fields)


def _bench_cm(run: _Runner, size: str, batch_sizes, steps: Sequence[int], seconds: float,
              net_name: str = "unet1d") -> None:
    param, mem, net, model, fps, n_params, frames = _setup(run, net_name, ConsistencyModel, size, seconds)
    name = f"cmaudio-{size}" if net_name == "unet1d" else f"cmaudio-{net_name}-{size}"
    _time_consistency(run, model, mem, param.default_sigmas, batch_sizes, steps, frames, name=name,
                      model=f"{net_name}/{size} wave, ConsistencyModel", params=n_params, flops_per_second=fps,
                      note=f"{SAMPLE_RATE} Hz, {N_MELS}-bin {MEL_PRESET} mel, hop {HOP}; random weights")
    del model, net


def _bench_default(run: _Runner, batch_sizes, steps: Sequence[int], seconds: float) -> None:
    """``cmaudio-default``: the vocoder shipped in the package (what `cmaudio vocode` runs), its own weights,
    network options (e.g. FrameNet's Griffin-Lim prior) and default sigmas. Skipped when none is installed
    or its preset is not the bench's hifigan mel."""
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        return
    mem = _MemProbe(run.device)
    voc = Vocoder.from_pretrained(device=run.device)
    m = voc.spec.model
    if voc.spec.preset != MEL_PRESET or voc.kind != "consistency":
        return
    model = voc.model.eval()
    mem.module = model
    model.body_dtype = DTYPES[run.dtype]
    fps = flops_per_second(model.net, sample_rate=SAMPLE_RATE, in_channels=1, cond_channels=N_MELS, hop=HOP)
    n_params = count_parameters(model)
    frames = _frames(seconds, SAMPLE_RATE, HOP, MelSpectrogram(MEL_PRESET).min_samples)
    what = f"{m.net}/{m.size}" + (f" {m.frame_dim}x{m.frame_layers}" if m.net == "framenet" else "")
    if m.net == "framenet" and m.frame_prior_iters:
        what += f", Griffin-Lim prior {m.frame_prior_iters} it."
    after = None
    if voc.projection:  # what `cmaudio vocode` runs after the last step
        what += f", mel projection {voc.projection} it."
        iters = voc.projection

        def after(audio, mel):
            return mel_projection(audio[:, 0], mel, voc.features, iters)
    _time_consistency(run, model, mem, voc.sigmas_for, batch_sizes, steps, frames, after=after, name="cmaudio-default",
                      model=f"shipped default ({what}), ConsistencyModel", params=n_params, flops_per_second=fps,
                      note=f"{SAMPLE_RATE} Hz, {N_MELS}-bin {MEL_PRESET} mel, hop {HOP}; the shipped weights")
    del model, voc


def _bench_teacher(run: _Runner, size: str, batch_sizes, steps: Sequence[int], seconds: float) -> None:
    param, mem, net, model, fps, n_params, frames = _setup(run, "diffwave", Denoiser, size, seconds)
    for batch in batch_sizes:
        mel = _hifigan_mel(frames, batch, run.device)
        shape = (batch, 1, frames * HOP)
        for k in steps:
            sigmas = teacher_sigmas(param, k)  # k + 1 levels -> k Euler steps, NFE = k
            g = torch.Generator().manual_seed(0)

            def fn(sigmas=sigmas, g=g, mel=mel, shape=shape):
                return ode_sample(model, shape, sigmas=sigmas, cond=mel, solver="euler", generator=g,
                                  device=run.device, to_zero=False)

            run.measure(
                fn, mem, (mel,), batch=batch, sample_rate=SAMPLE_RATE, name="cmaudio-teacher",
                model=f"diffwave/{size} wave, Denoiser", sampler="PF ODE, Euler (EDM Alg. 1)",
                steps=k, nfe=k, params=n_params, flops_per_second=fps,
                note=f"Euler sigma_max -> sigma_min over teacher_sigmas(param, {k}), no step to 0; "
                     f"{SAMPLE_RATE} Hz, {N_MELS}-bin {MEL_PRESET} mel; random weights",
            )
    del model, net


def _diffwave_reference_sampler(model, params, fast: bool):
    """The arithmetic of diffwave.inference.predict() (pip diffwave 0.1.7), minus checkpoint loading.

    Returns run(spectrogram (B, n_mels, frames), generator) -> audio (B, hop * frames).
    The noise is drawn with `generator` on the spectrogram's device (predict() uses the global
    RNG); everything else, including the fractional steps T of the fast schedule and the clamp
    to [-1, 1] after every step, is the reference's.
    """
    import numpy as np

    training_noise_schedule = np.array(params.noise_schedule)
    inference_noise_schedule = np.array(params.inference_noise_schedule) if fast else training_noise_schedule
    talpha = 1 - training_noise_schedule
    talpha_cum = np.cumprod(talpha)
    beta = inference_noise_schedule
    alpha = 1 - beta
    alpha_cum = np.cumprod(alpha)
    T = []
    for s in range(len(inference_noise_schedule)):
        for t in range(len(training_noise_schedule) - 1):
            if talpha_cum[t + 1] <= alpha_cum[s] <= talpha_cum[t]:
                twiddle = ((talpha_cum[t] ** 0.5 - alpha_cum[s] ** 0.5)
                           / (talpha_cum[t] ** 0.5 - talpha_cum[t + 1] ** 0.5))
                T.append(t + twiddle)
                break
    T = np.array(T, dtype=np.float32)

    def run(spectrogram: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        dev = spectrogram.device
        audio = torch.randn(spectrogram.shape[0], params.hop_samples * spectrogram.shape[-1], device=dev,
                            generator=generator)
        for n in range(len(alpha) - 1, -1, -1):
            c1 = 1 / alpha[n] ** 0.5
            c2 = beta[n] / (1 - alpha_cum[n]) ** 0.5
            audio = c1 * (audio - c2 * model(audio, spectrogram, torch.tensor([T[n]], device=dev)).squeeze(1))
            if n > 0:
                noise = torch.randn(audio.shape, device=dev, generator=generator, dtype=audio.dtype)
                sigma = ((1.0 - alpha_cum[n - 1]) / (1.0 - alpha_cum[n]) * beta[n]) ** 0.5
                audio += sigma * noise
            audio = torch.clamp(audio, -1.0, 1.0)
        return audio

    return run, len(alpha)


def _peer_autocast(run: _Runner):
    dt = DTYPES[run.dtype]
    return torch.autocast(run.device.type, dtype=dt) if dt is not None else nullcontext()


def _bench_diffwave_reference(run: _Runner, batch_sizes, teacher_steps: Sequence[int], seconds: float) -> None:
    name = "diffwave-reference"
    try:
        dw_model = importlib.import_module("diffwave.model")
        dw_params = importlib.import_module("diffwave.params")
    except Exception as e:  # ImportError, or a broken install
        run.add(_skip_record(name, f"skipped: cannot import the PyPI diffwave package ({type(e).__name__}: {e}); "
                                   "pip install diffwave", device=run.device, dtype=run.dtype))
        return
    steps = [k for k in teacher_steps if k in REFERENCE_SCHEDULES]
    if not steps:
        run.add(_skip_record(name, f"skipped: its own schedules have 6 (fast) and 50 (full) steps; none in "
                                   f"teacher_steps={tuple(teacher_steps)}", device=run.device, dtype=run.dtype))
        return
    try:
        mem = _MemProbe(run.device)
        params = dw_params.AttrDict(dw_params.params)
        model = dw_model.DiffWave(params).to(run.device).eval()
        mem.module = model
        n_params = count_parameters(model)
        sr, hop = int(params.sample_rate), int(params.hop_samples)
        frames = _frames(seconds, sr, hop, MelSpectrogram(MEL_PRESET).min_samples)
        for batch in batch_sizes:
            mel = _hifigan_mel(frames, batch, run.device)
            for k in steps:
                fast = REFERENCE_SCHEDULES[k] == "fast"
                sampler, nfe = _diffwave_reference_sampler(model, params, fast)
                g = torch.Generator(device=run.device).manual_seed(0)

                def fn(sampler=sampler, mel=mel, g=g):
                    with _peer_autocast(run):
                        return sampler(mel, g)

                run.measure(
                    fn, mem, (mel,), batch=batch, sample_rate=sr, name=name,
                    model=f"pip diffwave DiffWave(params): {params.residual_layers} layers x "
                          f"{params.residual_channels} channels",
                    sampler=f"its predict() loop, {'fast 6-step' if fast else 'full 50-step'} schedule",
                    steps=k, nfe=nfe, params=n_params, flops_per_second=None,
                    note=("inference_noise_schedule " + str(list(params.inference_noise_schedule)) if fast
                          else "training schedule linspace(1e-4, 0.05, 50)") + f"; {sr} Hz, hop {hop}; random weights",
                )
        del model
    except Exception as e:  # a peer never crashes the benchmark
        run.add(_skip_record(name, f"skipped: failed to run ({type(e).__name__}: {e})", device=run.device,
                             dtype=run.dtype))


def _bench_vocos(run: _Runner, batch_sizes, seconds: float) -> None:
    name = "vocos"
    try:
        vocos = importlib.import_module("vocos")
        fe_mod = importlib.import_module("vocos.feature_extractors")
        bb_mod = importlib.import_module("vocos.models")
        head_mod = importlib.import_module("vocos.heads")
    except Exception as e:
        run.add(_skip_record(name, f"skipped: cannot import the PyPI vocos package ({type(e).__name__}: {e}); "
                                   "pip install vocos", device=run.device, dtype=run.dtype))
        return
    try:
        mem = _MemProbe(run.device)
        cfg = VOCOS_CONFIG
        fe = fe_mod.MelSpectrogramFeatures(**cfg["feature_extractor"])
        model = vocos.Vocos(
            feature_extractor=fe, backbone=bb_mod.VocosBackbone(**cfg["backbone"]),
            head=head_mod.ISTFTHead(**cfg["head"]),
        ).to(run.device).eval()
        mem.module = model
        n_params = count_parameters(model)
        sr, hop = VOCOS_SAMPLE_RATE, cfg["feature_extractor"]["hop_length"]
        T = _frames(seconds, sr, hop) * hop
        g = torch.Generator().manual_seed(0)
        t = torch.arange(T, dtype=torch.float32) / sr
        audio = 0.3 * torch.sin(2 * math.pi * 220.0 * t) + 0.01 * torch.randn(T, generator=g)
        with torch.inference_mode():
            feats1 = model.feature_extractor(audio[None].to(run.device))  # (1, 100, frames), not timed
        for batch in batch_sizes:
            feats = feats1.expand(batch, -1, -1).contiguous()

            def fn(feats=feats):
                with _peer_autocast(run):
                    return model.decode(feats)

            run.measure(
                fn, mem, (feats,), batch=batch, sample_rate=sr, name=name,
                model="pip vocos mel-24khz config: VocosBackbone 8 x 512 (1536), ISTFTHead n_fft 1024 hop 256",
                sampler="Vocos.decode(mel) (GAN, one pass)", steps=1, nfe=1, params=n_params,
                flops_per_second=None,
                note=f"runs at {sr} Hz (xrt at its own rate), 100-bin mel, hop {hop}; random weights",
            )
        del model
    except Exception as e:
        run.add(_skip_record(name, f"skipped: failed to run ({type(e).__name__}: {e})", device=run.device,
                             dtype=run.dtype))


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def _ints(values: Iterable[int], what: str, *, minimum: int = 1) -> tuple[int, ...]:
    values = list(values) if not isinstance(values, (str, bytes)) else values
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a list of integers, got {values!r}") from None
    if any(isinstance(v, bool) for v in values) or any(v < minimum for v in out):
        raise ConfigError(f"{what} must be integers >= {minimum}, got {list(values)}")
    return out


def _check_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"the benchmark runs on cpu or cuda, got {device!r}")
    return dev


def run_bench(
    *,
    device: str = "cpu",
    threads: Optional[int] = None,
    seconds: float = 1.0,
    batch_sizes: Sequence[int] = (1,),
    dtype: str = "fp32",
    repeats: int = 10,
    warmup: int = 2,
    include_peers: bool = True,
    include_default: bool = True,
    sizes: Sequence[str] = ("small", "base"),
    framenet_sizes: Sequence[str] = ("small", "base"),
    steps: Sequence[int] = (1, 2, 4),
    teacher_steps: Sequence[int] = (6, 50),
    teacher_size: Optional[str] = "base",
    slow_s: Optional[float] = SLOW_S,
    progress: Optional[Callable[[str], Any]] = None,
    on_record: Optional[Callable[[dict], Any]] = None,
) -> list[dict]:
    """Time every setting (module docstring) and return one record per setting.

    Args:
        device: "cpu", "cuda" or "cuda:N".
        threads: torch intra-op threads for the run (torch.set_num_threads; restored afterwards);
            None keeps the current setting.
        seconds: audio length of one generation, in seconds (> 0); rounded to whole mel frames.
        batch_sizes: batch sizes to time (each >= 1).
        dtype: "fp32" or "bf16" (module docstring, "bf16").
        repeats: timed calls per setting (>= 1); the record holds their median.
        slow_s: a setting whose call is estimated (from the same model's previous step count,
            per network evaluation) or measured (its first call) above slow_s seconds is timed
            once and marked slow=True (repeats=1, a note says so), so the default run of every
            setting takes minutes on 2 CPU cores instead of the ~25 that ten 50-step DiffWave
            calls cost. None times every setting `repeats` times (the CLI's --full).
        warmup: untimed calls before them (>= 0; at least one is made, the memory probe).
        include_peers: also time the PyPI diffwave (its 6- and 50-step schedules, where in
            teacher_steps) and vocos; a peer that cannot be imported or run gives a note record
            (skipped=True) instead of an error.
        include_default: also time the vocoder shipped in the package (``cmaudio-default``).
        sizes: UNet1d wave presets for ``cmaudio-<size>`` (tiny, small, base).
        framenet_sizes: FrameNet presets for ``cmaudio-framenet-<size>`` (tiny, small, base).
        steps: consistency sampling steps (NFE = steps).
        teacher_steps: Euler steps of the teacher (NFE = steps).
        teacher_size: DiffWave preset of ``cmaudio-teacher`` (tiny, small, base, large); None
            skips the teacher.
        progress: called with one-line messages: before a setting that will be timed once, and
            after each setting when on_record is None.
        on_record: called with each record as soon as its setting is done (the CLI prints its
            table row then).

    Returns: a list of records (RECORD_FIELDS). Raises ConfigError for bad arguments.
    """
    dev = _check_device(device)
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"seconds must be a positive number, got {seconds!r}")
    batch_sizes = _ints(batch_sizes, "batch sizes")
    steps = _ints(steps, "steps")
    teacher_steps = _ints(teacher_steps, "teacher steps")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an integer >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    for s in sizes:
        if s not in UNET_PRESETS["wave"]:
            raise ConfigError(f"unknown cmaudio size {s!r}; valid: {', '.join(UNET_PRESETS['wave'])}")
    for s in framenet_sizes:
        if s not in FRAMENET_PRESETS:
            raise ConfigError(f"unknown framenet size {s!r}; valid: {', '.join(FRAMENET_PRESETS)}")
    if slow_s is not None and (isinstance(slow_s, bool) or not isinstance(slow_s, (int, float))
                               or not math.isfinite(slow_s) or slow_s <= 0):
        raise ConfigError(f"slow_s must be a positive number of seconds or None, got {slow_s!r}")
    if teacher_size is not None and teacher_size not in DIFFWAVE_PRESETS:
        raise ConfigError(f"unknown teacher size {teacher_size!r}; valid: {', '.join(DIFFWAVE_PRESETS)}")

    run = _Runner(dev, dtype, repeats, warmup, progress, slow_s=slow_s, on_record=on_record)
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for size in sizes:
                _bench_cm(run, size, batch_sizes, steps, seconds)
            for size in framenet_sizes:
                _bench_cm(run, size, batch_sizes, steps, seconds, net_name="framenet")
            if include_default:
                _bench_default(run, batch_sizes, steps, seconds)
            # vocos before the iterative settings: the 1-step comparisons are all printed before
            # the minutes the 50-step calls take
            if include_peers:
                _bench_vocos(run, batch_sizes, seconds)
            if teacher_size is not None and teacher_steps:
                _bench_teacher(run, teacher_size, batch_sizes, teacher_steps, seconds)
            if include_peers:
                _bench_diffwave_reference(run, batch_sizes, teacher_steps, seconds)
    finally:
        torch.set_num_threads(old_threads)
        gc.collect()
    return run.records


def targets(records: Sequence[dict]) -> list[dict]:
    """The two speed targets, per (device, dtype, batch) group where the settings were measured.

    Returns dicts {"what", "device", "dtype", "batch", "threads", "value", "target", "met"}:
    - "cmaudio-small 1-step xRT": target >= 20 (stated for 2 CPU cores; `threads` says what ran);
    - "speed-up cmaudio-small 1-step / diffwave-reference 50 steps" = ratio of their xRT, >= 100.
    """
    def find(name, steps, key):
        for r in records:
            if (not r.get("skipped") and r.get("name") == name and r.get("steps") == steps
                    and (r.get("device"), r.get("dtype"), r.get("batch")) == key):
                return r
        return None

    keys = []
    for r in records:
        k = (r.get("device"), r.get("dtype"), r.get("batch"))
        if not r.get("skipped") and k not in keys:
            keys.append(k)
    out = []
    for key in keys:
        small = find("cmaudio-small", 1, key)
        if small is None:
            continue
        base = dict(device=key[0], dtype=key[1], batch=key[2], threads=small.get("threads"))
        out.append(dict(what="cmaudio-small 1-step xRT", value=small["xrt"], target=TARGET_SMALL_XRT,
                        met=small["xrt"] >= TARGET_SMALL_XRT, **base))
        ref = find("diffwave-reference", 50, key)
        if ref is not None:
            ratio = small["xrt"] / ref["xrt"]
            out.append(dict(what="speed-up cmaudio-small 1-step / diffwave-reference 50 steps", value=ratio,
                            target=TARGET_SPEEDUP, met=ratio >= TARGET_SPEEDUP, **base))
    return out


def ratios(records: Sequence[dict]) -> list[dict]:
    """Speed of every cmaudio 1-step setting against the peers, per (device, dtype, batch) group.

    Returns dicts {"name", "device", "dtype", "batch", "threads", "xrt", "vs_diffwave50",
    "vs_vocos"}: the setting's xRT divided by the xRT of ``diffwave-reference`` at 50 steps and of
    ``vocos`` measured in the same run (None where that peer was not measured). Only ratios within
    one run are meaningful on a shared machine. vocos's xRT is at its own 24 kHz rate.
    """
    done = [r for r in records if not r.get("skipped")]

    def find(name, steps, key):
        for r in done:
            if r.get("name") == name and r.get("steps") == steps and (r.get("device"), r.get("dtype"), r.get("batch")) == key:
                return r
        return None

    out = []
    for r in done:
        name = str(r.get("name"))
        if not name.startswith("cmaudio-") or name == "cmaudio-teacher" or r.get("steps") != 1:
            continue
        key = (r.get("device"), r.get("dtype"), r.get("batch"))
        ref, voc = find("diffwave-reference", 50, key), find("vocos", 1, key)
        out.append(dict(name=name, device=key[0], dtype=key[1], batch=key[2], threads=r.get("threads"), xrt=r["xrt"],
                        vs_diffwave50=r["xrt"] / ref["xrt"] if ref else None,
                        vs_vocos=r["xrt"] / voc["xrt"] if voc else None))
    return out


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _xrt(v) -> str:
    """Two decimals, or two significant digits below 0.1 (a 50-step call on CPU: 0.0031, not 0.00)."""
    return "-" if v is None else (f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.2g}")


# (header, width) of the table's columns; fixed so that rows can be printed as they complete
_COLUMNS = (("name", 22), ("steps", 5), ("nfe", 3), ("batch", 5), ("dtype", 5), ("thr", 3), ("params", 7),
            ("GFLOP/s", 7), ("xRT", 8), ("xRT best", 8), ("xRT cpu", 8), ("RTF", 8), ("ms/call", 9),
            ("calls", 5), ("peak MB", 7), ("rate", 5))


def _line(cells: Sequence[str]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS))).rstrip()


def format_header() -> str:
    """The table's two header lines (column names and a rule)."""
    return _line([h for h, _ in _COLUMNS]) + "\n" + "  ".join("-" * w for _, w in _COLUMNS)


def format_row(r: dict) -> str:
    """One record as a table row (`format_header`'s columns), or "name: note" for a skipped one.

    The calls column is the number of timed calls; "1*" marks a slow setting timed once.
    """
    if r.get("skipped"):
        return f"{r.get('name')}: {r.get('note')}"
    fps = r.get("flops_per_second")
    calls = _fmt(r.get("repeats"), "d") + ("*" if r.get("slow") else "")
    return _line((
        str(r.get("name")), _fmt(r.get("steps"), "d"), _fmt(r.get("nfe"), "d"), _fmt(r.get("batch"), "d"),
        str(r.get("dtype")), _fmt(r.get("threads"), "d"),
        "-" if r.get("params") is None else f"{r['params'] / 1e6:.2f}M",
        "-" if fps is None else f"{fps / 1e9:.2f}",
        _xrt(r.get("xrt")), _xrt(r.get("xrt_best")), _xrt(r.get("xrt_cpu")),
        _fmt(r.get("rtf"), ".4f"),
        "-" if r.get("time_s") is None else f"{r['time_s'] * 1000:.1f}",
        calls, _fmt(r.get("peak_mem_mb"), ".1f"), _fmt(r.get("sample_rate"), "d"),
    ))


def format_summary(records: Sequence[dict]) -> str:
    """What follows the rows: the legend, the notes, the 1-step speed ratios and the targets."""
    lines: list[str] = []
    notes: list[str] = []
    for r in records:  # the slow remark is the table's "1*" (legend below)
        line = f"{r.get('name')}: {str(r.get('note')).split(_SLOW_NOTE.split('{')[0])[0]}"
        if r.get("note") and line not in notes:
            notes.append(line)
    done = [r for r in records if not r.get("skipped")]
    if done:
        r0 = done[0]
        methods = sorted({str(r.get("peak_mem_method")) for r in done})
        loads = [r["load_1m"] for r in done if r.get("load_1m") is not None]
        full = max((r.get("repeats") or 0) for r in done)
        lines.append("")
        lines.append(
            f"device {r0.get('device')}; xRT = seconds of audio per second of compute (all batch items), "
            f"median of the timed calls (best: fastest call; cpu: per process CPU second); RTF = 1/xRT;\n"
            f"GFLOP/s = one forward pass per second of audio; peak MB: {', '.join(methods)}"
            + (f"; load 1m {min(loads):.2f}-{max(loads):.2f}" if loads else "")
        )
        slow = [r for r in done if r.get("slow")]
        if slow:
            lines.append(f"calls 1* = slow setting (a call above the slow threshold), timed once; "
                         f"--full times every setting {full if full > 1 else 'the --repeats'} times")
    if notes:
        lines.append("notes:")
        lines.extend(f"  {n}" for n in notes)
    rs = ratios(records)
    if rs:
        lines.append("1-step speed ratios (xRT / xRT within this run; vocos at its own 24 kHz):")
        w = max(len(r["name"]) for r in rs)
        for r in rs:
            ref = "-" if r["vs_diffwave50"] is None else f"{r['vs_diffwave50']:.1f}x"
            if r["vs_vocos"] is None:
                voc = "-"
            else:
                voc = f"{r['vs_vocos']:.2f}x ({'at least as fast as' if r['vs_vocos'] >= 1 else 'slower than'} vocos)"
            lines.append(f"  {r['name'].ljust(w)} (batch {r['batch']}, {r['threads']} threads): "
                         f"/ diffwave-reference 50 steps {ref}; / vocos {voc}")
    tg = targets(records)
    if tg:
        lines.append("targets:")
        for t in tg:
            unit = "x real time" if "xRT" in t["what"] else "x"
            lines.append(
                f"  {t['what']} ({t['device']}, {t['dtype']}, batch {t['batch']}, {t['threads']} threads): "
                f"{t['value']:.1f} {unit} (target >= {t['target']:g}: {'met' if t['met'] else 'NOT met'})"
            )
    return "\n".join(lines)


def format_table(records: Sequence[dict]) -> str:
    """A fixed-width text table of the records (skipped ones only in the notes), then `format_summary`."""
    rows = [format_row(r) for r in records if not r.get("skipped")]
    return "\n".join([format_header(), *rows, format_summary(records)])


def write_json(records: Sequence[dict], path: str | Path, *, overwrite: bool = False) -> None:
    """Write the records as a JSON list of objects, atomically (cmaudio.io.write_text_atomic; an existing
    file is replaced only with `overwrite`)."""
    write_text_atomic(path, json.dumps([dict(r) for r in records], indent=2, allow_nan=False) + "\n",
                      overwrite=overwrite)
