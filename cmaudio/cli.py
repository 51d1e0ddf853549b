"""The `cmaudio` command line (typer). Thin: parse, build a config, call the library.

Every user error (a cmaudio.errors.CmaudioError) is printed as one line ``error: ...`` with exit
status 2 and no traceback; set CMAUDIO_DEBUG=1 to see tracebacks. This is the only module that
imports typer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from cmaudio.errors import CmaudioError, DataError, os_error_line

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Consistency models for audio: train, vocode, edit, evaluate.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect corpora.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect recipes.")
edit_app = typer.Typer(no_args_is_help=True, help="Zero-shot editing with a consistency vocoder.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(edit_app, name="edit")


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _device(name: str) -> str:
    import torch

    if name not in ("cpu", "cuda"):
        raise DataError(f"--device must be cpu or cuda (got {name!r})")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda requested but no CUDA device is available; use --device cpu")
    return name


def _seed(value: int) -> int:
    """--seed: torch generators take 64 bits (and evaluate offsets the seed per utterance)."""
    from cmaudio.config import MAX_SEED

    if not 0 <= value <= MAX_SEED:
        raise DataError(f"--seed must be an integer in [0, {MAX_SEED}] (got {value})")
    return value


def _warn(msg: str) -> None:
    _err(f"warning: {msg}")


def _warn_mel(path: Path, mel) -> None:
    """Warn (do not refuse) about a mel whose values no log-mel convention produces."""
    from cmaudio.vocoder import implausible_mel

    problem = implausible_mel(mel)
    if problem:
        _warn(f"{path}: {problem}")


# ----------------------------------------------------------------------------------------------
# train / export / config / data / mel
# ----------------------------------------------------------------------------------------------


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="recipe YAML, e.g. recipes/mini_ct.yaml"),
    set_: List[str] = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="where checkpoints and logs go (default runs/<recipe>)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest valid checkpoint in --run-dir"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a teacher (dsm), or a consistency model by CD, CT or iCT, from a recipe."""
    from cmaudio.config import load
    from cmaudio.train import train as run

    cfg = load(recipe, set_)
    run(cfg, run_dir or Path("runs") / recipe.stem, resume=resume, progress=not quiet)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a training run directory"),
    out: Path = typer.Option(..., "-o", "--out", help="model directory to write"),
    ema: Optional[float] = typer.Option(None, "--ema", help="EMA rate to export (default: the smallest of the run)"),
    onnx: bool = typer.Option(False, "--onnx", help="also write model.onnx, and projection.onnx where the recipe sets "
                              "a mel projection (needs the onnx extra)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a model directory that already exists"),
) -> None:
    """Write a model directory (config.json + model.safetensors) from a training run."""
    from cmaudio.checkpoint import CONFIG_FILE, MODEL_FILE
    from cmaudio.export import ONNX_FILES, export_run
    from cmaudio.io import check_out_dir, check_outputs

    check_out_dir(out)
    # ONNX files always count: those not written again are removed (they would belong to other weights)
    check_outputs([out / n for n in (CONFIG_FILE, MODEL_FILE, *ONNX_FILES)], overwrite=overwrite)
    export_run(run_dir, out, ema=ema, onnx=onnx, overwrite=overwrite)
    typer.echo(f"wrote {out}")


@config_app.command("show")
def config_show(
    recipe: Path = typer.Argument(...),
    set_: List[str] = typer.Option([], "--set", help="section.key=value overrides"),
) -> None:
    """Print the resolved recipe (extends merged, overrides applied) as YAML."""
    from cmaudio.config import dump_yaml, load

    typer.echo(dump_yaml(load(recipe, set_)), nl=False)


@data_app.command("check")
def data_check(
    root: Path = typer.Argument(..., help="corpus root (for filelist: the list file)"),
    fmt: str = typer.Option("ljspeech", "--format", help="ljspeech | vctk | libritts | folder | filelist"),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="target rate for length checks"),
    vctk_mic: str = typer.Option("mic1", "--vctk-mic"),
) -> None:
    """Count utterances, hours, sample rates and bad files of a corpus."""
    from cmaudio.data import check_corpus, format_report

    typer.echo(format_report(check_corpus(root, fmt, sample_rate, vctk_mic=vctk_mic)))


