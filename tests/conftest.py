"""Test-wide settings: CPU only, one intra-op thread (CI and the dev box have 2 shared cores)."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402

torch.set_num_threads(1)
