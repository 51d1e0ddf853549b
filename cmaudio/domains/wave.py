"""The waveform training domain: x = audio crops (B, 1, L), cond = their mel (B, n_mels, L / hop).

Validation vocodes held-out utterances with the model being trained (through
`cmaudio.vocoder.Vocoder`, so it sees what users will) and scores them with MR-STFT and log-mel L1, and,
where the eval extra is installed, with Distill-MOS (naturalness, ``val/<setting>_nmos``): the validation
clips only, as a curve to watch; nothing is selected by it.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from cmaudio.checkpoint import kind_of
from cmaudio.config import Config
from cmaudio.data import dataset_from_config, estimate_sigma_data, load_utterance_audio, make_loader, splits_from_config
from cmaudio.domains.base import Domain, add_png, check_features
from cmaudio.errors import CmaudioError
from cmaudio.io import confined_path, write_wav_atomic
from cmaudio.metrics import MissingPackageError, logmel_l1, mrstft, nmos, require
from cmaudio.report import comparison_png
from cmaudio.vocoder import Vocoder


class WaveDomain(Domain):
    """Waveform vocoders: x = audio crops (B, 1, L), cond = their mel (B, n_mels, L / hop)."""

    def __init__(self, cfg: Config, *, seed: int, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.features = check_features(cfg)
        hop = self.features.hop_length
        splits = splits_from_config(cfg.data)
        self.train_utts = splits["train"]
        self.val_utts = splits["val"][: cfg.data.max_val_utterances]
        self.dataset = dataset_from_config(cfg.data, self.train_utts, hop_length=hop, seed=seed,
                                           n_mels=self.features.n_mels)
        if self.dataset.bad:
            log(f"data: skipped {len(self.dataset.bad)} bad file(s) of {len(self.train_utts)}")
        self._val_audio: Optional[list] = None
        try:
            require(["nmos"])
            self._val_nmos = True
        except MissingPackageError:
            self._val_nmos = False
            log("validation: no Distill-MOS curve (install the eval extra: pip install 'cmaudio[eval]')")

    def sigma_data(self) -> float:
        return float(estimate_sigma_data(self.dataset.utterances, self.cfg.data.sample_rate))

    def cond_channels(self) -> Optional[int]:
        return self.features.n_mels

    def loader(self, *, start_step, global_batch, rank, world, micro):
        return make_loader(self.dataset, start_step=start_step, global_batch=global_batch, rank=rank,
                           world_size=world, micro_batches=micro, num_workers=self.cfg.data.num_workers)

    def prepare(self, batch, device):
        x = batch["audio"].to(device, non_blocking=True)
        frames = x.shape[-1] // self.features.hop_length
        if "mel" in batch:
            cond = batch["mel"].to(device)[..., :frames]
        else:
            feats = self.features.to(device)
            with torch.no_grad():
                cond = feats(x[:, 0])[..., :frames]
        return {"x": x, "cond": cond, "mask": None, "seeds": batch["seed"]}

    def val_audio(self) -> list:
        if self._val_audio is None:
            out = []
            for u in self.val_utts:
                try:
                    a = load_utterance_audio(u, self.cfg.data.sample_rate)
                except CmaudioError:
                    continue
                out.append((u.id, a[: int(self.cfg.data.val_seconds * self.cfg.data.sample_rate)]))
            self._val_audio = out
        return self._val_audio

    @torch.no_grad()
    def validate(self, model, cfg, step, out_dir, writer):
        kind = kind_of(cfg)
        voc = Vocoder.from_config(model, cfg, kind=kind)
        settings = [(1, "1step"), (2, "2step")] if kind == "consistency" else [(cfg.sampling.teacher_steps, "ode")]
        sr = voc.sample_rate
        scores: dict[str, list] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, (uid, audio) in enumerate(self.val_audio()):
            audio = audio.to(voc.device)
            mel = voc.mel(audio)
            for steps, name in settings:
                gen = voc.decode(mel, steps=steps, generator=torch.Generator().manual_seed(1234 + i))[0]
                n = min(gen.shape[-1], audio.shape[-1])
                ref_np, gen_np = audio[:n].cpu().numpy(), gen[:n].cpu().numpy()
                try:
                    scores.setdefault(f"val/{name}_mrstft", []).append(mrstft(ref_np, gen_np, sr))
                    scores.setdefault(f"val/{name}_logmel_l1", []).append(logmel_l1(ref_np, gen_np, sr))
                    if self._val_nmos:
                        scores.setdefault(f"val/{name}_nmos", []).append(nmos(gen_np, sr))
                except CmaudioError:
                    pass
                if i < 2:
                    wav = confined_path(out_dir, f"{uid}_{name}", suffix=".wav", what="utterance id")
                    write_wav_atomic(wav, gen_np, sr, overwrite=True)  # the run's own samples (resume)
                    png = confined_path(out_dir, f"{uid}_{name}", suffix=".png", what="utterance id")
                    comparison_png(ref_np, gen_np, sr, png, title=f"step {step} {uid} {name}", overwrite=True)
                    if writer is not None:
                        writer.add_audio(f"audio/{uid}_{name}", torch.from_numpy(gen_np)[None], step, sample_rate=sr)
                    add_png(writer, f"spec/{uid}_{name}", png, step)
        return {k: float(sum(v) / len(v)) for k, v in scores.items() if v}
