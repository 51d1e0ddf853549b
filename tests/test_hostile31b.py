"""Issue 31 (hostile inputs), the inference half: each class reproduced on tiny models in seconds.

5. too-short mels and generators of the wrong type: one line naming the minimum / the argument;
7. scale and determinism: the mel projection runs in chunks (memory bounded by the chunk, result
   equal to the whole-signal projection), and a file's audio depends on its mel, the model, the
   steps and the seed only (not on its batch, its batch-mates, padding or chunking);
3. editing and copy-synthesis keep what they promise: inpaint keeps the input's rate, format and
   every sample outside the gap; bwe writes the input's format without clipping its peaks; loud
   copy-synthesis input is reported, not clipped in silence.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cmaudio.errors import CmaudioError
from cmaudio.features import MelSpectrogram
from test_cli_inference import assert_one_line_error, cli, mel_array, read_wav, tiny_vocoder, tree

REPO = Path(__file__).resolve().parents[1]


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_mel(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=gen(seed)) - 4.0


@pytest.fixture(scope="module")
def voc():
    return tiny_vocoder()


@pytest.fixture(scope="module")
def projected_dir(tmp_path_factory) -> Path:
    """A tiny model directory whose default is 2 projection iterations (as the shipped model has 8)."""
    d = tmp_path_factory.mktemp("hostile31b") / "tiny_proj"
    v = tiny_vocoder()
    v.projection = 2
    v.save_pretrained(d)
    return d


# ----------------------------------------------------------------------------------------------
# 5. too-short mels, generators of the wrong type
# ----------------------------------------------------------------------------------------------


def test_too_short_mel_names_the_minimum(voc):
    from cmaudio.build import build_model
    from cmaudio.config import Config, replace
    from cmaudio.projection import mel_projection, min_frames
    from cmaudio.vocoder import Vocoder

    for frames in (1,):
        with pytest.raises(CmaudioError) as e:
            voc.decode(rand_mel(1, frames), projection=2)
        msg = str(e.value)
        assert "1 frame" in msg and "at least 2" in msg and "projection=0" in msg and "\n" not in msg
        with pytest.raises(CmaudioError, match="at least 2"):
            mel_projection(torch.zeros(1, 256), rand_mel(1, 1), voc.features, 1)
    assert voc.decode(rand_mel(1, 1), projection=0).shape == (1, 256)  # without the projection it decodes
    assert voc.decode(rand_mel(1, 2), projection=2).shape == (1, 512)  # the minimum itself decodes
    # a centred preset needs n_fft / 2 + 1 samples: 3 frames
    cfg = replace(Config(), model={"size": "tiny", "sigma_data": 0.087}, features={"preset": "diffwave"})
    dw = Vocoder.from_config(build_model(cfg, 0.087, "consistency"), cfg)
    assert min_frames(dw.features) == 3
    with pytest.raises(CmaudioError, match="'diffwave' mel projection needs at least 3"):
        dw.decode(rand_mel(1, 2), projection=1)
    assert dw.decode(rand_mel(1, 3), projection=1).shape == (1, 768)


def test_too_short_mel_on_the_command_line(tmp_path, projected_dir, capsys):
    np.save(tmp_path / "one.npy", mel_array(1))
    code, _, err = cli(capsys, "vocode", tmp_path / "one.npy", "-m", projected_dir, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "1 frame", "at least 2", "--projection 0")
    assert tree(tmp_path / "out") == []
    code, _, err = cli(capsys, "vocode", tmp_path / "one.npy", "-m", projected_dir, "-o", tmp_path / "out",
                       "--projection", "0")
    assert code == 0, err
    assert tree(tmp_path / "out") == ["one.wav"]


BAD_GENERATORS = {"int": 0, "text": "seed", "numpy": np.random.default_rng(0), "float": 1.5, "list": [gen()]}


@pytest.mark.parametrize("case", list(BAD_GENERATORS))
def test_generator_of_the_wrong_type_is_one_line(voc, case):
    bad = BAD_GENERATORS[case]
    audio = torch.zeros(4096)
    calls = [lambda: voc.decode(rand_mel(1, 4), generator=bad),
             lambda: voc(audio, generator=bad),
             lambda: voc.inpaint(audio, 0.05, 0.1, generator=bad),
             lambda: voc.extend_bandwidth(audio, 8000, generator=bad)]
    for call in calls:
        with pytest.raises(CmaudioError) as e:
            call()
        assert "generator must be a torch.Generator" in str(e.value) and "\n" not in str(e.value)
        assert type(bad).__name__ in str(e.value)


@pytest.mark.parametrize("bad", [0, "seed", np.random.default_rng(0), [gen(), 3], [gen(), None], (None,)])
def test_mel_decoder_generator_of_the_wrong_type_is_one_line(bad):
    from cmaudio.mel import MelDecoder

    dec = MelDecoder.new("hifigan", size="tiny", prior="cond", mel_mean=torch.zeros(80) - 4, mel_std=torch.ones(80),
                         sigma_data=0.5)
    cond = torch.zeros(len(bad) if isinstance(bad, (list, tuple)) else 1, 80, 6) - 4
    with pytest.raises(CmaudioError, match="generator") as e:
        dec.generate(cond, generator=bad)
    assert "\n" not in str(e.value)
    assert dec.generate(cond, generator=[gen(i) for i in range(cond.shape[0])]).shape == cond.shape


def test_samplers_refuse_a_bad_generator_too():
    from cmaudio.sampling import consistency_sample, ode_sample

    with pytest.raises(CmaudioError, match="generator must be a torch.Generator"):
        consistency_sample(lambda x, s, c, **k: x, (1, 1, 8), sigmas=[1.0], generator=3)
    with pytest.raises(CmaudioError, match="generator must be a torch.Generator"):
        ode_sample(lambda x, s, c, **k: x, (1, 1, 8), sigmas=[1.0], generator="x")


# ----------------------------------------------------------------------------------------------
# 7. scale: the projection in chunks
# ----------------------------------------------------------------------------------------------


def _projection_case(preset: str, frames: int, batch: int = 2):
    fe = MelSpectrogram(preset)
    g = gen(0)
    y = 0.1 * torch.randn(batch, frames * fe.hop_length, generator=g)  # far from the target: big corrections
    mel = fe(0.05 * torch.randn(batch, frames * fe.hop_length, generator=g))[..., :frames]
    mel = torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]), mode="replicate")
    return fe, y, mel


@pytest.mark.parametrize("preset", ["hifigan", "diffwave", "natspeech"])
def test_chunked_projection_equals_the_whole_signal_projection(preset, monkeypatch):
    import cmaudio.projection as proj

    fe, y, mel = _projection_case(preset, 600)
    whole = proj.mel_projection(y, mel, fe, 8, chunk=10**6)
    assert (whole - y).abs().max() > 0.05  # the projection does change the audio
    for chunk in (40, 97, 599):
        got = proj.mel_projection(y, mel, fe, 8, chunk=chunk)
        torch.testing.assert_close(got, whole, atol=1e-6, rtol=0)
    # the context matters: with too little, the chunks' seams show
    monkeypatch.setattr(proj, "context_frames", lambda features, iters: 2)
    assert (proj.mel_projection(y, mel, fe, 8, chunk=97) - whole).abs().max() > 1e-3


def test_decode_projects_in_chunks_of_the_vocoder(monkeypatch):
    import cmaudio.projection as proj

    v = tiny_vocoder()
    v.chunk_seconds = 0.5
    chunk = v._chunk_frames()
    seen: list[int] = []
    real = proj._project

    def spy(audio, mel, features, iters):
        seen.append(mel.shape[-1])
        return real(audio, mel, features, iters)

    monkeypatch.setattr(proj, "_project", spy)
    v.decode(rand_mel(1, 12 * chunk), projection=2)
    ctx = proj.context_frames(v.features, 2)
    assert len(seen) == 12 and max(seen) <= chunk + 2 * ctx


MEMORY_SCRIPT = """
import resource, sys, torch
torch.set_num_threads(1)
from cmaudio.features import MelSpectrogram
from cmaudio.projection import mel_projection
fe = MelSpectrogram("hifigan")
frames = int(sys.argv[1])
y = 0.1 * torch.randn(1, frames * 256)
mel = torch.randn(1, 80, frames) - 5.0
mel_projection(y[:, : 300 * 256], mel[..., :300], fe, 8)  # warm-up: allocator pools and FFT plans
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = mel_projection(y, mel, fe, 8, chunk=256)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024.0)
"""


def test_projection_memory_is_bounded_by_the_chunk_not_the_input(tmp_path):
    """Five minutes of audio (26000 frames): the peak grows by the output (26 MB) and a chunk's work, where
    the whole-signal projection adds about 600 MB (spectra of 513 x 26000 complex values, several at once)."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, str(script), "26000"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    grown_mb = float(res.stdout.strip().splitlines()[-1])
    output_mb = 26000 * 256 * 4 / 2**20
    assert grown_mb < output_mb + 60, grown_mb


