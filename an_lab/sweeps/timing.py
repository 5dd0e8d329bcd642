"""Wall time a plan will take, from what the ledger has measured: the finished runs of the same network at the same
image size on the same device, each run's seconds per multiply-accumulate of training (its wall time over
an_lab.sweeps.plan.run_macs of its config), applied to the runs still to run.

A network with no finished run is timed from its calibration, when `an-lab plan --calibrate` made one: a few
training steps timed on this machine (an_lab.lightning_modules.calibrate), kept in the output folder's CALIBRATION
file. A calibration times the training step alone (no validation, data loading or start-up), so the plan calls it a
lower bound. Torch-free unless asked to calibrate; a network with neither says so and how to get one.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from an_lab.config import RunConfig
from an_lab.rundir import CONFIG, read_json, read_result, write_json_atomic

CALIBRATION = ".an-lab-calibration.json"  # in an output folder: seconds per training MAC timed by plan --calibrate
LOWER_BOUND = "validation, data loading and start-up come on top: a lower bound"
SAMPLE = 200  # finished runs read at most per output folder (the newest): enough for a median, cheap at 100,000


def _key(config: RunConfig) -> tuple[str, str, int]:
    return config.model.name, config.model.norm, config.data.image_size


@dataclass
class Timings:
    """Seconds per training MAC by (network, norm, image size) and device, from finished runs."""

    rates: dict[tuple, dict[str, list[float]]] = field(default_factory=dict)
    calibrated: dict[tuple, tuple[float, str]] = field(default_factory=dict)  # key -> (seconds per MAC, device)
    _rates: dict[tuple, tuple[float, str, int] | None] = field(default_factory=dict, repr=False)  # measured, by key

    def rate(self, config: RunConfig) -> tuple[float, str, int] | None:
        """(seconds per MAC, device, runs measured) for a run like this one; the device with the most runs; from
        a calibration (0 runs measured) where no run has finished."""
        key = _key(config)
        if key not in self._rates:
            found = self.rates.get(key)
            if found:
                device, values = max(found.items(), key=lambda item: len(item[1]))
                self._rates[key] = statistics.median(values), device, len(values)
            else:
                self._rates[key] = None
        if self._rates[key] is None and (calibration := self.calibrated.get(_calibration_key(config))) is not None:
            return calibration[0], calibration[1], 0
        return self._rates[key]


def _calibration_key(config: RunConfig) -> tuple:
    """What a calibration depends on beyond the network: the task, batch size and threads per run."""
    return (*_key(config), config.task, config.data.batch_size, config.trainer.cpu_threads)


def read_calibrations(output_dir: Path) -> dict[tuple, tuple[float, str]]:
    """The output folder's calibrations; a missing or damaged file is no calibration (plan then says how to make
    one again)."""
    content = read_json(Path(output_dir) / CALIBRATION)
    found = {}
    for entry in content.get("calibrations", []) if isinstance(content, dict) else []:
        try:
            key, rate, device = tuple(entry["key"]), float(entry["seconds_per_mac"]), str(entry["device"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(rate) and rate > 0:
            found[key] = (rate, device)
    return found


def calibrate(timings: Timings, output_dir: Path, configs: list[RunConfig], macs_per_image, say=print) -> int:
    """Time a few training steps of each distinct kind of run among `configs` that `timings` (measured: finished
    runs and kept calibrations) cannot time, and keep the figures in the output folder. Imports torch. Returns how
    many were calibrated."""
    from an_lab.lightning_modules.calibrate import seconds_per_image

    known = dict(timings.calibrated)
    todo = {}
    for config in configs:
        if timings.rate(config) is None:
            todo.setdefault(_calibration_key(config), config)
    for key, config in todo.items():
        name, norm, size, task, batch, threads = key
        say(f"calibrating {name} ({norm}, {task}) at {size} px, batch {batch}, {threads} thread(s): 5 timed steps")
        seconds, device = seconds_per_image(config)
        known[key] = (seconds / macs_per_image(config), device)
        say(f"  {seconds * batch:.3f} s per training step on {device}")
    if todo:
        with contextlib.suppress(OSError):  # write_json_atomic names the folder if it still cannot be written
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        entries = [{"key": list(k), "seconds_per_mac": r, "device": d} for k, (r, d) in sorted(known.items())]
        write_json_atomic(Path(output_dir) / CALIBRATION, {"calibrations": entries})
    return len(todo)


def measured(output_dir: Path, run_macs) -> Timings:
    """The timings of the newest finished runs in an output folder (run_macs: the MACs of a config, or None)."""
    timings = Timings()
    try:
        entries = [entry for entry in os.scandir(output_dir) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        timings.calibrated = read_calibrations(output_dir)
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
    timings.calibrated = read_calibrations(output_dir)
    return timings


@dataclass
class WallTime:
    seconds: float = 0.0  # summed over the runs it could time
    longest: float = 0.0  # the longest single run
    timed: int = 0
    untimed: set[tuple] = field(default_factory=set)  # networks without a finished run to time them by
    devices: set[str] = field(default_factory=set)
    measured_runs: int = 0
    calibrated: int = 0  # runs timed by a calibration rather than by finished runs

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
        self.calibrated += runs == 0

    def words(self, parallel: int, scheduled: bool) -> str:
        if not self.timed and not self.untimed:
            return "nothing to run"
        parts = []
        if self.timed:
            where = ", ".join(sorted(self.devices))
            if scheduled:
                suggested = _clock(math.ceil(self.longest * 1.5 / 60) * 60)
                parts.append(
                    f"{self.seconds / 3600:.1f} device-hours for {self.timed} runs on {where} ({self._source()}); "
                    "the longest run "
                    f"about {_clock(self.longest)}: launcher.slurm.time {suggested} gives it 1.5x"
                )
            else:
                parts.append(
                    f"about {_clock(self.seconds / max(1, parallel))} for {self.timed} runs, {parallel} at a time on "
                    f"{where} ({self._source()})"
                )
        if self.calibrated and self.calibrated < self.timed:
            parts.append(
                f"{self.calibrated} of them timed by a calibration (training steps timed on this machine by "
                f"`plan --calibrate`; {LOWER_BOUND})"
            )
        if self.untimed:
            names = ", ".join(f"{name} ({norm}) at {size} px" for name, norm, size in sorted(self.untimed))
            parts.append(
                f"no finished run to time {names} by: `an-lab plan --calibrate` times a few training steps here, "
                "or finish one run (an-lab train with trainer.epochs: 1 is enough) and plan again"
            )
        return "; ".join(parts)

    def _source(self) -> str:
        if self.calibrated == self.timed:
            return f"from training steps timed on this machine by `plan --calibrate`; {LOWER_BOUND}"
        return f"measured from up to {self.measured_runs} finished runs of the same network and image size"


def _clock(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{max(1, round(seconds))} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