def _audio_inputs(inputs: List[Path], exts: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in exts)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    if not files:
        raise DataError(f"no input files found (looked for {', '.join(exts)})")
    return _unique(files)


def _naming(f: Path, e: DataError) -> DataError:
    """`e` with the input file's name in front unless its message names it already."""
    return DataError(str(e) if (str(f) in str(e) or f.name in str(e)) else f"{f}: {e}")


def _dest(root: Path, name: str, suffix: str) -> Path:
    """root/<name><suffix> for an output named after an input, confined to root (cmaudio.io.confined_path)."""
    from cmaudio.io import confined_path

    return confined_path(root, name, suffix=suffix, what="output name")


def _unique(files: list[Path]) -> list[Path]:
    """The same file named twice (a.npy a.npy, or a file and its directory) is processed once."""
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


@app.command()
def mel(
    inputs: List[Path] = typer.Argument(..., help="audio files or directories"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory for <name>.npy"),
    preset: str = typer.Option("hifigan", "--preset", help="mel convention (cmaudio.features.PRESETS)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace output files that already exist"),
) -> None:
    """Compute log-mels: one float32 .npy (n_mels, frames) per input, resampled to the preset's rate."""
    import torch

    from cmaudio.data import load_audio
    from cmaudio.features import MelSpectrogram
    from cmaudio.io import check_out_dir, check_outputs, save_npy_atomic

    fe = MelSpectrogram(preset)
    check_out_dir(out)
    files = _audio_inputs(inputs, (".wav", ".flac", ".ogg"))
    check_outputs([_dest(out, f.stem, ".npy") for f in files], inputs=files, overwrite=overwrite)
    mels = []
    for f in files:  # read everything first: a bad input writes nothing
        try:
            a = torch.from_numpy(load_audio(f, fe.sample_rate, clip=fe.preset.clip_audio, warn=_warn))
            mels.append(fe(a)[0].numpy())
        except DataError as e:  # every refusal names the file (a too-short one did not)
            raise _naming(f, e) from None
    for f, m in zip(files, mels):
        save_npy_atomic(_dest(out, f.stem, ".npy"), m.astype("float32"), overwrite=overwrite)
    typer.echo(f"wrote {len(files)} mel file(s) to {out} ({fe.preset.name}: {fe.n_mels} mels, hop {fe.hop_length})")


# ----------------------------------------------------------------------------------------------
# vocode / edit
# ----------------------------------------------------------------------------------------------


@app.command()
def vocode(
    inputs: List[Path] = typer.Argument(..., help=".npy mels, .wav files (copy-synthesis) or directories of .npy mels"),
    model: Optional[Path] = typer.Option(None, "-m", "--model", help="model directory (default: the shipped model)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output directory (default: beside each input)"),
    steps: int = typer.Option(1, "--steps", help="sampling steps (NFE for a consistency model)"),
    projection: Optional[int] = typer.Option(None, "--projection", help="mel-projection iterations after the last "
                                             "step (default: the model's; 0 = off)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="convention of the input mels (default: the model's)"),
    layout: str = typer.Option("auto", "--layout", help="auto | mels-first | time-first"),
    seed: int = typer.Option(0, "--seed", callback=_seed, help="noise seed, 0 to 2^63 - 1"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    batch_size: int = typer.Option(8, "--batch-size", help="mels of equal length generated together"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace output files that already exist"),
) -> None:
    """Turn mel-spectrograms (.npy) or recordings (.wav, copy-synthesis) into wavs."""
    import torch

    from cmaudio.data import load_audio
    from cmaudio.io import check_out_dir, check_outputs, load_npy, write_wav_atomic
    from cmaudio.train import Progress
    from cmaudio.vocoder import Vocoder, loud_audio

    if steps < 1 or batch_size < 1:
        raise DataError("--steps and --batch-size must be >= 1")
    if projection is not None:
        from cmaudio.projection import check_iters

        check_iters(projection, "--projection")
    if layout not in ("auto", "mels-first", "time-first"):
        raise DataError(f"--layout must be auto, mels-first or time-first (got {layout!r})")
    if preset is not None:
        from cmaudio.features import get_preset

        get_preset(preset)
    dev = _device(device)
    if out is not None:
        check_out_dir(out)
    files: list[Path] = []
    for p in inputs:  # a directory gives its .npy mels only: without -o the wavs written land beside them
        files += _audio_inputs([p], (".npy",) if p.is_dir() else (".npy", ".wav"))
    files = _unique(files)
    plan = []  # (source, destinations, loaded .npy array or None): every output is known before any compute
    for f in files:
        if f.suffix.lower() == ".wav":
            arr, dest = None, _dest(out or f.parent, f.stem if out else f"{f.stem}_vocoded", ".wav")
        elif f.suffix.lower() == ".npy":
            arr, dest = load_npy(f), _dest(out or f.parent, f.stem, ".wav")
        else:
            raise DataError(f"{f}: unsupported input (give .npy mels or .wav recordings)")
        n = arr.shape[0] if arr is not None and arr.ndim == 3 else 1
        plan.append((f, [dest] if n == 1 else [_dest(dest.parent, f"{dest.stem}_{b}", ".wav") for b in range(n)], arr))
    check_outputs([d for _, ds, _ in plan for d in ds], inputs=files, overwrite=overwrite)
    voc = Vocoder.from_pretrained(model, device=dev)
    jobs = []  # (source, destination, mel (1, n_mels, F))
    for f, ds, arr in plan:  # validate and load everything before writing anything
        if arr is None:
            try:
                audio = load_audio(f, voc.sample_rate, clip=False, warn=_warn)
                loud = loud_audio(audio, voc.features.preset.clip_audio)
                if loud:
                    _warn(f"{f}: {loud}")
                mel_t = voc.mel(torch.from_numpy(audio)).cpu()  # clips for presets that clip (DiffWave)
            except DataError as e:
                raise _naming(f, e) from None
        else:
            try:
                mel_t = voc.prepare_mel(arr, preset=preset, layout=layout)
            except DataError as e:
                raise DataError(f"{f}: {e}") from None
        _warn_mel(f, mel_t)
        for b, d in enumerate(ds):
            jobs.append((f, d, mel_t[b : b + 1]))
    groups: dict[int, list] = {}
    for j in jobs:
        groups.setdefault(j[2].shape[-1], []).append(j)
    bar = Progress(len(jobs), 0, enabled=True, every=1)
    done = 0
    for frames in sorted(groups):
        group = groups[frames]
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            # a fresh generator per call: a file's audio depends on its mel and --seed, not on its batch
            gen = torch.Generator().manual_seed(seed)
            audio = voc.decode(torch.cat([c[2] for c in chunk]), steps=steps, generator=gen,
                               projection=projection).cpu().numpy()
            for (src, dest, _), a in zip(chunk, audio):
                write_wav_atomic(dest, a, voc.sample_rate, overwrite=overwrite)
            done += len(chunk)
            bar.update(done, dest.name)
    bar.close()
    iters = voc.projection if projection is None else projection
    typer.echo(f"wrote {len(jobs)} wav file(s) at {voc.sample_rate} Hz ({steps} step(s), "
               f"{f'mel projection {iters} iterations' if iters else 'no mel projection'})")


@app.command("mel-decode")
def mel_decode(
    inputs: List[Path] = typer.Argument(..., help="TTS features .npy (C_cond, frames), or .wav files (stand-in prior demo)"),
    model: Path = typer.Option(..., "-m", "--model", help="a mel decoder model directory"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory for <name>.npy log-mels"),
    steps: int = typer.Option(1, "--steps"),
    seed: int = typer.Option(0, "--seed", callback=_seed, help="noise seed, 0 to 2^63 - 1"),
    device: str = typer.Option("cpu", "--device"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace output files that already exist"),
) -> None:
    """Decode frame-level TTS features to log-mels with a mel decoder; then `cmaudio vocode` them."""
    from cmaudio.io import check_out_dir, check_outputs
    from cmaudio.mel import decode_files

    if steps < 1:
        raise DataError("--steps must be >= 1")
    dev = _device(device)
    check_out_dir(out)
    files = _audio_inputs(inputs, (".npy", ".wav"))
    check_outputs([_dest(out, f.stem, ".npy") for f in files], inputs=files, overwrite=overwrite)
    paths = decode_files(model, files, out, steps=steps, seed=seed, device=dev, overwrite=overwrite)
    typer.echo(f"wrote {len(paths)} mel file(s) to {out}")


def _gap(text: str) -> tuple[float, float]:
    import math

    try:
        a, b = (float(v) for v in text.split(":"))
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError
    except ValueError:
        raise DataError(f"--gap must look like START:END in seconds, e.g. 1.2:1.5 (got {text!r})") from None
    return a, b


@edit_app.command("inpaint")
def edit_inpaint(
    inp: Path = typer.Argument(..., help="recording (.wav, .flac, .aiff: PCM or float)"),
    gap: str = typer.Option(..., "--gap", help="START:END in seconds"),
    model: Optional[Path] = typer.Option(None, "-m", "--model"),
    steps: int = typer.Option(2, "--steps"),
    out: Path = typer.Option(..., "-o", "--out", help="output file (format from its extension, else the input's)"),
    unconditional: bool = typer.Option(False, "--unconditional", help="ignore the mel (needs a model trained with cond_dropout)"),
    seed: int = typer.Option(0, "--seed", callback=_seed, help="noise seed, 0 to 2^63 - 1"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the output file if it exists"),
) -> None:
    """Fill a gap in a recording; everything outside the gap is kept: its samples bit for bit, its sample
    rate, sample format and channels (each channel is filled on its own, at the model's rate)."""
    from cmaudio.edit import gap_samples, inpaint_recording, output_format, read_recording, write_recording
    from cmaudio.io import check_outputs
    from cmaudio.vocoder import Vocoder

    start, end = _gap(gap)
    check_outputs([out], inputs=[inp], overwrite=overwrite)
    rec = read_recording(inp, exact=True, warn=_warn)
    gap_samples(rec, start, end)
    fmt = output_format(out, rec.format, rec.subtype)
    voc = Vocoder.from_pretrained(model)
    raw, clipped = inpaint_recording(voc, rec, start, end, steps=steps, use_mel=not unconditional, seed=seed)
    if clipped:
        _warn(f"{clipped} new sample(s) in the gap exceed full scale and were clipped to the {rec.subtype} range")
    write_recording(out, raw, rec.rate, rec.subtype, fmt, overwrite=overwrite)
    typer.echo(f"wrote {out}")


@edit_app.command("bwe")
def edit_bwe(
    inp: Path = typer.Argument(..., help="band-limited recording (.wav at e.g. 8 or 16 kHz)"),
    model: Optional[Path] = typer.Option(None, "-m", "--model"),
    steps: int = typer.Option(2, "--steps"),
    out: Path = typer.Option(..., "-o", "--out", help="output file (format from its extension, else the input's)"),
    use_mel: bool = typer.Option(True, "--use-mel/--unconditional", help="condition on the input's own mel"),
    seed: int = typer.Option(0, "--seed", callback=_seed, help="noise seed, 0 to 2^63 - 1"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the output file if it exists"),
) -> None:
    """Extend a band-limited recording to the model's rate, keeping its known band. The output is at the
    model's rate, in the input's sample format (PCM 8/16/24/32 bit, float, double; other encodings:
    16-bit PCM) and channels; float samples are not clipped."""
    from cmaudio.edit import EXACT_SUBTYPES, extend_recording, output_format, read_recording, to_raw, write_recording
    from cmaudio.io import check_outputs
    from cmaudio.vocoder import Vocoder

    check_outputs([out], inputs=[inp], overwrite=overwrite)
    rec = read_recording(inp, exact=False, warn=_warn)
    subtype = rec.subtype if rec.subtype in EXACT_SUBTYPES else "PCM_16"
    fmt = output_format(out, rec.format, subtype)
    voc = Vocoder.from_pretrained(model)
    raw, clipped = to_raw(extend_recording(voc, rec, steps=steps, use_mel=use_mel, seed=seed), subtype)
    if clipped:
        _warn(f"{clipped} sample(s) exceed full scale and were clipped to the {subtype} range")
    write_recording(out, raw, voc.sample_rate, subtype, fmt, overwrite=overwrite)
    typer.echo(f"wrote {out} ({rec.rate} Hz -> {voc.sample_rate} Hz)")


# ----------------------------------------------------------------------------------------------
# evaluate / bench
# ----------------------------------------------------------------------------------------------


def _int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DataError(f"{name} must be a comma-separated list of integers (got {text!r})") from None
    if not vals or min(vals) < 1:
        raise DataError(f"{name} must list positive integers (got {text!r})")
    return vals


@app.command()
def evaluate(
    data: Path = typer.Argument(..., help="corpus root"),
    model: Optional[Path] = typer.Option(None, "-m", "--model"),
    fmt: str = typer.Option("ljspeech", "--format"),
    steps: str = typer.Option("1,2", "--steps", help="comma-separated step counts"),
    projection: Optional[int] = typer.Option(None, "--projection", help="mel-projection iterations of -m's rows "
                                             "(default: the model's; 0 = off)"),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="a teacher model directory to compare"),
    teacher_steps: str = typer.Option("6,50", "--teacher-steps"),
    out: Path = typer.Option(..., "-o", "--out", help="report directory"),
    split: str = typer.Option("heldout", "--split", help="heldout (val+test of the model's split) | val | all"),
    limit: Optional[int] = typer.Option(None, "--limit", help="at most this many utterances"),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="crop each utterance"),
    device: str = typer.Option("cpu", "--device"),
    seed: int = typer.Option(0, "--seed", callback=_seed, help="noise seed, 0 to 2^63 - 1"),
    baseline: List[str] = typer.Option([], "--baseline", help="add training-free rows: griffinlim (32 and 64 "
                                       "iterations on the same mel), pghi (phase-gradient heap integration, and "
                                       "pghi-gl32); without -m only the baselines are scored"),
    preset: Optional[str] = typer.Option(None, "--preset", help="mel preset for baselines without -m (default hifigan)"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="comma-separated metric names (default: all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a report that already exists in -o"),
    with_default: bool = typer.Option(False, "--with-default", help="also score the shipped default model on the "
                                      "same clips (rows default-Kstep), beside -m"),
) -> None:
    """Copy-synthesis quality on held-out utterances: metrics, plot and a listening page."""
    from cmaudio.evaluate import evaluate as run
    from cmaudio.report import REPORT_FILES

    held = [n for n in (*REPORT_FILES, "audio", "spectrograms") if (out / n).exists()]
    if held and not overwrite:
        raise DataError(f"{out} already holds a report ({', '.join(held)}); pass --overwrite to replace it "
                        "(or choose another -o)")
    if out.exists() and not out.is_dir():
        raise DataError(f"the report directory {out} is an existing file")
    if split not in ("heldout", "val", "all"):
        raise DataError(f"--split must be heldout, val or all (got {split!r})")
    names = None
    if metrics is not None:
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        if not names:
            raise DataError(f"--metrics must name at least one metric (got {metrics!r})")
    baselines = [b.strip() for item in baseline for b in item.split(",") if b.strip()]
    res = run(str(data), model_dir=str(model) if model else None, fmt=fmt, steps=_int_list(steps, "--steps"),
              teacher_dir=str(teacher) if teacher else None, teacher_steps=_int_list(teacher_steps, "--teacher-steps"),
              out_dir=out, split=split, limit=limit, max_seconds=max_seconds, device=_device(device), seed=seed,
              metrics=names, baselines=baselines, preset=preset, with_default=with_default, projection=projection,
              overwrite=overwrite)
    from cmaudio.report import markdown_table, summarize

    typer.echo(markdown_table(summarize(res)))
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
def bench(
    device: str = typer.Option("cpu", "--device"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    seconds: float = typer.Option(1.0, "--seconds", help="seconds of audio per generation"),
    batch: str = typer.Option("1", "--batch", help="comma-separated batch sizes"),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 | bf16"),
    repeats: int = typer.Option(10, "--repeats", help="timed calls per setting (slow ones: 1 unless --full)"),
    full: bool = typer.Option(False, "--full", help="time every setting --repeats times, the slow 50-step ones "
                              "too (~25 min on 2 CPU cores; by default a setting above 3 s a call is timed once)"),
    no_peers: bool = typer.Option(False, "--no-peers", help="skip the reference DiffWave and Vocos"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the records as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the --json file if it exists"),
) -> None:
    """Speed: x-real-time, RTF, parameters and peak memory of every setting and peer, a row as each completes."""
    from cmaudio import bench as b

    if json_path:  # refused before minutes of timing, not after
        from cmaudio.io import check_outputs

        check_outputs([json_path], overwrite=overwrite)

    batch_sizes = tuple(_int_list(batch, "--batch"))
    dev = _device(device)
    shown = []

    def row(rec: dict) -> None:  # click.echo flushes: each row shows as soon as its setting is done
        if not shown:  # the header with the first row, so that bad arguments print only their error
            typer.echo(b.format_header())
            shown.append(True)
        typer.echo(b.format_row(rec))

    recs = b.run_bench(device=dev, threads=threads, seconds=seconds, batch_sizes=batch_sizes, dtype=dtype,
                       repeats=repeats, include_peers=not no_peers, slow_s=None if full else b.SLOW_S,
                       progress=lambda m: _err(m), on_record=row)
    if not shown:
        typer.echo(b.format_header())
    typer.echo(b.format_summary(recs))
    if json_path:
        b.write_json(recs, json_path, overwrite=overwrite)
        typer.echo(f"wrote {json_path}")


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------


class _Terminated(BaseException):
    """Raised by the SIGTERM handler: a BaseException, so that no ``except Exception`` swallows it and every
    atomic write on the way out removes its temporary."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_sigterm(signum, frame) -> None:
    raise _Terminated(signum)


def _install_sigterm():
    """SIGTERM unwinds like Ctrl-C (temporaries removed on the way out); returns the previous handler (None
    where no handler can be set: not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: one-line errors, exit 2 for user errors, 130 for Ctrl-C, 143 for SIGTERM; on a
    signal every temporary in flight is removed (cmaudio.io.remove_in_flight), so nothing half-written stays."""
    import signal

    previous = _install_sigterm()
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[list[str]]) -> None:
    import click

    from cmaudio.io import remove_in_flight

    debug = bool(os.environ.get("CMAUDIO_DEBUG"))
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="cmaudio", standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except _Terminated:
        remove_in_flight()
        _err("error: terminated (SIGTERM); partial outputs were removed")
        sys.exit(143)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.exceptions.Abort:
        remove_in_flight()
        _err("aborted")
        sys.exit(130)
    except CmaudioError as e:
        if debug:
            raise
        _err(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        remove_in_flight()
        _err("interrupted")
        sys.exit(130)
    except OSError as e:  # the file system said no (permissions, a file where a directory goes, disk full)
        if debug:
            raise
        _err(f"error: {os_error_line(e)}")
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a bug: one line, traceback only on request
        if debug:
            raise
        _err(f"internal error: {type(e).__name__}: {e} (set CMAUDIO_DEBUG=1 for a traceback; please report it)")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