# ----------------------------------------------------------------------------------------------
# 7. determinism: a file's audio depends on its mel, the model, the steps and the seed
# ----------------------------------------------------------------------------------------------


def test_indexed_noise_is_a_function_of_seed_draw_and_sample():
    from cmaudio.sampling import NOISE_BLOCK, indexed_noise

    long = indexed_noise(7, (3, 1, 2 * NOISE_BLOCK + 10), "cpu")
    short = indexed_noise(7, (1, 1, NOISE_BLOCK + 5), "cpu")
    for k in (0, 1):
        z = long(k)
        assert torch.equal(z[0], z[1]) and torch.equal(z[0], z[2])  # every item the same
        assert torch.equal(short(k)[0], z[0, :, : NOISE_BLOCK + 5])  # a prefix does not depend on the length
        assert abs(float(z.std()) - 1.0) < 0.02 and abs(float(z.mean())) < 0.02
    assert not torch.equal(long(0)[0, :, :100], long(1)[0, :, :100])  # draws differ
    assert not torch.equal(long(0)[0, :, :100], indexed_noise(8, (1, 1, 100), "cpu")(0)[0])  # seeds differ
    blocks = long(0)[0, 0].split(NOISE_BLOCK)
    assert not torch.equal(blocks[0][:10], blocks[1][:10])  # blocks are not repeats


