"""Networks of the papers with any normalization, and a converter for any torchvision model."""

from an_lab.models.convert import convert_norms
from an_lab.models.registry import ARCHITECTURES, create

__all__ = ["ARCHITECTURES", "convert_norms", "create"]
