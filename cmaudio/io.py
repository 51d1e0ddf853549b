"""Safe file I/O: atomic writes and loaders that never execute code.

- Every write goes to a temporary file in the destination directory, is flushed and fsynced,
  then put in place, so a reader sees the old file or the new one, never half. The final name is
  created *exclusively* unless the caller passes ``overwrite=True``: the temporary is hard-linked
  to it (the link fails if any entry of that name exists, a dangling symlink included), so of two
  concurrent runs writing one name the second is refused instead of silently replacing the first.
  With ``overwrite=True`` it is renamed over the target (a symlink there is replaced, never followed).
- Temporaries are named ``.<target>.cmtmp<pid>@<host>.<random><suffix>.tmp``. The ones in flight are
  registered so that a signal handler (the CLI's) can remove them (`remove_in_flight`), and the first
  write into a directory removes those of this host whose process is gone (a killed export, a
  SIGKILLed run: `sweep_stale_temporaries`); other files are never touched.
- `load_npy` reads .npy files with ``allow_pickle=False`` and turns every failure (truncated
  file, object dtype, pickle) into a one-line DataError.
- `confined_path` builds an output path from untrusted names (utterance ids, file stems, speaker
  names): each must be one plain file name, and the result must lie inside the output directory
  even where a subdirectory there is a symlink. Every writer that puts data into a path uses it.

Imports only cmaudio.errors.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from cmaudio.errors import DataError


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Paths built from data: confined to their output directory
# ----------------------------------------------------------------------------------------------

NAME_MAX = 255  # bytes in one file name on the usual file systems


def name_problem(name: object) -> Optional[str]:
    """Why `name` cannot be one component of a path (None when it can): not a string, empty, '.' or '..',
    holding a path separator or a NUL byte, or longer than NAME_MAX bytes."""
    if not isinstance(name, str):
        return f"is not a string ({type(name).__name__})"
    if name == "":
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if "\x00" in name:
        return "holds a NUL byte"
    if any(sep in name for sep in {"/", os.sep, os.altsep} - {None}):
        return "holds a path separator"
    if len(os.fsencode(name)) > NAME_MAX:
        return f"is longer than {NAME_MAX} bytes"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confined_path(root: str | Path, *names: str, suffix: str = "", what: str = "name") -> Path:
    """``root/names[0]/.../names[-1]+suffix``, refusing (DataError naming the entry) anything that could lead out.

    Each of `names` (untrusted: utterance ids, file stems, setting names) must be one plain file name
    (`name_problem`); `suffix` (e.g. '.wav') is appended to the last after that check. The directory the
    file goes into, with every symlink on the way resolved, must lie inside ``root`` resolved: a
    subdirectory of root that links elsewhere is refused. The file itself is not resolved: writers
    create it exclusively (an existing name, link or not, is refused) or replace the name itself.
    """
    root = Path(root)
    for n in names:
        problem = name_problem(n)
        if problem is not None:
            raise DataError(f"{what} {n!r} {problem}, so it cannot name a file inside {root}; refusing it "
                            "(rename the entry)")
    if not names:
        raise DataError(f"no file name given below {root}")
    path = root.joinpath(*names[:-1], names[-1] + suffix)
    base = root.resolve()
    real_parent = path.parent.resolve()
    if not _inside(real_parent, base):
        raise DataError(f"{path.parent} leads outside {root} (through a symlink, to {real_parent}); refusing to "
                        "write there")
    return path


# ----------------------------------------------------------------------------------------------
# Temporaries: named by their process, removed on signals and, when their process is gone, later
# ----------------------------------------------------------------------------------------------

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TMP_NAME = re.compile(r"^\..*\.cmtmp(\d+)@([0-9a-f]{8})\..*\.tmp$")
# Process-wide by nature: what a signal handler must remove, and the directories already swept.
_IN_FLIGHT: set[Path] = set()
_SWEPT: set[str] = set()


def _tmp_prefix(target: Path) -> str:
    return f".{target.name[:100]}.cmtmp{os.getpid()}@{_HOST}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def sweep_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporaries atomic_path left in `directory` (not below) when their process died mid-write:
    names ``.<target>.cmtmp<pid>@<host>.<random><suffix>.tmp`` of this host whose pid is no longer alive.
    Returns what was removed; any other file, another host's or a live process's temporary is left alone."""
    removed: list[Path] = []
    try:
        entries = os.scandir(directory)
    except OSError:
        return removed
    with entries:
        for e in entries:
            m = _TMP_NAME.match(e.name)
            if m is None or m.group(2) != _HOST or _pid_alive(int(m.group(1))):
                continue
            try:
                if e.is_file(follow_symlinks=False):
                    os.unlink(e.path)
                    removed.append(Path(e.path))
            except OSError:
                pass
    return removed


