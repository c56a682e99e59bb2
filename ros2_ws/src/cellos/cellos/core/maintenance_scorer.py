"""A background task class of every cell: predictive-maintenance scoring.

Each period the cell summarises its drive's vibration as 16 features (band energies of a
synthetic, slowly wearing signal here; a real cell feeds its sensor) and asks the wear
model for a score. Runs at background priority: the energy gate and the executor may shed
it first without touching inspection.
"""
from __future__ import annotations

import numpy as np

FEATURES = 16


def vibration_features(cell_seed: int, t_s: float, samples: int = 256) -> np.ndarray:
    """float32 [1, 16]: log band energies of one vibration window at time ``t_s``."""
    rng = np.random.default_rng((cell_seed * 1_000_003 + int(t_s * 10)) & 0xFFFFFFFF)
    k = np.arange(samples)
    wear = min(1.0, t_s / 3600.0)
    signal = (np.sin(2 * np.pi * 0.05 * k) + wear * 0.5 * np.sin(2 * np.pi * 0.31 * k)
              + 0.1 * rng.standard_normal(samples))
    spectrum = np.abs(np.fft.rfft(signal))[1:1 + FEATURES * 8].reshape(FEATURES, -1).sum(axis=1)
    return np.log1p(spectrum).astype(np.float32).reshape(1, FEATURES)


def wear_level(score: float, warn: float = 0.7) -> str:
    return 'service soon' if score >= warn else 'ok'
