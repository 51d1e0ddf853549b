"""One objective-agnostic training loop for teachers (DSM), CD, CT and iCT.

`train(cfg, run_dir, resume=...)` builds data, network, parameterization and objective from a
Config and runs:

    for each step k:  for each micro-batch: loss, logs = objective(x, cond, seeds=..., step=k)
                      (loss / accum).backward()
                      skip the step if the loss or the gradient is not finite (counted)
                      clip, AdamW step, LR schedule, [discriminator step], objective.after_step(k + 1),
                      inference EMAs

With the adversarial extra (objective.adversarial > 0) the objective's discriminators get their own
AdamW, stepped right after each generator step on the outputs that step was judged on; their weights
and optimizer are part of every checkpoint (adversary.safetensors, state.pt), so resume stays exact.

It never branches on the objective kind: the objective owns its target network and teacher.
The data domain (waveforms vs mel-spectrograms) is a `Domain` object (cmaudio.domains) that turns
loader batches into (x, cond, mask, seeds) and generates validation samples.

- Mixed precision: bf16 autocast of the network bodies on CUDA (train.amp), fp32 on CPU; the
  parameterization, ODE steps and losses stay fp32.
- Distributed: under torchrun (WORLD_SIZE > 1) it joins a process group (gloo on CPU, nccl on
  GPU), wraps the online network in DistributedDataParallel, and each rank reads its share of
  every global batch (cmaudio.data.StreamSampler). Per-sample seeds make the randomness of an
  item independent of which rank holds it, so N processes match 1 process with the same global
  batch. Only rank 0 logs, validates and writes.
- Resume is exact: the data stream position is the step, and the checkpoint holds the
  optimizer, scheduler, RNG states, EMAs and target.
- Inference EMAs use the warm-up rate min(rate, (1 + k) / (10 + k)) so that short runs are not
  dominated by the initial weights; they are not the CD/CT target.
- SIGINT/SIGTERM: the current step finishes, a checkpoint is written, and TrainingInterrupted
  is raised.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cmaudio import checkpoint as ckpt
from cmaudio.build import build_model, build_objective, device_of
from cmaudio.checkpoint import kind_of
from cmaudio.config import Config, dump_yaml, replace, to_dict
from cmaudio.domains.base import Domain
from cmaudio.domains.mel import MelDomain
from cmaudio.domains.wave import WaveDomain
from cmaudio.errors import CheckpointError, CmaudioError, ConfigError
from cmaudio.io import write_text_atomic
from cmaudio.progress import Progress
from cmaudio.schedules import ema_update


class TrainingError(CmaudioError):
    """Training cannot continue (e.g. too many non-finite steps); the last good state is saved."""


class TrainingInterrupted(CmaudioError):
    """SIGINT/SIGTERM: a checkpoint was written; rerun with --resume to continue."""


# ----------------------------------------------------------------------------------------------
# Small utilities
# ----------------------------------------------------------------------------------------------


def lr_factor(step: int, cfg) -> float:
    """Linear warm-up to 1 over warmup_steps, then constant or cosine to min_lr_ratio at max_steps."""
    t = cfg.train
    if t.warmup_steps > 0 and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_schedule == "cosine":
        span = max(t.max_steps - t.warmup_steps, 1)
        p = min(max(step - t.warmup_steps, 0) / span, 1.0)
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return 1.0


def ema_warmup_rate(rate: float, step: int) -> float:
    """min(rate, (1 + k) / (10 + k)): the usual EMA warm-up, so early EMAs follow the weights."""
    return min(rate, (1.0 + step) / (10.0 + step))


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device_of(device_pref)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = device_of(device_pref)
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def make_domain(cfg: Config, *, seed: int, log) -> Domain:
    """The training domain of model.domain: waveforms (WaveDomain) or mel-spectrograms (MelDomain)."""
    if cfg.model.domain == "wave":
        return WaveDomain(cfg, seed=seed, log=log)
    return MelDomain(cfg, seed=seed, log=log)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_loss: float
    skipped: int
    seconds: float
    checkpoint: Optional[Path]
    val: dict


class MetricsLog:
    """The run's metrics file: one JSON object per line, {"step": k, "time": unix s, name: value, ...},
    appended at each log and validation step (train/* losses incl. the per-sigma buckets, val/*
    held-out 1-step log-mel L1 and MR-STFT). A resumed run appends; lines of steps past the resume
    point are the ones it wrote before the cut. path None (non-main ranks): writes nothing."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.path is None:
            return
        import json

        row = {"step": int(step), "time": round(time.time(), 3), **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    st = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(st["cpu"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> TrainResult:
    """Train `cfg` in `run_dir`. With resume, continue from the newest valid checkpoint."""
    run_dir = Path(run_dir)
    dinfo, device = setup_distributed(cfg.train.device)
    say = log or (lambda msg: print(msg, file=sys.stderr))
    say_main = say if dinfo.main else (lambda msg: None)
    t = cfg.train
    if t.batch_size % (dinfo.world * t.grad_accum):
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be divisible by processes x grad_accum ({dinfo.world} x {t.grad_accum})"
        )

    if dinfo.main:  # before any data or step: a read-only run dir is refused now, not after training
        ckpt.check_writable(run_dir)
    start_ckpt, start_state = None, None
    if resume:
        start_ckpt, start_state = ckpt.latest_resumable(run_dir, warn=say_main)
        if start_ckpt is None:
            say_main(f"no valid checkpoint in {run_dir}; starting from scratch")
    elif dinfo.main and ckpt.list_checkpoints(run_dir):
        raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue or choose another --run-dir")

    torch.manual_seed(t.seed + dinfo.rank)
    domain = make_domain(cfg, seed=t.seed, log=say_main)

    # sigma_data: from the recipe, the checkpoint, or measured on the training data
    if start_ckpt is not None:
        meta = ckpt.read_meta(start_ckpt)
        sigma_data = float(meta["sigma_data"])
        saved_model_cfg = meta["config"]["model"]
        now = to_dict(cfg)["model"]
        diffs = [k for k in now if k not in ("sigma_data",) and now[k] != saved_model_cfg.get(k)]
        if diffs:
            k = diffs[0]
            raise CheckpointError(
                f"cannot resume {run_dir}: model.{k} is {now[k]!r} now but {saved_model_cfg.get(k)!r} in the checkpoint "
                "(a different network shape); use the original recipe or a new --run-dir"
            )
    elif cfg.model.sigma_data is not None:
        sigma_data = float(cfg.model.sigma_data)
    elif t.init_from:  # fine-tuning: the weights were trained for their own sigma_data, keep it
        sigma_data = init_sigma_data(Path(t.init_from))
        say_main(f"sigma_data from train.init_from: {sigma_data:.5f}")
    else:
        sigma_data = domain.sigma_data()
        say_main(f"sigma_data estimated from the training data: {sigma_data:.5f}")
    cfg = replace(cfg, model={"sigma_data": sigma_data})

    model = build_model(cfg, sigma_data, cond_channels=domain.cond_channels()).to(device)
    objective = build_objective(cfg, model).to(device)
    amp = t.amp if t.amp != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    body_dtype = torch.bfloat16 if amp == "bf16" else None
    for mod in objective.modules():
        if hasattr(mod, "body_dtype"):
            mod.body_dtype = body_dtype
    teacher = getattr(objective, "teacher", None)
    if teacher is not None and hasattr(teacher, "body_dtype"):
        teacher.body_dtype = body_dtype

    if start_ckpt is None and t.init_from:
        init_weights(model, Path(t.init_from))
        say_main(f"initialised from {t.init_from}")
    if dinfo.world > 1:
        sync_from_main(objective)
    emas = {float(r): copy.deepcopy(model).requires_grad_(False).eval() for r in t.ema_rates}
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, cfg))
    # the adversarial extra's discriminators: their own optimizer, one step after each generator step
    adversary = getattr(objective, "adversarial", None)
    opt_d = None
    if adversary is not None:
        opt_d = torch.optim.AdamW(adversary.disc.parameters(), lr=cfg.objective.adv_lr, betas=cfg.objective.adv_betas)

    step, skipped, consecutive_bad = 0, 0, 0
    if start_ckpt is not None:
        ckpt.load_state_into(model, ckpt.load_weights(start_ckpt / ckpt.MODEL_FILE, device), f"{start_ckpt}/model")
        for r, m in emas.items():
            f = start_ckpt / ckpt.ema_file(r)
            src = ckpt.load_weights(f, device) if f.is_file() else model.state_dict()
            ckpt.load_state_into(m, src, f"{start_ckpt}/{f.name}")
        tgt = start_ckpt / "target.safetensors"
        objective.load_target_state(ckpt.load_weights(tgt, device) if tgt.is_file() else {})
        state = start_state
        if adversary is not None:
            adv_file = start_ckpt / ckpt.ADVERSARY_FILE
            if adv_file.is_file() and "adversary_optimizer" in state:
                ckpt.load_state_into(adversary.disc, ckpt.load_weights(adv_file, device), f"{start_ckpt}/{adv_file.name}")
                opt_d.load_state_dict(state["adversary_optimizer"])
            else:  # a run continued with the term switched on: the discriminators start afresh
                say_main(f"{start_ckpt} has no discriminators; the adversarial term starts with new ones")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], device)
        step, skipped = int(state["step"]), int(state["skipped"])
        say_main(f"resumed from {start_ckpt} at step {step}")

    if dinfo.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        objective.set_online(DDP(model, device_ids=[device.index] if device.type == "cuda" else None))
    if t.compile:
        objective.set_online(torch.compile(objective.online))

    writer = None
    if dinfo.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg), overwrite=True)  # the run's own (resume)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))

    base_meta = {"config": to_dict(cfg), "sigma_data": sigma_data, "git_commit": ckpt.git_commit(),
                 "kind": kind_of(cfg), "domain_info": domain.extra_model_info()}

    def save(at_step: int) -> Optional[Path]:
        if not dinfo.main:
            return None
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(device),
                 "step": at_step, "skipped": skipped}
        if opt_d is not None:
            state["adversary_optimizer"] = opt_d.state_dict()
        return ckpt.save_checkpoint(run_dir, at_step, model=model.state_dict(),
                                    emas={r: m.state_dict() for r, m in emas.items()},
                                    target=objective.target_state(), state=state, meta=base_meta,
                                    keep_last=t.keep_last, warn=say_main,
                                    adversary=adversary.disc.state_dict() if adversary is not None else None)

    stop = {"signal": None}

    def on_signal(signum, frame):  # finish the step, save, exit
        stop["signal"] = signum

    old_handlers = {}
    if threading_main():
        for s in (signal.SIGINT, signal.SIGTERM):
            old_handlers[s] = signal.signal(s, on_signal)

    start_step = step
    micro = t.grad_accum
    loader = iter(domain.loader(start_step=step, global_batch=t.batch_size, rank=dinfo.rank, world=dinfo.world, micro=micro))
    bar = Progress(t.max_steps, step, enabled=progress and dinfo.main)
    t0, last_loss, samples, val_scores, val_time = time.time(), float("nan"), 0, {}, 0.0
    last_ckpt: Optional[Path] = None
    tick_t, tick_step = time.time(), step
    log_acc: dict[str, list] = {}
    metrics_log = MetricsLog(run_dir / "metrics.jsonl" if dinfo.main else None)
    model.train()
    try:
        while step < t.max_steps:
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            logs: dict[str, Any] = {}
            for m_i in range(micro):
                batch = domain.prepare(next(loader), device)
                sync = dinfo.world > 1 and m_i < micro - 1
                ctx = objective.online.no_sync() if sync and hasattr(objective.online, "no_sync") else nullcontext()
                with ctx:
                    loss, logs = objective(batch["x"], batch["cond"], mask=batch["mask"], seeds=batch["seeds"], step=step)
                    (loss / micro).backward()
                for k, v in logs.items():  # averaged over the steps between two log lines
                    if k != "loss":
                        acc = log_acc.setdefault(k, [0.0, 0])
                        acc[0] += float(v)
                        acc[1] += 1
                loss_sum += loss.detach() / micro
                samples += batch["x"].shape[0] * dinfo.world
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
            finite = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
            if dinfo.world > 1:
                f = finite.to(torch.float32)
                dist.all_reduce(f, op=dist.ReduceOp.MIN)
                finite = f > 0
            if not bool(finite):
                skipped += 1
                consecutive_bad += 1
                opt.zero_grad(set_to_none=True)
                if adversary is not None:
                    adversary.forget()
                if consecutive_bad >= t.max_nonfinite:
                    last_ckpt = save(step)
                    raise TrainingError(
                        f"{consecutive_bad} consecutive non-finite losses/gradients at step {step}; the last good state "
                        f"is saved in {last_ckpt}. Lower train.lr or check the data"
                    )
                continue
            consecutive_bad = 0
            opt.step()
            sched.step()
            if adversary is not None:
                for k, v in discriminator_step(adversary, opt_d, dinfo.world).items():
                    acc = log_acc.setdefault(k, [0.0, 0])
                    acc[0] += v
                    acc[1] += 1
            step += 1
            objective.after_step(step)
            for r, m in emas.items():
                ema_update(m, model, ema_warmup_rate(r, step))
            last_loss = float(loss_sum)

            if dinfo.main and (step % t.log_every == 0 or step == t.max_steps):
                el = max(time.time() - tick_t, 1e-9)
                sps = (step - tick_step) / el
                tick_t, tick_step = time.time(), step
                scalars = {"train/loss": last_loss, "train/grad_norm": float(grad_norm), "train/lr": sched.get_last_lr()[0],
                           "train/steps_per_s": sps, "train/samples_per_s": sps * t.batch_size,
                           "train/skipped": float(skipped)}
                for k, (total, n) in log_acc.items():
                    scalars[f"train/{k}"] = total / max(n, 1)
                log_acc.clear()
                for k, v in scalars.items():
                    writer.add_scalar(k, v, step)
                metrics_log.write(step, scalars)
            bar.update(step, f"loss {last_loss:.4g}")

            if dinfo.main and (step % t.val_every == 0 or step == t.max_steps):
                rate = min(emas) if emas else None
                vm = emas[rate] if rate is not None else model
                model.eval()
                tv = time.time()
                val_scores = domain.validate(vm, cfg, step, run_dir / "samples" / ckpt.step_dir_name(step), writer)
                model.train()
                val_time += time.time() - tv
                for k, v in val_scores.items():
                    writer.add_scalar(k, v, step)
                metrics_log.write(step, {**val_scores, "val/minutes": (time.time() - t0) / 60})
            out_of_time = t.max_minutes is not None and (time.time() - t0) > 60 * t.max_minutes
            if dinfo.world > 1 and t.max_minutes is not None:  # every rank stops at the same step
                flag = torch.tensor(float(out_of_time), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag > 0)
            if step % t.ckpt_every == 0 or step == t.max_steps or out_of_time:
                last_ckpt = save(step) or last_ckpt
            if out_of_time:
                say_main(f"train.max_minutes ({t.max_minutes}) reached at step {step}; stopping with a checkpoint")
                break
            if stop["signal"] is not None:
                last_ckpt = save(step) or last_ckpt
                raise TrainingInterrupted(
                    f"stopped by signal {stop['signal']} at step {step}; checkpoint {last_ckpt}; continue with --resume"
                )
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if writer is not None:
            writer.flush()
            writer.close()
    seconds = time.time() - t0
    if dinfo.main:
        vs = " ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in val_scores.items())
        done = step - (start_step or 0)
        busy = max(seconds - val_time, 1e-9)  # training time without validation
        say_main(f"done: {step} steps in {seconds:.1f} s ({done / busy:.2f} steps/s, {done * t.batch_size / busy:.1f} "
                 f"samples/s, validation {val_time:.1f} s), loss {last_loss:.4g}, skipped {skipped}; {vs}; run dir {run_dir}")
    return TrainResult(run_dir, step, last_loss, skipped, seconds, last_ckpt, val_scores)


def sync_from_main(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers of `module` (the objective: the model, CD/CT's EMA target, the
    adversarial extra's discriminators) to every process. Each rank draws its initial weights under its own
    seed (t.seed + rank); DDP would broadcast the online network alone, leaving a rank's target network and
    discriminators its own, so that rank's gradients came from other networks than rank 0's and N processes
    stopped equalling 1. Called once, before the EMAs are copied; a resumed run then loads the same
    checkpoint on every rank."""
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, 0)


def discriminator_step(adversary, opt_d: torch.optim.Optimizer, world: int) -> dict[str, float]:
    """One AdamW step of the adversarial extra's discriminators on the outputs the generator step just used
    (objectives.adversarial): L_D, its gradient averaged over processes, a non-finite one skipped. -> logs."""
    opt_d.zero_grad(set_to_none=True)
    loss_d, logs = adversary.discriminator_loss()
    loss_d.backward()
    params = [p for p in adversary.disc.parameters() if p.grad is not None]
    if world > 1:
        for p in params:
            dist.all_reduce(p.grad)
            p.grad /= world
    if bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, float("inf")))):  # the norm, as for the generator
        opt_d.step()
    opt_d.zero_grad(set_to_none=True)
    return {k: float(v) for k, v in logs.items()}


def init_sigma_data(source: Path) -> float:
    """sigma_data of the fine-tuning start weights (a model directory or a run): the scalings c_in, c_skip and
    c_out the weights were trained with. Estimating it afresh on the new data would silently change them."""
    if not source.exists():
        raise ConfigError(f"train.init_from not found: {source}")
    info = ckpt.read_source_info(source)
    if info is None:
        raise ConfigError(f"train.init_from {source} is neither a model directory nor a run with a checkpoint")
    return float(info.sigma_data)


def init_weights(model: nn.Module, source: Path) -> None:
    """Load fine-tuning start weights from a model directory or a run directory (its smallest EMA)."""
    if not source.exists():
        raise ConfigError(f"train.init_from not found: {source}")
    picked = ckpt.load_source(source, what="train.init_from")
    where = picked.path if picked.checkpoint is not None else source
    ckpt.load_state_into(model, picked.weights, f"train.init_from {where}")


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