def remove_in_flight() -> list[Path]:
    """Remove every temporary this process is writing now (for a SIGTERM/SIGINT handler); returns them."""
    gone = []
    for p in list(_IN_FLIGHT):
        try:
            p.unlink()
            gone.append(p)
        except OSError:
            pass
        _IN_FLIGHT.discard(p)
    return gone


def exists_error(target: Path) -> DataError:
    return DataError(f"{target} already exists (another run may have written it meanwhile); pass --overwrite to "
                     "replace it (or choose another output)")


def _place_exclusively(tmp: Path, target: Path) -> None:
    """Give the finished temporary `tmp` the name `target`, failing if that name exists in any form."""
    try:
        os.link(tmp, target)  # atomic and exclusive: EEXIST for a file, a directory or a (dangling) symlink
    except FileExistsError:
        raise exists_error(target) from None
    except OSError:  # a file system without hard links: reserve the name exclusively, then rename over it
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise exists_error(target) from None
        os.close(fd)
        os.replace(tmp, target)
        return
    tmp.unlink()


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p `directory`; returns the directories it created, outermost first."""
    missing = []
    d = directory
    while not os.path.lexists(d) and d != d.parent:
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


@contextmanager
def atomic_path(target: str | Path, suffix: str = "", *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success fsync it and put it at `target`.

    Without `overwrite` the name is created exclusively: an existing entry of that name (a file, a
    directory, a symlink even if dangling, one a concurrent run created meanwhile) raises DataError
    and is left untouched — checked before the caller writes anything and again when placing. With
    `overwrite` the temporary is renamed over the target. On an exception the temporary file is
    removed and `target` is left untouched. `suffix` keeps an extension some writers need.
    """
    target = Path(target)
    made = _make_parents(target.parent)
    if not overwrite and os.path.lexists(target):
        raise exists_error(target)
    key = os.path.abspath(target.parent)
    if key not in _SWEPT:
        _SWEPT.add(key)
        sweep_stale_temporaries(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _IN_FLIGHT.add(tmp_path)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 (writers may recreate it): usual permissions
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp_path, target)
        else:
            _place_exclusively(tmp_path, target)
        fsync_dir(target.parent)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        for d in reversed(made):  # a failed write leaves no directory it created (only empty ones are removed)
            try:
                os.rmdir(d)
            except OSError:
                break
        if isinstance(e, OSError) and e.filename is None:  # a writer's bare OSError (ENOSPC): name the output
            raise OSError(e.errno, e.strerror or str(e), str(target)) from None
        raise
    finally:
        _IN_FLIGHT.discard(tmp_path)


