"""Tests of the mel-domain decoder (cmaudio.mel): stand-in prior, data, masks, API, CLI run, learning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio.config import load
from cmaudio.data import load_audio, splits_from_config
from cmaudio.domains.mel import MelDomain
from cmaudio.errors import CheckpointError, ConfigError, DataError
from cmaudio.mel import MelDecoder, mel_stats, standin_cond

REPO = Path(__file__).resolve().parents[1]
LJ_MINI = REPO / "egs" / "mini" / "data" / "ljspeech_mini"
RECIPE = REPO / "recipes" / "mini_mel_ct.yaml"
SR, HOP = 22050, 256


def randomized(dec: MelDecoder, seed: int = 0) -> MelDecoder:
    """Perturb every weight (the zero-initialised output convs would make F == 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dec.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return dec.eval()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """Five real clips of different lengths (0.6 to 1.8 s) in a `folder` corpus."""
    root = tmp_path_factory.mktemp("corpus")
    wavs = sorted((LJ_MINI / "wavs").glob("*.wav"))[:5]
    for k, w in enumerate(wavs):
        a = load_audio(w, SR)[: int((0.6 + 0.3 * k) * SR)]
        sf.write(str(root / w.name), a, SR, subtype="PCM_16")
    return root


def small_cfg(root: Path, *overrides: str):
    return load(RECIPE, [f"data.root={root}", "data.format=folder", "data.val_fraction=0.2", "data.max_val_utterances=1",
                         "data.segment_length=8192", "train.device=cpu", *overrides])


# ----------------------------------------------------------------------------------------------
# the stand-in prior
# ----------------------------------------------------------------------------------------------


def test_standin_equals_hand_computation():
    mel = np.array([[0.0, 1, 2, 3, 4, 5, 6], [7, 1, 1, 1, 0, 0, 9]], dtype=np.float32)
    # segments of 3 frames: [0,1,2] [3,4,5] [6] -> means, then a centred 3-frame moving average
    # with the edges repeated
    seg = np.array([[1, 1, 1, 4, 4, 4, 6], [3, 3, 3, 1 / 3, 1 / 3, 1 / 3, 9]], dtype=np.float64)
    pad = np.concatenate([seg[:, :1], seg, seg[:, -1:]], axis=1)
    want = (pad[:, :-2] + pad[:, 1:-1] + pad[:, 2:]) / 3
    got = standin_cond(mel, segment=3, smooth=3)
    assert isinstance(got, np.ndarray) and got.shape == mel.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # even widths reach one frame further right; width 1 and segment 1 are the identity
    pad4 = np.concatenate([seg[:, :1], seg, seg[:, -1:], seg[:, -1:]], axis=1)
    want4 = sum(pad4[:, i : i + 7] for i in range(4)) / 4
    np.testing.assert_allclose(standin_cond(mel, 3, 4), want4, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(standin_cond(mel, 1, 1), mel)
    # batched tensors give the same, and gradients flow
    t = torch.from_numpy(np.stack([mel, mel[::-1].copy()])).requires_grad_(True)
    out = standin_cond(t, 3, 3)
    torch.testing.assert_close(out[0].double(), torch.from_numpy(want), rtol=0, atol=1e-6)
    out.sum().backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        standin_cond(mel, 0, 3)


def test_standin_is_an_oversmoothed_mel():
    from cmaudio.features import MelSpectrogram

    mel = MelSpectrogram("hifigan")(torch.from_numpy(load_audio(LJ_MINI / "wavs" / "LJ001-0012.wav", SR)))[0]
    seg_only = standin_cond(mel, 8, 1)
    blocks = seg_only[:, : (mel.shape[1] // 8) * 8].reshape(80, -1, 8)
    assert torch.all(blocks == blocks[..., :1])  # piecewise constant over the segments
    torch.testing.assert_close(blocks.mean(-1), mel[:, : blocks.shape[1] * 8].reshape(80, -1, 8).mean(-1))
    s = standin_cond(mel, 4, 9)
    tv = lambda x: (x[:, 1:] - x[:, :-1]).abs().mean()  # noqa: E731
    assert tv(s) < 0.5 * tv(mel)  # far smoother than the mel...
    assert (s - mel).abs().mean() < 0.8 and abs(s.mean() - mel.mean()) < 0.05  # ...but the same mel, blurred


# ----------------------------------------------------------------------------------------------
# decoder: shapes, masks, loss
# ----------------------------------------------------------------------------------------------


def test_generate_shapes_and_padding_never_changes_the_output():
    dec = randomized(MelDecoder.new("hifigan", cond_channels=6, size="tiny"))
    g = torch.Generator().manual_seed(1)
    T1, T2, Tp = 37, 21, 50
    c1, c2 = torch.randn(6, T1, generator=g), torch.randn(6, T2, generator=g)
    batch = 5 * torch.randn(2, 6, Tp, generator=g)  # garbage in the padding
    batch[0, :, :T1], batch[1, :, :T2] = c1, c2
    mask = torch.zeros(2, 1, Tp)
    mask[0, :, :T1], mask[1, :, :T2] = 1, 1
    assert dec.generate(c1).shape == (1, 80, T1)
    for steps in (1, 2):
        gens = lambda: [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)]  # noqa: E731
        out = dec.generate(batch, mask=mask, steps=steps, generator=gens())
        assert out.shape == (2, 80, Tp)
        alone1 = dec.generate(c1, steps=steps, generator=gens()[:1])
        alone2 = dec.generate(c2[None], steps=steps, generator=gens()[1:])
        # the same noise on the valid frames; only float round-off of differently sized convs differs
        torch.testing.assert_close(out[0, :, :T1], alone1[0], rtol=0, atol=2e-5)
        torch.testing.assert_close(out[1, :, :T2], alone2[0], rtol=0, atol=2e-5)
        # more padding, other garbage: nothing changes
        wider = torch.cat([batch, -3 * torch.ones(2, 6, 13)], -1)
        out2 = dec.generate(wider, mask=torch.cat([mask, torch.zeros(2, 1, 13)], -1)[:, 0], steps=steps, generator=gens())
        torch.testing.assert_close(out2[:, :, :Tp] * mask, out * mask, rtol=0, atol=2e-5)
        # padding frames hold the preset's silence (ln(1e-5)-ish for hifigan), valid frames depend on the seed
        assert torch.equal(out[1, :, T2:], dec.silence[:, None].expand(80, Tp - T2))
        assert dec.silence.max() < -10
        other = dec.generate(batch, mask=mask, steps=steps, generator=[torch.Generator().manual_seed(5)] * 2)
        assert not torch.allclose(other[0, :, :T1], out[0, :, :T1], atol=1e-3)
    # a single generator for the batch is reproducible
    a = dec.generate(batch, mask=mask, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, dec.generate(batch, mask=mask, generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)
    with pytest.raises(DataError, match="channels"):
        dec.generate(torch.randn(1, 5, 10))
    with pytest.raises(DataError, match="time-first"):
        dec.generate(torch.randn(1, 10, 6))
    with pytest.raises(DataError, match="NaN"):
        dec.generate(torch.full((6, 4), float("nan")))
    with pytest.raises(DataError, match="mask"):
        dec.generate(batch, mask=torch.ones(2, 1, 7))


def test_prior_cond_centres_on_cond_and_returns_preset_units():
    g = torch.Generator().manual_seed(0)
    mels = [torch.randn(80, 40, generator=g) * 2 - 6 for _ in range(3)]
    mean, std = mel_stats(mels)
    torch.testing.assert_close(mean, torch.cat(mels, -1).mean(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(std, torch.cat(mels, -1).std(-1, unbiased=False), rtol=0, atol=1e-5)
    dec = MelDecoder.new("hifigan", size="tiny", prior="cond", mel_mean=mean, mel_std=std, sigma_data=0.4).eval()
    cond = standin_cond(mels[0], 4, 9)
    # an untrained net (F == 0): f(sigma_max z) = c_skip sigma_max z, tiny, so the output is the cond
    out = dec.generate(cond, generator=torch.Generator().manual_seed(0))[0]
    sd, T = 0.4, 80.0
    c_skip = sd**2 / ((T - 0.002) ** 2 + sd**2)
    assert (out - cond).abs().max() < 6 * c_skip * T * std.max()
    assert (out - cond).abs().mean() > 0  # but noise did go in
    with pytest.raises(ConfigError, match="mel space"):
        MelDecoder.new("hifigan", cond_channels=6, size="tiny", prior="cond")


def test_loss_ignores_padding_and_trains_cond_upstream():
    dec = randomized(MelDecoder.new("hifigan", cond_channels=6, size="tiny", total_steps=100), seed=2).train()
    g = torch.Generator().manual_seed(0)
    B, T, L = 2, 24, 15
    mel = torch.randn(B, 80, T, generator=g) - 5
    mask = torch.ones(B, 1, T)
    mask[1, :, L:] = 0
    seeds = torch.tensor([11, 12])

    def loss_with(garbage: float):
        cond = torch.randn(B, 6, T, generator=torch.Generator().manual_seed(1))
        cond[1, :, L:] = garbage
        cond.requires_grad_(True)
        m = mel.clone()
        m[1, :, L:] = garbage
        torch.manual_seed(0)
        return dec.loss(m, cond, mask, seeds=seeds, step=10), cond

    l1, cond1 = loss_with(0.0)
    l2, _ = loss_with(37.0)
    assert l1.ndim == 0 and torch.isfinite(l1) and l1 > 0
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    l1.backward()
    assert cond1.grad[:, :, :L].abs().sum() > 0  # a TTS encoder upstream gets a gradient
    assert cond1.grad[1, :, L:].abs().sum() == 0  # ...but never from the padding
    assert all(p.grad is not None for p in dec.model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# data: pairs, statistics, padded crops, the stream
# ----------------------------------------------------------------------------------------------


def test_domain_batches_statistics_and_stream(small_corpus):
    big = small_cfg(small_corpus, "data.segment_length=51200")  # 200 frames: every clip is padded
    dom = MelDomain(big, seed=0, log=lambda m: None)
    pairs = dom.train_pairs
    mels = [pairs.get(i) for i in range(len(pairs))]
    allm = np.concatenate([m for m, _ in mels], 1).astype(np.float64)
    np.testing.assert_allclose(dom.mel_mean, allm.mean(1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(dom.mel_std, allm.std(1), rtol=1e-6, atol=1e-6)
    # the stand-in is in mel space: normalised with the mel statistics; sigma_data = RMS of the residual
    for m, c in mels:
        np.testing.assert_allclose(c, standin_cond(m, 4, 9), rtol=0, atol=1e-6)
    res = np.concatenate([(m - c) / dom.mel_std[:, None] for m, c in mels], 1)
    assert dom.sigma_data() == pytest.approx(float(np.sqrt((res**2).mean())), rel=1e-5)
    assert 0.1 < dom.sigma_data() < 1.0
    zero = MelDomain(small_cfg(small_corpus, "model.prior=zero"), seed=0, log=lambda m: None)
    assert zero.sigma_data() == pytest.approx(1.0, abs=1e-6)  # per-bin normalised mels
    info = dom.extra_model_info()
    assert info["cond_channels"] == 80 and info["cond_source"] == "standin" and info["cond_in_mel_space"]
    assert len(info["mel_mean"]) == 80 and info["cond_std"] == info["mel_std"]

    batch = next(iter(dom.loader(start_step=0, global_batch=4, rank=0, world=1, micro=1)))
    assert batch["mel"].shape == (4, 80, 200) and batch["cond"].shape == (4, 80, 200) and batch["mask"].shape == (4, 1, 200)
    lengths = sorted(m.shape[1] for m, _ in mels)
    for b in range(4):
        n = int(batch["mask"][b].sum())
        assert n in lengths and torch.all(batch["mask"][b, 0, :n] == 1)
        assert torch.all(batch["mel"][b, :, n:] == 0) and torch.all(batch["cond"][b, :, n:] == 0)
    prep = dom.prepare(batch, torch.device("cpu"))
    torch.testing.assert_close(prep["x"], (batch["mel"] - batch["cond"]) * batch["mask"])  # prior cond: the residual
    assert prep["mask"] is not None and prep["seeds"].shape == (4,)

    # crops of 32 frames: no padding, no mask; the stream is a pure function of the position
    dom = MelDomain(small_cfg(small_corpus), seed=0, log=lambda m: None)
    it = iter(dom.loader(start_step=0, global_batch=4, rank=0, world=1, micro=1))
    first = [next(it) for _ in range(3)]
    assert first[0]["mel"].shape == (4, 80, 32) and bool(first[0]["mask"].all())
    assert dom.prepare(first[0], torch.device("cpu"))["mask"] is None
    resumed = next(iter(dom.loader(start_step=2, global_batch=4, rank=0, world=1, micro=1)))
    for k in ("mel", "cond", "mask", "seed"):
        torch.testing.assert_close(resumed[k], first[2][k], rtol=0, atol=0)
    ranks = [next(iter(dom.loader(start_step=0, global_batch=4, rank=r, world=2, micro=1))) for r in (0, 1)]
    for k in ("mel", "seed"):  # rank r holds positions r, r + 2: together, the 1-process batch
        torch.testing.assert_close(torch.stack([ranks[0][k][0], ranks[1][k][0], ranks[0][k][1], ranks[1][k][1]]),
                                   first[0][k], rtol=0, atol=0)


def test_resume_is_exact(small_corpus, tmp_path):
    from cmaudio import checkpoint as ckpt
    from cmaudio.train import train

    common = ["train.batch_size=2", "train.warmup_steps=1", "train.ckpt_every=2", "train.val_every=100",
              "objective.total_steps=4", "data.max_val_utterances=0"]
    quiet = dict(progress=False, log=lambda m: None)
    train(small_cfg(small_corpus, *common, "train.max_steps=4"), tmp_path / "a", **quiet)
    train(small_cfg(small_corpus, *common, "train.max_steps=2"), tmp_path / "b", **quiet)
    train(small_cfg(small_corpus, *common, "train.max_steps=4"), tmp_path / "b", resume=True, **quiet)
    a, b = (ckpt.latest_valid(tmp_path / r) for r in "ab")
    assert a.name == b.name == ckpt.step_dir_name(4)
    wa, wb = ckpt.load_weights(a / ckpt.MODEL_FILE), ckpt.load_weights(b / ckpt.MODEL_FILE)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    assert ckpt.read_meta(a)["domain_info"] == ckpt.read_meta(b)["domain_info"]


def test_domain_checks(small_corpus):
    with pytest.raises(ConfigError, match="mrstft"):
        MelDomain(small_cfg(small_corpus, "objective.distance={mrstft: 1.0}"), seed=0, log=print)
    with pytest.raises(ConfigError, match="sample_rate"):
        MelDomain(small_cfg(small_corpus, "data.sample_rate=16000"), seed=0, log=print)
    with pytest.raises(DataError, match="cond_dir"):
        MelDomain(small_cfg(small_corpus, f"data.cond_dir={small_corpus / 'nope'}"), seed=0, log=print)


# ----------------------------------------------------------------------------------------------
# TTS features from a directory: frame checks, prior zero, a DSM teacher and CD
# ----------------------------------------------------------------------------------------------


def test_cond_dir_teacher_and_cd(small_corpus, tmp_path, caplog):
    from cmaudio import checkpoint as ckpt
    from cmaudio.features import MelSpectrogram
    from cmaudio.train import train

    fe = MelSpectrogram("hifigan")
    cond_dir = tmp_path / "mu"
    cond_dir.mkdir()
    proj = np.random.default_rng(0).standard_normal((6, 80)).astype(np.float32) / 9
    wavs = sorted(small_corpus.glob("*.wav"))
    for k, w in enumerate(wavs):
        mel = fe(torch.from_numpy(load_audio(w, SR)))[0].numpy()
        mu = proj @ standin_cond(mel, 4, 9)  # 6-channel "encoder output", not a mel
        if k == 1:
            mu = mu[:, :-1]  # one frame short: accepted, both cropped
        if k == 2:
            mu = np.concatenate([mu, mu[:, -5:]], 1)  # 5 frames off: skipped with a warning
        np.save(cond_dir / f"{w.stem}.npy", mu)
    common = [f"data.cond_dir={cond_dir}", "model.prior=zero", "train.batch_size=2",
              "train.max_steps=2", "train.warmup_steps=1", "train.val_every=2", "train.ckpt_every=2", "sampling.teacher_steps=2"]
    with caplog.at_level(logging.WARNING, logger="cmaudio.data"):
        teacher_cfg = small_cfg(small_corpus, *common, "objective.kind=dsm", "model.net=diffwave", "model.size=tiny")
        with pytest.raises(ConfigError, match="mel space"):
            MelDomain(small_cfg(small_corpus, f"data.cond_dir={cond_dir}"), seed=0, log=print)  # prior cond
        res = train(teacher_cfg, tmp_path / "teacher", progress=False, log=lambda m: None)
    warned = [r.getMessage() for r in caplog.records]
    assert any(wavs[2].stem in w and "frames" in w for w in warned), warned
    assert not any(wavs[1].stem in w for w in warned)
    assert res.val["val/ode_logmel_l1"] > 0  # the teacher's validation ran its ODE sampler on a padded batch
    assert list((tmp_path / "teacher" / "samples").rglob("*.png"))
    meta = ckpt.read_meta(res.checkpoint)
    dinfo = meta["domain_info"]
    assert dinfo["cond_channels"] == 6 and dinfo["cond_source"] == "dir" and not dinfo["cond_in_mel_space"]
    assert len(dinfo["cond_mean"]) == 6 and dinfo["cond_mean"] != dinfo["mel_mean"][:6]

    student_cfg = small_cfg(small_corpus, *common, "objective.kind=cd", f"objective.teacher={tmp_path / 'teacher'}")
    res2 = train(student_cfg, tmp_path / "student", progress=False, log=lambda m: None)
    assert res2.step == 2 and np.isfinite(res2.last_loss)
    meta2 = ckpt.read_meta(res2.checkpoint)
    assert meta2["domain_info"]["mel_mean"] == dinfo["mel_mean"]  # the teacher's statistics
    assert meta2["sigma_data"] == meta["sigma_data"]

    from cmaudio.export import export_run

    out = export_run(tmp_path / "student", tmp_path / "student_model")
    dec = MelDecoder.from_pretrained(out)
    assert dec.cond_channels == 6 and dec.prior == "zero"
    mu = torch.from_numpy(np.load(cond_dir / f"{wavs[0].stem}.npy"))
    assert dec.generate(mu, steps=2).shape == (1, 80, mu.shape[1])


# ----------------------------------------------------------------------------------------------
# the mini recipe through the CLI: train, export, load, generate, vocode; and it learns
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_model(tmp_path_factory):
    from cmaudio.cli import main

    tmp = tmp_path_factory.mktemp("mini_mel")
    old = os.getcwd()
    os.chdir(REPO)  # the recipe's data.root is relative to the repository root
    try:
        for argv in (["train", str(RECIPE), "--run-dir", str(tmp / "run"), "--quiet", "--set", "train.device=cpu"],
                     ["export", str(tmp / "run"), "-o", str(tmp / "model")]):
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert e.value.code == 0, argv
    finally:
        os.chdir(old)
    return tmp


@pytest.mark.slow
def test_mini_recipe_learns_to_beat_its_conditioning(mini_model):
    """The issue's check: one-step mel closer to the truth than the cond (log-mel L1, held-out clips)."""
    dec = MelDecoder.from_pretrained(mini_model / "model")
    cfg = load(RECIPE, [f"data.root={LJ_MINI}"])
    held_out = splits_from_config(cfg.data)["val"]
    assert len(held_out) >= 2
    l1_dec, l1_cond = [], []
    for i, u in enumerate(held_out):
        mel = dec.mel(torch.from_numpy(load_audio(u.path, SR)))
        cond = dec.standin(mel)
        out = dec.generate(cond, steps=1, generator=torch.Generator().manual_seed(i))
        l1_dec.append(float((out - mel).abs().mean()))
        l1_cond.append(float((cond - mel).abs().mean()))
    assert np.mean(l1_dec) < 0.95 * np.mean(l1_cond), (l1_dec, l1_cond)
    assert all(d < c for d, c in zip(l1_dec, l1_cond)), (l1_dec, l1_cond)


@pytest.mark.slow
def test_mini_model_directory_and_vocoder_handoff(mini_model, tmp_path):
    from cmaudio.build import build_model
    from cmaudio.config import from_dict
    from cmaudio.mel import decode_files
    from cmaudio.vocoder import Vocoder

    info = json.loads((mini_model / "model" / "config.json").read_text())
    assert info["domain"] == "mel" and info["kind"] == "consistency" and info["preset"] == "hifigan"
    d = info["domain_info"]
    assert len(d["mel_mean"]) == 80 and len(d["mel_std"]) == 80 and d["cond_source"] == "standin"
    assert info["sigma_data"] == pytest.approx(0.39, abs=0.1)  # the residual's RMS, not 1.0 or 0.5
    samples = list((mini_model / "run" / "samples").rglob("*.png"))
    assert samples  # validation drew ground truth / cond / generated
    dec = MelDecoder.from_pretrained(mini_model / "model")
    torch.testing.assert_close(dec.mel_mean, torch.tensor(d["mel_mean"]))
    with pytest.raises(CheckpointError, match="MelDecoder"):
        Vocoder.from_pretrained(mini_model / "model")

    # save_pretrained round trip
    dec.save_pretrained(tmp_path / "copy")
    again = MelDecoder.from_pretrained(tmp_path / "copy")
    cond = torch.randn(1, 80, 30) - 5
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(again.generate(cond, generator=g()), dec.generate(cond, generator=g()), rtol=0, atol=0)

    # built from its inference spec alone (no training config): the same decoder, the same iCT loss defaults
    from cmaudio.build import build_generator

    bare = MelDecoder(build_generator(dec.spec), dec.spec)
    bare.load_state_dict(dec.state_dict())
    assert bare.config is None and bare.eval().prior == dec.prior
    torch.testing.assert_close(bare.generate(cond, generator=g()), dec.generate(cond, generator=g()), rtol=0, atol=0)
    assert bare.default_objective().kind == "ict"

    # decoder output -> a vocoder of the same preset (an untrained tiny one: the handoff, not the quality)
    wave_cfg = from_dict({"model": {"domain": "wave", "size": "tiny"}, "features": {"preset": "hifigan"}})
    voc = Vocoder.from_config(build_model(wave_cfg, 0.09, "consistency"), wave_cfg)
    wav = LJ_MINI / "wavs" / "LJ001-0011.wav"
    np.save(tmp_path / "mu.npy", dec.standin(dec.mel(torch.from_numpy(load_audio(wav, SR))))[0].numpy())
    outs = decode_files(mini_model / "model", [wav, tmp_path / "mu.npy"], tmp_path / "mels", seed=0)
    mel = np.load(outs[0])
    assert mel.shape[0] == 80 and np.isfinite(mel).all()
    np.testing.assert_allclose(np.load(outs[1]), mel, rtol=0, atol=1e-4)  # the same cond either way
    audio = voc.decode(voc.prepare_mel(mel), generator=torch.Generator().manual_seed(0))
    assert audio.shape == (1, mel.shape[1] * HOP)
    with pytest.raises(DataError):
        decode_files(mini_model / "model", [tmp_path / "mu.txt"], tmp_path / "x")
