"""Checkpoints and model directories: safetensors weights, JSON/YAML metadata, atomic, verified.

Training checkpoints live in ``RUN_DIR/checkpoints/step_XXXXXXXX/``:

    model.safetensors            online weights
    ema_<rate>.safetensors       inference EMAs (one file per rate)
    target.safetensors           the CD/CT target network (absent for iCT and DSM)
    adversary.safetensors        the discriminators of the adversarial extra (only with it)
    state.pt                     optimizer, LR scheduler, RNG states, counters (tensors and
                                 plain containers only; read with torch.load(weights_only=True))
    meta.json                    step, kind, config, sigma_data, domain_info, git commit, EMA
                                 rates, sha256 of every file above

A checkpoint is written into a temporary directory, each file fsynced, meta.json last, and the
directory renamed into place; the run directory is fsynced. A checkpoint is *valid* when its
meta.json parses and every file's sha256 matches: a copy cut short mid-write, or tampered with,
is detected and `latest_valid` falls back to the previous one (`latest_resumable` also when
state.pt cannot be loaded). The last K intact ones are kept; broken ones never count, and
temporaries a killed run left are removed at the next save.

Model directories (what users load) hold ``config.json`` (kind, config, sigma_data, mel preset,
default sigmas, domain_info, sha256 of the weights) and ``model.safetensors``. Loading never
unpickles.

The codec of both is here and nowhere else: `ModelDirInfo` is the typed record of what a
model directory's config.json (or a checkpoint's meta.json) says about its weights;
`save_model_dir` / `load_model_dir` / `read_model_info` write and read model directories,
`run_info` reads a checkpoint's record, and `pick_weights` / `load_source` choose the weights of
a run (the newest intact checkpoint, an inference EMA) or a model directory. One word names
what the weights compute: ``kind`` ('consistency' or 'denoiser'; old checkpoints said ``role``,
which is still read). sigma_data is stored once in config.json, at the top level; the stored
config has no model.sigma_data (older files that hold it twice are read, the top-level value
wins), and a record's config always carries sigma_data in model.sigma_data.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import math
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cmaudio.config import Config, from_dict, replace, to_dict
from cmaudio.errors import CheckpointError, ConfigError
from cmaudio.features import get_preset
from cmaudio.generator import InferenceSpec
from cmaudio.io import atomic_path, exists_error, fsync_dir, write_text_atomic

CKPT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
ADVERSARY_FILE = "adversary.safetensors"
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


def save_weights(path: Path, state: dict[str, Tensor], *, overwrite: bool = False) -> None:
    """Write a state dict as safetensors, atomically (exclusively unless `overwrite`). Shared storage is cloned."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in _contiguous(state).items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if (ptr in seen and ptr != -1) else v
        seen[ptr] = k
    with atomic_path(path, suffix=".safetensors", overwrite=overwrite) as tmp:
        try:
            save_file(out, str(tmp))
        except SafetensorError as e:  # its own error for a failed write (a full disk among them)
            raise OSError(errno.EIO, f"writing the weights failed ({' '.join(str(e).split())}); is the disk full?",
                          str(path)) from None


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read safetensors weights; a missing or corrupt file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is corrupt or truncated") from None