def write_bytes_atomic(target: str | Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write `data` to `target` atomically (exclusively unless `overwrite`; see atomic_path)."""
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | Path, text: str, *, overwrite: bool = False) -> None:
    write_bytes_atomic(target, text.encode("utf-8"), overwrite=overwrite)


def save_npy_atomic(target: str | Path, array: np.ndarray, *, overwrite: bool = False) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes_atomic(target, buf.getvalue(), overwrite=overwrite)


def write_wav_atomic(target: str | Path, audio: np.ndarray, sample_rate: int, *, overwrite: bool = False) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, atomically (exclusively unless `overwrite`). audio: (T,)."""
    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.isfinite(audio).all():  # clipping keeps NaN, and PCM_16 writes it as full-scale -32768
        raise DataError(f"{target}: the audio to write holds NaN or inf values; nothing was written")
    with atomic_path(target, suffix=".wav", overwrite=overwrite) as tmp:
        try:
            sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        except sf.SoundFileError as e:  # libsndfile's own error for a failed write (a full disk among them)
            raise OSError(errno.EIO, f"writing the audio failed ({' '.join(str(e).split())}); is the disk full?",
                          str(target)) from None


def _npy_size_problem(path: Path) -> Optional[str]:
    """Why the .npy at `path` cannot hold what its header claims (None if it can, or if the header is not a
    plain numeric one: np.load reports those). Read from the header alone, before anything is allocated:
    a header claiming 29 TiB on a small file is refused here instead of failing an allocation."""
    from numpy.lib import format as npf

    try:
        with open(path, "rb") as f:
            version = npf.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npf.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npf.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
    except Exception:  # noqa: BLE001 - a header np.load will reject with its own words
        return None
    if dtype.hasobject:
        return None
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = os.path.getsize(path) - offset
    if need != have:
        return (f"its header claims shape {tuple(shape)} {dtype} ({need} bytes) but the file holds {have} bytes of "
                "data; it is truncated or corrupt")
    return None


def npy_header(path: str | Path, what: str) -> tuple[Optional[tuple[int, ...]], Optional[str]]:
    """(shape, None) of a numeric .npy read from its header only (a memory map, never unpickling), or
    (None, problem) naming `what`: missing, unreadable, or not numeric (dtype kinds f, i, u)."""
    path = Path(path)
    if not path.is_file():
        return None, f"missing {what} file"
    problem = _npy_size_problem(path)
    if problem is not None:
        return None, f"unreadable {what} ({problem})"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        shape, kind = tuple(arr.shape), arr.dtype.kind
        del arr
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        return None, f"unreadable {what} ({' '.join(str(e).split())})"
    if kind not in "fiu":
        return None, f"{what} dtype kind {kind!r} is not numeric"
    return shape, None


def load_npy(path: str | Path) -> np.ndarray:
    """Load a numeric .npy array without ever unpickling.

    Raises DataError (one line) for a missing, truncated, pickled/object or non-numeric file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        if magic[:1] == b"\x80":
            raise DataError(f"{path}: is a Python pickle, not a .npy array; cmaudio never unpickles files — save the "
                            "mel with np.save(path, mel.astype(np.float32))")
        raise DataError(f"{path}: not a .npy file (no NumPy header); save the mel with np.save")
    problem = _npy_size_problem(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "object arrays" in str(e).lower():
            raise DataError(
                f"{path}: holds Python objects (a pickled array); cmaudio never unpickles files — save it with "
                "np.save(path, array.astype(np.float32))"
            ) from None
        raise DataError(f"{path}: not a readable .npy array ({e}); is it truncated?") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e}); is it truncated?") from None
    if isinstance(arr, np.lib.npyio.NpzFile):  # pragma: no cover - np.load of .npz
        raise DataError(f"{path}: is an .npz archive; give one .npy array per file")
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: dtype {arr.dtype} is not numeric; save float32 mel arrays")
    return arr


# ----------------------------------------------------------------------------------------------
# Output checks: refuse before any work is done
# ----------------------------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(path: str | Path, what: str = "-o") -> None:
    """Refuse (DataError) an output directory that is a file, lies below a file, or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{what} {path} is an existing file, not a directory; give a directory")
    base = _nearest_existing(path.absolute())
    if not base.is_dir():
        raise DataError(f"{what} {path}: {base} is a file, so no directory can be made below it")
    if not os.access(base, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path}: {base} is not writable (permission denied)")


def check_outputs(dests, *, inputs=(), overwrite: bool = False, flag: str = "--overwrite") -> None:
    """Refuse (DataError) a set of output files before anything is computed.

    Two outputs with the same path, an output that is one of `inputs`, an output that is a
    directory, a parent that is a file or not writable, and an existing file unless `overwrite`
    are all refused with one line naming the path.
    """
    dests = [Path(d) for d in dests]
    seen: dict[Path, Path] = {}
    for d in dests:
        r = d.resolve()
        if r in seen:
            raise DataError(f"two inputs would write the same output file {d}; use distinct names or -o")
        seen[r] = d
    ins = {Path(f).resolve() for f in inputs}
    for r, d in seen.items():
        if r in ins:
            raise DataError(f"the output {d} would overwrite an input; pass -o OUT")
        if d.is_dir():
            raise DataError(f"the output {d} is an existing directory")
        if os.path.lexists(d) and not overwrite:  # a dangling symlink is an existing name too
            raise DataError(f"{d} already exists; pass {flag} to replace it (or choose another -o)")
    for parent in sorted({d.parent for d in dests}):
        check_out_dir(parent, what="output directory")
