"""The bounds a run config's values are checked against when it is validated, and the constrained types built on them:
a value that can only be a typo is an error before anything runs."""

from __future__ import annotations

import functools
import unicodedata
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from an_lab import catalog

# Bounds checked when a config is validated (`an-lab plan` included), so that a value that can only be a typo is an
# error before anything runs rather than a failure hours later (a seed numpy refuses, terabytes asked of the allocator).
# Integer fields are strict: YAML integers only, so `epochs: true` or `epochs: 1.5` are refused rather than read as 1
# (PyYAML reads `1e26` without a dot as a string, which a strict integer refuses too).
SEED_LIMIT = 2**32  # seeds are in [0, 2**32): numpy's RandomState and Lightning's seed_everything refuse others
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536  # per device
MAX_NUM_WORKERS = 256  # data loader processes per device
MAX_IMAGE_SIZE = 4_096  # training crop side in pixels
MAX_FAKE_SIZE = 10**7  # images per epoch of the fake data set
MAX_NUM_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_DEVICES = 256  # processes per node
MAX_NUM_NODES = 10_000
MAX_ITERATIONS = 10**8

Seed = Annotated[int, Field(strict=True, ge=0, lt=SEED_LIMIT)]


def _number(value: Any) -> Any:
    """A float may be written as an int, or as YAML 1.1's dotless exponent (`1e-3` reads as a string); not as a bool."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {value!r}")
    return value


# A finite float: `.inf`, `.nan` and the strings "inf" or "nan" are refused, as are true and false.
Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]


def valid_k_schedule(value: Any) -> Any:
    """model.an.k as written: None, one K for every stage, or a list of one K per stage (its length is checked against
    the network by catalog.resolve_k)."""
    if value is None:
        return value
    values = value if isinstance(value, list | tuple) else [value]
    whole = [k for k in values if isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= catalog.MAX_K]
    if not values or len(whole) != len(values):
        raise ValueError(
            f"k={value!r} is not valid; give one K or a list of one K per stage, each an integer from 1 to "
            f"{catalog.MAX_K} (AN learns K x C affine weights per layer)"
        )
    return value


def valid_devices(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DEVICES):
        return value
    raise ValueError(f"devices must be 'auto' or the processes per node, 1 to {MAX_DEVICES}, not {value!r}")


@functools.lru_cache(maxsize=256)  # a plan checks one output_dir 10,000 times
def control_character(text: str) -> str | None:
    """The first character of `text` that has no place on a line of a job script: control characters (line breaks,
    NUL, tab, escape...), line and paragraph separators and invisible format characters."""
    return next((char for char in text if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")), None)