@pytest.mark.parametrize("kind", ["consistency", "denoiser"])
def test_a_batch_gives_each_item_what_it_gets_alone(kind):
    from test_vocoder import tiny_vocoder as tiny_kind

    v = tiny_kind(kind, seed=5)
    mels = rand_mel(3, 40, seed=2)
    batch = v.decode(mels, steps=2, generator=gen(9), projection=2)
    for b in range(3):
        alone = v.decode(mels[b: b + 1], steps=2, generator=gen(9), projection=2)
        # equal up to float rounding (a batched convolution sums in another order; the teacher's five
        # Heun evaluations amplify it to ~1e-6); other noise would differ by the audio's own scale
        torch.testing.assert_close(batch[b: b + 1], alone, atol=2e-5, rtol=0)
        assert alone.abs().max() > 0.05
    g = gen(9)
    first, second = v.decode(mels[:1], generator=g), v.decode(mels[:1], generator=g)
    assert not torch.equal(first, second)  # each call advances the generator by one draw


def test_padding_does_not_change_the_noise_a_sample_sees():
    """What decode draws from a generator is one seed; a longer or padded batch sees the same noise first."""
    from cmaudio.sampling import draw_seed, indexed_noise

    seed = draw_seed(gen(4))
    a = indexed_noise(seed, (1, 1, 1000), "cpu")(0)
    b = indexed_noise(seed, (2, 1, 50_000), "cpu")(0)
    assert torch.equal(a[0], b[1, :, :1000])
    assert draw_seed(gen(4)) == seed  # the seed is all a generator gives


def test_cli_audio_does_not_depend_on_batch_size_or_batch_mates(tmp_path, projected_dir, capsys):
    np.save(tmp_path / "m.npy", mel_array(30, seed=1))
    others = tmp_path / "others"
    others.mkdir()
    for i in range(3):
        np.save(others / f"o{i}.npy", mel_array(30, seed=10 + i))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", projected_dir, "-o", tmp_path / "alone",
                       "--seed", "5", "--steps", "2")
    assert code == 0, err
    alone = read_wav(tmp_path / "alone" / "m.wav")[0].astype(int)
    for bs in ("1", "2", "8"):
        out = tmp_path / f"bs{bs}"
        code, _, err = cli(capsys, "vocode", *sorted(others.glob("*.npy")), tmp_path / "m.npy", "-m", projected_dir,
                           "-o", out, "--seed", "5", "--steps", "2", "--batch-size", bs)
        assert code == 0, err
        got = read_wav(out / "m.wav")[0].astype(int)
        assert np.abs(got - alone).max() <= 1 and np.mean(got != alone) < 0.01, bs  # float rounding at most
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", projected_dir, "-o", tmp_path / "seed6",
                       "--seed", "6", "--steps", "2")
    assert code == 0, err
    assert np.abs(read_wav(tmp_path / "seed6" / "m.wav")[0] - alone).max() > 100  # the seed still matters


# ----------------------------------------------------------------------------------------------
# 3. editing keeps the input's rate, format and samples; copy-synthesis says when it clips
# ----------------------------------------------------------------------------------------------


