"""A one-line terminal progress bar (training steps, files being vocoded).

Imports nothing of cmaudio: the loop and the CLI both use it.
"""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """A one-line terminal progress bar with rate and ETA (stderr; plain lines when not a TTY)."""

    def __init__(self, total: int, start: int, enabled: bool = True, every: int = 10) -> None:
        self.total, self.start, self.enabled, self.every = total, start, enabled, every
        self.t0 = time.time()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, text: str = "") -> None:
        if not self.enabled:
            return
        done = step - self.start
        if not self.tty and step % self.every and step != self.total:
            return
        el = time.time() - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        frac = step / max(self.total, 1)
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "--:--:--"
        line = f"[{bar}] {step}/{self.total} {rate:.2f} it/s ETA {eta_s} {text}"
        if self.tty:
            sys.stderr.write("\r" + line[:160].ljust(160))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
