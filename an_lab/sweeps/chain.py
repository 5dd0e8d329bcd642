"""Which classification runs a sweep's detection runs start from, before any of them is launched: those of its
planned runs, and in a search those its trials can take (an_lab.sweeps.run launches or submits the missing ones
first; plan shows them)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from an_lab.sweeps.backbones import KEY as BACKBONE_KEY
from an_lab.sweeps.backbones import Backbone
from an_lab.sweeps.expand import PlannedRun
from an_lab.sweeps.manifest import find_sweep
from an_lab.sweeps.resolver import resolve_settings
from an_lab.sweeps.spec import Sweep

MAX_BACKBONE_CHOICES = 256  # combinations of a search's backbone axes resolved before launch; past it, per trial


def backbones_of(needs: list[PlannedRun] | list[Backbone]) -> list[Backbone]:
    """The backbones of planned runs (those that have one), or the backbones given."""
    backbones = (need.backbone if isinstance(need, PlannedRun) else need for need in needs)
    return [backbone for backbone in backbones if backbone is not None]


def _decides_backbone(key: str) -> bool:
    """Whether a searched key can change the classification run a trial starts from: its backbone_init, or the
    trial's seed (which a backbone_init without a seed follows)."""
    return key.startswith(f"{BACKBONE_KEY}.") or key in (BACKBONE_KEY, "model", "trainer", "trainer.seed")


def trial_backbones(sweep: Sweep) -> list[Backbone]:
    """The classification runs a search's trials can start from: the base config's backbone under every combination
    of the searched values that decide it (list axes, and integer ranges), so that they are trained or submitted
    before the first trial. Past MAX_BACKBONE_CHOICES combinations, the list axes' alone, else the base's alone; each
    trial still waits for (or, locally, fails without) its own."""
    choices = [[(key, value) for value in values] for key, values in sweep.spec.axes.items() if _decides_backbone(key)]
    ranges = [
        (key, range(int(bounds.low), int(bounds.high) + 1, int(bounds.step or 1)))
        for key, bounds in sweep.spec.search.space.items()
        if _decides_backbone(key) and bounds.type == "int"
    ]
    counts = [len(values) for values in choices]
    if math.prod(counts + [len(values) for _, values in ranges]) <= MAX_BACKBONE_CHOICES:
        choices += [[(key, value) for value in values] for key, values in ranges]
    elif math.prod(counts) > MAX_BACKBONE_CHOICES:
        choices = []
    settings = [dict(combo) for combo in itertools.product(*choices)]
    found: dict[Path, Backbone] = {}
    for chosen in settings:
        backbone = resolve_settings(sweep, chosen, find=find_sweep)[1]
        if backbone is not None:
            found.setdefault(backbone.run_dir, backbone)
    return list(found.values())
