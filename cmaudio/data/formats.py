"""Corpus layouts: turn a dataset root into a sorted list of utterances.

Supported formats (DataConfig.format):

- ``ljspeech``: ``root/metadata.csv`` with lines ``id|text|normalized text`` and audio in
  ``root/wavs/<id>.wav``; speaker ``"LJ"``. An id listed in metadata.csv whose wav is missing is
  still returned (its path does not exist); SegmentDataset and check_corpus report it as bad.
- ``vctk``: VCTK-Corpus-0.92, ``root/wav48_silence_trimmed/<spk>/<spk>_<utt>_<mic>.flac`` and
  transcripts ``root/txt/<spk>/<spk>_<utt>.txt`` where present; id ``<spk>_<utt>``.
- ``libritts``: ``root/<subset>/<spk>/<chapter>/<utt>.wav`` with ``<utt>.normalized.txt`` beside
  (``<utt>.original.txt`` as a fallback); id = utt stem. ``root`` may also be one subset directory.
- ``folder``: every audio file below root, recursively (hidden files skipped); id = relative path
  without extension, '/' replaced by '__'; speaker = name of the containing directory.
- ``filelist``: root is a text file of lines ``path|text|speaker`` (text and speaker optional;
  path relative to the list file's directory or absolute); blank lines and ``#`` comments are
  ignored; id = file stem; speaker defaults to the containing directory's name.

Ids must be unique within a corpus (they name TTS mel files ``<id>.npy`` and salt the split hash), and
each must be one plain file name (cmaudio.io.name_problem: not empty, '.' or '..', no path separator,
no NUL): ids name output files (evaluation audio, validation samples), so an id such as
``../../x`` is refused at listing, naming it, before anything is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmaudio.errors import DataError
from cmaudio.io import name_problem

FORMATS = ("ljspeech", "vctk", "libritts", "folder", "filelist")

CORPUS_URLS = {
    "ljspeech": "https://keithito.com/LJ-Speech-Dataset/",
    "vctk": "https://datashare.ed.ac.uk/handle/10283/3443",
    "libritts": "https://www.openslr.org/60/",
}

# Extensions the `folder` format picks up (soundfile reads them; MP3 needs libsndfile >= 1.1).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".rf64", ".caf")


@dataclass(frozen=True)
class Utterance:
    """One recording: a corpus-unique `id`, the audio file `path`, its `speaker` and transcript `text`."""

    id: str
    path: str
    speaker: str
    text: str = ""


def _read_text(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return ""


def _missing_root(root: Path, fmt: str, what: str) -> DataError:
    where = f"; download it from {CORPUS_URLS[fmt]}" if fmt in CORPUS_URLS else ""
    return DataError(f"data.root={str(root)!r}: {what} (data.format={fmt}){where}")


def _check_unique(utts: list[Utterance], fmt: str) -> None:
    seen: dict[str, str] = {}
    for u in utts:
        problem = name_problem(u.id)
        if problem is not None:
            raise DataError(f"utterance id {u.id!r} ({u.path}) in {fmt} corpus {problem}; ids name output files, so "
                            "each must be a plain file name — fix or remove that entry")
        if u.id in seen:
            raise DataError(
                f"duplicate utterance id {u.id!r} in {fmt} corpus ({seen[u.id]} and {u.path}); "
                "ids must be unique — rename one of the files"
            )
        seen[u.id] = u.path


def _ljspeech(root: Path) -> list[Utterance]:
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise _missing_root(root, "ljspeech", "no metadata.csv there; pass the LJSpeech-1.1 directory")
    utts = []
    for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        uid = parts[0].strip()  # an empty id is refused with the others (_check_unique), not skipped
        text = parts[2].strip() if len(parts) > 2 and parts[2].strip() else (parts[1].strip() if len(parts) > 1 else "")
        utts.append(Utterance(uid, str(root / "wavs" / f"{uid}.wav"), "LJ", text))
    return utts


def _vctk(root: Path, mic: str) -> list[Utterance]:
    if mic not in ("mic1", "mic2"):
        raise DataError(f"data.vctk_mic={mic!r} is not one of mic1, mic2")
    wav_root = root / "wav48_silence_trimmed"
    if not wav_root.is_dir():
        raise _missing_root(root, "vctk", "no wav48_silence_trimmed/ there; pass the VCTK-Corpus-0.92 directory")
    utts = []
    suffix = f"_{mic}"
    for f in wav_root.glob(f"*/*{suffix}.flac"):
        spk = f.parent.name
        uid = f.name[: -len(suffix + ".flac")]
        if not uid.startswith(spk + "_"):
            continue
        txt = root / "txt" / spk / f"{uid}.txt"
        utts.append(Utterance(uid, str(f), spk, _read_text(txt) if txt.is_file() else ""))
    return utts


def _libritts_subset(subset_dir: Path) -> list[Utterance]:
    utts = []
    for f in subset_dir.glob("*/*/*.wav"):
        spk = f.parent.parent.name
        uid = f.stem
        text = ""
        for name in (f"{uid}.normalized.txt", f"{uid}.original.txt"):
            if (f.parent / name).is_file():
                text = _read_text(f.parent / name)
                break
        utts.append(Utterance(uid, str(f), spk, text))
    return utts


def _libritts(root: Path, subsets: tuple[str, ...]) -> list[Utterance]:
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*/*/*.wav")))
    if not found and any(root.glob("*/*/*.wav")):
        # root is itself one subset directory (e.g. LibriTTS/train-clean-100)
        if subsets and root.name not in subsets:
            raise DataError(
                f"data.root={str(root)!r} is the LibriTTS subset {root.name!r}, which is not in "
                f"data.libritts_subsets={list(subsets)}; pass the LibriTTS directory or adjust the subsets"
            )
        return _libritts_subset(root)
    if not found:
        raise _missing_root(root, "libritts", "no <subset>/<speaker>/<chapter>/*.wav there; pass the LibriTTS directory")
    wanted = list(subsets) if subsets else found
    missing = [s for s in wanted if s not in found]
    if missing:
        raise DataError(
            f"LibriTTS subset(s) {', '.join(missing)} not found under {root}; found: {', '.join(found)} "
            f"(set data.libritts_subsets, or get them from {CORPUS_URLS['libritts']})"
        )
    utts = []
    for s in wanted:
        utts.extend(_libritts_subset(root / s))
    return utts


def _folder(root: Path) -> list[Utterance]:
    if not root.is_dir():
        raise _missing_root(root, "folder", "not a directory; pass a directory holding audio files")
    utts = []
    for f in root.rglob("*"):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or f.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        if not f.is_file():
            continue
        uid = rel.with_suffix("").as_posix().replace("/", "__")
        utts.append(Utterance(uid, str(f), f.parent.name if f.parent != root else root.resolve().name))
    return utts


def _filelist(root: Path) -> list[Utterance]:
    if not root.is_file():
        raise _missing_root(root, "filelist", "no such file; pass a text file of lines path|text|speaker")
    base = root.parent
    utts = []
    for line in root.read_text(encoding="utf-8", errors="replace").splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = [p.strip() for p in s.split("|")]
        p = Path(parts[0])
        path = p if p.is_absolute() else base / p
        text = parts[1] if len(parts) > 1 else ""
        speaker = parts[2] if len(parts) > 2 and parts[2] else path.parent.name
        utts.append(Utterance(path.stem, str(path), speaker, text))
    return utts


def list_utterances(
    root: str | Path,
    format: str,
    *,
    vctk_mic: str = "mic1",
    libritts_subsets: tuple[str, ...] | list[str] = (),
) -> list[Utterance]:
    """All utterances of the corpus at `root` in layout `format`, sorted by id.

    Only directory listings and transcripts are read here, no audio. Raises DataError for an
    unknown format, a missing root (saying what to pass and where the corpus is published),
    or duplicate ids.
    """
    if format not in FORMATS:
        raise DataError(f"data.format={format!r} is unknown; pass one of {', '.join(FORMATS)}")
    root = Path(root)
    if not root.exists():
        what = "a text file of lines path|text|speaker" if format == "filelist" else "the corpus directory"
        raise _missing_root(root, format, f"does not exist; pass {what}")
    if format == "ljspeech":
        utts = _ljspeech(root)
    elif format == "vctk":
        utts = _vctk(root, vctk_mic)
    elif format == "libritts":
        utts = _libritts(root, tuple(libritts_subsets))
    elif format == "folder":
        utts = _folder(root)
    else:
        utts = _filelist(root)
    utts.sort(key=lambda u: (u.id, u.path))
    _check_unique(utts, format)
    return utts
