"""Settings of the neural primitives (feature size, decoder width, gradual magnitude pruning)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NeuralConfig:
    """``feature_dim`` floats per primitive (11 + F floats each vs 38 for SH degree 2); decoder MLP ``hidden``
    width (2 hidden layers); target ``sparsity`` of its hidden layers reached between the ``prune_start`` and
    ``prune_end`` fractions of the iterations."""

    feature_dim: int = 8
    hidden: int = 64
    sparsity: float = 0.9
    prune_start: float = 0.2
    prune_end: float = 0.7
