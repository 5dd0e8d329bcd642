"""Wall time a plan will take, from what the ledger has measured: the finished runs of the same network at the same
image size on the same device, each run's seconds per multiply-accumulate of training (its wall time over
an_lab.sweeps.plan.run_macs of its config), applied to the runs still to run. Torch-free: nothing is timed here; a
sweep whose network has no finished run on this device says so and how to get one.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from an_lab.config import RunConfig
from an_lab.rundir import CONFIG, read_json, read_result

SAMPLE = 200  # finished runs read at most per output folder (the newest): enough for a median, cheap at 100,000


def _key(config: RunConfig) -> tuple[str, str, int]:
    return config.model.name, config.model.norm, config.data.image_size


@dataclass
class Timings:
    """Seconds per training MAC by (network, norm, image size) and device, from finished runs."""

    rates: dict[tuple, dict[str, list[float]]] = field(default_factory=dict)
    _rates: dict[tuple, tuple[float, str, int] | None] = field(default_factory=dict, repr=False)  # rate() by key

    def rate(self, config: RunConfig) -> tuple[float, str, int] | None:
        """(seconds per MAC, device, runs measured) for a run like this one; the device with the most runs."""
        key = _key(config)
        if key not in self._rates:
            found = self.rates.get(key)
            if not found:
                return None
            device, values = max(found.items(), key=lambda item: len(item[1]))
            self._rates[key] = statistics.median(values), device, len(values)
        return self._rates[key]


def measured(output_dir: Path, run_macs) -> Timings:
    """The timings of the newest finished runs in an output folder (run_macs: the MACs of a config, or None)."""
    timings = Timings()
    try:
        entries = [entry for entry in os.scandir(output_dir) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return timings
    finished = []
    for entry in entries:
        try:
            finished.append((os.stat(f"{entry.path}/result.json").st_mtime, entry.path))
        except OSError:
            continue
    for _, path in sorted(finished, reverse=True)[:SAMPLE]:
        result, _ = read_result(Path(path))
        tree = read_json(Path(path) / CONFIG)
        seconds = result.get("wall_time_s") if result else None
        if not (tree and isinstance(seconds, int | float) and seconds > 0):
            continue
        try:
            config = RunConfig.model_validate(tree)
        except ValueError:
            continue
        macs = run_macs(config)
        if macs:
            device = str(result.get("device") or "unknown device")
            timings.rates.setdefault(_key(config), {}).setdefault(device, []).append(seconds / macs)
    return timings


@dataclass
class WallTime:
    seconds: float = 0.0  # summed over the runs it could time
    longest: float = 0.0  # the longest single run
    timed: int = 0
    untimed: set[tuple] = field(default_factory=set)  # networks without a finished run to time them by
    devices: set[str] = field(default_factory=set)
    measured_runs: int = 0

    def add(self, config: RunConfig, macs: int | None, timings: Timings) -> None:
        found = timings.rate(config) if macs else None
        if found is None:
            self.untimed.add(_key(config))
            return
        rate, device, runs = found
        self.seconds += rate * macs
        self.longest = max(self.longest, rate * macs)
        self.timed += 1
        self.devices.add(device)
        self.measured_runs = max(self.measured_runs, runs)

    def words(self, parallel: int, slurm: bool) -> str:
        if not self.timed and not self.untimed:
            return "nothing to run"
        parts = []
        if self.timed:
            where = ", ".join(sorted(self.devices))
            if slurm:
                suggested = _clock(math.ceil(self.longest * 1.5 / 60) * 60)
                parts.append(
                    f"{self.seconds / 3600:.1f} device-hours for {self.timed} runs on {where} (measured from up to "
                    f"{self.measured_runs} finished runs of the same network and image size); the longest run "
                    f"about {_clock(self.longest)}: launcher.slurm.time {suggested} gives it 1.5x"
                )
            else:
                parts.append(
                    f"about {_clock(self.seconds / max(1, parallel))} for {self.timed} runs, {parallel} at a time on "
                    f"{where} (measured from up to {self.measured_runs} finished runs of the same network and image "
                    "size)"
                )
        if self.untimed:
            names = ", ".join(f"{name} ({norm}) at {size} px" for name, norm, size in sorted(self.untimed))
            parts.append(
                f"no finished run to time {names} by: finish one (an-lab train with trainer.epochs: 1 is enough) "
                "and plan again"
            )
        return "; ".join(parts)


def _clock(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{max(1, round(seconds))} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
