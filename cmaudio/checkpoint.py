"""Checkpoints and model directories: safetensors weights, JSON/YAML metadata, atomic, verified.

Training checkpoints live in ``RUN_DIR/checkpoints/step_XXXXXXXX/``:

    model.safetensors            online weights
    ema_<rate>.safetensors       inference EMAs (one file per rate)
    target.safetensors           the CD/CT target network (absent for iCT and DSM)
    state.pt                     optimizer, LR scheduler, RNG states, counters (tensors and
                                 plain containers only; read with torch.load(weights_only=True))
    meta.json                    step, config, sigma_data, git commit, sha256 of every file above

A checkpoint is written into a temporary directory, each file fsynced, meta.json last, and the
directory renamed into place; the run directory is fsynced. A checkpoint is *valid* when its
meta.json parses and every file's sha256 matches: a copy cut short mid-write, or tampered with,
is detected and `latest_valid` falls back to the previous one (`latest_resumable` also when
state.pt cannot be loaded). The last K intact ones are kept; broken ones never count, and
temporaries a killed run left are removed at the next save.

Model directories (what users load) hold ``config.json`` (kind, config, sigma_data, mel preset,
default sigmas, sha256 of the weights) and ``model.safetensors``. Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cmaudio.errors import CheckpointError
from cmaudio.io import atomic_path, fsync_dir, write_text_atomic

CKPT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "cmaudio-model"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> Optional[str]:
    """The commit of the cmaudio source tree, if it is a git checkout (else None)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                           text=True, timeout=5)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _contiguous(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_weights(path: Path, state: dict[str, Tensor]) -> None:
    """Write a state dict as safetensors, atomically. Shared storage is cloned."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in _contiguous(state).items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if (ptr in seen and ptr != -1) else v
        seen[ptr] = k
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(out, str(tmp))


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read safetensors weights; a missing or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is corrupt or truncated") from None


def load_state_into(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """load_state_dict with a one-line message when names or shapes differ."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(
            f"{what} does not match this network ({detail}; {len(missing)} missing, {len(unexpected)} unexpected "
            "tensors): was it trained with another model config?"
        )
    for k, v in own.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise CheckpointError(
                f"{what} does not match this network: {k} has shape {tuple(state[k].shape)} in the file but "
                f"{tuple(v.shape)} here; was it trained with another model config?"
            )
    module.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# Training checkpoints
# ----------------------------------------------------------------------------------------------


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def ema_file(rate: float) -> str:
    return f"ema_{rate:g}.safetensors"


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: dict[str, Tensor],
    emas: dict[float, dict[str, Tensor]],
    target: dict[str, Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int = 3,
    warn=None,
) -> Path:
    """Write checkpoint `step` atomically under run_dir/checkpoints and prune to the last `keep_last` intact ones."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".{step_dir_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: dict[str, str] = {}
    try:
        save_weights(tmp / MODEL_FILE, model)
        for rate, sd in emas.items():
            save_weights(tmp / ema_file(rate), sd)
        if target:
            save_weights(tmp / "target.safetensors", target)
        with atomic_path(tmp / "state.pt", suffix=".pt") as p:
            torch.save(state, p)
        for f in sorted(tmp.iterdir()):
            files[f.name] = sha256_file(f)
        full_meta = dict(meta, step=step, files=files, ema_rates=[float(r) for r in emas])
        write_text_atomic(tmp / "meta.json", json.dumps(full_meta, indent=2, sort_keys=True))
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, keep_last, warn=warn)
    return final


_REPORTED_BROKEN: set[str] = set()


def clean_temporaries(root: Path) -> list[Path]:
    """Remove the ``.step_N.tmp`` directories a killed run left behind (never a complete checkpoint)."""
    removed = []
    for p in sorted(Path(root).glob(".step_*.tmp")):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def prune(root: Path, keep_last: int, warn=None) -> list[Path]:
    """Keep the newest `keep_last` *intact* checkpoints; delete older intact ones; returns what was deleted.

    Broken checkpoints (cut short, tampered with) are never counted, so they can never push a
    fresh, valid one out; they are left for the user to inspect and reported once through
    `warn`. The newest intact checkpoint is never deleted. Left-over temporaries are removed.
    """
    root = Path(root)
    clean_temporaries(root)
    intact = []
    for p in sorted(q for q in root.glob("step_*") if q.is_dir()):
        problem = checkpoint_problem(p)
        if problem is None:
            intact.append(p)
        elif warn is not None and str(p) not in _REPORTED_BROKEN:
            _REPORTED_BROKEN.add(str(p))
            warn(f"checkpoint {p.name} is broken ({problem}); not counted towards keep_last and left in place")
    doomed = intact[: max(len(intact) - max(keep_last, 1), 0)]
    for old in doomed:
        shutil.rmtree(old, ignore_errors=True)
    return doomed


def check_writable(run_dir: Path) -> None:
    """Make sure a run can write its directory and checkpoints/ (and tb/, samples/ if present).

    Called before training starts, so a read-only directory is a one-line CheckpointError now
    rather than an OS error after the steps were trained. Probes by creating a file (permission
    bits alone lie for root and on some mounts).
    """
    import tempfile

    run_dir = Path(run_dir)
    for d in (run_dir, *(run_dir / n for n in (CKPT_DIR, "tb", "samples"))):
        if d != run_dir and not d.exists():
            continue
        try:
            if d == run_dir:
                if d.exists() and not d.is_dir():
                    raise CheckpointError(f"run directory {d} is a file, not a directory; choose another --run-dir")
                d.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=d, prefix=".write_probe."):
                pass
        except CheckpointError:
            raise
        except OSError as e:
            raise CheckpointError(f"cannot write to {d} ({e.strerror or e}); training would lose its checkpoints — "
                                  "fix the permissions or choose another --run-dir") from None


def checkpoint_problem(ckpt: Path) -> Optional[str]:
    """None if `ckpt` is complete and intact, else a short reason."""
    meta_path = ckpt / "meta.json"
    if not meta_path.is_file():
        return "no meta.json (cut short before completion)"
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
    except (ValueError, KeyError, OSError):
        return "meta.json is unreadable"
    for name, digest in files.items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if sha256_file(f) != digest:
            return f"{name} does not match its checksum (truncated or modified)"
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []


def latest_valid(run_dir: Path, warn=None) -> Optional[Path]:
    """The newest intact checkpoint of a run (skipping and reporting broken ones), or None."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        if warn is not None:
            warn(f"skipping checkpoint {ckpt.name}: {problem}")
    return None


