"""Tests of cmaudio.data: corpus layouts, loading/resampling, splits, the stream dataset and sampler."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio.data import (
    SegmentDataset,
    StreamSampler,
    Utterance,
    audio_info,
    check_corpus,
    estimate_sigma_data,
    format_report,
    list_utterances,
    load_audio,
    load_utterance_audio,
    make_loader,
    split_hash,
    split_of,
    split_utterances,
)
from cmaudio.errors import DataError

LJ_MINI = Path(__file__).resolve().parents[1] / "egs" / "mini" / "data" / "ljspeech_mini"
LOGGER = "cmaudio.data"


# ----------------------------------------------------------------------------------------------
# helpers: synthetic audio files
# ----------------------------------------------------------------------------------------------


def sine(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(sr: int, seconds: float, seed: int, amp: float = 0.1, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (offset + amp * rng.standard_normal(int(round(sr * seconds)))).clip(-1, 1).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes())
    return path


def write_nan(path: Path, sr: int) -> Path:
    x = noise(sr, 0.3, 9)
    x[100:120] = np.nan
    return write(path, x, sr, subtype="FLOAT")


def warnings_for(caplog, path) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING and str(path) in r.getMessage()]


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# ----------------------------------------------------------------------------------------------
# audio loading
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [24000, 44100, 48000])
def test_load_audio_resamples_keeping_length_and_frequency(tmp_path, native):
    x = sine(native, 0.5, freq=440.0)
    path = write(tmp_path / f"s{native}.wav", x, native)
    y = load_audio(path, 22050)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == math.ceil(len(x) * 22050 / native)
    assert abs(peak_hz(y, 22050) - 440.0) < 22050 / len(y) * 1.01
    assert np.abs(y).max() <= 1.0
    # the amplitude survives resampling (the middle avoids edge effects)
    assert abs(np.abs(y[2000:-2000]).max() - 0.5) < 0.02
    assert audio_info(path) == (native, len(x))


def test_load_audio_mixes_channels_to_mono_and_keeps_rate(tmp_path):
    x = sine(16000, 0.2)
    path = write(tmp_path / "st.flac", np.stack([x, 0.2 * x], axis=1), 16000)
    y = load_audio(path, 16000)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, 0.6 * x, atol=2e-4)


def test_load_audio_bad_files_raise_one_line_data_errors(tmp_path):
    cases = {
        "corrupt": write_corrupt(tmp_path / "corrupt.wav"),
        "empty": write(tmp_path / "empty.wav", np.zeros(0, np.float32), 22050),
        "NaN": write_nan(tmp_path / "nan.wav", 22050),
        "no such file": tmp_path / "missing.wav",
    }
    for word, path in cases.items():
        with pytest.raises(DataError) as e:
            load_audio(path, 22050)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg
        assert word.lower() in msg.lower() or (word == "corrupt" and "unreadable" in msg)
    with pytest.raises(DataError):
        audio_info(cases["corrupt"])
    assert audio_info(cases["empty"]) == (22050, 0)


# ----------------------------------------------------------------------------------------------
# corpus layouts
# ----------------------------------------------------------------------------------------------


def make_ljspeech(root: Path) -> dict[str, Path]:
    """LJSpeech look-alike: 3 good files at 3 rates, corrupt, empty, NaN, too short, silent, one missing."""
    wavs = root / "wavs"
    files = {
        "LJ001-0001": write(wavs / "LJ001-0001.wav", noise(22050, 0.5, 1), 22050),
        "LJ001-0002": write(wavs / "LJ001-0002.wav", noise(24000, 0.4, 2), 24000),
        "LJ001-0003": write(wavs / "LJ001-0003.wav", noise(44100, 0.3, 3), 44100),
        "LJ002-0001": write_corrupt(wavs / "LJ002-0001.wav"),
        "LJ002-0002": write(wavs / "LJ002-0002.wav", np.zeros(0, np.float32), 22050),
        "LJ002-0003": write_nan(wavs / "LJ002-0003.wav", 48000),
        "LJ002-0004": write(wavs / "LJ002-0004.wav", noise(48000, 0.02, 4), 48000),  # ~441 samples at 22.05k
        "LJ002-0005": write(wavs / "LJ002-0005.wav", np.zeros(11025, np.float32), 22050),  # silent
        "LJ003-0001": wavs / "LJ003-0001.wav",  # listed, never written
    }
    lines = [f"{uid}|Text {uid}.|Normalized {uid}." for uid in files]
    lines[1] = "LJ001-0002|Only raw text.|"
    lines[2] = "LJ001-0003||"
    (root / "metadata.csv").write_text("\n".join(reversed(lines)) + "\n\n", encoding="utf-8")
    return files


def test_ljspeech_listing(tmp_path):
    files = make_ljspeech(tmp_path / "LJSpeech-1.1")
    utts = list_utterances(tmp_path / "LJSpeech-1.1", "ljspeech")
    assert [u.id for u in utts] == sorted(files)
    assert {u.speaker for u in utts} == {"LJ"}
    by_id = {u.id: u for u in utts}
    assert by_id["LJ001-0001"].text == "Normalized LJ001-0001."
    assert by_id["LJ001-0002"].text == "Only raw text."
    assert by_id["LJ001-0003"].text == ""
    assert Path(by_id["LJ003-0001"].path) == files["LJ003-0001"]


def test_ljspeech_dataset_skips_bad_files_with_one_warning_each(tmp_path, caplog):
    files = make_ljspeech(tmp_path / "lj")
    utts = list_utterances(tmp_path / "lj", "ljspeech")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ds = SegmentDataset(utts, sample_rate=22050, segment_length=2048, hop_length=256, seed=3)
    header_bad = ["LJ002-0001", "LJ002-0002", "LJ002-0004", "LJ003-0001"]
    assert sorted(p for p, _ in ds.bad) == sorted(str(files[k]) for k in header_bad)
    reasons = dict(ds.bad)
    assert "empty" in reasons[str(files["LJ002-0002"])]
    assert "too short" in reasons[str(files["LJ002-0004"])]
    assert "no such file" in reasons[str(files["LJ003-0001"])]
    for k in header_bad:
        assert len(warnings_for(caplog, files[k])) == 1
    # NaN and silent files pass the header check; the content check finds them on load
    assert len(ds) == 5 and {u.id for u in ds.utterances} == {"LJ001-0001", "LJ001-0002", "LJ001-0003",
                                                                  "LJ002-0003", "LJ002-0005"}
    for p in range(4 * len(ds)):
        item = ds[p]
        assert torch.isfinite(item["audio"]).all() and item["audio"].abs().sum() > 0
    for k in ("LJ002-0003", "LJ002-0005"):
        assert len(warnings_for(caplog, files[k])) == 1
    assert len(ds.bad) == 6
    assert "NaN" in dict(ds.bad)[str(files["LJ002-0003"])]


def test_dataset_with_no_usable_file_raises(tmp_path):
    make_ljspeech(tmp_path / "lj")
    utts = [u for u in list_utterances(tmp_path / "lj", "ljspeech") if u.id.startswith("LJ002")]
    with pytest.raises(DataError, match="no usable utterance"):
        SegmentDataset(utts, sample_rate=22050, segment_length=20480, hop_length=256, seed=0)
    # headers fine but every file's content bad (NaN, silence): a clear error, not a hang or NaN batch
    ds = SegmentDataset(utts, sample_rate=22050, segment_length=512, hop_length=256, seed=0)
    assert len(ds) == 2
    with pytest.raises(DataError, match="could be loaded"):
        ds[0]


def test_vctk_listing_picks_the_microphone(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    for spk, n in (("p225", 2), ("p226", 1)):
        for i in range(1, n + 1):
            for mic in ("mic1", "mic2"):
                write(root / "wav48_silence_trimmed" / spk / f"{spk}_{i:03d}_{mic}.flac", noise(48000, 0.1, i), 48000)
            if spk == "p225":
                (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
                (root / "txt" / spk / f"{spk}_{i:03d}.txt").write_text(f"Please call Stella {i}.\n")
    write(root / "wav48_silence_trimmed" / "p226" / "p226_002_mic2.flac", noise(48000, 0.1, 7), 48000)
    mic1 = list_utterances(root, "vctk")
    assert [u.id for u in mic1] == ["p225_001", "p225_002", "p226_001"]
    assert [u.speaker for u in mic1] == ["p225", "p225", "p226"]
    assert all(u.path.endswith("_mic1.flac") for u in mic1)
    assert mic1[0].text == "Please call Stella 1." and mic1[2].text == ""
    mic2 = list_utterances(root, "vctk", vctk_mic="mic2")
    assert [u.id for u in mic2] == ["p225_001", "p225_002", "p226_001", "p226_002"]
    assert all(u.path.endswith("_mic2.flac") for u in mic2)
    assert len(load_audio(mic1[0].path, 24000)) == 2400


def make_libritts(root: Path) -> None:
    layout = {
        "train-clean-100": [("84", "121123", 2), ("103", "1240", 1)],
        "dev-clean": [("1272", "128104", 1)],
    }
    for subset, entries in layout.items():
        for spk, chapter, n in entries:
            for i in range(n):
                stem = f"{spk}_{chapter}_{i:06d}_000000"
                d = root / subset / spk / chapter
                write(d / f"{stem}.wav", noise(24000, 0.1, i), 24000)
                (d / f"{stem}.normalized.txt").write_text(f"text of {stem}")
                (d / f"{stem}.original.txt").write_text(f"ORIGINAL {stem}")


def test_libritts_listing_and_subsets(tmp_path):
    root = tmp_path / "LibriTTS"
    make_libritts(root)
    all_utts = list_utterances(root, "libritts")
    assert [u.id for u in all_utts] == sorted(
        ["84_121123_000000_000000", "84_121123_000001_000000", "103_1240_000000_000000", "1272_128104_000000_000000"]
    )
    by_id = {u.id: u for u in all_utts}
    assert by_id["84_121123_000001_000000"].speaker == "84"
    assert by_id["84_121123_000001_000000"].text == "text of 84_121123_000001_000000"
    dev = list_utterances(root, "libritts", libritts_subsets=("dev-clean",))
    assert [u.speaker for u in dev] == ["1272"]
    # pointing at a subset directory works too
    assert [u.id for u in list_utterances(root / "train-clean-100", "libritts")] == [
        "103_1240_000000_000000", "84_121123_000000_000000", "84_121123_000001_000000"]
    with pytest.raises(DataError, match="train-other-500"):
        list_utterances(root, "libritts", libritts_subsets=("train-other-500",))


def test_folder_listing(tmp_path):
    root = tmp_path / "corpus"
    write(root / "alice" / "a1.wav", noise(16000, 0.1, 1), 16000)
    write(root / "alice" / "sub" / "a2.flac", noise(16000, 0.1, 2), 16000)
    write(root / "bob" / "b1.WAV", noise(8000, 0.1, 3), 8000)
    write(root / "top.wav", noise(16000, 0.1, 4), 16000)
    (root / "bob" / "notes.txt").write_text("not audio")
    write(root / ".hidden" / "h.wav", noise(16000, 0.1, 5), 16000)
    utts = list_utterances(root, "folder")
    assert [(u.id, u.speaker) for u in utts] == [
        ("alice__a1", "alice"), ("alice__sub__a2", "sub"), ("bob__b1", "bob"), ("top", "corpus")]


def test_filelist_listing(tmp_path):
    a = write(tmp_path / "lists" / "wavs" / "x1.wav", noise(22050, 0.1, 1), 22050)
    b = write(tmp_path / "elsewhere" / "spk9" / "x2.flac", noise(22050, 0.1, 2), 22050)
    lst = tmp_path / "lists" / "train.txt"
    lst.write_text(f"# comment\n\nwavs/x1.wav|Hello there.|alice\n  \n{b}|Second.\n# wavs/x3.wav|gone\n")
    utts = list_utterances(lst, "filelist")
    assert utts == [
        Utterance("x1", str(a), "alice", "Hello there."),
        Utterance("x2", str(b), "spk9", "Second."),
    ]


def test_unknown_format_and_missing_roots_say_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="ljspeech, vctk, libritts, folder, filelist"):
        list_utterances(tmp_path, "timit")
    urls = {
        "ljspeech": "https://keithito.com/LJ-Speech-Dataset/",
        "vctk": "https://datashare.ed.ac.uk/handle/10283/3443",
        "libritts": "https://www.openslr.org/60/",
    }
    for fmt, url in urls.items():
        for root in (tmp_path / "nowhere", tmp_path):  # missing root; root without the layout
            with pytest.raises(DataError) as e:
                list_utterances(root, fmt)
            assert url in str(e.value) and "data.root" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="path\\|text\\|speaker"):
        list_utterances(tmp_path / "list.txt", "filelist")


def test_duplicate_ids_are_an_error(tmp_path):
    write(tmp_path / "a" / "x.wav", noise(16000, 0.1, 1), 16000)
    write(tmp_path / "b" / "x.wav", noise(16000, 0.1, 1), 16000)
    (tmp_path / "l.txt").write_text("a/x.wav\nb/x.wav\n")
    with pytest.raises(DataError, match="duplicate utterance id 'x'"):
        list_utterances(tmp_path / "l.txt", "filelist")


# ----------------------------------------------------------------------------------------------
# split
# ----------------------------------------------------------------------------------------------


def fake_utts(ids) -> list[Utterance]:
    return [Utterance(i, f"/nonexistent/{i}.wav", "s") for i in ids]


def test_split_is_deterministic_and_stable_when_files_are_added():
    base = fake_utts(f"utt{i:04d}" for i in range(400))
    kw = dict(seed=7, val_fraction=0.1, test_fraction=0.05)
    s1 = split_utterances(base, **kw)
    assert s1 == split_utterances(list(base), **kw)
    assert sum(len(v) for v in s1.values()) == 400
    assert 20 <= len(s1["val"]) <= 60 and 5 <= len(s1["test"]) <= 40
    before = {u.id: name for name, us in s1.items() for u in us}
    grown = base + fake_utts(f"new{i:04d}" for i in range(200))
    s2 = split_utterances(grown, **kw)
    after = {u.id: name for name, us in s2.items() for u in us}
    assert all(after[k] == v for k, v in before.items())
    assert all(split_of(k, **kw) == v for k, v in after.items())
    # the seed salts the hash: another seed draws another split
    other = split_utterances(base, seed=8, val_fraction=0.1, test_fraction=0.05)
    assert {u.id for u in other["val"]} != {u.id for u in s1["val"]}
    assert 0.0 <= split_hash("x", seed=0) < 1.0


def test_tiny_corpus_gets_one_validation_utterance():
    ids = [f"a{i}" for i in range(30)]
    seed = next(s for s in range(1000) if all(split_of(i, seed=s, val_fraction=0.02, test_fraction=0) == "train"
                                              for i in ids[:3]))
    utts = fake_utts(ids[:3])
    out = split_utterances(utts, seed=seed, val_fraction=0.02)
    assert len(out["val"]) == 1 and len(out["train"]) == 2 and out["test"] == []
    assert out["val"][0].id == min(ids[:3], key=lambda i: split_hash(i, seed=seed))
    assert split_utterances(utts, seed=seed, val_fraction=0.02) == out
    assert split_utterances(utts, seed=seed, val_fraction=0.0)["val"] == []
    assert split_utterances(utts[:1], seed=seed, val_fraction=0.02)["train"] == utts[:1]


# ----------------------------------------------------------------------------------------------
# the stream dataset
# ----------------------------------------------------------------------------------------------


def make_offset_corpus(root: Path, n: int = 5, sr: int = 16000) -> list[Utterance]:
    """Folder corpus whose utterance k has mean 0.1 (k + 1): an item's mean names its utterance."""
    for k in range(n):
        write(root / f"u{k}.wav", noise(sr, 0.25 + 0.05 * k, k, amp=0.01, offset=0.1 * (k + 1)), sr, "FLOAT")
    return list_utterances(root, "folder")