def check_finite_weights(state: Mapping[str, Tensor], where: Path | str) -> None:
    """Refuse (one-line CheckpointError naming the first bad tensor) weights holding NaN or inf: such a model
    vocodes every mel to full-scale noise or silence, and would do so with exit status 0."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{where}: tensor {k!r} holds NaN or inf values; the weights are broken "
                                  "(re-export them from an intact checkpoint)")


def check_state(own: Mapping[str, Tensor], state: Mapping[str, Tensor], what: str) -> None:
    """Refuse (one-line CheckpointError) a state dict whose names or shapes differ from `own` (a module's
    state_dict, possibly of meta tensors: only names and shapes are read)."""
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


def load_state_into(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """load_state_dict with a one-line message when names or shapes differ."""
    check_state(module.state_dict(), state, what)
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
    adversary: Optional[dict[str, Tensor]] = None,
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
        if adversary:
            save_weights(tmp / ADVERSARY_FILE, adversary)
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
# The codec: a typed record of model directories and checkpoints, and the choice of weights
# ----------------------------------------------------------------------------------------------

KINDS = ("consistency", "denoiser")
# Fields of config.json derived from the config's preset and domain: written for readers of the
# file, checked against the config when read (a hand-edited summary must not lie).
SUMMARY_KEYS = ("domain", "preset", "sample_rate", "hop_length", "n_mels")
_RECORD_KEYS = {"format", "format_version", "sha256", "config_sha256", "kind", "role", "config", "sigma_data",
                "domain_info", "default_sigmas", *SUMMARY_KEYS}


def kind_of(cfg: Config) -> str:
    """'denoiser' for a DSM teacher's config (objective.kind dsm), 'consistency' for CD/CT/iCT."""
    return "denoiser" if cfg.objective.kind == "dsm" else "consistency"


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@dataclass(frozen=True)
class ModelDirInfo:
    """What a model directory's config.json (or a checkpoint's meta.json) says about its weights.

    kind: 'consistency' (CD/CT/iCT weights of f(x, sigma)) or 'denoiser' (a DSM teacher's
    D(x, sigma)). config: the training Config; on construction its objective.kind is made to
    agree with `kind` (a consistency model's config reads as ict, a denoiser's as dsm, when they
    disagree) and its model.sigma_data is set to `sigma_data`, the data std the
    parameterization uses (docs/design.md sec. 2.16). domain_info: what the training domain adds
    (a mel decoder's statistics and cond_channels; {} for waveform vocoders). default_sigmas:
    tuned noise levels per step count, each strictly decreasing, which win over the Karras
    defaults. extra: any other JSON values (trained_steps, ema_rate, source_run, git_commit, ...).
    """

    kind: str
    config: Config
    sigma_data: float
    domain_info: Mapping[str, Any] = field(default_factory=dict)
    default_sigmas: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be consistency or denoiser (got {self.kind!r})")
        if not _positive_number(self.sigma_data):
            raise ConfigError(f"sigma_data must be a positive number (got {self.sigma_data!r})")
        clash = sorted(set(self.extra) & _RECORD_KEYS)
        if clash:
            raise ConfigError(f"extra model-directory keys {clash} are written by cmaudio itself; choose other names")
        cfg = self.config
        if kind_of(cfg) != self.kind:
            cfg = replace(cfg, objective={"kind": "dsm" if self.kind == "denoiser" else "ict"})
        if cfg.model.sigma_data != float(self.sigma_data):
            cfg = replace(cfg, model={"sigma_data": float(self.sigma_data)})
        object.__setattr__(self, "config", cfg)
        object.__setattr__(self, "sigma_data", float(self.sigma_data))
        object.__setattr__(self, "domain_info", dict(self.domain_info or {}))
        object.__setattr__(self, "default_sigmas",
                           {int(k): tuple(float(s) for s in v) for k, v in (self.default_sigmas or {}).items()})
        object.__setattr__(self, "extra", dict(self.extra or {}))

    @property
    def domain(self) -> str:
        """'wave' (a vocoder) or 'mel' (a mel decoder): the spec's."""
        return self.spec.domain

    @property
    def cond_channels(self) -> Optional[int]:
        """Width of the network's cond when the domain recorded one (mel decoders), else None: the spec's."""
        return self.spec.cond_channels

    @property
    def spec(self) -> InferenceSpec:
        """What inference needs of this record (kind, mel preset, model fields with sigma_data, default sigmas,
        domain_info), without the training sections: what Vocoder and MelDecoder are built from."""
        return InferenceSpec(kind=self.kind, preset=self.config.features.preset, model=self.config.model,
                             default_sigmas=self.default_sigmas, domain_info=self.domain_info,
                             projection=self.config.sampling.projection)

    def to_json(self) -> dict[str, Any]:
        """The config.json fields of this record (without format, format_version and sha256)."""
        config = to_dict(self.config)
        config["model"] = {k: v for k, v in config["model"].items() if k != "sigma_data"}  # stored once, below
        preset = get_preset(self.config.features.preset)
        return {
            **self.extra,
            "kind": self.kind,
            "domain": self.domain,
            "config": config,
            "sigma_data": self.sigma_data,
            "preset": preset.name,
            "sample_rate": preset.sample_rate,
            "hop_length": preset.hop_length,
            "n_mels": preset.n_mels,
            "default_sigmas": {str(k): list(v) for k, v in sorted(self.default_sigmas.items())},
            "domain_info": dict(self.domain_info),
        }


