"""The peer a user would pick instead of cmaudio: a Vocos GAN vocoder, trained for a wall-clock budget.

Benchmark code, not library code: it uses the `vocos` package's own generator (VocosBackbone +
ISTFTHead, 13.5 M parameters at dim 512 x 8 layers), its MPD/MRD discriminators and its GAN,
feature-matching and discriminator losses, with Vocos's optimiser settings (AdamW, lr 5e-4,
betas (0.8, 0.9), mel-L1 weight 45, MRD weight 0.1). Two things are cmaudio's so the comparison is
like for like: the data (the same recipe's train split, segment crops and batch size, through
cmaudio.data) and the mel (the recipe's preset, e.g. hifigan 80 bins at 22.05 kHz, instead of
Vocos's 24 kHz 100-bin mel), which is also the input the held-out evaluation gives every contender.

    python egs/quality/vocos_peer.py RUN_DIR --recipe recipes/mini_ct.yaml --minutes 30 [--resume]
    python egs/quality/vocos_peer.py RUN_DIR --evaluate REPORT_DIR --steps-label gan   # held-out report

Training writes RUN_DIR/metrics.jsonl in the format of `cmaudio train` (val/1step_logmel_l1,
val/1step_mrstft, val/minutes at each validation) and RUN_DIR/state.pt (weights and optimiser
states: tensors only, loaded with weights_only=True). The minutes count training and validation,
as `train.max_minutes` does, and carry over a resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cmaudio.config import load as load_config
from cmaudio.data import dataset_from_config, load_utterance_audio, make_loader, splits_from_config
from cmaudio.features import MelSpectrogram
from cmaudio.metrics import logmel_l1, mrstft


def build(n_mels: int, hop: int, dim: int, layers: int):
    from vocos.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    backbone = VocosBackbone(input_channels=n_mels, dim=dim, intermediate_dim=3 * dim, num_layers=layers)
    head = ISTFTHead(dim=dim, n_fft=4 * hop, hop_length=hop, padding="same")
    gen = torch.nn.Sequential(backbone, head)
    return gen, MultiPeriodDiscriminator(), MultiResolutionDiscriminator()


def vocode(gen, mel: torch.Tensor) -> torch.Tensor:
    """mel (B, n_mels, F) -> audio (B, F * hop), clamped to [-1, 1]."""
    return gen(mel).clamp(-1, 1)


def train(args) -> None:
    from vocos.loss import DiscriminatorLoss, FeatureMatchingLoss, GeneratorLoss

    cfg = load_config(args.recipe)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    feats = MelSpectrogram(cfg.features.preset)
    hop = feats.hop_length
    splits = splits_from_config(cfg.data)
    ds = dataset_from_config(cfg.data, splits["train"], hop_length=hop, seed=args.seed, n_mels=feats.n_mels)
    gen, mpd, mrd = build(feats.n_mels, hop, args.dim, args.layers)
    opt_g = torch.optim.AdamW(gen.parameters(), lr=args.lr, betas=(0.8, 0.9))
    opt_d = torch.optim.AdamW([*mpd.parameters(), *mrd.parameters()], lr=args.lr, betas=(0.8, 0.9))
    step, minutes = 0, 0.0
    state_path = run / "state.pt"
    if args.resume and state_path.is_file():
        st = torch.load(state_path, weights_only=True)
        gen.load_state_dict(st["gen"]); mpd.load_state_dict(st["mpd"]); mrd.load_state_dict(st["mrd"])
        opt_g.load_state_dict(st["opt_g"]); opt_d.load_state_dict(st["opt_d"])
        step, minutes = int(st["step"]), float(st["minutes"])
        torch.set_rng_state(st["rng"])
        print(f"resumed at step {step} ({minutes:.1f} min)")
    if minutes >= args.minutes:
        print(f"already trained {minutes:.1f} of {args.minutes} minutes")
        return
    loader = iter(make_loader(ds, start_step=step, global_batch=cfg.train.batch_size, micro_batches=1))
    d_loss, g_loss, fm_loss = DiscriminatorLoss(), GeneratorLoss(), FeatureMatchingLoss()
    val = [(u.id, load_utterance_audio(u, cfg.data.sample_rate)[: int(cfg.data.val_seconds * cfg.data.sample_rate)])
           for u in splits["val"][: cfg.data.max_val_utterances]]

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"gen": gen.state_dict(), "mpd": mpd.state_dict(), "mrd": mrd.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step, "minutes": minutes,
                    "rng": torch.get_rng_state()}, tmp)
        tmp.replace(state_path)

    def validate() -> None:
        gen.eval()
        l1, mr = [], []
        with torch.no_grad():
            for _, a in val:
                y = vocode(gen, feats(a[None]))[0, : a.shape[-1]].numpy()
                ref = a[: y.shape[-1]].numpy()
                l1.append(logmel_l1(ref, y, cfg.data.sample_rate))
                mr.append(mrstft(ref, y, cfg.data.sample_rate))
        gen.train()
        row = {"step": step, "time": time.time(), "val/1step_logmel_l1": sum(l1) / len(l1),
               "val/1step_mrstft": sum(mr) / len(mr), "val/minutes": minutes}
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"step {step} {minutes:.1f} min: val log-mel L1 {row['val/1step_logmel_l1']:.3f} "
              f"MR-STFT {row['val/1step_mrstft']:.3f}", flush=True)

    t_last = time.time()
    next_val = (int(minutes / args.val_minutes) + 1) * args.val_minutes
    while minutes < args.minutes:
        batch = next(loader)
        y = batch["audio"][:, 0]
        mel = batch["mel"][..., : y.shape[-1] // hop] if "mel" in batch else feats(y)[..., : y.shape[-1] // hop]
        y_hat = gen(mel)
        gan = step >= args.pretrain_steps
        if gan:  # discriminator step (Vocos experiment.training_step, optimizer_idx 0)
            r_mp, g_mp, _, _ = mpd(y=y, y_hat=y_hat.detach())
            r_mr, g_mr, _, _ = mrd(y=y, y_hat=y_hat.detach())
            l_mp, l_mp_r, _ = d_loss(disc_real_outputs=r_mp, disc_generated_outputs=g_mp)
            l_mr, l_mr_r, _ = d_loss(disc_real_outputs=r_mr, disc_generated_outputs=g_mr)
            loss_d = l_mp / len(l_mp_r) + args.mrd_coeff * l_mr / len(l_mr_r)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        mel_l = (feats(y_hat) - feats(y)).abs().mean()  # the preset's log-mel, as Vocos's mel loss
        loss = args.mel_coeff * mel_l
        if gan:  # generator step (optimizer_idx 1)
            _, g_mp, f_r_mp, f_g_mp = mpd(y=y, y_hat=y_hat)
            _, g_mr, f_r_mr, f_g_mr = mrd(y=y, y_hat=y_hat)
            lg_mp, lst_mp = g_loss(disc_outputs=g_mp)
            lg_mr, lst_mr = g_loss(disc_outputs=g_mr)
            loss = (loss + lg_mp / len(lst_mp) + args.mrd_coeff * lg_mr / len(lst_mr)
                    + fm_loss(fmap_r=f_r_mp, fmap_g=f_g_mp) / len(f_r_mp)
                    + args.mrd_coeff * fm_loss(fmap_r=f_r_mr, fmap_g=f_g_mr) / len(f_r_mr))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        step += 1
        now = time.time()
        minutes += (now - t_last) / 60
        t_last = now
        if step % 50 == 0:
            print(f"step {step} {minutes:.1f} min mel-L1 {float(mel_l):.3f}", flush=True)
        if minutes >= next_val or minutes >= args.minutes:
            validate()
            next_val += args.val_minutes
            now = time.time()
            minutes += (now - t_last) / 60
            t_last = now
            save()
    save()
    print(f"done: {step} steps in {minutes:.1f} min; {run}")


def evaluate(args) -> None:
    """Held-out report in cmaudio's format (cmaudio.report), same clips and metrics as `cmaudio evaluate`."""
    from cmaudio.io import write_wav_atomic
    from cmaudio.metrics import compute_all
    from cmaudio.report import write_report

    cfg = load_config(args.recipe)
    feats = MelSpectrogram(cfg.features.preset)
    gen, _, _ = build(feats.n_mels, feats.hop_length, args.dim, args.layers)
    st = torch.load(Path(args.run_dir) / "state.pt", weights_only=True)
    gen.load_state_dict(st["gen"])
    gen.eval()
    parts = splits_from_config(cfg.data)
    utts = parts["val"] + parts["test"]
    sr = cfg.data.sample_rate
    out = Path(args.evaluate)
    name = f"vocos-{args.steps_label}"
    setting = {"name": name, "family": "vocos", "nfe": 1, "steps": 1, "per_utterance": {}, "audio": {}}
    results = {"meta": {"model": f"vocos peer {args.run_dir} ({st['minutes']:.1f} min, {st['step']} steps)",
                        "data": cfg.data.root, "utterances": len(utts), "sample_rate": sr,
                        "preset": cfg.features.preset, "split": "heldout"},
               "settings": [setting], "ground_truth": {"audio": {}}}
    compute = audio_s = 0.0
    for u in utts:
        a = load_utterance_audio(u, sr)
        if args.max_seconds:
            a = a[: int(args.max_seconds * sr)]
        rel = f"audio/ground_truth/{u.id}.wav"
        write_wav_atomic(out / rel, a.numpy(), sr, overwrite=True)  # its own report dir: a rerun replaces it
        results["ground_truth"]["audio"][u.id] = rel
        with torch.no_grad():
            mel = feats(a[None])
            t0 = time.perf_counter()
            y = vocode(gen, mel)[0]
            compute += time.perf_counter() - t0
        audio_s += y.shape[-1] / sr
        y = y.numpy()
        rel = f"audio/{name}/{u.id}.wav"
        write_wav_atomic(out / rel, y, sr, overwrite=True)
        setting["audio"][u.id] = rel
        setting["per_utterance"][u.id] = compute_all(a.numpy(), y, sr)
    setting["rtf"], setting["xrt"] = compute / audio_s, audio_s / compute
    write_report(results, out, overwrite=True)
    print(f"report: {out / 'report.md'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--recipe", default="recipes/mini_ct.yaml", help="data, mel preset and batch size come from it")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--val-minutes", type=float, default=2.5)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--mel-coeff", type=float, default=45.0)
    ap.add_argument("--mrd-coeff", type=float, default=0.1)
    ap.add_argument("--pretrain-steps", type=int, default=0, help="mel-loss-only steps before the GAN starts")
    ap.add_argument("--evaluate", metavar="REPORT_DIR", help="write a held-out report instead of training")
    ap.add_argument("--steps-label", default="gan")
    ap.add_argument("--max-seconds", type=float, default=None)
    args = ap.parse_args(argv)
    if args.evaluate:
        evaluate(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