def read_meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((Path(ckpt) / "meta.json").read_text())


STATE_KEYS = ("optimizer", "scheduler", "rng", "step", "skipped")


def load_training_state(ckpt: Path) -> dict[str, Any]:
    """The optimizer/scheduler/RNG state of a checkpoint (weights_only: never executes code)."""
    try:
        state = torch.load(Path(ckpt) / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        raise CheckpointError(f"{ckpt}/state.pt cannot be read safely ({type(e).__name__}); the checkpoint is broken") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{ckpt}/state.pt lacks {', '.join(missing)}; the checkpoint is broken")
    return state


def latest_resumable(run_dir: Path, warn=None) -> tuple[Optional[Path], Optional[dict[str, Any]]]:
    """(checkpoint, training state) of the newest checkpoint that is intact *and* whose state.pt loads.

    A checkpoint whose files match their checksums but whose state.pt cannot be read safely is
    skipped (reported through `warn`) like a cut-short one; (None, None) when none is usable.
    """
    for c in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(c)
        if problem is None:
            try:
                return c, load_training_state(c)
            except CheckpointError as e:
                problem = str(e).replace(f"{c}/", "")
        if warn is not None:
            warn(f"skipping checkpoint {c.name}: {problem}")
    return None, None


# ----------------------------------------------------------------------------------------------
# Model directories
# ----------------------------------------------------------------------------------------------


def save_model_dir(out_dir: Path, *, weights: dict[str, Tensor], info: dict[str, Any]) -> None:
    """Write model.safetensors then config.json (which records the weights' sha256)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(out_dir / MODEL_FILE, weights)
    info = dict(info, format=FORMAT, format_version=FORMAT_VERSION, sha256=sha256_file(out_dir / MODEL_FILE))
    write_text_atomic(out_dir / CONFIG_FILE, json.dumps(info, indent=2, sort_keys=True))


def read_model_dir(model_dir: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(info, weights) of a model directory, verifying format and checksum."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory not found: {model_dir}")
    cfg_path = model_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{model_dir} has no {CONFIG_FILE}; is it a cmaudio model directory (cmaudio export)?")
    try:
        info = json.loads(cfg_path.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not a cmaudio model config (format is not {FORMAT!r})")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{model_dir} was written by a newer cmaudio (format {info.get('format_version')}); upgrade")
    wpath = model_dir / MODEL_FILE
    if not wpath.is_file():
        raise CheckpointError(f"{model_dir} has no {MODEL_FILE}; the model directory is incomplete")
    if not info.get("sha256"):
        raise CheckpointError(f"{cfg_path} has no sha256 of the weights; re-export the model with `cmaudio export`")
    if sha256_file(wpath) != info["sha256"]:
        raise CheckpointError(f"{wpath} does not match the checksum in {CONFIG_FILE}: the file was modified or truncated")
    return info, load_weights(wpath, device)
