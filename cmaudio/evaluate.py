"""`cmaudio evaluate`: copy-synthesis quality of vocoders on held-out utterances, with a report.

For each setting (a model and a number of steps) every held-out utterance is vocoded from its
own mel (copy-synthesis) and scored against the recording with cmaudio.metrics (PESQ-WB, STOI,
MR-STFT, log-mel L1, MCD, F0 RMSE in cents, V/UV error); the report (cmaudio.report) gives
per-utterance scores, means with 95% intervals, NFE and the real-time factor of each setting,
a quality-vs-NFE plot and a listening page.

Held-out utterances: the `val` (and `test`) split of the corpus under the split rule recorded
in the model's own config (data.split_seed, data.val_fraction, data.test_fraction), so they are
the utterances the model did not train on; `split="all"` takes every utterance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from cmaudio.errors import DataError
from cmaudio.io import write_wav_atomic
from cmaudio.vocoder import Vocoder


def held_out_utterances(vocoder: Vocoder, root: str, fmt: str, split: str = "val", limit: Optional[int] = None):
    from cmaudio.data import list_utterances, split_utterances

    d = vocoder.config.data
    utts = list_utterances(root, fmt, vctk_mic=d.vctk_mic, libritts_subsets=d.libritts_subsets)
    if split != "all":
        parts = split_utterances(utts, seed=d.split_seed, val_fraction=d.val_fraction, test_fraction=d.test_fraction)
        utts = parts["val"] + (parts["test"] if split == "heldout" else [])
    if not utts:
        raise DataError(f"no held-out ({split}) utterances in {root}; pass --split all to evaluate every file")
    return utts[:limit] if limit else utts


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
    progress=None,
) -> dict:
    """Evaluate a model (and optionally a teacher) and write the report to out_dir; returns results."""
    from cmaudio.data import load_utterance_audio
    from cmaudio.metrics import compute_all
    from cmaudio.report import write_report

    out_dir = Path(out_dir)
    voc = Vocoder.from_pretrained(model_dir, device=device)
    models = [("cm" if voc.kind == "consistency" else "teacher", voc, list(steps))]
    if teacher_dir:
        t = Vocoder.from_pretrained(teacher_dir, device=device)
        if t.preset != voc.preset:
            raise DataError(f"the teacher uses {t.preset!r} mels but the model {voc.preset!r}; compare like with like")
        models.append(("teacher", t, list(teacher_steps)))
    utts = held_out_utterances(voc, data_root, fmt, split, limit)
    sr = voc.sample_rate
    results: dict = {
        "meta": {"model": str(model_dir or "default"), "teacher": str(teacher_dir) if teacher_dir else None,
                 "data": str(data_root), "format": fmt, "split": split, "utterances": len(utts), "device": device,
                 "sample_rate": sr, "preset": voc.preset, "seed": seed},
        "settings": [],
        "ground_truth": {"audio": {}},
    }
    refs = {}
    for u in utts:
        a = load_utterance_audio(u, sr)
        if max_seconds:
            a = a[: int(max_seconds * sr)]
        refs[u.id] = a
        rel = f"audio/ground_truth/{u.id}.wav"
        write_wav_atomic(out_dir / rel, a.numpy(), sr)
        results["ground_truth"]["audio"][u.id] = rel
    for family, v, step_list in models:
        for k in step_list:
            name = f"{family}-{k}step"
            setting = {"name": name, "family": family, "nfe": v.nfe(k), "steps": k, "per_utterance": {}, "audio": {}}
            compute, audio_s = 0.0, 0.0
            for i, (uid, a) in enumerate(refs.items()):
                mel = v.mel(a.to(v.device))
                g = torch.Generator().manual_seed(seed + i)
                if v.device.type == "cuda":
                    torch.cuda.synchronize(v.device)
                t0 = time.perf_counter()
                gen = v.decode(mel, steps=k, generator=g)[0]
                if v.device.type == "cuda":
                    torch.cuda.synchronize(v.device)
                compute += time.perf_counter() - t0
                audio_s += gen.shape[-1] / sr
                gen_np = gen.cpu().numpy()
                rel = f"audio/{name}/{uid}.wav"
                write_wav_atomic(out_dir / rel, gen_np, sr)
                setting["audio"][uid] = rel
                setting["per_utterance"][uid] = compute_all(a.numpy(), gen_np, sr, metrics=metrics)
                if progress:
                    progress(f"{name} {uid}")
            setting["rtf"] = compute / audio_s
            setting["xrt"] = audio_s / compute
            results["settings"].append(setting)
    paths = write_report(results, out_dir)
    results["paths"] = {k: str(p) for k, p in paths.items() if not isinstance(p, dict)}
    return results
