"""Export a training run to a model directory (and optionally ONNX).

`export_run(run_dir, out_dir, ema=None, onnx=False)` takes the newest valid checkpoint of a
run and its inference EMA weights (`ema`: one of the run's train.ema_rates; default the
smallest, which is the one validation used; cmaudio.checkpoint.pick_weights), and writes
out_dir/config.json + out_dir/model.safetensors (cmaudio.checkpoint.save_model_dir). With onnx=True it also writes
out_dir/model.onnx: the consistency function f(x, sigma, mel) of a waveform model (opset 17),
inputs ``x`` (B, 1, T), ``sigma`` (B,), ``mel`` (B, n_mels, T / hop), output ``audio`` (B, 1, T);
one-step vocoding is f(sigma_max z, sigma_max, mel). When the run's recipe sets a mel projection
(sampling.projection = K > 0) it also writes out_dir/projection.onnx: the K iterations that
`Vocoder.decode` applies after the last step (cmaudio.projection.MelProjection), inputs ``audio``
(B, T) and ``mel`` (B, n_mels, T / hop), output ``audio_out`` (B, T); then audio = projection(f(...)[:, 0],
mel), clamped to [-1, 1], is what `cmaudio vocode` makes. (Output ``audio_out``: ONNX names must differ.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from cmaudio import checkpoint as ckpt
from cmaudio.build import build_for_weights, build_model
from cmaudio.errors import CheckpointError, ConfigError
from cmaudio.features import MelSpectrogram, get_preset
from cmaudio.io import atomic_path, exists_error


def export_run(run_dir: str | Path, out_dir: str | Path, *, ema: Optional[float] = None, onnx: bool = False,
               overwrite: bool = False) -> Path:
    """Write a model directory from the newest valid checkpoint of `run_dir`; returns out_dir. Files already in
    out_dir are replaced only with `overwrite`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    picked = ckpt.pick_weights(run_dir, ema=ema, what="run", ema_option="--ema", hint=" to export")
    run = picked.info
    cfg, kind = run.config, run.kind
    model = build_for_weights(lambda: build_model(cfg, run.sigma_data, kind, cond_channels=run.cond_channels),
                              picked.weights, str(picked.path))
    param = model.param
    sig = run.default_sigmas  # the recipe's sampling.sigmas win over the Karras defaults
    default_sigmas = {k: sig.get(k, param.default_sigmas(k)) for k in (1, 2, 3, 4)} if kind == "consistency" else {}
    preset = get_preset(cfg.features.preset)
    info = ckpt.ModelDirInfo(
        kind=kind, config=cfg, sigma_data=run.sigma_data, domain_info=run.domain_info, default_sigmas=default_sigmas,
        extra={"trained_steps": int(run.extra["step"]), "ema_rate": picked.ema_rate, "source_run": str(run_dir),
               "git_commit": run.extra.get("git_commit")},
    )
    if onnx:  # check before writing anything, so a refused --onnx leaves no partial model directory
        _check_onnx(cfg.model.domain)
    present = [out_dir / n for n in (ckpt.MODEL_FILE, ckpt.CONFIG_FILE, *ONNX_FILES) if os.path.lexists(out_dir / n)]
    if present and not overwrite:
        raise exists_error(present[0])
    for name in ONNX_FILES:  # ONNX files of earlier weights would not match the new ones: the directory is
        if os.path.lexists(out_dir / name):  # replaced, and a failed ONNX export leaves none rather than stale ones
            (out_dir / name).unlink()
    fresh = not os.path.lexists(out_dir)
    try:
        ckpt.save_model_dir(out_dir, weights=model.state_dict(), info=info, overwrite=overwrite)
        if onnx:
            export_onnx(model, out_dir / "model.onnx", n_mels=preset.n_mels, hop=preset.hop_length,
                        domain=cfg.model.domain)
            if cfg.sampling.projection:
                export_onnx_projection(MelSpectrogram(preset), cfg.sampling.projection, out_dir / "projection.onnx")
    except BaseException:  # a full disk, a signal: a model directory this export made is removed, not left half
        if fresh:
            for name in (ckpt.MODEL_FILE, ckpt.CONFIG_FILE, *ONNX_FILES):
                (out_dir / name).unlink(missing_ok=True)
            try:
                out_dir.rmdir()
            except OSError:
                pass
        raise
    return out_dir


#: The ONNX files a model directory can hold (`export_run` writes them with onnx=True, after removing the
#: ones already there: they would belong to other weights).
ONNX_FILES = ("model.onnx", "projection.onnx")


class _OnnxWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, sigma, mel):
        return self.model(x, sigma, mel)


def _check_onnx(domain: str) -> None:
    if domain != "wave":
        raise ConfigError("ONNX export is implemented for waveform vocoders (model.domain = wave)")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'cmaudio[onnx]'") from None


def export_onnx(model: nn.Module, path: Path, *, n_mels: int, hop: int, domain: str = "wave", opset: int = 17) -> Path:
    """Write f(x, sigma, cond) as ONNX with dynamic batch and length (opset >= 17).

    The graph is traced: x must hold a whole number of frames (T = frames * hop) and mel
    exactly T / hop frames, as one-step vocoding gives.
    """
    import warnings

    _check_onnx(domain)
    model = model.eval()
    frames = 8
    x = torch.randn(1, 1, frames * hop)
    sigma = torch.full((1,), float(model.param.sigma_max))
    mel = torch.randn(1, n_mels, frames)
    wrapper = _OnnxWrapper(model)

    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: expected
        torch.onnx.export(
            wrapper,
            (x, sigma, mel),
            str(tmp),
            input_names=["x", "sigma", "mel"],
            output_names=["audio"],
            dynamic_axes={"x": {0: "batch", 2: "samples"}, "sigma": {0: "batch"}, "mel": {0: "batch", 2: "frames"},
                          "audio": {0: "batch", 2: "samples"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def export_onnx_projection(features: MelSpectrogram, iters: int, path: Path, opset: int = 17) -> Path:
    """Write `iters` mel-projection iterations (cmaudio.projection.MelProjection) as ONNX: inputs ``audio``
    (B, T) and ``mel`` (B, n_mels, frames) with T = frames * hop, output ``audio_out`` (B, T); batch and
    length dynamic. Matches cmaudio.projection.mel_projection to float32 rounding."""
    import warnings

    from cmaudio.projection import MelProjection

    module = MelProjection(features, iters).eval()  # the iteration count is baked into the graph
    frames = 8
    audio = torch.randn(1, frames * features.hop_length) * 0.1
    mel = torch.randn(1, features.n_mels, frames)
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")  # the reflect pads' reversed slices: harmless
        torch.onnx.export(
            module,
            (audio, mel),
            str(tmp),
            input_names=["audio", "mel"],
            output_names=["audio_out"],
            dynamic_axes={"audio": {0: "batch", 1: "samples"}, "mel": {0: "batch", 2: "frames"},
                          "audio_out": {0: "batch", 1: "samples"}},
            opset_version=opset,
            dynamo=False,
        )
    return path
