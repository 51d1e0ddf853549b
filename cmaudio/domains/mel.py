"""The mel training domain: x = normalised log-mel crops (or their residual from cond), cond = features.

What the data are (stand-in or cond_dir conds, the per-bin normalisation, the zero/cond prior,
masked crops): see `cmaudio.mel`'s docstring; the helpers live in `cmaudio.data.meldata`.
Validation decodes held-out utterances with the model being trained through
`cmaudio.mel.MelDecoder` (a padded batch, so the masks are exercised) and scores log-mel L1.

Imports: checkpoint, config, data (with data.meldata), domains.base, errors, io, mel (MelDecoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cmaudio import checkpoint as ckpt
from cmaudio.checkpoint import kind_of
from cmaudio.config import Config
from cmaudio.data import StreamSampler, splits_from_config
from cmaudio.domains.base import Domain, add_png, check_features
from cmaudio.data.meldata import MelPairs, MelSegmentDataset, _Moments
from cmaudio.errors import CmaudioError, ConfigError, DataError
from cmaudio.io import atomic_path, confined_path
from cmaudio.mel import MelDecoder

# Normalisation statistics use at most this many training utterances (evenly spread) when the
# corpus is too large to cache; per-bin means of log-mels converge long before that.
STATS_MAX_UTTERANCES = 2000


def _teacher_info(cfg: Config) -> Optional[ckpt.ModelDirInfo]:
    """The record of a cmaudio CD teacher (run dir or model dir), or None if objective.teacher is not one."""
    path = Path(cfg.objective.teacher) if cfg.objective.teacher else None
    if path is None or not path.is_dir():
        return None
    return ckpt.read_source_info(path)


class MelDomain(Domain):
    """Mel decoders: x = normalised log-mel crops (B, n_mels, F) (or their residual from cond), cond (B, C_cond, F).

    See the module docstring for the data, normalisation and prior. The statistics come from the
    training split (or, for CD, from the teacher, so teacher and student see the same data).
    """

    def __init__(self, cfg: Config, *, seed: int, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        d = cfg.data
        self.features = check_features(cfg)
        fe = self.features
        if "mrstft" in cfg.objective.distance:
            raise ConfigError("objective.distance mrstft compares waveforms; in the mel domain use pseudo_huber, l2 or l1")
        if d.tts_mel_dir:
            raise ConfigError("data.tts_mel_dir is for waveform vocoders; a mel decoder reads its cond from data.cond_dir")
        self.frames = d.segment_length // fe.hop_length
        self.prior = cfg.model.prior
        splits = splits_from_config(d)
        self.train_pairs = MelPairs(splits["train"], fe, cond_dir=d.cond_dir, segment=d.standin_segment,
                                    smooth=d.standin_smooth)
        if self.train_pairs.bad:
            log(f"data: skipped {len(self.train_pairs.bad)} bad file(s) of {len(splits['train'])}")
        if len(self.train_pairs) == 0:
            raise DataError(f"no usable training utterance in data.root={d.root!r}; see the warnings")
        self.cond_source = "standin" if d.cond_dir is None else "dir"
        self.cond_channels_ = int(self.train_pairs.cond_channels)
        self.cond_in_mel_space = self.cond_source == "standin" or self.cond_channels_ == fe.n_mels
        if self.prior == "cond" and not self.cond_in_mel_space:
            raise ConfigError(
                f"model.prior=cond centres the noise on cond, which needs a cond in mel space ({fe.n_mels} channels); "
                f"the cond files have {self.cond_channels_}. Use model.prior=zero"
            )
        self.val_pairs = MelPairs(splits["val"][: d.max_val_utterances], fe, cond_dir=d.cond_dir,
                                  segment=d.standin_segment, smooth=d.standin_smooth, cache=True,
                                  cond_channels=self.cond_channels_)
        self._measure(log)
        teacher = _teacher_info(cfg) if cfg.objective.kind == "cd" else None
        if teacher is not None:
            self._adopt_teacher(teacher, log)
        self.dataset = MelSegmentDataset(self.train_pairs, frames=self.frames, seed=seed, mel_mean=self.mel_mean,
                                         mel_std=self.mel_std, cond_mean=self.cond_mean, cond_std=self.cond_std)

    # ------------------------------------------------------------------ statistics
    def _measure(self, log) -> None:
        pairs = self.train_pairs
        n = len(pairs)
        if pairs.cache or n <= STATS_MAX_UTTERANCES:
            chosen = range(n)
        else:  # evenly spread, deterministic
            chosen = sorted({int(i) for i in np.linspace(0, n - 1, STATS_MAX_UTTERANCES)})
        mom = _Moments()
        for i in chosen:
            try:
                mel, cond = pairs.get(i)
            except DataError as e:
                pairs._mark_bad(pairs.utterances[i].path, str(e))
                continue
            mom.add(mel, cond, self.cond_in_mel_space)
        if mom.n == 0:
            raise DataError("no training utterance could be loaded to measure the mel statistics; see the warnings")
        self.mel_mean, self.mel_std = mom.mel_stats()
        if self.cond_in_mel_space:
            self.cond_mean, self.cond_std = self.mel_mean, self.mel_std
        else:
            self.cond_mean, self.cond_std = mom.cond_stats()
        self._rms = mom.rms(self.prior, self.mel_mean, self.mel_std)
        log(f"mel statistics from {len(chosen)} training utterances ({mom.n} frames); "
            f"RMS of the model's data ({self.prior} prior): {self._rms:.4f}")

    def _adopt_teacher(self, teacher: ckpt.ModelDirInfo, log) -> None:
        tcfg = teacher.config.model
        if tcfg.domain != "mel":
            raise ConfigError(f"objective.teacher {self.cfg.objective.teacher} is a {tcfg.domain} model; "
                              "a mel decoder needs a mel-domain teacher (model.domain=mel)")
        if tcfg.prior != self.prior:
            raise ConfigError(f"the teacher was trained with model.prior={tcfg.prior!r} but this run uses "
                              f"{self.prior!r}; use the teacher's prior")
        info = teacher.domain_info
        if "mel_mean" in info:
            if int(info.get("cond_channels", self.cond_channels_)) != self.cond_channels_:
                raise ConfigError(f"the teacher's cond has {info.get('cond_channels')} channels, this data's {self.cond_channels_}")
            self.mel_mean = np.asarray(info["mel_mean"], np.float64)
            self.mel_std = np.asarray(info["mel_std"], np.float64)
            self.cond_mean = np.asarray(info.get("cond_mean", info["mel_mean"]), np.float64)
            self.cond_std = np.asarray(info.get("cond_std", info["mel_std"]), np.float64)
            self._rms = float(teacher.sigma_data)
            log("mel statistics and sigma_data taken from the teacher (student and teacher must normalise alike)")

    def sigma_data(self) -> float:
        """Measured RMS of the model's data: ~1.0 for the zero prior (normalised mels), the residual's for cond."""
        return float(self._rms)

    def cond_channels(self) -> Optional[int]:
        return self.cond_channels_

    def extra_model_info(self) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "mel_mean": [float(v) for v in self.mel_mean],
            "mel_std": [float(v) for v in self.mel_std],
            "cond_mean": [float(v) for v in self.cond_mean],
            "cond_std": [float(v) for v in self.cond_std],
            "cond_channels": self.cond_channels_,
            "cond_source": self.cond_source,
            "cond_in_mel_space": bool(self.cond_in_mel_space),
            "standin_segment": int(d.standin_segment),
            "standin_smooth": int(d.standin_smooth),
        }

    # ------------------------------------------------------------------ batches
    def loader(self, *, start_step, global_batch, rank, world, micro):
        sampler = StreamSampler(start_step, global_batch, rank, world, micro)
        nw = self.cfg.data.num_workers
        return DataLoader(self.dataset, batch_size=sampler.local_batch, sampler=sampler, num_workers=nw,
                          persistent_workers=nw > 0, drop_last=False)

    def prepare(self, batch, device):
        mel = batch["mel"].to(device, non_blocking=True)
        cond = batch["cond"].to(device, non_blocking=True)
        x = mel - cond if self.prior == "cond" else mel
        if bool(batch["mask"].all()):  # checked on the CPU copy: no device sync
            mask = None  # no padding: skip the masking work (results are identical)
        else:
            mask = batch["mask"].to(device, non_blocking=True)
            x = x * mask
        return {"x": x, "cond": cond, "mask": mask, "seeds": batch["seed"]}

    # ------------------------------------------------------------------ validation
    def decoder(self, model: nn.Module, cfg: Config) -> "MelDecoder":
        dec = MelDecoder.from_config(model, cfg, kind=kind_of(cfg), domain_info=self.extra_model_info())
        return dec.to(next(model.parameters()).device)

    def val_items(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(id, mel, cond) of the held-out utterances, cut to data.val_seconds (raw units)."""
        out = []
        fe = self.features
        limit = max(int(self.cfg.data.val_seconds * fe.sample_rate / fe.hop_length), 1)
        for i, u in enumerate(self.val_pairs.utterances):
            try:
                mel, cond = self.val_pairs.get(i)
            except CmaudioError:
                continue
            out.append((u.id, mel[:, :limit], cond[:, :limit]))
        return out

    @torch.no_grad()
    def validate(self, model, cfg, step, out_dir, writer):
        dec = self.decoder(model, cfg)
        items = self.val_items()
        if not items:
            return {}
        dev = dec.device
        T = max(m.shape[1] for _, m, _ in items)
        cond = torch.zeros(len(items), dec.cond_channels, T)
        mask = torch.zeros(len(items), 1, T)
        for b, (_, m, c) in enumerate(items):  # a padded batch: validation exercises the masks too
            cond[b, :, : c.shape[1]] = torch.from_numpy(c)
            mask[b, :, : c.shape[1]] = 1
        settings = [(1, "1step"), (2, "2step")] if dec.kind == "consistency" else [(cfg.sampling.teacher_steps, "ode")]
        gens = {}
        for steps, name in settings:
            g = [torch.Generator().manual_seed(1234 + b) for b in range(len(items))]
            gens[name] = dec.generate(cond.to(dev), mask=mask.to(dev), steps=steps, generator=g).cpu()
        scores: dict[str, list] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        for b, (uid, m, c) in enumerate(items):
            n = m.shape[1]
            gt = torch.from_numpy(m)
            if self.cond_in_mel_space:
                scores.setdefault("val/cond_logmel_l1", []).append(float((torch.from_numpy(c) - gt).abs().mean()))
            for name, g in gens.items():
                scores.setdefault(f"val/{name}_logmel_l1", []).append(float((g[b, :, :n] - gt).abs().mean()))
            if b < 2:
                panels = [("ground truth", m)]
                if self.cond_in_mel_space:
                    panels.append(("cond" + (" (stand-in)" if self.cond_source == "standin" else ""), c))
                panels += [(name, gens[name][b, :, :n].numpy()) for name in gens]
                png = confined_path(out_dir, uid, suffix=".png", what="utterance id")
                mel_panels_png(panels, png, title=f"step {step} {uid}", overwrite=True)  # the run's own (resume)
                add_png(writer, f"mel/{uid}", png, step)
        return {k: float(sum(v) / len(v)) for k, v in scores.items() if v}


def mel_panels_png(panels: Sequence[tuple[str, np.ndarray]], path: Union[str, Path], title: Optional[str] = None, *,
                   overwrite: bool = False) -> Path:
    """Stacked log-mel images (n_mels, T) on one colour scale (the first panel's range), written atomically
    (an existing file is replaced only with `overwrite`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ref = np.asarray(panels[0][1])
    vmin, vmax = float(np.min(ref)), float(np.max(ref))
    fig = Figure(figsize=(6.0, 1.5 * len(panels) + 0.3), dpi=100)
    FigureCanvasAgg(fig)
    ax0 = None
    for k, (name, m) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1, sharex=ax0)
        ax0 = ax0 or ax
        ax.imshow(np.asarray(m), origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{title}: {name}" if (title and k == 0) else name, fontsize=8)
        ax.set_ylabel("mel bin", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.axes[-1].set_xlabel("frame", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png", overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return path


__all__ = ["MelDomain", "mel_panels_png"]
