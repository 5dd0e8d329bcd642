"""Normalization layers: Attentive Normalization and the papers' baselines."""

from an_lab.nn.attention import ACTIVATIONS, HEADS, POOLINGS, AttentionWeights
from an_lab.nn.attentive_norm import NORMS, AttentiveNorm2d
from an_lab.nn.baselines import SEUnit, SwitchableNorm2d

__all__ = [
    "ACTIVATIONS",
    "HEADS",
    "NORMS",
    "POOLINGS",
    "AttentionWeights",
    "AttentiveNorm2d",
    "SEUnit",
    "SwitchableNorm2d",
]
