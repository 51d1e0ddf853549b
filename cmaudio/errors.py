"""User-facing errors.

`CmaudioError` carries a one-line message that says what is wrong and how to fix it. The CLI
prints it as ``error: <message>`` and exits with status 2; library callers catch it like any
exception. Everything below the CLI raises it for bad input instead of printing.

This module imports nothing else of cmaudio so that every layer may use it.
"""

from __future__ import annotations


class CmaudioError(Exception):
    """An error caused by the user's input (a file, a config value, an argument).

    The message is one line, names the offending thing and, where possible, the fix.
    """


class ConfigError(CmaudioError):
    """A recipe or override is invalid (unknown key, wrong type, bad value)."""


class DataError(CmaudioError):
    """An input file or array cannot be used (unreadable, wrong shape, NaN, wrong n_mels)."""


class CheckpointError(CmaudioError):
    """A checkpoint or model directory is missing, incomplete, tampered with or incompatible."""


def os_error_line(e: OSError) -> str:
    """One line for an OSError: 'PATH: reason' (both paths for a rename), without errno noise."""
    reason = e.strerror or str(e) or type(e).__name__
    names = [str(n) for n in (e.filename, getattr(e, "filename2", None)) if n is not None]
    line = f"{' -> '.join(names)}: {reason}" if names else reason
    return " ".join(line.split())