def _speech(rate: int, seconds: float) -> np.ndarray:
    from test_cli_inference import LJ
    from cmaudio.data import load_audio

    return load_audio(LJ / "LJ001-0012.wav", rate)[: int(seconds * rate)].astype(np.float64)


def _no_model_load(monkeypatch):
    from cmaudio.vocoder import Vocoder

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(Vocoder, "from_pretrained", classmethod(boom))


@pytest.mark.parametrize("rate,subtype,channels", [(44100, "PCM_24", 2), (22050, "FLOAT", 1), (16000, "DOUBLE", 1),
                                                   (48000, "PCM_16", 1), (22050, "PCM_32", 2)])
def test_inpaint_keeps_rate_format_and_every_sample_outside_the_gap(tmp_path, model_dir_31b, capsys, rate, subtype,
                                                                     channels):
    import soundfile as sf

    a = _speech(rate, 0.6)
    if subtype in ("FLOAT", "DOUBLE"):
        a = a * (1.6 / np.abs(a).max())  # float audio with peaks above full scale
        a[100] = 1.75  # ... one of them outside the gap
    x = np.stack([a, -0.5 * a[::-1]][:channels], axis=1)
    wav = tmp_path / "in.wav"
    sf.write(str(wav), x, rate, subtype=subtype)
    out = tmp_path / "res" / "out.wav"
    code, _, err = cli(capsys, "edit", "inpaint", wav, "--gap", "0.2:0.35", "-m", model_dir_31b, "-o", out)
    assert code == 0, err
    assert tree(tmp_path / "res") == ["out.wav"]
    info = sf.info(str(out))
    assert (info.samplerate, info.subtype, info.channels, info.frames) == (rate, subtype, channels, x.shape[0])
    dtype = "float64" if subtype in ("FLOAT", "DOUBLE") else "int32"
    before, _ = sf.read(str(wav), dtype=dtype, always_2d=True)
    after, _ = sf.read(str(out), dtype=dtype, always_2d=True)
    s0, s1 = round(0.2 * rate), round(0.35 * rate)
    assert np.array_equal(after[:s0], before[:s0]) and np.array_equal(after[s1:], before[s1:])  # bit for bit
    if subtype in ("FLOAT", "DOUBLE"):
        assert after[100, 0] == 1.75  # the peaks outside the gap are not clipped
    scale = 2.0**31 if dtype == "int32" else 1.0
    new, old = after[s0:s1] / scale, before[s0:s1] / scale
    assert np.abs(new - old).max() > 0.05 and np.abs(new).max() > 0.01  # the gap is new audio, not silence
    if rate != 22050:  # the crossfade: the first and last gap samples are still near the recording
        assert np.abs(new[0] - old[0]).max() < 0.05 and np.abs(new[-1] - old[-1]).max() < 0.05