def save_model_dir(out_dir: Path, *, weights: dict[str, Tensor], info: ModelDirInfo, overwrite: bool = False) -> None:
    """Write model.safetensors then config.json (`info.to_json()` plus the format and the weights' sha256).
    Existing files are replaced only with `overwrite` (else DataError before anything is written)."""
    out_dir = Path(out_dir)
    if not overwrite:
        for name in (MODEL_FILE, CONFIG_FILE):
            if os.path.lexists(out_dir / name):
                raise exists_error(out_dir / name)
    save_weights(out_dir / MODEL_FILE, weights, overwrite=overwrite)
    record = dict(info.to_json(), format=FORMAT, format_version=FORMAT_VERSION, sha256=sha256_file(out_dir / MODEL_FILE))
    write_text_atomic(out_dir / CONFIG_FILE, dump_record(record), overwrite=overwrite)


CONFIG_DIGEST = "config_sha256"


def record_digest(record: Mapping[str, Any]) -> str:
    """sha256 of a config.json record without its own CONFIG_DIGEST key (canonical JSON: sorted keys, compact)."""
    body = {k: v for k, v in record.items() if k != CONFIG_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def dump_record(record: Mapping[str, Any]) -> str:
    """The text of config.json for `record`, sealed with its CONFIG_DIGEST (what `cmaudio export` writes)."""
    return json.dumps(dict(record, **{CONFIG_DIGEST: record_digest(record)}), indent=2, sort_keys=True)


def _verified_json(model_dir: Path) -> dict[str, Any]:
    """config.json of a model directory, after checking its format and the weights' checksum."""
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
    return info


def _check_digest(info: Mapping[str, Any], cfg_path: Path) -> None:
    """config.json is covered by its own digest (CONFIG_DIGEST, written by save_model_dir). Checked after the
    values (a bad value gets its own message); a directory written before the digest existed has none and
    still loads: its config is checked against the weights' shapes (build.build_for_weights) anyway."""
    if CONFIG_DIGEST in info and info[CONFIG_DIGEST] != record_digest(info):
        raise CheckpointError(f"{cfg_path} does not match its {CONFIG_DIGEST}: the config was edited after export; "
                              "re-export the model with cmaudio export")


def read_model_dir(model_dir: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json as a dict, weights) of a model directory, verifying format and checksum (no record checks)."""
    info = _verified_json(model_dir)
    return info, load_weights(Path(model_dir) / MODEL_FILE, device)


def parse_model_info(info: dict, where: Path) -> ModelDirInfo:
    """Validate a model directory's config.json dict -> ModelDirInfo (`where` names the file in errors).

    Every value is type-checked (a hand-edited file gives a one-line CheckpointError naming the
    key, never an internal error), and the summary fields (kind, domain, preset, sample_rate,
    hop_length, n_mels) must agree with the model's own config: `kind: denoiser` on consistency
    weights would silently run them as an ODE denoiser.
    """
    cfg_path = Path(where)
    missing = [k for k in ("config", "sigma_data") if k not in info]
    if missing:
        raise CheckpointError(f"{cfg_path} lacks {', '.join(missing)}; re-export the model with cmaudio export")
    if not isinstance(info["config"], dict):
        raise CheckpointError(f"{cfg_path}: config must be a mapping of sections (got {type(info['config']).__name__})")
    try:
        cfg = from_dict(info["config"], source=str(cfg_path))
    except ConfigError as e:
        raise CheckpointError(str(e) if str(cfg_path) in str(e) else f"{cfg_path}: {e}") from None
    sd = info["sigma_data"]  # the top-level value; an older file's config.model.sigma_data is not used
    if not _positive_number(sd):
        raise CheckpointError(f"{cfg_path}: sigma_data must be a positive number (got {sd!r}); re-export the model")
    kind = info.get("kind", info.get("role", "consistency"))
    if kind not in KINDS:
        raise CheckpointError(f"{cfg_path}: kind {kind!r} is not 'consistency' or 'denoiser'; re-export the model")
    want_kind = kind_of(cfg)
    if kind != want_kind:
        raise CheckpointError(
            f"{cfg_path}: kind {kind!r} does not match the model (objective.kind {cfg.objective.kind!r} trains a "
            f"{want_kind} model); re-export it with cmaudio export"
        )
    preset = get_preset(cfg.features.preset)
    expect = {"domain": cfg.model.domain, "preset": preset.name, "sample_rate": preset.sample_rate,
              "hop_length": preset.hop_length, "n_mels": preset.n_mels}
    for key, want in expect.items():
        if key in info and info[key] != want:
            raise CheckpointError(
                f"{cfg_path}: {key} is {info[key]!r} but the model's config (preset {preset.name!r}) gives {want!r}; "
                "re-export the model"
            )
    raw = info.get("default_sigmas", {}) or {}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_path}: default_sigmas must map a step count to a list of sigmas (got {raw!r})")
    sigmas: dict[int, tuple[float, ...]] = {}
    for k, v in raw.items():
        try:
            steps = int(k)
        except (TypeError, ValueError):
            steps = -1
        ok = (steps >= 1 and isinstance(v, (list, tuple)) and len(v) == steps and all(_positive_number(s) for s in v)
              and all(a > b for a, b in zip(v, v[1:])))
        if not ok:
            raise CheckpointError(
                f"{cfg_path}: default_sigmas[{k!r}] must list {k} strictly decreasing positive sigmas (got {v!r})"
            )
        sigmas[steps] = tuple(float(s) for s in v)
    dinfo = info.get("domain_info", {}) or {}
    cc = dinfo.get("cond_channels") if isinstance(dinfo, dict) else None
    if not isinstance(dinfo, dict) or not (cc is None or (isinstance(cc, int) and not isinstance(cc, bool) and 0 < cc <= 65536)):
        raise CheckpointError(f"{cfg_path}: domain_info must be a mapping with a positive "
                              f"integer cond_channels of at most 65536 (got {dinfo!r:.80})")
    extra = {k: v for k, v in info.items() if k not in _RECORD_KEYS}
    record = ModelDirInfo(kind=kind, config=cfg, sigma_data=float(sd), domain_info=dinfo, default_sigmas=sigmas,
                          extra=extra)
    _check_digest(info, cfg_path)
    return record


def read_model_info(model_dir: Path) -> ModelDirInfo:
    """The record of a model directory (format and checksum verified, every value checked); weights not loaded."""
    return parse_model_info(_verified_json(model_dir), Path(model_dir) / CONFIG_FILE)


def load_model_dir(model_dir: Path, device: str | torch.device = "cpu") -> tuple[ModelDirInfo, dict[str, Tensor]]:
    """(record, weights) of a model directory; any problem is a one-line CheckpointError naming the file."""
    raw, weights = read_model_dir(model_dir, device)
    info = parse_model_info(raw, Path(model_dir) / CONFIG_FILE)
    check_finite_weights(weights, Path(model_dir) / MODEL_FILE)
    return info, weights


def run_info(checkpoint: Path) -> ModelDirInfo:
    """The record of a training checkpoint (its meta.json): kind (or the older role), config, sigma_data,
    domain_info, the recipe's sampling.sigmas as default_sigmas; extra holds step, ema_rates and git_commit."""
    meta_path = Path(checkpoint) / "meta.json"
    meta = read_meta(checkpoint)
    try:
        cfg = from_dict(meta["config"], source=str(meta_path))
        sd = float(meta["sigma_data"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path} lacks a readable {e}; the checkpoint is not a cmaudio one") from None
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    kind = meta.get("kind", meta.get("role")) or kind_of(cfg)
    if kind not in KINDS:
        raise CheckpointError(f"{meta_path}: kind {kind!r} is not 'consistency' or 'denoiser'")
    extra = {"step": meta.get("step"), "ema_rates": [float(r) for r in meta.get("ema_rates", [])],
             "git_commit": meta.get("git_commit")}
    return ModelDirInfo(kind=kind, config=cfg, sigma_data=sd, domain_info=meta.get("domain_info") or {},
                        default_sigmas={int(k): v for k, v in cfg.sampling.sigmas.items()}, extra=extra)


@dataclass(frozen=True)
class PickedWeights:
    """Weights chosen from a run or a model directory, with the record that describes them.

    path: the file read; checkpoint: the run's checkpoint directory (None for a model
    directory); ema_rate: the inference EMA read (None: the online weights, or a model directory).
    """

    info: ModelDirInfo
    weights: dict[str, Tensor]
    path: Path
    checkpoint: Optional[Path] = None
    ema_rate: Optional[float] = None


def is_run_dir(path: Path) -> bool:
    """True for a training run directory (it has a checkpoints/ folder)."""
    return (Path(path) / CKPT_DIR).is_dir()


def pick_weights(
    run_dir: Path,
    *,
    ema: Optional[float] = None,
    what: str = "run",
    ema_option: str = "--ema",
    hint: str = "",
    check: Optional[Callable[[ModelDirInfo], None]] = None,
    device: str | torch.device = "cpu",
) -> PickedWeights:
    """The inference weights of a run: the newest intact checkpoint and one of its EMAs.

    ema: one of the run's train.ema_rates (else a ConfigError naming `ema_option`); None: the
    smallest rate (the one validation used), or the online weights of a run without EMAs. A run
    with no intact checkpoint is a CheckpointError "<what> <run_dir> has no complete checkpoint<hint>".
    check: called with the checkpoint's record before any weights are read (to refuse early).
    """
    run_dir = Path(run_dir)
    c = latest_valid(run_dir)
    if c is None:
        raise CheckpointError(f"{what} {run_dir} has no complete checkpoint{hint}")
    info = run_info(c)
    if check is not None:
        check(info)
    rates = list(info.extra["ema_rates"])
    if ema is not None and float(ema) not in rates:
        raise ConfigError(f"{ema_option} {ema} is not one of the {what}'s EMA rates {rates}")
    rate = float(ema) if ema is not None else (min(rates) if rates else None)
    path = c / (ema_file(rate) if rate is not None else MODEL_FILE)
    weights = load_weights(path, device)
    check_finite_weights(weights, path)
    return PickedWeights(info=info, weights=weights, path=path, checkpoint=c, ema_rate=rate)


def load_source(
    source: Path,
    *,
    ema: Optional[float] = None,
    what: str = "run",
    ema_option: str = "--ema",
    hint: str = "",
    check: Optional[Callable[[ModelDirInfo], None]] = None,
    device: str | torch.device = "cpu",
) -> PickedWeights:
    """Weights and record of a run directory (`pick_weights`) or of a model directory (`load_model_dir`).

    check: called with the record before a run's weights are read (a model directory's after).
    """
    source = Path(source)
    if is_run_dir(source):
        return pick_weights(source, ema=ema, what=what, ema_option=ema_option, hint=hint, check=check, device=device)
    info, weights = load_model_dir(source, device)
    if check is not None:
        check(info)
    return PickedWeights(info=info, weights=weights, path=source / MODEL_FILE)


def read_source_info(source: Path) -> Optional[ModelDirInfo]:
    """The record of a run's newest intact checkpoint or of a model directory; None when there is neither."""
    source = Path(source)
    if is_run_dir(source):
        c = latest_valid(source)
        return run_info(c) if c is not None else None
    if (source / CONFIG_FILE).is_file():
        return read_model_info(source)
    return None
