"""Deterministic train/val/test split by hashing utterance ids.

u(id) = int(sha256(f"{seed}:{id}")[:8 bytes]) / 2^64 is uniform in [0, 1); an utterance goes to
val if u < val_fraction, to test if u < val_fraction + test_fraction, else to train. Each id's
split depends on its own hash only, so adding or removing files never moves existing ones
(except the tiny-corpus fallback below, which only applies while the hash leaves a split empty).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from cmaudio.data.formats import Utterance

SPLITS = ("train", "val", "test")


def split_hash(utt_id: str, *, seed: int) -> float:
    """Uniform value in [0, 1) from sha256 of f"{seed}:{utt_id}" (first 8 bytes, big-endian)."""
    digest = hashlib.sha256(f"{seed}:{utt_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(utt_id: str, *, seed: int, val_fraction: float, test_fraction: float) -> str:
    """"train", "val" or "test" for one utterance id (a pure function of id and seed)."""
    u = split_hash(utt_id, seed=seed)
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"


def split_utterances(
    utts: Sequence[Utterance], *, seed: int, val_fraction: float, test_fraction: float = 0.0
) -> dict[str, list[Utterance]]:
    """Split utterances into {"train": [...], "val": [...], "test": [...]} (input order kept).

    Tiny corpora: if val_fraction > 0 (resp. test_fraction > 0) but no utterance hashed into that
    split, the train utterance with the smallest hash moves there — deterministic, and never
    leaving train empty (a one-utterance corpus stays all train).
    """
    out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for u in utts:
        out[split_of(u.id, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)].append(u)
    for name, frac in (("val", val_fraction), ("test", test_fraction)):
        if frac > 0 and not out[name] and len(out["train"]) > 1:
            moved = min(out["train"], key=lambda u: (split_hash(u.id, seed=seed), u.id))
            out["train"] = [u for u in out["train"] if u is not moved]
            out[name].append(moved)
    return out