@pytest.fixture(scope="module")
def model_dir_31b(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile31b_model") / "tiny"
    tiny_vocoder().save_pretrained(d)
    return d


def test_inpaint_flac_stays_flac_and_a_wav_name_gives_a_wav(tmp_path, model_dir_31b, capsys):
    import soundfile as sf

    x = _speech(44100, 0.4)
    sf.write(str(tmp_path / "in.flac"), x, 44100, subtype="PCM_16")
    for name, fmt in (("o.flac", "FLAC"), ("o.wav", "WAV"), ("o", "FLAC")):
        code, _, err = cli(capsys, "edit", "inpaint", tmp_path / "in.flac", "--gap", "0.1:0.2", "-m", model_dir_31b,
                           "-o", tmp_path / name)
        assert code == 0, err
        info = sf.info(str(tmp_path / name))
        assert (info.format, info.subtype, info.samplerate) == (fmt, "PCM_16", 44100)
        got, want = sf.read(str(tmp_path / name), dtype="int16")[0], sf.read(str(tmp_path / "in.flac"), dtype="int16")[0]
        assert np.array_equal(got[:4410], want[:4410]) and np.array_equal(got[8820:], want[8820:])


def test_inpaint_refuses_what_it_cannot_keep(tmp_path, model_dir_31b, capsys, monkeypatch):
    import soundfile as sf

    x = _speech(22050, 0.4)
    sf.write(str(tmp_path / "lossy.ogg"), x, 22050, format="OGG", subtype="VORBIS")
    sf.write(str(tmp_path / "ulaw.wav"), x, 22050, subtype="ULAW")
    sf.write(str(tmp_path / "float.wav"), x, 22050, subtype="FLOAT")
    _no_model_load(monkeypatch)
    out = tmp_path / "res"
    for src, needles in (("lossy.ogg", ("VORBIS", "cannot be written back unchanged")),
                         ("ulaw.wav", ("ULAW", "cannot be written back unchanged"))):
        code, _, err = cli(capsys, "edit", "inpaint", tmp_path / src, "--gap", "0.1:0.2", "-m", model_dir_31b,
                           "-o", out / "o.wav")
        assert_one_line_error(code, err, src, *needles)
    code, _, err = cli(capsys, "edit", "inpaint", tmp_path / "float.wav", "--gap", "0.1:0.2", "-m", model_dir_31b,
                       "-o", out / "o.flac")
    assert_one_line_error(code, err, "o.flac", "FLAC file cannot hold FLOAT")
    code, _, err = cli(capsys, "edit", "inpaint", tmp_path / "float.wav", "--gap", "0.3:0.9", "-m", model_dir_31b,
                       "-o", out / "o.wav")
    assert_one_line_error(code, err, "outside the recording")
    assert tree(out) == []


@pytest.mark.parametrize("subtype,peak", [("FLOAT", 1.4), ("PCM_24", 0.9)])
def test_bwe_keeps_the_format_and_float_peaks(tmp_path, model_dir_31b, capsys, subtype, peak):
    import soundfile as sf

    a = _speech(16000, 0.5)
    a = a * (peak / np.abs(a).max())
    x = np.stack([a, 0.5 * a], axis=1)
    sf.write(str(tmp_path / "in.wav"), x, 16000, subtype=subtype)
    out = tmp_path / "wide.wav"
    code, stdout, err = cli(capsys, "edit", "bwe", tmp_path / "in.wav", "-m", model_dir_31b, "-o", out)
    assert code == 0, err
    assert "16000 Hz -> 22050 Hz" in stdout
    info = sf.info(str(out))
    assert (info.samplerate, info.subtype, info.channels) == (22050, subtype, 2)  # the rate is bwe's point
    y, _ = sf.read(str(out), always_2d=True)
    assert y.shape[0] == -(-x.shape[0] * 22050 // 16000)
    if subtype == "FLOAT":
        assert np.abs(y[:, 0]).max() > 1.2  # not clipped to [-1, 1]
    assert 0.3 < np.abs(y[:, 1]).max() / np.abs(y[:, 0]).max() < 0.7  # channels edited each on its own


def test_to_raw_rounds_clips_and_counts():
    from cmaudio.edit import to_raw

    raw, n = to_raw(np.array([1.5, -2.0, 0.5, -1.0, 0.99999]), "PCM_16")
    assert n == 2 and raw.dtype == np.int32
    assert list(raw >> 16) == [32767, -32768, 16384, -32768, 32767]
    raw, n = to_raw(np.array([1.5, -2.0]), "FLOAT")
    assert n == 0 and list(raw) == [1.5, -2.0]


def _loud_wav(path: Path, rate: int = 22050) -> Path:
    import soundfile as sf

    t = np.arange(int(0.3 * rate)) / rate
    sf.write(str(path), (1.6 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="FLOAT")
    return path


def test_copy_synthesis_of_loud_audio_warns(tmp_path, model_dir_31b, capsys):
    loud = _loud_wav(tmp_path / "loud.wav")
    np.save(tmp_path / "m.npy", mel_array(10))
    code, _, err = cli(capsys, "vocode", loud, tmp_path / "m.npy", "-m", model_dir_31b, "-o", tmp_path / "out")
    assert code == 0, err
    warnings_ = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings_) == 1, err
    assert "loud.wav" in warnings_[0] and "peaks at 1.6" in warnings_[0] and "clipped to [-1, 1]" in warnings_[0]
    voc = tiny_vocoder()
    a = torch.from_numpy((1.6 * np.sin(2 * np.pi * 220 * np.arange(4096) / 22050)).astype(np.float32))
    with pytest.warns(UserWarning, match="peaks at 1.6, above full scale: the vocoded audio is clipped"):
        voc(a)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        voc(a / 2)  # audio within full scale: nothing to say


def test_loud_audio_names_the_clipping_stage():
    from cmaudio.vocoder import loud_audio

    assert loud_audio(np.array([0.5, -1.0]), clips=False) is None
    assert "before analysis" in loud_audio(np.array([0.5, -2.0]), clips=True)
    assert "vocoded audio is clipped" in loud_audio(torch.tensor([0.5, 1.25]), clips=False)
