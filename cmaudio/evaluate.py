"""`cmaudio evaluate`: copy-synthesis quality of vocoders on held-out utterances, with a report.

For each setting (a model and a number of steps, or a Griffin-Lim baseline and its iteration
count) every held-out utterance is vocoded from its own mel (copy-synthesis) and scored against
the recording with cmaudio.metrics (PESQ-WB, STOI, ViSQOL, MR-STFT, log-mel L1, MCD, F0 RMSE in
cents, V/UV error, DNSMOS OVRL/SIG, CREPE periodicity RMSE and V/UV F1); the ground truth is a row
too. The report (cmaudio.report) gives per-utterance scores, means with 95% intervals, NFE and the
real-time factor of each setting, which metrics Griffin-Lim fools, a quality-vs-NFE plot and a
listening page.

Held-out utterances: the `val` (and `test`) split of the corpus under the split rule recorded
in the model's own config (data.split_seed, data.val_fraction, data.test_fraction), so they are
the utterances the model did not train on; `split="all"` takes every utterance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from cmaudio.baselines import GRIFFINLIM_ITERS, PGHI_GL_ITERS, griffinlim, pghi
from cmaudio.config import Config, DataConfig
from cmaudio.data import list_utterances, load_utterance_audio, split_utterances
from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelSpectrogram, get_preset
from cmaudio.io import confined_path, write_wav_atomic
from cmaudio.metrics import METRIC_NAMES, compute_all, require
from cmaudio.projection import check_iters
from cmaudio.report import write_report
from cmaudio.vocoder import Vocoder


BASELINES = ("griffinlim", "pghi")


def held_out_utterances(source, root: str, fmt: str, split: str = "val", limit: Optional[int] = None):
    """Utterances of `root` in `split` under the split rule of `source` (a Vocoder: the data section of the
    training config it records; or a DataConfig, e.g. ``Config().data`` when only baselines are evaluated).
    A Vocoder built without its training config has no split rule: only split 'all' is possible."""
    if isinstance(source, Vocoder):
        if source.config is None and split != "all":
            raise DataError("this vocoder does not record the config it was trained with, so its held-out split is "
                            "unknown; evaluate with --split all on clips it never trained on")
        d = source.config.data if source.config is not None else DataConfig()  # split all: only the listing options
    else:
        d = source
    utts = list_utterances(root, fmt, vctk_mic=d.vctk_mic, libritts_subsets=d.libritts_subsets)
    if split != "all":
        parts = split_utterances(utts, seed=d.split_seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction)
        utts = parts["val"] + (parts["test"] if split == "heldout" else [])
    if not utts:
        raise DataError(f"no held-out ({split}) utterances in {root}; pass --split all to evaluate every file")
    return utts[:limit] if limit else utts


def _audio_rel(out_dir: Path, setting: str, uid: str) -> str:
    """'audio/<setting>/<uid>.wav', refused (DataError naming the id) unless it stays inside out_dir."""
    return confined_path(out_dir, "audio", setting, uid, suffix=".wav", what="utterance id").relative_to(out_dir).as_posix()


def _pghi_name(gl_iters: int) -> str:
    """The row of the PGHI baseline followed by `gl_iters` Griffin-Lim iterations: pghi, pghi-gl32."""
    return "pghi" if gl_iters == 0 else f"pghi-gl{gl_iters}"


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def evaluate(
    data_root: str,
    *,
    model_dir: Optional[str] = None,
    fmt: str = "ljspeech",
    steps: Sequence[int] = (1, 2),
    teacher_dir: Optional[str] = None,
    teacher_steps: Sequence[int] = (6, 50),
    out_dir: str | Path,
    split: str = "heldout",
    limit: Optional[int] = None,
    max_seconds: Optional[float] = None,
    device: str = "cpu",
    seed: int = 0,
    metrics: Optional[Sequence[str]] = None,
    baselines: Sequence[str] = (),
    preset: Optional[str] = None,
    griffinlim_iters: Sequence[int] = GRIFFINLIM_ITERS,
    with_default: bool = False,
    projection: Optional[int] = None,
    progress=None,
    overwrite: bool = False,
) -> dict:
    """Evaluate a model (and optionally a teacher and baselines) and write the report to out_dir.

    Rows: the ground truth (every metric of each recording against itself; DNSMOS is its own
    quality), each model at each step count, and for ``baselines=("griffinlim",)`` one row per
    Griffin-Lim iteration count (``griffinlim-32``, ``griffinlim-64``: cmaudio.baselines on the same
    mel, NFE column = iterations, no network); ``"pghi"`` adds ``pghi`` (phase-gradient heap integration,
    non-iterative: NFE 1, the one synthesis) and ``pghi-gl32`` (32 fast Griffin-Lim iterations from the
    PGHI phase: NFE 1 + 32), family ``pghi``. With baselines and no `model_dir` only the ground
    truth and the baselines are scored, on `preset`'s mel (default hifigan) and the default split
    rule (``Config().data``); without baselines a missing `model_dir` means the shipped default model.
    ``with_default=True`` adds the shipped default model's rows (family ``default``, the same step counts)
    on the same clips, as a reference beside `model_dir`; the clips are chosen by `model_dir`'s split, so
    use it only where the default never trained on them (its README lists its clips; the embedded
    held-out clips LJ001-0011/0017/0027 are among those it never saw).
    ``projection``: mel-projection iterations of `model_dir`'s rows (cmaudio.projection; None: the model's
    own, 0: off); the default model's rows keep theirs. Each model row records its count ("projection"),
    and the report's meta lists them ("mel_projection").

    Each recording is cropped to a whole number of mel hops so that every row is scored on the same
    samples; its mel is computed once and shared by all rows, and its reference analyses (pYIN,
    CREPE) are computed once (cmaudio.metrics.compute_all's ref_cache). Missing metric packages
    raise MissingPackageError before anything runs. A file already in out_dir is replaced only with `overwrite`.
    Returns the results (see cmaudio.report).
    """
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    iters = sorted(set(int(n) for n in griffinlim_iters))
    if baselines and (not iters or min(iters) < 1):
        raise ConfigError(f"griffinlim iterations must be positive integers, got {list(griffinlim_iters)}")
    wanted = list(METRIC_NAMES) if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    bad = [m for m in wanted if m not in METRIC_NAMES]
    if bad:
        raise ConfigError(f"unknown metric(s) {bad}; choose from {list(METRIC_NAMES)}")
    require(wanted)  # one line naming the extra, before any vocoding

    out_dir = Path(out_dir)
    models = []
    voc = None
    if model_dir is not None or not baselines:
        voc = Vocoder.from_pretrained(model_dir, device=device)
        if projection is not None:
            voc.projection = check_iters(projection, "projection")
        if preset is not None and get_preset(preset).name != voc.preset:
            raise DataError(f"--preset {preset!r} differs from the model's {voc.preset!r} mels; drop --preset "
                            "(baselines invert the model's own mel)")
        models.append(("cm" if voc.kind == "consistency" else "teacher", voc, list(steps)))
    mel_preset = voc.preset if voc is not None else get_preset(preset or "hifigan").name
    if with_default:
        if model_dir is None:
            raise ConfigError("--with-default adds the shipped default model beside -m MODEL; without -m the default is "
                              "already the model scored")
        d = Vocoder.from_pretrained(None, device=device)
        if d.preset != mel_preset:
            raise DataError(f"the shipped default uses {d.preset!r} mels but the model {mel_preset!r}; "
                            "compare like with like")
        models.append(("default", d, list(steps)))
    if teacher_dir:
        t = Vocoder.from_pretrained(teacher_dir, device=device)
        if t.preset != mel_preset:
            raise DataError(f"the teacher uses {t.preset!r} mels but the model {mel_preset!r}; compare like with like")
        models.append(("teacher", t, list(teacher_steps)))
    features = voc.features if voc is not None else MelSpectrogram(mel_preset)
    p = features.preset
    sr, hop = int(features.sample_rate), int(features.hop_length)
    utts = held_out_utterances(voc if voc is not None else Config().data, data_root, fmt, split, limit)
    rows = ["ground_truth", *(f"{fam}-{k}step" for fam, _, ks in models for k in ks),
            *(f"griffinlim-{n}" for n in (iters if "griffinlim" in baselines else ())),
            *(_pghi_name(n) for n in (PGHI_GL_ITERS if "pghi" in baselines else ()))]
    for name in rows:  # every output path is confined to out_dir before anything is computed or written
        for u in utts:
            _audio_rel(out_dir, name, u.id)
    results: dict = {
        "meta": {"model": str(model_dir or ("default" if voc is not None else "none")),
                 "teacher": str(teacher_dir) if teacher_dir else None, "baselines": baselines or None,
                 "default_model": bool(with_default),
                 "data": str(data_root), "format": fmt, "split": split, "utterances": len(utts), "device": device,
                 "sample_rate": sr, "preset": mel_preset, "seed": seed,
                 "mel_projection": {fam: v.projection for fam, v, _ in models} or None},
        "settings": [],
        "ground_truth": {"audio": {}, "per_utterance": {}},
    }
    refs, mels, caches = {}, {}, {}
    for u in utts:
        a = load_utterance_audio(u, sr)
        if max_seconds:
            a = a[: int(max_seconds * sr)]
        a = a[: (a.shape[-1] // hop) * hop]  # whole hops: every row (frames * hop samples) covers the same span
        if a.shape[-1] < features.min_samples:
            raise DataError(f"{u.id}: {a.shape[-1]} samples are too short for a {mel_preset!r} mel")
        refs[u.id] = a
        with torch.no_grad():
            x = a.clamp(-1.0, 1.0) if getattr(p, "clip_audio", False) else a
            mels[u.id] = (voc.mel(a.to(voc.device)) if voc is not None else features(x.unsqueeze(0)))
        caches[u.id] = {}
        rel = _audio_rel(out_dir, "ground_truth", u.id)
        write_wav_atomic(out_dir / rel, a.numpy(), sr, overwrite=overwrite)
        results["ground_truth"]["audio"][u.id] = rel
        ref_np = a.numpy()
        results["ground_truth"]["per_utterance"][u.id] = compute_all(ref_np, ref_np, sr, metrics=wanted,
                                                                     ref_cache=caches[u.id])
        if progress:
            progress(f"ground truth {u.id}")

    def run_setting(setting: dict, generate, dev: torch.device) -> None:
        compute, audio_s = 0.0, 0.0
        for i, (uid, a) in enumerate(refs.items()):
            gen, dt = _timed(lambda: generate(i, mels[uid]), dev)
            compute += dt
            audio_s += gen.shape[-1] / sr
            gen_np = gen.detach().cpu().numpy()
            rel = _audio_rel(out_dir, setting["name"], uid)
            write_wav_atomic(out_dir / rel, gen_np, sr, overwrite=overwrite)
            setting["audio"][uid] = rel
            setting["per_utterance"][uid] = compute_all(a.numpy(), gen_np, sr, metrics=wanted, ref_cache=caches[uid])
            if progress:
                progress(f"{setting['name']} {uid}")
        setting["rtf"] = compute / audio_s
        setting["xrt"] = audio_s / compute
        results["settings"].append(setting)

    for family, v, step_list in models:
        for k in step_list:
            setting = {"name": f"{family}-{k}step", "family": family, "nfe": v.nfe(k), "steps": k,
                       "projection": v.projection, "per_utterance": {}, "audio": {}}
            run_setting(setting, lambda i, mel, v=v, k=k: v.decode(mel.to(v.device), steps=k,
                                                                   generator=torch.Generator().manual_seed(seed + i))[0],
                        v.device)
    if "griffinlim" in baselines:
        for n in iters:
            setting = {"name": f"griffinlim-{n}", "family": "griffinlim", "nfe": n, "steps": None,
                       "note": f"Griffin-Lim baseline, {n} iterations on the same mel (NFE = iterations; no network, "
                               "no training)", "per_utterance": {}, "audio": {}}
            run_setting(setting, lambda i, mel, n=n: griffinlim(mel.cpu(), p, n_iter=n, seed=seed + i)[0],
                        torch.device("cpu"))
    if "pghi" in baselines:
        for n in PGHI_GL_ITERS:
            name = _pghi_name(n)
            note = ("PGHI baseline: phase-gradient heap integration on the same mel's pseudo-inverse magnitude, "
                    "non-iterative (NFE 1 = its one synthesis; no network, no training)")
            if n:
                note += f", then {n} fast Griffin-Lim iterations from that phase (NFE 1 + {n})"
            setting = {"name": name, "family": "pghi", "nfe": 1 + n, "steps": None, "note": note,
                       "per_utterance": {}, "audio": {}}
            run_setting(setting, lambda i, mel, n=n: pghi(mel.cpu(), p, gl_iters=n, seed=seed + i)[0],
                        torch.device("cpu"))
    paths = write_report(results, out_dir, overwrite=overwrite)
    results["paths"] = {k: str(path) for k, path in paths.items() if not isinstance(path, dict)}
    return results