def which_utt(item) -> int:
    return int(round(float(item["audio"].mean()) / 0.1)) - 1


def test_items_are_pure_functions_of_seed_and_position(tmp_path):
    utts = make_offset_corpus(tmp_path / "c")
    kw = dict(sample_rate=16000, segment_length=1024, hop_length=256, seed=11)
    a = SegmentDataset(utts, **kw)
    b = SegmentDataset(list(reversed(utts)), **kw, cache=False)
    positions = [0, 3, 17, 4, 1000003, 2, 17]
    items_a = [a[p] for p in positions]
    items_b = [b[p] for p in reversed(positions)][::-1]
    for x, y in zip(items_a, items_b):
        assert torch.equal(x["audio"], y["audio"]) and torch.equal(x["seed"], y["seed"])
        assert x["audio"].shape == (1, 1024) and x["audio"].dtype == torch.float32
        assert x["seed"].dtype == torch.int64 and x["seed"].ndim == 0
    assert len({int(a[p]["seed"]) for p in range(40)}) == 40
    # each epoch of n consecutive positions visits every utterance exactly once, in a new order
    orders = [[which_utt(a[e * 5 + k]) for k in range(5)] for e in range(4)]
    assert all(sorted(o) == list(range(5)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    # the crop offset varies: the same utterance is cut at different places in different epochs
    c = SegmentDataset(utts, **{**kw, "seed": 12})
    assert not torch.equal(c[0]["audio"], a[0]["audio"])
    with pytest.raises(IndexError):
        a[-1]


def test_segment_length_must_be_a_multiple_of_the_hop(tmp_path):
    utts = make_offset_corpus(tmp_path / "c", n=1)
    with pytest.raises(DataError, match="multiple of the hop"):
        SegmentDataset(utts, sample_rate=16000, segment_length=1000, hop_length=256, seed=0)


def make_mel_corpus(tmp_path: Path, hop: int, sr: int = 16000):
    """Audio files and 'mels' built from the audio itself: mel[:, f] = audio[f hop : (f + 1) hop]."""
    utts = []
    for k, native in enumerate((16000, 24000, 16000)):
        write(tmp_path / "wav" / f"m{k}.wav", noise(native, 0.3 + 0.1 * k, 20 + k, amp=0.3), native, "FLOAT")
    utts = list_utterances(tmp_path / "wav", "folder")
    mel_dir = tmp_path / "mels"
    mel_dir.mkdir()
    for u in utts:
        x = load_audio(u.path, sr)
        frames = len(x) // hop
        np.save(mel_dir / f"{u.id}.npy", x[: frames * hop].reshape(frames, hop).T.copy())
    return utts, mel_dir


def test_crops_align_with_tts_mel_frames(tmp_path):
    hop = 64
    utts, mel_dir = make_mel_corpus(tmp_path, hop)
    ds = SegmentDataset(utts, sample_rate=16000, segment_length=1024, hop_length=hop, seed=5,
                        tts_mel_dir=mel_dir, n_mels=hop)
    assert ds.bad == []
    starts = set()
    for p in range(30):
        item = ds[p]
        assert item["mel"].shape == (hop, 1024 // hop) and item["mel"].dtype == torch.float32
        # the mel crop is exactly the frames of the audio crop
        torch.testing.assert_close(item["mel"], item["audio"][0].reshape(1024 // hop, hop).T, rtol=0, atol=0)
        starts.add(float(item["audio"][0, 0]))
    assert len(starts) > 10
    with pytest.raises(DataError, match="n_mels"):
        SegmentDataset(utts, sample_rate=16000, segment_length=1024, hop_length=hop, seed=5, tts_mel_dir=mel_dir)


def test_mel_frame_count_mismatch_or_missing_mel_makes_the_file_bad(tmp_path, caplog):
    hop = 64
    utts, mel_dir = make_mel_corpus(tmp_path, hop)
    good = np.load(mel_dir / f"{utts[0].id}.npy")
    np.save(mel_dir / f"{utts[0].id}.npy", good[:, :-5])  # 5 frames short: not aligned
    np.save(mel_dir / f"{utts[1].id}.npy", np.concatenate([np.load(mel_dir / f"{utts[1].id}.npy")] +
                                                          [np.zeros((hop, 2), np.float32)], axis=1))  # +2: ok
    (mel_dir / f"{utts[2].id}.npy").unlink()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ds = SegmentDataset(utts, sample_rate=16000, segment_length=1024, hop_length=hop, seed=5,
                        tts_mel_dir=mel_dir, n_mels=hop)
    assert [u.id for u in ds.utterances] == [utts[1].id]
    reasons = dict(ds.bad)
    assert "frames" in reasons[str(mel_dir / f"{utts[0].id}.npy")]
    assert "missing" in reasons[str(mel_dir / f"{utts[2].id}.npy")]
    assert len(warnings_for(caplog, mel_dir / f"{utts[0].id}.npy")) == 1
    assert ds[0]["mel"].shape == (hop, 16)
    with pytest.raises(DataError, match="no usable"):
        SegmentDataset(utts[:1], sample_rate=16000, segment_length=1024, hop_length=hop, seed=5,
                       tts_mel_dir=mel_dir, n_mels=hop)


# ----------------------------------------------------------------------------------------------
# sampler and loader
# ----------------------------------------------------------------------------------------------


def take(sampler, k):
    it = iter(sampler)
    return [next(it) for _ in range(k)]


def test_stream_sampler_ranks_cover_the_single_rank_stream():
    B, micro, steps = 8, 2, 5
    single = take(StreamSampler(0, B, micro_batches=micro), B * steps)
    assert single == list(range(B * steps))
    r0 = take(StreamSampler(0, B, rank=0, world_size=2, micro_batches=micro), B * steps // 2)
    r1 = take(StreamSampler(0, B, rank=1, world_size=2, micro_batches=micro), B * steps // 2)
    assert sorted(r0 + r1) == single and not set(r0) & set(r1)
    local = B // (micro * 2)
    for j in range(steps * micro):  # each micro-batch of the two ranks is one micro-batch of the single rank
        got = sorted(r0[j * local:(j + 1) * local] + r1[j * local:(j + 1) * local])
        assert got == single[j * 2 * local:(j + 1) * 2 * local]
    # resuming at step 3 continues exactly
    assert take(StreamSampler(3, B, rank=1, world_size=2, micro_batches=micro), local * micro) == r1[3 * local * micro:4 * local * micro]
    with pytest.raises(DataError, match="divisible"):
        StreamSampler(0, 10, world_size=4)
    with pytest.raises(DataError, match="rank"):
        StreamSampler(0, 8, rank=2, world_size=2)


def test_make_loader_batches_are_the_stream_items(tmp_path):
    utts = make_offset_corpus(tmp_path / "c", n=3)
    ds = SegmentDataset(utts, sample_rate=16000, segment_length=512, hop_length=256, seed=1)
    loader = make_loader(ds, start_step=2, global_batch=8, rank=1, world_size=2, micro_batches=2, num_workers=0)
    it = iter(loader)
    first, second = next(it), next(it)
    assert first["audio"].shape == (2, 1, 512) and first["seed"].shape == (2,)
    for batch, positions in ((first, [17, 19]), (second, [21, 23])):
        want = [ds[p] for p in positions]
        assert torch.equal(batch["audio"], torch.stack([w["audio"] for w in want]))
        assert torch.equal(batch["seed"], torch.stack([w["seed"] for w in want]))


# ----------------------------------------------------------------------------------------------
# corpus check and the real LJSpeech subset
# ----------------------------------------------------------------------------------------------


def test_check_corpus_reports_counts_rates_and_bad_files(tmp_path):
    files = make_ljspeech(tmp_path / "lj")
    rep = check_corpus(tmp_path / "lj", "ljspeech", 22050, segment_length=2048)
    assert rep["utterances"] == 9 and rep["speakers"] == 1
    assert rep["usable"] == 3 and rep["bad"] == 6
    assert {p for p, _ in rep["bad_files"]} == {str(files[k]) for k in
                                                ("LJ002-0001", "LJ002-0002", "LJ002-0003", "LJ002-0004",
                                                 "LJ002-0005", "LJ003-0001")}
    assert rep["sample_rates"] == {22050: 3, 24000: 1, 44100: 1, 48000: 2}  # empty and silent files are readable
    assert rep["hours"] == pytest.approx((0.5 + 0.4 + 0.3) / 3600, rel=1e-3)
    assert 0.09 < rep["std"] < 0.11  # the noise files have std 0.1
    text = format_report(rep)
    assert "usable: 3" in text and "LJ002-0003.wav" in text and "24000 Hz x 1" in text


def test_real_ljspeech_mini():
    utts = list_utterances(LJ_MINI, "ljspeech")
    assert len(utts) == 25 and len({u.id for u in utts}) == 25
    (odd,) = [u for u in utts if u.id == "LJ016-0027"]
    rate, frames = audio_info(odd.path)
    assert rate == 24000
    x = load_utterance_audio(odd, 22050)
    assert isinstance(x, torch.Tensor) and x.shape == (math.ceil(frames * 22050 / 24000),)
    sigma = estimate_sigma_data(utts, 22050)
    assert 0.05 < sigma < 0.15
    # an evenly spaced subset gives a close estimate
    assert abs(estimate_sigma_data(utts, 22050, max_files=8) - sigma) < 0.03
