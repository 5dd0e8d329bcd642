"""Normalization layers: Attentive Normalization and the papers' baselines."""

from an_lab.nn.attention import AttentionWeights
from an_lab.nn.attentive_norm import AttentiveNorm2d
from an_lab.nn.baselines import SEUnit, SwitchableNorm2d

__all__ = ["AttentionWeights", "AttentiveNorm2d", "SEUnit", "SwitchableNorm2d"]
