"""Helpers shared by test modules (imported as `helpers`: pytest puts tests/ on sys.path)."""

import torch


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Unit-gain random weights everywhere (the U-Net's output convs start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model
