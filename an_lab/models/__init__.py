"""Networks of the papers with any normalization, and a converter for any torchvision model."""

from an_lab.models.convert import convert_norms
from an_lab.models.registry import ARCHITECTURES, MODEL_NAMES, NORM_CHOICES, create, resolve_k

__all__ = ["ARCHITECTURES", "MODEL_NAMES", "NORM_CHOICES", "convert_norms", "create", "resolve_k"]
